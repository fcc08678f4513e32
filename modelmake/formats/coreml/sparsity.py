"""The zeros of a Core ML package's weight tensors: dense constants, and sparse ones by their masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import count_zeros


def measure(path: Path) -> tuple[int, int, int]:
    import coremltools as ct

    from .runtime import unpacked

    with unpacked(path, what=path.name) as package:
        model = ct.models.MLModel(str(package), skip_model_load=True)
        program = model._mil_program if getattr(model, "_mil_program", None) is not None else _mil_program(model)
        zeros = total = sparse = 0
        for function in program.functions.values():
            for op in function.operations:
                if op.op_type == "const":
                    value = op.outputs[0].val
                    if isinstance(value, np.ndarray) and value.ndim >= 2 and value.dtype.kind in "fiu":
                        z, n = count_zeros(value)
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
