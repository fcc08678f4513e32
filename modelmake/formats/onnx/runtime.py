"""Running .onnx files with ONNX Runtime: load, feed named inputs, time, report accelerator coverage."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import StepError
from ...tensors import Tensors, concatenate, signature
from ..base import tensor_signature, tool_message
from . import feeds
from .subgraphs import all_graphs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ...kinds import Precision
    from ...plan import FormatSupport

# Samples per run when the batch dimension is dynamic: large enough that the
# evaluation set runs in a few calls, small enough that the activations of a
# large evaluation set do not have to fit in memory at once.
BATCH = 256


def _session_options(**settings):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread and sequential execution give repeatable outputs and latency figures.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.use_deterministic_compute = True
    options.log_severity_level = 3
    for name, value in settings.items():
        setattr(options, name, value)
    return options


def load_session(path: Path | str, *, what: str, **settings):
    """A ready ONNX Runtime session on the CPU provider; failing to load is the artifact's fault."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), sess_options=_session_options(**settings), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise StepError(
            f"{what} does not load in ONNX Runtime ({type(exc).__name__}: {exc}): the file is corrupt or not an ONNX model"
        ) from exc


def _layouts(path: Path | str, what: str) -> tuple[list[feeds.Layout], list[feeds.Layout]]:
    """The file's inputs and outputs with their batch axes (feeds.py), read from the graph without its weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise StepError(f"{what} is not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    return feeds.graph_layouts(model)


def _run(session, feed: dict, what: str) -> list:
    try:
        return session.run(None, feed)
    except Exception as exc:
        raise StepError(f"{what} fails to run in ONNX Runtime ({type(exc).__name__}: {tool_message(exc)})") from exc


def predict(path: Path | str, inputs: Mapping[str, np.ndarray], *, what: str, batch: int | None = None) -> Tensors:
    """Float32 outputs by name for preprocessed inputs by name, ``batch`` samples a run (None: as many as suit).

    Each array holds its samples along its first axis (one run in the input's
    own layout is taken too, as a stream feeds it); each input takes them
    along its own batch axis (feeds.py), cast to its type.  A file with a
    dynamic batch takes the samples in large runs; one with a fixed batch
    (usually 1, for static-shape accelerators) a batch at a time, the last
    padded and its padding dropped.
    """
    session = load_session(path, what=what)
    model_inputs, model_outputs = _layouts(path, what)
    inputs = feeds.samples_first(model_inputs, inputs)
    feeds.check_inputs(model_inputs, inputs, what=what)
    parts = []
    for feed, used in feeds.runs(model_inputs, model_outputs, inputs, batch or BATCH):
        results = _run(session, feed, what)
        parts.append({layout.name: feeds.from_model(layout, result, used) for layout, result in zip(model_outputs, results, strict=True)})
    if not parts:
        return {layout.name: np.zeros((0,), np.float32) for layout in model_outputs}
    return concatenate(parts)


def median_latency_ms(
    path: Path | str, *, what: str, sample: Mapping[str, np.ndarray] | None = None, warmup: int = 5, runs: int = 50
) -> float:
    """Median wall time of one single-sample inference on this host, one thread.

    ``sample`` holds one sample per input, without its batch axis; an input
    it lacks (or every input, when None) is fed zeros, a dynamic dimension as 1.
    """
    session = load_session(path, what=what)
    model_inputs, _ = _layouts(path, what)
    given = dict(sample or {})
    feeds.check_inputs(model_inputs, {name: np.asarray(value)[np.newaxis] for name, value in given.items()}, what=what, partial=True)
    fixed = feeds.fixed_batch(model_inputs)
    feed = {
        layout.name: feeds.one_sample(layout, given[layout.name], fixed) if layout.name in given else feeds.zeros(layout)
        for layout in model_inputs
    }
    timings = []
    for run in range(warmup + runs):
        start = time.perf_counter()
        _run(session, feed, what)
        if run >= warmup:
            timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000.0)


def io_details(path: Path | str, *, what: str) -> dict:
    """The name, dtype and shape of every input and output tensor (-1 for a dynamic dimension), as an app binds them.

    An integer tensor carries the scale and zero point of the DequantizeLinear
    that reads it (input) or the QuantizeLinear that writes it (output), when
    there is one.
    """
    import onnx

    model = _load_model(path, what)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}

    def quantization(name: str, op_type: str, as_input: bool) -> dict | None:
        for node in graph.node:
            if node.op_type != op_type:
                continue
            if (as_input and node.input[0] == name) or (not as_input and name in node.output):
                scale = initializers.get(node.input[1])
                zero_point = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
                if scale is None:
                    return None
                scale_value = onnx.numpy_helper.to_array(scale)
                zero_value = onnx.numpy_helper.to_array(zero_point) if zero_point is not None else np.zeros((), np.int64)
                if scale_value.size != 1 or zero_value.size != 1:
                    return None
                return {"scale": repr(float(scale_value.reshape(()))), "zero_point": int(zero_value.reshape(()))}
        return None

    def describe(value, as_input: bool) -> dict:
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        entry = {"name": value.name, "dtype": np.dtype(dtype).name, "shape": shape}
        if not np.issubdtype(dtype, np.floating):
            found = quantization(value.name, "DequantizeLinear" if as_input else "QuantizeLinear", as_input)
            if found:
                entry["quantization"] = found
        return entry

    inputs = [describe(v, True) for v in graph.input if v.name not in initializers]
    return signature(inputs, [describe(v, False) for v in graph.output])


def _load_model(path, what: str):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise StepError(f"{what} is not a readable ONNX file ({type(exc).__name__}: {exc})") from exc


def accelerator_coverage(path: Path | str, support: FormatSupport) -> dict | None:
    """Which nodes the target's accelerator would run, and which would fall back to the CPU.

    qnn: the graph ONNX Runtime hands to its execution providers (after the
    basic optimizations, which run before partitioning and fold shape
    arithmetic away once shapes are fixed) is checked node by node against the
    ops the QNN provider documents (ops.py).  In a quantized (QDQ)
    model, a node that reads or writes float tensors outside
    DequantizeLinear/QuantizeLinear pairs is counted as a fallback too, as
    "<op> (float)": the HTP runs quantized node groups, and a float island
    splits the graph between the NPU and the CPU.  A model with a dynamic
    input dimension falls back whole, as "<op> (dynamic shape)": the provider
    requires static shapes.  Nodes inside If/Loop/Scan bodies are counted
    and checked like the others: ONNX Runtime offers each body to the
    providers on its own, and the control-flow node itself, which the HTP
    lacks, stays on the CPU.
    """
    accelerator = support.accelerator
    if accelerator != "qnn":
        return None
    model = _as_partitioned(path)
    ops, fallback = _qnn_fallback(model)
    counts: dict[str, int] = {}
    for name in fallback:
        counts[name] = counts.get(name, 0) + 1
    return {"accelerator": accelerator, "ops": ops, "on_accelerator": ops - len(fallback), "fallback": dict(sorted(counts.items()))}


def _as_partitioned(path):
    """The model after ONNX Runtime's basic graph optimizations, as its providers are offered it."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="modelmake-onnx-") as scratch:
        optimized = Path(scratch) / "optimized.onnx"
        load_session(
            path,
            what=f"artifact {Path(path).name}",
            graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            optimized_model_filepath=str(optimized),
        )
        return onnx.load(str(optimized))


