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

# Ops whose float weights the quantizers turn into integers: what a reader means by "quantized".
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "LSTM", "GRU", "Attention"})
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


def _float_weighted(graph) -> list:
    """The weighted nodes of ``graph`` (not its bodies) that read no dequantized or integer input."""
    producers = {output: node.op_type for node in graph.node for output in node.output}
    return [
        node
        for node in graph.node
        if node.op_type in WEIGHTED_OPS and not any(producers.get(name) in QUANTIZED_OPS for name in node.input)
    ]


def float_weighted_nodes(model) -> list[str]:
    """``where/node`` of each weighted node inside a body that the quantizer left float."""
    return [f"{where}/{node.name or node.op_type}" for where, body in subgraphs(model.graph) for node in _float_weighted(body)]


def report_float_subgraph_nodes(model, precision: str) -> None:
    """Say which nodes inside subgraphs the quantizer left float; refuse a model in which it quantized nothing."""
    left = float_weighted_nodes(model)
    if not left:
        return
    shown = ", ".join(left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
    print(
        f"{precision}: ONNX Runtime's quantizer does not quantize inside this model's If/Loop/Scan bodies; "
        f"{len(left)} weighted node(s) there stay float: {shown}"
    )
    top = model.graph.node
    weighted = [node for node in top if node.op_type in WEIGHTED_OPS or node.op_type in QUANTIZED_OPS - {"QuantizeLinear", "DequantizeLinear"}]
    if len(_float_weighted(model.graph)) == len(weighted):
        raise StepError(
            f"{precision} quantized nothing: every weighted node sits inside an If/Loop/Scan body ({shown}), "
            "which ONNX Runtime's static quantizer leaves float. Use dynamic_int8 (which quantizes inside them), "
            "or re-export the model with the branch taken (a constant condition is inlined and quantized)"
        )
