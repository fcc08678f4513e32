"""The zeros of a .tflite file's weight tensors, stored sparse (sparsity parameters) or dense."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import count_zeros

_TFLITE_DTYPES = {0: np.float32, 1: np.float16, 9: np.int8, 3: np.uint8, 2: np.int32}


def measure(path: Path) -> tuple[int, int, int]:
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
                stored_zeros, stored = count_zeros(values)
                zeros += dense - stored + stored_zeros
                total += dense
            else:
                z, n = count_zeros(values)
                zeros, total = zeros + z, total + n
    return zeros, total, sparse
