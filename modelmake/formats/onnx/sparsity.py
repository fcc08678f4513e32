"""The zeros of an ONNX file's weight tensors (initializers of rank 2 and up)."""
from __future__ import annotations

from pathlib import Path

from ..base import count_zeros


def measure(path: Path) -> tuple[int, int, int]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    zeros = total = 0
    for initializer in model.graph.initializer:
        if len(initializer.dims) >= 2:
            z, n = count_zeros(numpy_helper.to_array(initializer))
            zeros, total = zeros + z, total + n
    return zeros, total, 0
