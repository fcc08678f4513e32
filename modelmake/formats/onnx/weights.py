"""An ONNX graph's weights: the precision they are really stored at, and those float16 cannot hold.

Weights are the initializers and the values of Constant nodes, in the main
graph and in every subgraph (``If``/``Loop`` bodies), that are floating point
or 8-bit (quantized) integers, plus the int32 biases a QDQ graph dequantizes;
int64 shape constants are not weights.  ORT's quantizers skip ops they have
no pattern for and everything inside subgraphs they do not visit, so an
artifact labelled int8 can hold mostly float weights.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...kinds import Precision

FLOAT16_MAX = 65504.0


def _graphs(graph) -> Iterator:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def _constants(graph) -> Iterator[tuple[str, Any]]:
    """(name, TensorProto) of the graph's own initializers and Constant node values."""
    for tensor in graph.initializer:
        yield tensor.name, tensor
    for node in graph.node:
        yield from _constants_of(node)


def _nbytes(tensor) -> int:
    import onnx

    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def weight_bytes(model) -> dict[str, int]:
    """Bytes of weights by storage kind: "float16", "int8" (any 8-bit integer), "other"."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    eight_bit = {TensorProto.INT8, TensorProto.UINT8}
    counted = {"float16": 0, "int8": 0, "other": 0}
    for graph in _graphs(model.graph):
        dequantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear" and node.input}
        for name, tensor in _constants(graph):
            if tensor.data_type == TensorProto.FLOAT16:
                counted["float16"] += _nbytes(tensor)
            elif tensor.data_type in eight_bit:
                counted["int8"] += _nbytes(tensor)
            elif tensor.data_type in floats or (tensor.data_type == TensorProto.INT32 and name in dequantized):
                counted["other"] += _nbytes(tensor)
    return counted


def weight_share(path: Path | str, precision: Precision, palettize: int | None = None) -> float | None:
    """Bytes of weights stored at ``precision`` over all weight bytes; None for fp32 (or a graph without weights)."""
    import onnx

    if precision == Precision.FP32:
        return None
    counted = weight_bytes(onnx.load(str(path)))
    total = sum(counted.values())
    if total == 0:
        return None
    return counted["float16" if precision == Precision.FP16 else "int8"] / total


def beyond_float16(model) -> dict[str, list[str]]:
    """Nodes fed a float constant float16 cannot hold (|x| > 65504), with those constants' names.

    Such a Constant node becomes an initializer of its graph: the float16
    converter casts every node output down to float16 on the way to the
    next node, even between two nodes it keeps in float32, but feeds
    initializers to the nodes it keeps as they are.  Unnamed nodes get a
    name, which the converter's block list needs.
    """
    from onnx import TensorProto, numpy_helper

    def too_large(tensor) -> bool:
        if tensor.data_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            return False
        values = numpy_helper.to_array(tensor)
        finite = values[np.isfinite(values)]
        return bool(finite.size) and float(np.max(np.abs(finite))) > FLOAT16_MAX

    found: dict[str, list[str]] = {}
    outer: set[str] = set()
    for index, graph in enumerate(list(_graphs(model.graph))):
        lifted = [(node, tensor) for node in graph.node for name, tensor in _constants_of(node) if too_large(tensor)]
        for node, tensor in lifted:
            value = graph.initializer.add()
            value.CopyFrom(tensor)
            value.name = node.output[0]
            graph.node.remove(node)
        large = outer | {name for name, tensor in _constants(graph) if too_large(tensor)}
        # A subgraph reads the constants of the graphs around it.
        outer = large
        for position, node in enumerate(graph.node):
            fed = [name for name in node.input if name in large]
            if fed:
                if not node.name:
                    node.name = f"fp32_kept_{index}_{position}"
                found[node.name] = fed
    return found


def _constants_of(node) -> Iterator[tuple[str, Any]]:
    if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.HasField("t"):
                yield node.output[0], attribute.t
