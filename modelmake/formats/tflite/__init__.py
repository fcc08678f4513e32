"""TFLite (LiteRT): converted by TensorFlow's TFLite converter (a .tflite source quantized by LiteRT Quantizer), run by LiteRT."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...kinds import Precision
from ..base import PackageBackend

DELEGATES = ("xnnpack", "gpu", "nnapi", "qnn", "hexagon", "edgetpu")


@dataclass(frozen=True)
class TfliteSettings:
    delegates: tuple[str, ...] = ()
    integer_io: bool = False  # full-int8 artifacts take and return int8 tensors


class TfliteBackend(PackageBackend):
    name = "tflite"
    suffix = ".tflite"
    source_kinds: tuple[str, ...] = ("keras", "saved_model", "recipe", "tflite")
    quantizes_own_files: bool = True  # through LiteRT Quantizer
    quantization_aware: bool = True  # the TFLite converter turns fake-quantization ops into int8
    precisions: tuple[Precision, ...] = tuple(Precision)
    convert_tools: tuple[str, ...] = ("modelmake", "tensorflow", "ai-edge-quantizer")
    runtime_tools: tuple[str, ...] = ("ai-edge-litert",)
    accelerators: dict[str, str] = {"gpu": "TFLite GPU delegate", "npu": "integer-only ops for an NPU/DSP delegate"}
    profile_properties: dict[str, Any] = {
        "delegates": {"type": "array", "uniqueItems": True, "items": {"enum": list(DELEGATES)}},
        "integer_io": {
            "type": "boolean",
            "description": "Full-int8 artifacts take and return int8 tensors (accelerators that run integer-only graphs).",
        },
    }

    def parse_settings(self, section: dict) -> TfliteSettings:
        return TfliteSettings(delegates=tuple(section.get("delegates", ())), integer_io=section.get("integer_io", False))


BACKEND = TfliteBackend()
