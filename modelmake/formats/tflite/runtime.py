"""Running .tflite files with LiteRT: bind inputs and outputs by name, feed float or integer inputs, time, report accelerator coverage.

Names: a file with exactly one signature (what the TFLite converter writes
from a SavedModel) is bound by that signature's input and output keys, which
are the SavedModel's own signature keys; a file without one (older
converters) by its tensor names.  Every artifact built from a source keeps
the same names, so the same tensors feed the source and its artifacts.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import StepError
from ...tensors import INPUTS, Tensors, shown
from ...tensors import concatenate as concatenate_tensors
from ...tensors import signature as tensors_signature
from ..base import tensor_signature

if TYPE_CHECKING:
    from ...kinds import Precision
    from ...plan import FormatSupport

DYNAMIC = -1  # a dimension the file lets the runtime choose, in shape_signature


@dataclass(frozen=True)
class Binding:
    """One input or output of the file: the name it is fed or read by, and its tensor in the main subgraph."""

    name: str
    index: int


class Model:
    """A loaded file with its inputs and outputs by name, in the file's order."""

    def __init__(self, interpreter, inputs: list[Binding], outputs: list[Binding], what: str):
        self.interpreter = interpreter
        self.inputs = inputs
        self.outputs = outputs
        self.what = what

    def details(self, binding: Binding) -> dict:
        """The tensor's details as the interpreter has them now (its shape follows every resize)."""
        for detail in [*self.interpreter.get_input_details(), *self.interpreter.get_output_details()]:
            if detail["index"] == binding.index:
                return detail
        raise KeyError(binding.index)

    def names(self, role: str) -> list[str]:
        return [binding.name for binding in (self.inputs if role == INPUTS else self.outputs)]


def load(path: Path | str, *, what: str) -> Model:
    """The file in a LiteRT interpreter on one thread (repeatable figures); failing to load is the file's fault."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
    except Exception as exc:
        raise StepError(f"{what} does not load in LiteRT ({type(exc).__name__}: {exc}): the file is corrupt or not a TFLite model") from exc
    inputs, outputs = bindings(interpreter)
    return Model(interpreter, inputs, outputs, what)


def bindings(interpreter) -> tuple[list[Binding], list[Binding]]:
    """By the only signature's keys where the file has one over its main graph; else by tensor names."""
    main_inputs = [detail["index"] for detail in interpreter.get_input_details()]
    main_outputs = [detail["index"] for detail in interpreter.get_output_details()]
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        inputs = [Binding(name, detail["index"]) for name, detail in runner.get_input_details().items()]
        outputs = [Binding(name, detail["index"]) for name, detail in runner.get_output_details().items()]
        # A signature over another subgraph than the one the interpreter runs cannot bind its tensors.
        if sorted(b.index for b in inputs) == sorted(main_inputs) and sorted(b.index for b in outputs) == sorted(main_outputs):
            return inputs, outputs
    return (
        [Binding(detail["name"], detail["index"]) for detail in interpreter.get_input_details()],
        [Binding(detail["name"], detail["index"]) for detail in interpreter.get_output_details()],
    )


