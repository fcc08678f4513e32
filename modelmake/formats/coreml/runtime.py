"""Core ML packages (shipped as zipped .mlpackage directories): unpack, inspect, run where Core ML exists.

Core ML runs on macOS and iOS only. On any other host coremltools reads and
writes packages but cannot compile or run them, so ``structural_check`` proves
what can be proven from the files (the package loads, its inputs and outputs
match the source, its weights carry the requested precision) and ``predict``
and ``median_latency_ms`` raise ``NotMeasurable`` instead of inventing figures.
"""
from __future__ import annotations

import math
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ... import tensors
from ...bundle.archive import extract_archive
from ...errors import ModelmakeError, StepError
from ...kinds import Precision
from ..base import NotMeasurable
from . import fp16range

if TYPE_CHECKING:
    from ...plan import FormatSupport
    from ...tensors import Tensors

CHECKED = "structure only: Core ML runs on macOS/iOS, not on this host"
QUANTIZE_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")
PALETTE_OPS = ("constexpr_lut_to_dense",)
# Core ML array types, by the name of their ArrayFeatureType.ArrayDataType value
ARRAY_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "INT32": "int32", "INT8": "int8"}


# --- unpacking and loading ------------------------------------------------------------

@contextmanager
def unpacked(path: Path | str, *, what: str):
    """The .mlpackage directory inside the archive at ``path``, unpacked to a temporary place."""
    with tempfile.TemporaryDirectory(prefix="modelmake-coreml-") as scratch:
        root = Path(scratch) / "archive"
        try:
            extract_archive(Path(path), root)
        except ModelmakeError as exc:
            raise StepError(f"{what} does not unpack: {exc}") from exc
        packages = sorted({p.parent for p in root.rglob("Manifest.json")}, key=lambda p: len(p.parts))
        if not packages:
            raise StepError(f"{what} holds no .mlpackage (no Manifest.json in {Path(path).name}): the file is not a zipped Core ML package")
        yield packages[0]


def _load_spec(package: Path, *, what: str):
    import coremltools as ct

    try:
        # skip_model_load: compiling needs Core ML itself, which only macOS has.
        model = ct.models.MLModel(str(package), skip_model_load=True)
    except Exception as exc:
        raise StepError(
            f"{what} does not load in coremltools ({type(exc).__name__}: {exc}): the package is corrupt or not a Core ML model"
        ) from exc
    return model.get_spec()


def _describe(feature) -> dict:
    from coremltools.proto import FeatureTypes_pb2

    kind = feature.type.WhichOneof("Type")
    if kind != "multiArrayType":
        return {"name": feature.name, "dtype": kind, "shape": []}
    array = feature.type.multiArrayType
    code = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    return {"name": feature.name, "dtype": ARRAY_DTYPES.get(code, code.lower()), "shape": [int(d) for d in array.shape]}


def _io(spec) -> dict:
    return tensors.signature(map(_describe, spec.description.input), map(_describe, spec.description.output))


def io_details(path: Path | str, *, what: str) -> dict:
    """Name, dtype and shape of every input and output, in the package's order, as an app binds them."""
    with unpacked(path, what=what) as package:
        spec = _load_spec(package, what=what)
    return _io(spec)


# --- structure ------------------------------------------------------------------------

def structural_check(path: Path | str, *, what: str, source_signature: dict, precision: Precision, palettize: int | None) -> dict | None:
    """What can be proven about a package without running it; a failed check is a StepError."""
    with unpacked(path, what=what) as package:
        spec = _load_spec(package, what=what)
        if spec.WhichOneof("Type") != "mlProgram":
            raise StepError(f"{what} is a {spec.WhichOneof('Type')} model, not an ML program: convert it with convert_to='mlprogram'")
        kept, allowed = ({}, set()) if precision == Precision.FP32 else fp16range.float32_kept(spec.mlProgram, _weights_dir(package))
    io = _io(spec)
    problems = [p for role in (tensors.INPUTS, tensors.OUTPUTS) for p in _io_problems(role, io[role], source_signature[role])]
    if problems:
        raise StepError(f"{what} does not match its source model: {'; '.join(problems)}")

    weights = _weights(spec.mlProgram, float32_kept=allowed)
    problem = _precision_problem(weights, precision, palettize)
    if problem:
        raise StepError(f"{what} was built as {precision}{f' palettized to {palettize} bits' if palettize else ''} but {problem}")
    # Only where there are such ops, so other records keep their bytes.
    extra = {"float32_ops": {op: sorted(c) for op, c in sorted(kept.items())}} if kept else {}
    return {
        "loads": True,
        "io_matches": True,
        "io": io,
        "weights": _weights_summary(weights),
        "weight_tensors": {"compressed": len(weights["quantized"]) + len(weights["palettized"]), "float": len(weights["float"])},
        "ops": weights["ops"],
        "checked": CHECKED,
        **extra,
    }


