"""Signed bundles with baselines, a repository publishing them, and fleets of simulated devices reporting telemetry.

No model is built: a bundle here is what the package step leaves (model files, manifest.json,
baselines/<artifact>.json, model.sig) around small placeholder model files, signed and archived,
which is all the publisher, the client and the monitor read. Each device follows the signed index
with the reference client's own rules (``verify_index``, ``choose_release``, ``choose_variant``),
then reports one telemetry record for the file it runs, in the agreed format, drawn from the
behaviour the test gives its chipset and version (latency, dim scenes, failures, accuracy).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np

from modelmake.bundle import keys
from modelmake.bundle.archive import write_archive
from modelmake.bundle.signing import public_key_hint, sign_directory
from modelmake.client.index import verify_index
from modelmake.client.offer import DeviceProfile, choose_release, choose_variant
from modelmake.client.telemetry import TelemetryContext, TelemetryRecorder
from modelmake.client.trust import TrustState
from modelmake.repository.offer import Offer
from modelmake.repository.publish import publish

BUNDLE = "acme"
MODEL = "digits"
SIGNING_KEY = keys.generate_signing_key()
PUBLIC_KEY = SIGNING_KEY.public_key()
DAY = 86_400
# Three kinds of phone: two with a target of their own, one served by the generic target.
CHIPSETS = {"Tensor G3": "pixel-8", "SM8650": "snapdragon-8-gen-3", "Exynos 2400": "android-arm64-cpu"}
TARGETS: dict[str, dict] = {
    "pixel-8": {"platform": "android", "chipsets": ["Tensor G3"], "min_os_version": None},
    "snapdragon-8-gen-3": {"platform": "android", "chipsets": ["SM8650"], "min_os_version": None},
    "android-arm64-cpu": {"platform": "android", "chipsets": [], "min_os_version": None},
}
UNIT_EDGES = [round(i / 20, 2) for i in range(21)]
LATENCY_EDGES = [0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 200, 500, 10_000]
CLASSES = [str(i) for i in range(10)]
MAX_LATENCY_MS, MIN_FPS = 20, 30


def artifact_id(target: str) -> str:
    return f"{MODEL}.int8.tflite@{target}"


def model_path(target: str) -> str:
    return f"files/{target}/{MODEL}.int8.tflite"


@cache
def beta_bins(a: float, b: float) -> np.ndarray:
    """The probability of each of the 20 bins of [0, 1] under Beta(a, b) (by a fine grid)."""
    x = np.linspace(0, 1, 20_001)[1:-1]
    density = x ** (a - 1) * (1 - x) ** (b - 1)
    mass = np.add.reduceat(density, np.arange(0, len(x), len(x) // 20)[:20])
    return mass / mass.sum()


@cache
def latency_bins(median_ms: float, sigma: float = 0.25) -> np.ndarray:
    """The probability of each latency bin under a log-normal with this median."""
    def cdf(value: float) -> float:
        return 0.0 if value <= 0 else 0.5 * (1 + math.erf(math.log(value / median_ms) / (sigma * math.sqrt(2))))

    edges = LATENCY_EDGES
    p = np.array([cdf(edges[i + 1]) - cdf(edges[i]) for i in range(len(edges) - 1)])
    return p / p.sum()


BRIGHT, DIM = (5.0, 5.0), (2.0, 8.0)  # Beta parameters of mean brightness: ordinary scenes, dim ones
CONFIDENT = (8.0, 2.0)


@cache
def baseline(target: str, version: str, samples: int = 2000) -> dict:
    def histogram(p: np.ndarray) -> dict:
        return {"edges": UNIT_EDGES, "counts": [int(c) for c in np.round(p * samples)]}

    return {
        "format": 1, "artifact": artifact_id(target), "model": MODEL, "variant": "int8", "target": target,
        "file": model_path(target), "samples": samples,
        "outputs": {"logits": {"kind": "classes", "scores": "probabilities", "confidence": histogram(beta_bins(*CONFIDENT)),
                               "classes": {"labels": CLASSES, "counts": [samples // 10] * 10}}},
        "inputs": {"image": {"kind": "image", "range": [0.0, 1.0], "brightness": histogram(beta_bins(*BRIGHT)),
                             "contrast": histogram(beta_bins(3.0, 7.0))}},
        "budgets": {"max_latency_ms": MAX_LATENCY_MS, "min_fps": MIN_FPS},
        "latency_ms": {"p50": 6.0, "p90": 8.0},
    }


def make_bundle(root: Path, version: str) -> tuple[Path, dict[str, Path]]:
    """A signed bundle directory of ``version`` with a baseline per artifact, and its whole-bundle archive."""
    bundle = root / f"bundle-{version}"
    variants = {}
    for target in TARGETS:
        content = f"{MODEL} {version} for {target}".encode()
        (bundle / model_path(target)).parent.mkdir(parents=True, exist_ok=True)
        (bundle / model_path(target)).write_bytes(content)
        variants[artifact_id(target)] = {
            "target": target, "platform": "android", "format": "tflite", "precision": "int8", "file": model_path(target),
            "sha256": hashlib.sha256(content).hexdigest(), "size": len(content),
        }
        (bundle / "baselines").mkdir(exist_ok=True)
        document = json.dumps(baseline(target, version)).encode()
        (bundle / "baselines" / f"{artifact_id(target)}.json").write_bytes(document)
        variants[artifact_id(target)]["baseline"] = {
            "file": f"baselines/{artifact_id(target)}.json", "sha256": hashlib.sha256(document).hexdigest(), "size": len(document),
        }
    manifest = {
        "format_version": 1, "bundle": BUNDLE, "version": version, "signing": "release",
        "targets": {t: {"platform": "android", "soc": t, "min_os": ""} for t in TARGETS},
        "models": {MODEL: {"variants": variants}},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    sign_directory(bundle, SIGNING_KEY)
    archive = root / f"{BUNDLE}-{version}.zip"
    write_archive(archive, {p.relative_to(bundle).as_posix(): p for p in sorted(bundle.rglob("*")) if p.is_file()}, 315532800)
    return bundle, {"all": archive}


def publish_release(repository: Path, root: Path, version: str, channels: dict[str, dict[str, Offer]], now: int) -> None:
    bundle, archives = make_bundle(root, version)
    publish(repository, bundle_dir=bundle, archives=archives, preferences={}, targets=TARGETS, channels=channels,
            signing_key=SIGNING_KEY, now=now, expires_after=30 * DAY)


@dataclass(frozen=True)
class Behaviour:
    """How a device with some chipset behaves on some version: what its telemetry will show."""

    latency_median_ms: float = 6.0
    brightness: tuple[float, float] = BRIGHT
    failure_rate: float = 0.001
    fallback_rate: float = 0.005
    accuracy: float = 0.90
    inferences: int = 200


Behave = Callable[[DeviceProfile, str, str | None], Behaviour]  # device, version, arm -> behaviour


def healthy(device: DeviceProfile, version: str, arm: str | None) -> Behaviour:
    return Behaviour()


@dataclass
class Fleet:
    """``size`` devices with stable ids, spread over CHIPSETS, and the trust state each client would keep."""

    size: int
    seed: int = 0
    trusted: TrustState | None = None
    devices: list[DeviceProfile] = field(init=False)

    def __post_init__(self) -> None:
        chipsets = list(CHIPSETS)
        self.devices = [
            DeviceProfile("android", chipsets[i % len(chipsets)], "34", "5.2", f"device-{self.seed}-{i}", frozenset({"tflite"}))
            for i in range(self.size)
        ]

    def follow(self, repository: Path, now: int, channel: str = "stable") -> dict[str, tuple[str | None, str | None, str | None]]:
        """Each device's (version, arm, file) under the repository's index, as the reference client decides them.

        The index must be one a client that has followed every earlier index accepts (signature, expiry, and
        an index version that never goes back).
        """
        data = (repository / "index.json").read_bytes()
        index = verify_index(data, {public_key_hint(PUBLIC_KEY): PUBLIC_KEY}, repository=BUNDLE, now=now, trusted=self.trusted)
        self.trusted = TrustState(index.index_version, index.sha256)
        offer = index.offer(channel, MODEL)
        assert offer is not None, f"the index offers no {MODEL} on {channel}"
        placed: dict[str, tuple[str | None, str | None, str | None]] = {}
        for device in self.devices:
            decision = choose_release(offer, repository=BUNDLE, channel=channel, model=MODEL, device=device)
            if decision.version is None:
                placed[device.device_id] = (None, None, None)
                continue
            variant = choose_variant(index.releases[decision.version], MODEL, device)
            placed[device.device_id] = (decision.version, decision.arm, variant.path)
        return placed

    def report(self, placed: dict, behave: Behave, out: Path, *, now: int, channel: str = "stable", period: int = 0) -> Path:
        """One telemetry record per device that runs a model, written as JSON lines to ``out``."""
        rng = np.random.default_rng([self.seed, period])
        start = datetime.fromtimestamp(now - DAY + period, UTC)
        end = datetime.fromtimestamp(now - 60 + period, UTC)
        with open(out, "w", encoding="utf-8") as lines:
            for device in self.devices:
                version, arm, file = placed[device.device_id]
                if version is None:
                    continue
                lines.write(json.dumps(record(rng, device, version, arm, file, behave(device, version, arm), channel,
                                              start, end)) + "\n")
        return out


def record(rng, device: DeviceProfile, version: str, arm: str | None, file: str, b: Behaviour, channel: str,
           start: datetime, end: datetime) -> dict:
    """One device's period, observed and exported by the reference client's own recorder (client/telemetry.py).

    The device sees ``b.inferences`` images whose brightness and contrast follow its behaviour, its model
    answers with a top-1 confidence like the evaluation data's, each inference takes a log-normal time, and
    the app learns the truth of one answer in ten.
    """
    n = b.inferences
    failures = int(rng.binomial(n, b.failure_rate))
    served = n - failures
    target = file.split("/")[1]
    recorder = TelemetryRecorder(
        baseline(target, version),
        TelemetryContext(device=device.device_id, version=version, chipset=device.chipset, app_version=device.app_version,
                         channel=channel, arm=arm),
        start=start,
    )
    brightness = rng.beta(*b.brightness, served)
    contrast = rng.beta(3.0, 7.0, served)
    pattern = np.array([1.0, -1.0, 1.0, -1.0])  # mean 0, standard deviation 1
    images = brightness[:, None] + contrast[:, None] * pattern[None, :]
    confidence = rng.beta(*CONFIDENT, served)
    scores = np.repeat(((1 - confidence) / 9)[:, None], 10, axis=1)
    scores[np.arange(served), rng.integers(0, 10, served)] = confidence
    latency = rng.lognormal(math.log(b.latency_median_ms), 0.25, served)
    recorder.observe({"image": images.reshape(served, 2, 2, 1)}, {"logits": scores}, latency_ms=latency)
    if failures:
        recorder.failure(latency_ms=b.latency_median_ms, count=failures)
    recorder.fallback(int(rng.binomial(n, b.fallback_rate)))
    recorder.frames(served, float(latency.sum()) * 1.1 / 1000)
    recorder.peak_memory(40.0)
    recorder.outcome(rng.random(served // 10) < b.accuracy)
    return recorder.record(end)