FLOAT_TYPES = frozenset({1, 10, 11, 16})  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _tensor_types(model) -> dict[str, int]:
    """Element type of every tensor the graph and its bodies name, where it can be known."""
    import onnx

    graph = model.graph
    graphs = all_graphs(graph)
    types: dict[str, int] = {t.name: t.data_type for g in graphs for t in g.initializer}
    # Q/DQ of the com.microsoft domain (16-bit) have no ONNX schema, so shape
    # inference cannot type their outputs; their types follow from their inputs.
    for node in (n for g in graphs for n in g.node):
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in types:
            types[node.output[0]] = types[node.input[2]]
        elif node.op_type == "DequantizeLinear" and node.input[1] in types:
            types[node.output[0]] = types[node.input[1]]
    seeded = onnx.ModelProto()
    seeded.CopyFrom(model)
    skip = {v.name for v in seeded.graph.value_info} | {t.name for t in graph.initializer}
    for name, elem_type in types.items():
        if name not in skip:
            seeded.graph.value_info.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    try:
        inferred = onnx.shape_inference.infer_shapes(seeded)
    except Exception:
        inferred = seeded
    values = [v for g in all_graphs(inferred.graph) for v in (*g.input, *g.output, *g.value_info)]
    for value in values:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types.setdefault(value.name, value.type.tensor_type.elem_type)
    return types