def _weights_dir(package: Path) -> Path:
    return package / "Data" / "com.apple.CoreML" / "weights"


def _io_problems(role: str, actual: list[dict], expected: list[dict]) -> list[str]:
    """What differs between the package's inputs (or outputs) and the source's, one entry per tensor, by name."""
    found = {entry["name"]: entry for entry in actual}
    wanted = [entry["name"] for entry in expected]
    problems = [f"the source's {role[:-1]} {name} is missing" for name in wanted if name not in found]
    problems += [f"its {role[:-1]} {name} is not the source's" for name in found if name not in wanted]
    for source in expected:
        if source["name"] in found:
            problems += _tensor_problems(role[:-1], found[source["name"]], source)
    return problems


def _tensor_problems(role: str, actual: dict, expected: dict) -> list[str]:
    """Rank, fixed dimensions and dtype family of one tensor.  Where the source's dimension is dynamic the package
    holds a fixed one (1 for the batch, or the shape io declares); an output the package gives no shape
    (coremltools could not infer it) is checked by its dtype alone."""
    name, problems = actual["name"], []
    have, want = actual["shape"], expected["shape"]
    if have or role == "input":
        if len(have) != len(want) or any(w is not None and w != h for w, h in zip(want, have, strict=False)):
            problems.append(f"{role} {name} has shape {tensors.shown(have)}, the source's {tensors.shown(want)}")
    if _dtype_family(actual["dtype"]) != _dtype_family(expected["dtype"]):
        problems.append(f"{role} {name} is {actual['dtype']}, the source's {expected['dtype']}")
    return problems


def _dtype_family(dtype: str) -> str:
    """float or integer: Core ML features are float32 for every float source and int32 for every integer one."""
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return dtype  # not an array (an image or a dictionary feature)
    return {"f": "float", "i": "integer", "u": "integer"}.get(kind, dtype)


_operations = fp16range.proto_operations


def _weights(program, float32_kept: AbstractSet[str] = frozenset()) -> dict:
    """The program's weight tensors by kind, read from the specification (the MIL ops).

    ``float32_kept``: float32 weights of ops a float16 program keeps in float32 (see fp16range); they
    count as stored weights but not as "float" ones, whose precision must be the program's.
    """
    from coremltools.proto import MIL_pb2

    def tensor(value_type) -> tuple[str, list[int]]:
        t = value_type.tensorType
        return MIL_pb2.DataType.Name(t.dataType), [int(d.constant.size) for d in t.dimensions]

    ops = [op for function in program.functions.values() for block in function.block_specializations.values() for op in _operations(block)]
    types = {out.name: tensor(out.type) for op in ops for out in op.outputs}
    producers = {out.name: op for op in ops for out in op.outputs}

    def param(op, name):
        """(dtype, shape) of a constexpr op's parameter: an attribute up to iOS17, an input from iOS18."""
        if name in op.attributes:
            return tensor(op.attributes[name].type)
        if name in op.inputs and op.inputs[name].arguments:
            argument = op.inputs[name].arguments[0]
            return types.get(argument.name) if argument.name else tensor(argument.value.type)
        return None

    def arg_name(op, name):
        arguments = op.inputs[name].arguments if name in op.inputs else ()
        return arguments[0].name if arguments and arguments[0].name else None

    # "stored": (how, bytes) of each weight, as weight_share counts them
    found: dict = {"float": [], "quantized": [], "palettized": [], "ops": 0, "stored": []}
    lut_feeders = set()
    for op in ops:
        if op.type in PALETTE_OPS:
            lut_dtype, lut_shape = param(op, "lut")
            # iOS16/17 store one table (2^n,), iOS18 (..., 2^n, vector size).
            entries = lut_shape[0] if len(lut_shape) == 1 else lut_shape[-2]
            feeder = producers.get(arg_name(op, "lut"))
            if feeder is not None and feeder.type in QUANTIZE_OPS:
                lut_feeders.add(feeder.outputs[0].name)
                lut_dtype = param(feeder, "data")[0]
            found["palettized"].append({"bits": int(math.log2(entries)), "lut_dtype": lut_dtype, "dtype": types[op.outputs[0].name][0]})
            found["stored"].append(("palettized", math.prod(types[op.outputs[0].name][1]) * found["palettized"][-1]["bits"] / 8))
    for op in ops:
        if op.type in QUANTIZE_OPS and op.outputs[0].name not in lut_feeders:
            data = param(op, "quantized_data" if op.type == "constexpr_affine_dequantize" else "data")
            scale = param(op, "scale")
            found["quantized"].append(
                {"data": data[0], "per_channel": math.prod(scale[1]) > 1, "dtype": types[op.outputs[0].name][0]}
            )
            found["stored"].append((data[0], math.prod(data[1]) * _ITEM_BYTES.get(data[0], 4)))
        elif op.type == "const":
            value = op.attributes["val"]
            dtype, _ = tensor(value.type)
            # Weights are what coremltools stores in weights/weight.bin; scalars and
            # small parameters stay inline in the specification.
            if dtype in ("FLOAT16", "FLOAT32") and value.WhichOneof("value") == "blobFileValue":
                if op.outputs[0].name not in float32_kept:
                    found["float"].append(dtype)
                found["stored"].append((dtype, math.prod(tensor(value.type)[1]) * _ITEM_BYTES[dtype]))
        elif not op.type.startswith("constexpr_"):
            found["ops"] += 1
    return found


