"""Core ML: ML program packages converted by coremltools, shipped as reproducible zips.

Core ML runs only on macOS and iOS: on other hosts its packages are checked
structurally and their run-time figures are "not measured".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...kinds import Precision
from ..base import PackageBackend

if TYPE_CHECKING:
    from ...plan import FormatSupport

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
PALETTE_BITS = (2, 4, 6, 8)
# The first iOS and macOS releases whose ML programs take each kind of compressed weights.
FIRST_OS_FOR = {"compressed weights": ("iOS16", "macOS13"), "int8 palettes": ("iOS18", "macOS15")}


@dataclass(frozen=True)
class CoremlSettings:
    compute_units: str = "ALL"
    minimum_deployment_target: str = "iOS17"


def deployment_problem(deployment_target: str, precision: Precision, palettize: int | None) -> str | None:
    """Why packages with this compression cannot run on ``deployment_target``; None when they can.

    The one statement of the rule: the spec checks it for every target before
    any work, and the converter again against what coremltools produced.
    """
    if palettize and precision.weights_int8:
        what = "int8 palettes"  # joint palettization and quantization: int8 look-up tables
    elif palettize or precision.weights_int8:
        what = "compressed weights"
    else:
        return None
    ios, macos = FIRST_OS_FOR[what]
    needed = macos if deployment_target.startswith("macOS") else ios
    if _version(deployment_target) >= _version(needed):
        return None
    return (
        f"Core ML {what} need {ios} or {macos}, but the profile targets {deployment_target}: "
        "raise minimum_deployment_target or drop the compression"
    )


def _version(target: str) -> int:
    return int(re.sub(r"\D", "", target))


class CoremlBackend(PackageBackend):
    name = "coreml"
    suffix = ".mlpackage.zip"
    source_kinds: tuple[str, ...] = ("keras", "saved_model", "recipe")
    palettizes: bool = True
    prunes_after_conversion: bool = True  # coremltools prunes converted weights by magnitude
    quantizes_own_files: bool = False
    precisions: tuple[Precision, ...] = tuple(Precision)
    # scikit-learn: palettization's k-means
    convert_tools: tuple[str, ...] = ("modelmake", "tensorflow", "coremltools", "scikit-learn")
    runtime_tools: tuple[str, ...] = ("coremltools",)
    accelerators: dict[str, str] = {}  # Core ML places ops on the Neural Engine itself; nothing reports it off Apple hardware
    profile_properties: dict[str, Any] = {
        "compute_units": {"enum": list(COMPUTE_UNITS)},
        "minimum_deployment_target": {"enum": list(DEPLOYMENT_TARGETS)},
    }

    def parse_settings(self, section: dict) -> CoremlSettings:
        return CoremlSettings(**section)

    def variant_problem(self, support: FormatSupport, precision: Precision, palettize: int | None) -> str | None:
        if palettize is not None and palettize not in PALETTE_BITS:
            return f"palettize must be one of {', '.join(map(str, PALETTE_BITS))} bits, not {palettize}"
        return deployment_problem(support.settings.minimum_deployment_target, precision, palettize)


BACKEND = CoremlBackend()
