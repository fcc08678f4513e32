"""Running .tflite files with LiteRT: load, feed float or integer inputs, time."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import StepError


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


def predict(path: Path | str, x: np.ndarray, *, what: str) -> np.ndarray:
    """Float outputs for float inputs ``x`` (already preprocessed), quantizing at the edges when the model is integer-only."""
    interpreter = load_interpreter(path, what=what, batch=len(x))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    expected = tuple(inp["shape"][1:])
    if tuple(x.shape[1:]) != expected:
        raise StepError(f"{what} takes samples of shape {expected} but the evaluation data has {tuple(x.shape[1:])}")
    try:
        interpreter.set_tensor(inp["index"], _quantize(x, inp))
        interpreter.invoke()
    except Exception as exc:
        raise StepError(f"{what} fails to run in LiteRT ({type(exc).__name__}: {exc})") from exc
    return _dequantize(interpreter.get_tensor(out["index"]), out)


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
