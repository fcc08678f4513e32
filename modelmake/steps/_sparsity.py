"""The measured sparsity of a converted file: the share of zeros in its weight tensors, read from the file itself.

Weight tensors are the constants of rank 2 and up (kernels; biases and
scales are left out, as pruning leaves them).  A tensor stored sparse (TFLite's
sparsity parameters, Core ML's sparse constants) counts its elements as the
dense tensor has them and its zeros as those the encoding leaves out plus any
it stores.  Nothing is assumed from the spec: a variant whose training left the
weights dense measures near 0, and a ``min_sparsity`` budget fails on it.
Each format reads its own files (``formats/<name>/sparsity.py``).
"""
from __future__ import annotations

from pathlib import Path

from .. import formats


def measured_sparsity(format_name: str, path: str | Path) -> dict:
    """{"sparsity": share of zeros, "weights": elements counted, "sparse_tensors": tensors stored sparse}."""
    zeros, total, sparse = formats.backend(format_name).weight_sparsity(Path(path))
    return {"sparsity": round(zeros / total, 6) if total else 0.0, "weights": int(total), "sparse_tensors": int(sparse)}
