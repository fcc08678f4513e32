"""ONNX: exported by tf2onnx (or given as a file), quantized by ONNX Runtime's tools, run by ONNX Runtime."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...kinds import Precision
from ..base import PackageBackend

if TYPE_CHECKING:
    from ...plan import FormatSupport

QUANTIZATION_SCHEMES = ("cpu", "qnn")  # whose static int8 settings apply: chips.py
ACTIVATION_TYPES = ("uint8", "uint16")
OPSETS = (13, 21)  # the range tf2onnx and ONNX Runtime's quantizer are used with here


@dataclass(frozen=True)
class OnnxSettings:
    execution_providers: tuple[str, ...] = ()
    opset: int = 17
    quantization: str = "cpu"
    activation_type: str = "uint8"  # static int8: uint8 or uint16 activations


class OnnxBackend(PackageBackend):
    name = "onnx"
    suffix = ".onnx"
    source_kinds: tuple[str, ...] = ("keras", "saved_model", "recipe", "tflite", "onnx")
    quantizes_own_files: bool = True
    precisions: tuple[Precision, ...] = tuple(Precision)
    # A TensorFlow or .tflite source is exported by tf2onnx once per opset (export.py); conversions start from that.
    convert_tools: tuple[str, ...] = ("modelmake", "onnx", "onnxruntime")
    # onnxruntime: the export also writes the model after ORT's quantization pre-processing, shared by the int8 variants.
    export_tools: tuple[str, ...] = ("modelmake", "tensorflow", "tf2onnx", "onnx", "onnxruntime")
    export_prepared: tuple[str, ...] = ("any-batch", "batch-1")  # convert.PREPARED: without, and with, the batch fixed at 1
    runtime_tools: tuple[str, ...] = ("onnxruntime",)
    accelerators: dict[str, str] = {"qnn": "ONNX Runtime's QNN execution provider"}
    profile_properties: dict[str, Any] = {
        "execution_providers": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
        "opset": {"type": "integer", "minimum": OPSETS[0], "maximum": OPSETS[1]},
        "quantization": {
            "enum": list(QUANTIZATION_SCHEMES),
            "description": "Whose static int8 settings apply: cpu (QDQ, uint8 activations, per-channel int8 weights) "
            "or qnn (QDQ as Qualcomm's QNN execution provider takes it).",
        },
        "activation_type": {
            "enum": list(ACTIVATION_TYPES),
            "description": "Activation type of static int8 ONNX artifacts (uint16 for NPUs that support 16-bit activations).",
        },
    }

    def export_options(self, support: FormatSupport, source_kind: str) -> dict[str, Any] | None:
        """An ONNX source is already the float model (its conversions upgrade it in memory); any other is exported per opset."""
        if source_kind == self.name:
            return None
        return {"opset": support.settings.opset}

    def parse_settings(self, section: dict) -> OnnxSettings:
        fields: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value for key, value in section.items()}
        return OnnxSettings(**fields)


BACKEND = OnnxBackend()