def _qnn_fallback(model) -> tuple[int, list[str]]:
    from .ops import QDQ_OPS, QNN_DYNAMIC_QUANT_OPS, QNN_HTP_OPS

    graph = model.graph
    # A body reads the tensors of the graphs around it by name, so one namespace serves them all.
    graphs = all_graphs(graph)
    nodes = [node for g in graphs for node in g.node]
    producers = {output: node for node in nodes for output in node.output}
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {v.name for g in graphs for v in g.output}
    initializers = {t.name: t for g in graphs for t in g.initializer}
    # Constants (a Resize's scales, a Pad's value) are parameters the op builders read, not float data flowing through.
    constants = set(initializers) | {n.output[0] for n in nodes if n.op_type == "Constant"}

    if _has_dynamic_input(graph, {t.name for t in graph.initializer}):
        # The provider's documented model requirement: no dynamic shapes, so it takes no node at all.
        return len(nodes), [f"{node.op_type} (dynamic shape)" for node in nodes]

    def fused_dynamic_quantization(node) -> bool:
        """ConvInteger/MatMulInteger fed by DynamicQuantizeLinear, on constant 8-bit weights, dequantized by Cast -> Mul."""
        weights = initializers.get(node.input[1]) if len(node.input) > 1 else None
        if getattr(producers.get(node.input[0]), "op_type", None) != "DynamicQuantizeLinear" or weights is None:
            return False
        if weights.data_type not in (2, 3) or (node.op_type == "MatMulInteger" and len(weights.dims) != 2):  # UINT8, INT8
            return False
        casts = consumers.get(node.output[0], [])
        muls = consumers.get(casts[0].output[0], []) if len(casts) == 1 and casts[0].op_type == "Cast" else []
        return bool(muls) and all(m.op_type == "Mul" for m in muls)

    def supported(node) -> bool:
        if node.op_type in QNN_DYNAMIC_QUANT_OPS:
            return fused_dynamic_quantization(node)
        if node.op_type == "DynamicQuantizeLinear":
            users = consumers.get(node.output[0], [])
            return bool(users) and all(u.op_type in QNN_DYNAMIC_QUANT_OPS and fused_dynamic_quantization(u) for u in users)
        return node.op_type in QNN_HTP_OPS.get(node.domain, ())

    quantized = any(node.op_type in QDQ_OPS for node in nodes)
    types = _tensor_types(model) if quantized else {}

    def is_float(name: str) -> bool:
        # An untyped tensor is taken to be float: better a false alarm than a missed CPU fallback.
        return bool(name) and name not in constants and types.get(name, 1) in FLOAT_TYPES

    def outside_qdq(node) -> bool:
        for name in node.input:
            if is_float(name) and getattr(producers.get(name), "op_type", None) != "DequantizeLinear":
                return True
        for name in node.output:
            if is_float(name) and (name in graph_outputs or any(c.op_type != "QuantizeLinear" for c in consumers.get(name, []))):
                return True
        return False

    fallback = []
    for node in nodes:
        if not supported(node):
            fallback.append(node.op_type)
        elif quantized and node.op_type not in QDQ_OPS and outside_qdq(node):
            fallback.append(f"{node.op_type} (float)")
    return len(nodes), fallback


def _has_dynamic_input(graph, initializers) -> bool:
    for value in graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        if any(not (d.HasField("dim_value") and d.dim_value > 0) for d in value.type.tensor_type.shape.dim):
            return True
    return False


def structural_check(path: Path | str, *, what: str, source_signature: dict, precision: Precision, palettize: int | None) -> dict | None:
    """None: ONNX Runtime runs the file on this host, which proves more than its structure."""
    return None


def load_checked(path: Path, *, what: str, advice: str):
    """The ONNX model at ``path`` once it passes the checker with strict shape inference; else a StepError with ``advice``."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise StepError(f"{what} fails the ONNX checker ({tool_message(exc, first=True)}): {advice}") from exc
    return model


def source_signature(path: Path, *, what: str) -> dict:
    """The inputs and outputs (tensors.signature) of an ONNX file that passes the checker and strict shape inference."""
    import onnx.helper

    model = load_checked(path, what=what, advice="re-export it from its framework, or fix its path in models.yaml")
    initializers = {t.name for t in model.graph.initializer}

    def tensor(value) -> dict:
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim]
        return tensor_signature(value.name, shape, onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name)

    inputs = [tensor(v) for v in model.graph.input if v.name not in initializers]
    return signature(inputs, [tensor(v) for v in model.graph.output])


def weight_share(path: Path | str, precision: Precision, palettize: int | None = None) -> float | None:
    """Share of the weight bytes stored at ``precision`` (float16, or 8-bit integers); None for fp32."""
    from .weights import weight_share as share

    return share(path, precision, palettize)