# Bytes per element of the MIL data types weights are stored in (sub-byte types as fractions).
_ITEM_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT8": 1, "UINT8": 1, "INT4": 0.5, "UINT4": 0.5}


def weight_share(path: Path | str, precision: Precision, palettize: int | None = None) -> float | None:
    """Share of the weight bytes stored at ``precision``, read from the package without running it; None for fp32.

    A palettized weight counts as compressed for a palettized variant, whatever the precision of its table.
    """
    if precision == Precision.FP32:
        return None
    what = Path(path).name
    with unpacked(path, what=what) as package:
        spec = _load_spec(package, what=what)
    stored = _weights(spec.mlProgram)["stored"]
    wanted = {"FLOAT16"} if precision == Precision.FP16 else {"INT8", "UINT8"}
    if palettize:
        wanted.add("palettized")
    total = sum(size for _, size in stored)
    return sum(size for how, size in stored if how in wanted) / total if total else None


def _float_kind(dtypes) -> str:
    kinds = sorted({"fp16" if d == "FLOAT16" else "fp32" for d in dtypes})
    return "/".join(kinds) if kinds else "none"


def _weights_summary(weights: dict) -> str:
    if weights["palettized"]:
        bits = sorted({p["bits"] for p in weights["palettized"]})
        tables = {p["lut_dtype"] for p in weights["palettized"]}
        text = f"palettized {'/'.join(map(str, bits))}-bit"
        return text + (", int8 look-up tables" if tables == {"INT8"} else "")
    if weights["quantized"]:
        data = sorted({q["data"].lower() for q in weights["quantized"]})
        granularity = "per-channel" if any(q["per_channel"] for q in weights["quantized"]) else "per-tensor"
        return f"{'/'.join(data)} (linear, {granularity})"
    return _float_kind(weights["float"])


def _precision_problem(weights: dict, precision: Precision, palettize_bits: int | None) -> str | None:
    compute = "fp32" if precision == Precision.FP32 else "fp16"
    float_kinds = _float_kind(weights["float"] + [p["dtype"] for p in weights["palettized"]] + [q["dtype"] for q in weights["quantized"]])
    if float_kinds not in (compute, "none"):
        return f"its weights are {float_kinds}, not {compute}"
    if palettize_bits:
        if not weights["palettized"]:
            return "no weight is palettized (constexpr_lut_to_dense)"
        wrong = sorted({p["bits"] for p in weights["palettized"]} - {palettize_bits})
        if wrong:
            return f"weights are palettized to {'/'.join(map(str, wrong))} bits"
        if precision.weights_int8 and any(p["lut_dtype"] != "INT8" for p in weights["palettized"]):
            return "its look-up tables are not int8"
        return None
    if weights["palettized"]:
        return "its weights are palettized"
    if precision.weights_int8:
        if not weights["quantized"]:
            return "no weight is quantized (constexpr_affine_dequantize or constexpr_blockwise_shift_scale)"
        wrong = sorted({q["data"] for q in weights["quantized"]} - {"INT8"})
        if wrong:
            return f"its quantized weights hold {'/'.join(wrong).lower()} data, not int8"
        return None
    if weights["quantized"]:
        return "its weights are quantized"
    return None


