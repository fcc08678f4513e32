"""Constants float16 cannot hold, in Core ML programs computed in float16.

coremltools' float16 pass leaves an op in float32 when one of its constant
inputs lies beyond float16's range (|x| > 65504; values of 1e38 and more
count as infinities, which float16 holds), instead of clamping the constant.
It does so silently: ``float32_kept`` names the ops it kept, for the
conversion's log and record, and for the structural check, which accepts
exactly those float32 weights in a float16 program.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FLOAT16_MAX = 65504.0
# coremltools' own bound: larger magnitudes stand for infinities, which float16 keeps as such.
INFINITE = 1e38


def beyond_float16(values) -> bool:
    magnitude = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    return float(np.max(magnitude[magnitude < INFINITE], initial=0.0)) > FLOAT16_MAX


def describe(kept: dict[str, list[str]]) -> str:
    return "; ".join(f"{op} ({', '.join(constants)})" for op, constants in sorted(kept.items()))


def proto_operations(block):
    """Every op of an ML program block (its specification), nested blocks included."""
    for op in block.operations:
        yield op
        for nested in op.blocks:
            yield from proto_operations(nested)


def float32_kept(program, weights_dir: Path) -> tuple[dict[str, list[str]], set[str]]:
    """In a saved program (the specification's MIL): the ops fed a float32 constant beyond float16's range,
    with those constants' names, and the names of every float32 weight that feeds only such ops.

    The values are read from the package's weight file, so what is accepted is proven from the files.
    """
    from coremltools.libmilstoragepython import _BlobStorageReader
    from coremltools.proto import MIL_pb2

    float32 = MIL_pb2.DataType.Value("FLOAT32")
    blocks = [block for function in program.functions.values() for block in function.block_specializations.values()]
    ops = [op for block in blocks for op in proto_operations(block)]
    readers: dict[str, object] = {}

    def large(value) -> bool:
        if value.type.tensorType.dataType != float32:
            return False
        if value.WhichOneof("value") == "blobFileValue":
            blob = value.blobFileValue
            path = str(weights_dir / blob.fileName.split("/")[-1])
            reader = readers.setdefault(path, _BlobStorageReader(path))
            return beyond_float16(reader.read_float_data(blob.offset))  # type: ignore[attr-defined]
        return beyond_float16(list(value.immediateValue.tensor.floats.values))

    constants = {op.outputs[0].name: op.attributes["val"] for op in ops if op.type == "const"}
    beyond = {name for name, value in constants.items() if large(value)}
    kept: dict[str, list[str]] = {}
    consumers: dict[str, set[str]] = {}
    for op in ops:
        if op.type == "const":
            continue
        name = op.outputs[0].name if op.outputs else op.type
        for argument in (a for binding in op.inputs.values() for a in binding.arguments):
            if argument.name:
                consumers.setdefault(argument.name, set()).add(name)
                if argument.name in beyond:
                    kept.setdefault(name, []).append(argument.name)
            elif argument.HasField("value") and large(argument.value):
                # An inline constant has no name of its own: it is named by its op and the value.
                values = np.asarray(argument.value.immediateValue.tensor.floats.values)
                kept.setdefault(name, []).append(f"inline {values.flat[np.argmax(np.abs(values))]:g}")
    allowed = {
        name
        for name, value in constants.items()
        if value.type.tensorType.dataType == float32 and consumers.get(name) and consumers[name] <= kept.keys()
    }
    return kept, allowed
