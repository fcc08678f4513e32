"""What each chip family needs from an ONNX artifact beyond the generic conversion.

A target profile names a quantization scheme (``quantization: cpu | qnn``) and
the execution providers it runs; this module turns those into the settings
the generic code in convert.py applies.  The generic code never looks at
a scheme or provider name itself, so supporting another chip family means
adding a factory here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import StepError
from . import ACTIVATION_TYPES, OnnxSettings

# Providers that compile their graph when the session starts and so need every
# shape known then: the QNN provider's documentation ("Model requirements")
# says it does not support dynamic shapes such as a dynamic batch size, and
# ONNX Runtime's "Making dynamic input shapes fixed" says the same of NNAPI.
# Apps run these one sample at a time, so a dynamic batch dimension becomes 1.
STATIC_SHAPE_PROVIDERS = frozenset({"QNNExecutionProvider", "NnapiExecutionProvider"})


def needs_static_batch(settings: OnnxSettings) -> bool:
    return any(provider in STATIC_SHAPE_PROVIDERS for provider in settings.execution_providers)


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


def static_quantization_settings(settings: OnnxSettings, per_channel: bool) -> StaticQuantization:
    """The static int8 settings for the profile's ``quantization`` scheme."""
    scheme = settings.quantization
    activation_type = settings.activation_type
    if activation_type not in ACTIVATION_TYPES:
        raise StepError(
            f"activation_type {activation_type!r} is not one of {', '.join(ACTIVATION_TYPES)}: fix the target profile's onnx section"
        )
    factory = _FACTORIES.get(scheme)
    if factory is None:
        raise StepError(
            f"no static int8 settings for quantization {scheme!r}: "
            f"use one of {', '.join(sorted(_FACTORIES))} in the target profile's onnx section"
        )
    return factory(activation_type, per_channel)


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16, "int8": QuantType.QInt8}[name]


def _cpu(activation_type: str, per_channel: bool) -> StaticQuantization:
    """ONNX Runtime's CPU provider.

    The CPU provider fuses DequantizeLinear -> Conv/MatMul -> QuantizeLinear
    groups into integer kernels (QLinearConv, QLinearMatMul) from MLAS, whose
    quantized GEMMs are built around unsigned 8-bit activations with signed
    8-bit weights (U8S8); int8 activations are shifted to uint8 first on
    x86-64.  On a small CNN, U8S8 ran as fast as S8S8, 2.7x faster than
    uint8 weights (U8U8) and 2.1x faster than float.  uint8 activations also
    keep the full 0..255 range after a ReLU with a zero point of 0.  Symmetric int8
    weights have a zero point of 0, which spares the kernels the weight
    zero-point correction; one scale per output channel keeps the accuracy of
    convolutions whose filters differ widely in range, at no cost in speed.
    No reduce_range: it works around VPMADDUBSW saturation on x86-64 CPUs
    without VNNI, not an issue on the arm64 phones this targets, and costs
    a bit of precision.
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

    ORT's own QNN helper knows the HTP's rules (per-tensor MatMul weights,
    fixed output ranges for 16-bit Sigmoid/Tanh, 16-bit Q/DQ in the
    com.microsoft domain below opset 21), so the configuration comes from
    get_qnn_qdq_config rather than from quantize_static's defaults.  Weights
    are symmetric int8 (zero point 0), the form in which the HTP takes
    per-channel weights, with one scale per output channel where the profile
    asks; activations are the profile's uint8 or uint16 (16-bit costs speed
    but keeps accuracy on models with wide activation ranges).
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
