"""What each chip family needs from an ONNX artifact beyond the generic conversion.

A target profile names a quantization scheme (``quantization: cpu | qnn``) and
the execution providers it runs; this module turns those into the settings
the generic code in convert_onnx.py applies.  The generic code never looks at
a scheme or provider name itself, so supporting another chip family means
adding a factory here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import StepError

ACTIVATION_TYPES = ("uint8", "uint16")

# Providers that build their whole graph when the session starts and so need
# every tensor shape known then: ORT's documentation for QNN and NNAPI asks for
# fixed input shapes ("Making dynamic input shapes fixed"), and the QNN op
# builders reject a node whose shapes are symbolic.  Apps run these one sample
# at a time, so a dynamic batch dimension becomes 1.
STATIC_SHAPE_PROVIDERS = frozenset({"QNNExecutionProvider", "NnapiExecutionProvider"})


def needs_static_batch(target_format: dict) -> bool:
    return any(provider in STATIC_SHAPE_PROVIDERS for provider in target_format.get("execution_providers", ()))


@dataclass(frozen=True)
class StaticQuantization:
    """How one chip family wants static int8 QDQ models built."""

    scheme: str
    activation_type: str  # uint8 | uint16
    weight_type: str  # int8
    per_channel: bool
    # (model to quantize, calibration reader) -> onnxruntime.quantization.StaticQuantConfig
    make_config: Callable = field(repr=False)
    # (float model in, path out) -> True when it wrote a changed model to ``path out``
    preprocess: Callable[[Path, Path], bool] | None = field(default=None, repr=False)


def static_quantization_settings(target_format: dict, per_channel: bool) -> StaticQuantization:
    """The static int8 settings for the profile's ``quantization`` scheme."""
    scheme = target_format.get("quantization", "cpu")
    activation_type = target_format.get("activation_type", "uint8")
    if activation_type not in ACTIVATION_TYPES:
        raise StepError(f"activation_type {activation_type!r} is not one of {', '.join(ACTIVATION_TYPES)}: fix the target profile's onnx section")
    factory = _FACTORIES.get(scheme)
    if factory is None:
        raise StepError(f"no static int8 settings for quantization {scheme!r}: use one of {', '.join(sorted(_FACTORIES))} in the target profile's onnx section")
    return factory(activation_type, per_channel)


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16, "int8": QuantType.QInt8}[name]


def _cpu(activation_type: str, per_channel: bool) -> StaticQuantization:
    """ONNX Runtime's CPU provider (and XNNPACK beside it).

    The CPU provider fuses DequantizeLinear -> Conv/MatMul -> QuantizeLinear
    groups into QLinearConv / QLinearMatMul and runs them with MLAS's
    unsigned-activation x signed-weight (U8S8) kernels, the combination it has
    fast paths for on both arm64 (dot-product instructions) and x86-64
    (VPMADDUBSW/VNNI take one unsigned and one signed operand).  uint8
    activations keep the full 0..255 range after a ReLU with a zero point at
    0; symmetric int8 weights have a zero point of 0, which lets the kernels
    skip the weight zero-point correction, and per-channel scales keep the
    accuracy of convolutions whose filters differ widely in range.  No
    reduce_range: the phones this targets are arm64, where VPMADDUBSW's
    saturation does not arise.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, StaticQuantConfig

    def make_config(model_path, reader):
        return StaticQuantConfig(
            reader,
            calibrate_method=CalibrationMethod.MinMax,
            quant_format=QuantFormat.QDQ,
            activation_type=_quant_type(activation_type),
            weight_type=_quant_type("int8"),
            per_channel=per_channel,
            reduce_range=False,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )

    return StaticQuantization("cpu", activation_type, "int8", per_channel, make_config)


def _qnn(activation_type: str, per_channel: bool) -> StaticQuantization:
    """Qualcomm's QNN execution provider on the Hexagon HTP.

    ORT's own QNN helpers know the HTP's rules (per-tensor MatMul weights,
    fixed output ranges for 16-bit Sigmoid/Tanh, 16-bit Q/DQ in the
    com.microsoft domain below opset 21), so the configuration comes from
    get_qnn_qdq_config rather than from quantize_static's defaults.  Weights
    are signed symmetric int8, per channel where the profile asks, which is
    what the HTP takes for per-channel Conv weights; activations are the
    profile's uint8 or uint16 (16-bit costs speed but keeps accuracy on
    models with wide activation ranges).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    def make_config(model_path, reader):
        return get_qnn_qdq_config(
            str(model_path),
            reader,
            calibrate_method=CalibrationMethod.MinMax,
            activation_type=_quant_type(activation_type),
            weight_type=_quant_type("int8"),
            per_channel=per_channel,
        )

    return StaticQuantization("qnn", activation_type, "int8", per_channel, make_config, preprocess=_qnn_preprocess)


def _qnn_preprocess(model_in: Path, model_out: Path) -> bool:
    """Fuse Erf, ReduceL2 and Reshape/Transpose sequences into the single Gelu,
    LpNormalization and SpaceToDepth ops the HTP runs natively."""
    import onnx
    from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model

    model = onnx.load(str(model_in))
    # qnn_preprocess_model merges the model's metadata_props into a dict with
    # dict.update(), which fails on a protobuf repeated field; the entries are
    # only markers of earlier ORT pre-processing.
    del model.metadata_props[:]
    return bool(qnn_preprocess_model(model, str(model_out)))


_FACTORIES = {"cpu": _cpu, "qnn": _qnn}
