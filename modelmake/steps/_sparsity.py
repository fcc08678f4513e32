"""The measured sparsity of a converted file: the share of zeros in its weight tensors, read from the file itself.

Weight tensors are the constants of rank 2 and up (kernels; biases and
scales are left out, as pruning leaves them).  A tensor stored sparse (TFLite's
sparsity parameters, Core ML's sparse constants) counts its elements as the
dense tensor has them and its zeros as those the encoding leaves out plus any
it stores.  Nothing is assumed from the spec: a variant whose training left the
weights dense measures near 0, and a ``min_sparsity`` budget fails on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import StepError


def measured_sparsity(format_name: str, path: str | Path) -> dict:
    """{"sparsity": share of zeros, "weights": elements counted, "sparse_tensors": tensors stored sparse}."""
    measure = {"tflite": _tflite, "onnx": _onnx, "coreml": _coreml}.get(format_name)
    if measure is None:
        raise StepError(f"sparsity is not measured in {format_name} files")
    zeros, total, sparse = measure(Path(path))
    return {"sparsity": round(zeros / total, 6) if total else 0.0, "weights": int(total), "sparse_tensors": int(sparse)}


def _count(values: np.ndarray) -> tuple[int, int]:
    return int(values.size - np.count_nonzero(values)), int(values.size)


_TFLITE_DTYPES = {0: np.float32, 1: np.float16, 9: np.int8, 3: np.uint8, 2: np.int32}


def _tflite(path: Path) -> tuple[int, int, int]:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    zeros = total = sparse = 0
    seen: set[int] = set()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
            data = getattr(buffer, "data", None)
            dtype = _TFLITE_DTYPES.get(tensor.type)
            shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
            if data is None or len(data) == 0 or dtype is None or len(shape) < 2 or tensor.buffer in seen:
                continue
            seen.add(tensor.buffer)
            values = np.frombuffer(bytes(bytearray(data)), dtype=dtype)
            dense = int(np.prod(shape))
            if tensor.sparsity is not None:
                # Only the stored blocks' values are in the buffer: every element left out is a zero.
                sparse += 1
                stored_zeros, stored = _count(values)
                zeros += dense - stored + stored_zeros
                total += dense
            else:
                z, n = _count(values)
                zeros, total = zeros + z, total + n
    return zeros, total, sparse


def _onnx(path: Path) -> tuple[int, int, int]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    zeros = total = 0
    for initializer in model.graph.initializer:
        if len(initializer.dims) >= 2:
            z, n = _count(numpy_helper.to_array(initializer))
            zeros, total = zeros + z, total + n
    return zeros, total, 0


def _coreml(path: Path) -> tuple[int, int, int]:
    import coremltools as ct

    from ..formats.coreml.runtime import unpacked

    with unpacked(path, what=path.name) as package:
        model = ct.models.MLModel(str(package), skip_model_load=True)
        program = model._mil_program if getattr(model, "_mil_program", None) is not None else _mil_program(model)
        zeros = total = sparse = 0
        for function in program.functions.values():
            for op in function.operations:
                if op.op_type == "const":
                    value = op.outputs[0].val
                    if isinstance(value, np.ndarray) and value.ndim >= 2 and value.dtype.kind in "fiu":
                        z, n = _count(value)
                        zeros, total = zeros + z, total + n
                elif op.op_type.startswith("constexpr_sparse"):
                    sparse += 1
                    dense = op.outputs[0].shape
                    count = int(np.prod(dense))
                    mask = next((getattr(op, name).val for name in ("mask",) if getattr(op, name, None) is not None), None)
                    kept = int(np.unpackbits(np.asarray(mask, dtype=np.uint8)).sum()) if mask is not None else count
                    zeros, total = zeros + count - kept, total + count
    return zeros, total, sparse


def _mil_program(model):
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    spec = model.get_spec()
    return milproto_load(spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir)
