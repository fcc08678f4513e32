"""Which release and which variant a device gets (OTA.md, "Choosing a release" and "Choosing a variant").

Everything here is a pure function of the signed index and the device profile, so every
client (Python, Kotlin, Swift) puts the same device in the same bucket and picks the same
file. ``bucket`` is the one piece a port must reproduce bit for bit.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from modelmake.repository.offer import BASIS_POINTS, Offer

from .errors import NoCompatibleVariantError
from .index import Release, Variant, at_least, dotted

BUCKET_LABEL = b"modelmake-bucket-v1"


@dataclass(frozen=True)
class DeviceProfile:
    """What the app knows about the device it runs on, and about itself."""

    platform: str  # android, ios, linux
    chipset: str  # Android Build.SOC_MODEL, iOS hw.machine ("iPhone16,1"), Linux device-tree SoC ("bcm2712")
    os_version: str  # dotted numbers: Android API level ("34"), iOS version ("17.4")
    app_version: str  # dotted numbers ("5.2.1")
    device_id: str  # an install id the app generates once and keeps; never a hardware id
    formats: frozenset[str]  # model formats the app can run: "tflite", "onnx", "coreml"

    def __post_init__(self) -> None:
        dotted(self.os_version)  # ValueError now, rather than a wrong comparison later
        dotted(self.app_version)
        object.__setattr__(self, "formats", frozenset(self.formats))


def bucket(*fields: str) -> int:
    """A number in 0..9999 that depends only on ``fields``; every field is length-prefixed, so no two lists collide."""
    digest = hashlib.sha256(BUCKET_LABEL)
    for field in fields:
        data = field.encode("utf-8")
        digest.update(struct.pack(">I", len(data)) + data)
    return int.from_bytes(digest.digest()[:8], "big") % BASIS_POINTS


@dataclass(frozen=True)
class Decision:
    version: str | None  # None: nothing is offered
    arm: str | None  # the A/B arm the device is in, if the offer runs a test and the device is in the rollout
    reason: str  # why, for logs


def choose_release(offer: Offer, *, repository: str, channel: str, model: str, device: DeviceProfile) -> Decision:
    if offer.min_app_version is not None and not at_least(device.app_version, offer.min_app_version):
        return Decision(None, None, f"app version {device.app_version} is older than {offer.min_app_version}, "
                                    "the oldest this offer serves")
    # The version is part of the rollout bucket, so each release reaches a different share of
    # devices first, and raising the share of one release only ever adds devices.
    if bucket("rollout", repository, model, offer.version, device.device_id) >= offer.rollout_basis_points:
        outside = f"outside the {offer.rollout_basis_points / 100:g}% rollout of {offer.version}"
        if offer.previous is None:
            return Decision(None, None, f"{outside}, and no previous version is offered")
        return Decision(offer.previous, None, outside)
    if not offer.arms:
        return Decision(offer.version, None, f"in the rollout of {offer.version}")
    # The arm bucket leaves the version out, so a device keeps its arm from release to release.
    arm, total = bucket("arm", repository, channel, model, device.device_id), 0
    for candidate in offer.arms:  # the arms add up to 10000 (verify_index checks), so one always takes the bucket
        total += candidate.basis_points
        if total > arm:
            break
    return Decision(candidate.version, candidate.name, f"in A/B arm {candidate.name}")


def choose_variant(release: Release, model: str, device: DeviceProfile) -> Variant:
    """The variant of ``model`` in ``release`` for ``device``; NoCompatibleVariantError says why there is none."""
    entry = release.models[model]
    chipset = device.chipset.casefold()
    matching, generic, dropped = [], [], []
    for name in sorted(entry.targets):
        target = release.targets[name]
        if target.platform != device.platform:
            dropped.append(f"{name} is for {target.platform}")
        elif target.min_os_version is not None and not at_least(device.os_version, target.min_os_version):
            dropped.append(f"{name} needs OS {target.min_os_version}")
        elif chipset in (c.casefold() for c in target.chipsets):
            matching.append(name)
        elif not target.chipsets:
            generic.append(name)
        else:
            dropped.append(f"{name} is for chipsets {', '.join(target.chipsets)}")
    # A target built for this very chipset beats a generic one; within each group, by name.
    for name in matching + generic:
        for variant_id in entry.targets[name]:
            if entry.variants[variant_id].format in device.formats:
                return entry.variants[variant_id]
        dropped.append(f"{name} has no variant in a format the app runs")
    raise NoCompatibleVariantError(
        f"release {release.version} has no variant of {model} for this device ({device.platform}, chipset "
        f"{device.chipset!r}, OS {device.os_version}, formats {', '.join(sorted(device.formats)) or 'none'}): "
        + ("; ".join(dropped) or "it has no targets")
    )