# --- running (macOS only) -------------------------------------------------------------

def _require_core_ml() -> None:
    if sys.platform != "darwin":
        raise NotMeasurable(f"needs macOS: Core ML models do not run on {platform.system()}")


@contextmanager
def _loaded(path: Path | str, *, what: str):
    import coremltools as ct

    with unpacked(path, what=what) as package:
        spec = _load_spec(package, what=what)
        try:
            # The CPU alone, like the other formats' figures: repeatable and comparable between variants.
            model = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit.CPU_ONLY)
        except Exception as exc:
            raise StepError(f"{what} does not compile in Core ML ({type(exc).__name__}: {exc})") from exc
        yield model, _io(spec)


def _feed(model, io: dict, samples: Mapping[str, np.ndarray], *, what: str) -> Tensors:
    """One call of the model on samples holding the inputs' fixed batch; its outputs as float32."""
    # Cast to each input's type: an int64 input (a sample rate) is int32 in Core ML, which has no int64 features.
    feed = {entry["name"]: samples[entry["name"]].astype(entry["dtype"]) for entry in io[tensors.INPUTS]}
    try:
        result = model.predict(feed)
    except Exception as exc:
        raise StepError(f"{what} fails to run in Core ML ({type(exc).__name__}: {exc})") from exc
    return {entry["name"]: np.asarray(result[entry["name"]], dtype=np.float32) for entry in io[tensors.OUTPUTS]}


def _check_samples(io: dict, inputs: Mapping[str, np.ndarray], *, what: str) -> None:
    """Every input of the package, each sample of the shape it fixes (after the batch)."""
    missing = [entry["name"] for entry in io[tensors.INPUTS] if entry["name"] not in inputs]
    if missing:
        raise StepError(f"{what} takes inputs {', '.join(missing)}, which the data does not hold (it holds {', '.join(inputs)})")
    for entry in io[tensors.INPUTS]:
        expected, given = tuple(entry["shape"][1:]), tuple(inputs[entry["name"]].shape[1:])
        if given != expected:
            raise StepError(f"{what} takes samples of shape {expected} for input {entry['name']} but the data has {given}")


def _package_batch(io: dict) -> int:
    """How many samples one call takes: the batch the inputs fix (1 unless io declares another)."""
    shape = io[tensors.INPUTS][0]["shape"] if io[tensors.INPUTS] else []
    return shape[0] if shape else 1


def predict(path: Path | str, inputs: Mapping[str, np.ndarray], *, what: str, batch: int | None = None) -> Tensors:
    """Float32 outputs by name for preprocessed inputs by name, as many samples per call as the package's fixed
    batch takes, whatever ``batch`` asks (Core ML has no flexible shapes here)."""
    _require_core_ml()
    with _loaded(path, what=what) as (model, io):
        _check_samples(io, inputs, what=what)
        step, count = _package_batch(io), tensors.samples(inputs)
        parts = []
        for start in range(0, count, step):
            chunk = tensors.rows(inputs, start, start + step)
            short = step - tensors.samples(chunk)
            if short:  # the last call of a fixed batch: padded with its last sample, whose outputs are dropped
                chunk = {name: np.concatenate([array, np.repeat(array[-1:], short, axis=0)]) for name, array in chunk.items()}
            outputs = _feed(model, io, chunk, what=what)
            parts.append(tensors.rows(outputs, 0, step - short))
        return tensors.concatenate(parts)


def median_latency_ms(
    path: Path | str, *, what: str, sample: Mapping[str, np.ndarray] | None = None, warmup: int = 5, runs: int = 50
) -> float:
    """Median wall time of one single-sample inference on this host's CPU; ``sample``: one sample per input,
    without its batch dimension (zeros when None)."""
    _require_core_ml()
    with _loaded(path, what=what) as (model, io):
        batch = _package_batch(io)
        if sample is None:
            sample = {entry["name"]: np.zeros(entry["shape"][1:], entry["dtype"]) for entry in io[tensors.INPUTS]}
        inputs = {name: np.repeat(np.asarray(array)[np.newaxis], batch, axis=0) for name, array in sample.items()}
        _check_samples(io, inputs, what=what)
        timings = []
        for run in range(warmup + runs):
            start = time.perf_counter()
            _feed(model, io, inputs, what=what)
            if run >= warmup:
                timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000.0)


def accelerator_coverage(path: Path | str, support: FormatSupport) -> dict | None:
    """None: Core ML places ops on the CPU, GPU or Neural Engine when the app loads the model, on the device."""
    return None