def _checked_inputs(model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every input of the file by name, and nothing else: a clear error names the file's inputs."""
    expected = model.names(INPUTS)
    missing = [name for name in expected if name not in inputs]
    unknown = [name for name in inputs if name not in expected]
    if missing or unknown:
        problem = f"no array for its input {', '.join(missing)}" if missing else f"no input named {', '.join(unknown)}"
        raise StepError(
            f"{model.what} has {problem}: its inputs are {', '.join(expected)} (given {', '.join(inputs) or 'none'}); "
            "name the data's arrays and the io inputs after them"
        )
    return {name: np.asarray(inputs[name]) for name in expected}


def _has_batch_axis(detail: dict, values: np.ndarray) -> bool:
    """Whether the tensor's first dimension is the samples' (a scalar sample rate has none: one value per invoke)."""
    return len(detail["shape_signature"]) == values.ndim


def _chunk_size(model: Model, inputs: Mapping[str, np.ndarray], batch: int | None) -> int:
    """How many samples one invoke takes: ``batch`` (all when None), but a static batch dimension is never resized,
    and an input without a batch axis takes one sample at a time."""
    samples = max(len(next(iter(inputs.values()))), 1) if inputs else 1
    step = batch or samples
    for binding in model.inputs:
        detail = model.details(binding)
        if not _has_batch_axis(detail, inputs[binding.name]):
            return 1
        static = int(detail["shape_signature"][0]) if len(detail["shape_signature"]) else DYNAMIC
        if static != DYNAMIC:
            step = static
    return step


def _fitted_shape(model: Model, binding: Binding, values: np.ndarray) -> list[int]:
    """The tensor's shape for ``values``: dynamic dimensions take the data's sizes, static ones must match it."""
    signature = [int(d) for d in model.details(binding)["shape_signature"]]
    shape = list(values.shape)
    if len(signature) != len(shape) or any(s != DYNAMIC and s != d for s, d in zip(signature, shape, strict=True)):
        raise StepError(
            f"{model.what} takes input {binding.name} of shape {shown(signature)} but was given {tuple(shape)}: "
            "fix the data so each sample matches the model input"
        )
    return shape


def _resize(model: Model, chunk: Mapping[str, np.ndarray]) -> None:
    """Resize the inputs whose dynamic dimensions differ from the chunk's, and allocate once if any did."""
    resized = False
    for binding in model.inputs:
        shape = _fitted_shape(model, binding, chunk[binding.name])
        if list(model.details(binding)["shape"]) != shape:
            model.interpreter.resize_tensor_input(binding.index, shape)
            resized = True
    if resized:
        model.interpreter.allocate_tensors()


def _fed(values: np.ndarray, detail: dict) -> np.ndarray:
    """The values in the tensor's dtype: floats cast, quantized integers quantized, plain integers (ids, a rate) cast."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.floating) or not scale:
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def _read(values: np.ndarray, detail: dict) -> np.ndarray:
    """Float32 values of an output: quantized integers dequantized, others cast."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.floating) or not scale:
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _invoke(model: Model, chunk: Mapping[str, np.ndarray], *, batch_axis: bool = True) -> Tensors:
    """One invoke on a chunk of samples; without ``batch_axis`` each tensor is one sample fed as it is."""
    _resize(model, chunk)
    for binding in model.inputs:
        model.interpreter.set_tensor(binding.index, _fed(chunk[binding.name], model.details(binding)))
    model.interpreter.invoke()
    outputs = {}
    for binding in model.outputs:
        values = _read(model.interpreter.get_tensor(binding.index), model.details(binding))
        outputs[binding.name] = values if batch_axis and values.ndim else values[np.newaxis]
    return outputs


def _one_sample(model: Model, inputs: Mapping[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
    """Sample ``start`` of each input, keeping the batch axis only where the file has one."""
    return {
        binding.name: inputs[binding.name][start : start + 1]
        if _has_batch_axis(model.details(binding), inputs[binding.name])
        else inputs[binding.name][start]
        for binding in model.inputs
    }


def predict(path: Path | str, inputs: Mapping[str, np.ndarray], *, what: str, batch: int | None = None) -> Tensors:
    """Float32 outputs by name for preprocessed inputs by name, ``batch`` samples per invoke (all when None).

    Only dimensions the file declares dynamic are resized: a file with a
    static batch of 1 runs one sample at a time whatever ``batch`` asks, and
    a file whose graph mishandles a batch (a Reshape that writes batch 1) is
    run with ``batch=1`` by callers that detected it.  Integer-only files get
    their float inputs quantized and their outputs dequantized at the edges.
    """
    model = load(path, what=what)
    given = _checked_inputs(model, inputs)
    samples = len(next(iter(given.values()))) if given else 0
    step = _chunk_size(model, given, batch)
    batch_axes = [_has_batch_axis(model.details(b), given[b.name]) for b in model.inputs]
    parts = []
    try:
        for start in range(0, samples, step):
            if all(batch_axes):
                chunk = {name: values[start : start + step] for name, values in given.items()}
                parts.append(_run_chunk(model, chunk, step))
            else:
                # Outputs have a batch axis where some input has one (audio beside a scalar sample rate).
                parts.append(_invoke(model, _one_sample(model, given, start), batch_axis=any(batch_axes)))
    except StepError:
        raise
    except Exception as exc:
        raise StepError(f"{what} fails to run in LiteRT ({type(exc).__name__}: {exc})") from exc
    return concatenate_tensors(parts)


def _run_chunk(model: Model, chunk: Mapping[str, np.ndarray], step: int) -> Tensors:
    """A chunk shorter than a static batch is padded with zeros, and the padding's outputs dropped."""
    count = len(next(iter(chunk.values())))
    if count == step or not _static_batch(model):
        return _invoke(model, chunk)
    padded = {name: np.concatenate([values, np.zeros((step - count, *values.shape[1:]), values.dtype)]) for name, values in chunk.items()}
    return {name: values[:count] if len(values) == step else values for name, values in _invoke(model, padded).items()}


def _static_batch(model: Model) -> bool:
    return any(
        len(model.details(b)["shape_signature"]) and int(model.details(b)["shape_signature"][0]) != DYNAMIC for b in model.inputs
    )


def median_latency_ms(
    path: Path | str, *, what: str, sample: Mapping[str, np.ndarray] | None = None, warmup: int = 5, runs: int = 50
) -> float:
    """Median wall time of one single-sample inference on this host, one thread; ``sample``: one per input, no batch axis."""
    model = load(path, what=what)
    if sample is None:
        chunk = {b.name: np.zeros(_single_sample_shape(model.details(b)), model.details(b)["dtype"]) for b in model.inputs}
    else:
        given = _checked_inputs(model, sample)
        chunk = {
            b.name: given[b.name][np.newaxis] if len(model.details(b)["shape_signature"]) == given[b.name].ndim + 1 else given[b.name]
            for b in model.inputs
        }
    try:
        _invoke(model, chunk)
        timings = []
        for run in range(warmup + runs):
            start = time.perf_counter()
            model.interpreter.invoke()
            if run >= warmup:
                timings.append(time.perf_counter() - start)
    except StepError:
        raise
    except Exception as exc:
        raise StepError(f"{what} fails to run in LiteRT ({type(exc).__name__}: {exc})") from exc
    return float(np.median(timings) * 1000.0)


def _single_sample_shape(detail: dict) -> list[int]:
    """One sample: every dynamic dimension 1 (the batch too)."""
    return [1 if int(d) == DYNAMIC else int(d) for d in detail["shape_signature"]]


def _describe(name: str, detail: dict) -> dict:
    """As an app binds the tensor; unlike a signature, -1 marks a dynamic dimension, as the file writes it."""
    entry = {"name": name, "shape": [int(d) for d in detail["shape_signature"]], "dtype": np.dtype(detail["dtype"]).name}
    if detail["name"] != name:
        # Bound by a signature key: an app on the signature runner uses the name, one on tensor indices this.
        entry["tensor"] = detail["name"]
    scale, zero_point = detail["quantization"]
    if scale:  # an integer tensor an app quantizes into or dequantizes out of (not plain ids or counts)
        entry["quantization"] = {"scale": repr(float(scale)), "zero_point": int(zero_point)}
    return entry


def io_details(path: Path | str, *, what: str) -> dict:
    """Every input and output by name, with dtype, shape (None where dynamic) and an integer tensor's quantization."""
    model = load(path, what=what)
    return tensors_signature(
        [_describe(b.name, model.details(b)) for b in model.inputs],
        [_describe(b.name, model.details(b)) for b in model.outputs],
    )


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
    """The inputs and outputs of a .tflite file given as a model's source, by the names its artifacts keep."""
    try:
        model = load(path, what=what)
    except StepError as exc:
        raise StepError(
            f"{exc}; replace {path} with a .tflite file written by the TFLite converter, or fix its path in models.yaml"
        ) from exc

    def entry(binding: Binding) -> dict:
        detail = model.details(binding)
        return tensor_signature(binding.name, detail["shape_signature"], np.dtype(detail["dtype"]).name)

    return tensors_signature([entry(b) for b in model.inputs], [entry(b) for b in model.outputs])


def weight_share(path: Path | str, precision: Precision, palettize: int | None = None) -> float | None:
    """Share of the weight bytes stored at ``precision`` (float16, or 8-bit integers); None for fp32."""
    from .weights import weight_share as share

    return share(path, precision, palettize)
