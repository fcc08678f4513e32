"""Nodes inside the bodies of If, Loop and Scan.

ONNX Runtime's dynamic quantizer descends into these bodies when asked to;
its static QDQ quantizer (onnxruntime 1.2x) quantizes the top-level graph
only, so a convolution inside an ``If`` branch stays float.  ORT's basic
optimizations inline an ``If`` whose condition is a constant, which the
pre-processing runs first; what is left behind a data-dependent condition
is named in the log, so an artifact labelled int8 does not hide float work.
"""
from __future__ import annotations

from collections.abc import Iterator

from ...errors import StepError

# Ops whose constant float weights the quantizers turn into integers: what a reader means by "quantized".
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention"})
FLOAT_TYPES = frozenset({1, 10, 11, 16})  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
# What a quantized node looks like, in the QDQ or the integer-operator form.
QUANTIZED_OPS = frozenset(
    {"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"}
)


def subgraphs(graph, scope: str = "") -> Iterator[tuple[str, object]]:
    """(where, graph) for every body nested in ``graph``, however deep, named as ``node/attribute``."""
    for node in graph.node:
        for attribute in node.attribute:
            bodies = [attribute.g] if attribute.HasField("g") else list(attribute.graphs)
            for index, body in enumerate(bodies):
                where = f"{scope}{node.name or node.op_type}/{attribute.name}" + (f"[{index}]" if len(bodies) > 1 else "")
                yield where, body
                yield from subgraphs(body, where + "/")


def has_subgraphs(model) -> bool:
    return next(subgraphs(model.graph), None) is not None


def all_graphs(graph) -> list:
    """``graph`` and every body nested in it, outermost first."""
    return [graph, *(body for _, body in subgraphs(graph))]


def _float_weights(model) -> set[str]:
    """Float initializers of the graph and its bodies: a body reads the outer scope's by name."""
    return {t.name for graph in all_graphs(model.graph) for t in graph.initializer if t.data_type in FLOAT_TYPES}


def _float_weighted(graph, weights: set[str]) -> list:
    """The nodes of ``graph`` (not its bodies) that multiply by a float constant the quantizer could have made integer.

    A product of two activations (an attention score, say) has no weight and is not counted.
    """
    return [node for node in graph.node if node.op_type in WEIGHTED_OPS and any(name in weights for name in node.input[1:])]


def float_weighted_nodes(model) -> list[str]:
    """``where/node`` of each weighted node inside a body that the quantizer left float."""
    weights = _float_weights(model)
    return [f"{where}/{node.name or node.op_type}" for where, body in subgraphs(model.graph) for node in _float_weighted(body, weights)]


def _stores_integer_weights(graph) -> bool:
    """Whether any weight of ``graph`` (not its bodies) is kept as integers: dequantized from a constant, or read by an integer op."""
    integer_weights = {t.name for t in graph.initializer if t.data_type not in FLOAT_TYPES}
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS - {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}:
            return True
        if node.op_type == "DequantizeLinear" and node.input[0] in integer_weights:
            return True
    return False


def report_float_subgraph_nodes(model, precision: str) -> None:
    """Say which nodes inside subgraphs the quantizer left float; refuse a model in which it quantized nothing."""
    left = float_weighted_nodes(model)
    if not left:
        return
    shown = ", ".join(left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
    print(
        f"{precision}: ONNX Runtime's quantizer did not quantize inside this model's If/Loop/Scan bodies; "
        f"{len(left)} weighted node(s) there stay float: {shown}"
    )
    if not _stores_integer_weights(model.graph):
        raise StepError(
            f"{precision} quantized nothing: every weighted node sits inside an If/Loop/Scan body ({shown}), "
            "which ONNX Runtime's static quantizer leaves float. Use dynamic_int8 (which quantizes inside them), "
            "or re-export the model with the branch taken (a constant condition is inlined and quantized)"
        )
