"""Which precision a .tflite file's weights are really stored at, read from its flatbuffer.

A converter leaves a tensor float where quantizing it does not pay (the
dynamic-range quantizer skips tensors under 1024 elements) or where no
quantized kernel exists, so a file labelled int8 can hold mostly float
weights.  Weights are the constant tensors (those with data in a buffer)
that are floating point or carry quantization parameters; shape and index
constants are not weights.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import StepError
from ...kinds import Precision

FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")
INT8_TYPES = ("INT8", "UINT8")
FLOAT16_MAX = 65504.0


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def constant_tensors(data: bytes, *, what: str) -> list[tuple[str, str, bytes]]:
    """(name, type name, data) of every weight tensor of every subgraph of the flatbuffer ``data``."""
    schema = _schema()
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    except Exception as exc:
        raise StepError(f"{what} is not a TFLite flatbuffer ({type(exc).__name__}: {exc})") from exc
    type_names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    found = []
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            buffer = model.buffers[tensor.buffer] if model.buffers and tensor.buffer < len(model.buffers) else None
            if buffer is None or buffer.data is None or len(buffer.data) == 0:
                continue
            quantized = tensor.quantization is not None and tensor.quantization.scale is not None and len(tensor.quantization.scale) > 0
            type_name = type_names.get(tensor.type, str(tensor.type))
            if type_name in FLOAT_TYPES or quantized:
                found.append((_text(tensor.name), type_name, bytes(buffer.data)))
    return found


def _text(name) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def weight_share(path: Path | str, precision: Precision, palettize: int | None = None) -> float | None:
    """Bytes of weights stored at ``precision`` over all weight bytes; None for fp32 (or a file without weights)."""
    if precision == Precision.FP32:
        return None
    wanted = ("FLOAT16",) if precision == Precision.FP16 else INT8_TYPES
    weights = constant_tensors(Path(path).read_bytes(), what=Path(path).name)
    total = sum(len(data) for _, _, data in weights)
    if total == 0:
        return None
    return sum(len(data) for _, kind, data in weights if kind in wanted) / total


def clamped_float16(data: bytes) -> list[str]:
    """Float16 constants holding float16's largest finite value: the converter clamps what overflows to it."""
    import numpy as np

    return [
        name
        for name, kind, data in constant_tensors(data, what="the converted model")
        if kind == "FLOAT16" and np.any(np.abs(np.frombuffer(data, np.float16).astype(np.float32)) >= FLOAT16_MAX)
    ]
