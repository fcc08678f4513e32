"""Running .tflite files with LiteRT: load, feed float or integer inputs, time, report accelerator coverage."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import StepError
from ..base import tensor_signature

if TYPE_CHECKING:
    from ...kinds import Precision
    from ...plan import FormatSupport


def load_interpreter(path: Path | str, *, what: str, batch: int | None = None):
    """A ready LiteRT interpreter on one thread (repeatable figures); failing to load is the artifact's fault."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        if batch is not None:
            detail = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
        interpreter.allocate_tensors()
    except Exception as exc:
        raise StepError(f"{what} does not load in LiteRT ({type(exc).__name__}: {exc}): the file is corrupt or not a TFLite model") from exc
    if len(interpreter.get_input_details()) != 1 or len(interpreter.get_output_details()) != 1:
        raise StepError(f"{what} must have exactly one input and one output")
    return interpreter


def _quantize(x: np.ndarray, detail) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.floating):
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale


def predict(path: Path | str, x: np.ndarray, *, what: str, batch: int | None = None) -> np.ndarray:
    """Float outputs for float inputs ``x`` (already preprocessed), quantizing at the edges when the model is integer-only.

    The input is resized to ``batch`` samples (all of ``x`` when None) and
    ``x`` runs through it that many at a time.  A batch of 1 is the shape a
    file with a fixed batch of 1 already has, so resizing to it is a no-op there.
    """
    step = batch or max(len(x), 1)
    interpreter = load_interpreter(path, what=what, batch=step)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    expected = tuple(inp["shape"][1:])
    if tuple(x.shape[1:]) != expected:
        raise StepError(f"{what} takes samples of shape {expected} but the evaluation data has {tuple(x.shape[1:])}")
    outputs = []
    try:
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            if len(chunk) != step:
                interpreter.resize_tensor_input(inp["index"], [len(chunk), *expected])
                interpreter.allocate_tensors()
            interpreter.set_tensor(inp["index"], _quantize(chunk, inp))
            interpreter.invoke()
            outputs.append(_dequantize(interpreter.get_tensor(out["index"]), out))
    except Exception as exc:
        raise StepError(f"{what} fails to run in LiteRT ({type(exc).__name__}: {exc})") from exc
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


def median_latency_ms(path: Path | str, *, what: str, sample: np.ndarray | None = None, warmup: int = 5, runs: int = 50) -> float:
    """Median wall time of one single-sample inference on this host, one thread."""
    interpreter = load_interpreter(path, what=what, batch=1)
    inp = interpreter.get_input_details()[0]
    x = np.zeros(inp["shape"], np.float32) if sample is None else sample[np.newaxis]
    interpreter.set_tensor(inp["index"], _quantize(x, inp))
    timings = []
    for run in range(warmup + runs):
        start = time.perf_counter()
        interpreter.invoke()
        if run >= warmup:
            timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000.0)


def io_details(path: Path | str, *, what: str) -> dict:
    """The dtype and quantization of the input and output tensors, as an app needs them."""
    interpreter = load_interpreter(path, what=what)

    def describe(detail):
        scale, zero_point = detail["quantization"]
        entry = {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name, "shape": [int(d) for d in detail["shape_signature"]]}
        if not np.issubdtype(detail["dtype"], np.floating):
            entry["quantization"] = {"scale": repr(float(scale)), "zero_point": int(zero_point)}
        return entry

    return {"input": describe(interpreter.get_input_details()[0]), "output": describe(interpreter.get_output_details()[0])}


INTEGER_TYPES = (np.int8, np.uint8, np.int16, np.int32, np.int64, np.bool_)


def accelerator_coverage(path: Path | str, support: FormatSupport) -> dict | None:
    """Which ops the target's accelerator would run, and which would fall back to the CPU.

    gpu: what TFLite's model analyzer reports for GPU delegate compatibility.
    npu: integer-only NPU/DSP delegates take an op only when all its tensors are integer.
    """
    accelerator = support.accelerator
    if accelerator == "gpu":
        ops, fallback = _gpu_incompatible_ops(path)
    elif accelerator == "npu":
        ops, fallback = _float_ops(path)
    else:
        return None
    counts: dict[str, int] = {}
    for name in fallback:
        counts[name] = counts.get(name, 0) + 1
    return {"accelerator": accelerator, "ops": ops, "on_accelerator": ops - len(fallback), "fallback": dict(sorted(counts.items()))}


def _ops(path) -> list[dict]:
    """The model's ops as written in the file: no delegate has replaced any of them yet."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return interpreter._get_ops_details()  # the only API that lists a model's ops with their types


def _float_ops(path) -> tuple[int, list[str]]:
    ops = _ops(path)
    fallback = [
        op["op_name"]
        for op in ops
        if not all(issubclass(t, INTEGER_TYPES) for t in [*op["operand_types"], *op["result_types"]])
    ]
    return len(ops), fallback


def _gpu_incompatible_ops(path) -> tuple[int, list[str]]:
    """Ops outside the GPU delegate's table, plus any the model analyzer flags."""
    import contextlib
    import io
    import re

    import tensorflow as tf

    from .ops import GPU_DELEGATE_OPS

    ops = _ops(path)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_path=str(path), gpu_compatibility=True)
    flagged, current = set(), None
    for line in text.getvalue().splitlines():
        match = re.match(r"\s+Op#(\d+) (\w+)\(", line)
        if match:
            current = int(match.group(1))
        elif "GPU COMPATIBILITY WARNING" in line and current is not None:
            flagged.add(current)
    fallback = [op["op_name"] for op in ops if op["op_name"] not in GPU_DELEGATE_OPS or op["index"] in flagged]
    return len(ops), fallback


def structural_check(path: Path | str, *, what: str, source_signature: dict, precision: Precision, palettize: int | None) -> dict | None:
    """None: LiteRT runs the file on this host, which proves more than its structure."""
    return None


def source_signature(path: Path, *, what: str) -> dict:
    """The input and output of a .tflite file given as a model's source."""
    try:
        interpreter = load_interpreter(path, what=what)
    except StepError as exc:
        raise StepError(
            f"{exc}; replace {path} with a .tflite file written by the TFLite converter, or fix its path in models.yaml"
        ) from exc
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    return {
        "input": tensor_signature(inp["name"], inp["shape_signature"], inp["dtype"].__name__),
        "output": tensor_signature(out["name"], out["shape_signature"], out["dtype"].__name__),
    }


def weight_share(path: Path | str, precision: Precision, palettize: int | None = None) -> float | None:
    """Share of the weight bytes stored at ``precision`` (float16, or 8-bit integers); None for fp32."""
    from .weights import weight_share as share

    return share(path, precision, palettize)
