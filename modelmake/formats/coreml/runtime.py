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
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...bundle.archive import extract_archive
from ...errors import ModelmakeError, StepError
from ...kinds import Precision
from ..base import NotMeasurable
from . import fp16range

if TYPE_CHECKING:
    from ...plan import FormatSupport

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
    spec = model.get_spec()
    if len(spec.description.input) != 1 or len(spec.description.output) != 1:
        raise StepError(f"{what} must have exactly one input and one output")
    return spec


def _describe(feature) -> dict:
    from coremltools.proto import FeatureTypes_pb2

    kind = feature.type.WhichOneof("Type")
    if kind != "multiArrayType":
        return {"name": feature.name, "dtype": kind, "shape": []}
    array = feature.type.multiArrayType
    code = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    return {"name": feature.name, "dtype": ARRAY_DTYPES.get(code, code.lower()), "shape": [int(d) for d in array.shape]}


def io_details(path: Path | str, *, what: str) -> dict:
    """Name, dtype and shape of the input and output, as an app binds them."""
    with unpacked(path, what=what) as package:
        spec = _load_spec(package, what=what)
    return {"input": _describe(spec.description.input[0]), "output": _describe(spec.description.output[0])}


# --- structure ------------------------------------------------------------------------

def structural_check(path: Path | str, *, what: str, source_signature: dict, precision: Precision, palettize: int | None) -> dict | None:
    """What can be proven about a package without running it; a failed check is a StepError."""
    with unpacked(path, what=what) as package:
        spec = _load_spec(package, what=what)
        if spec.WhichOneof("Type") != "mlProgram":
            raise StepError(f"{what} is a {spec.WhichOneof('Type')} model, not an ML program: convert it with convert_to='mlprogram'")
        kept, allowed = ({}, set()) if precision == Precision.FP32 else fp16range.float32_kept(spec.mlProgram, _weights_dir(package))
    io = {"input": _describe(spec.description.input[0]), "output": _describe(spec.description.output[0])}
    problems = [p for role in ("input", "output") for p in _io_problems(role, io[role], source_signature[role])]
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


def _io_problems(role: str, actual: dict, expected: dict) -> list[str]:
    problems = []
    want_shape = [1, *expected["shape"][1:]] if expected["shape"] else []
    if len(actual["shape"]) != len(want_shape) or any(w is not None and w != a for w, a in zip(want_shape, actual["shape"], strict=True)):
        shown = ["?" if d is None else d for d in want_shape]
        problems.append(f"its {role} {actual['name']} has shape {actual['shape']}, the source's {expected['name']} {shown} (batch 1)")
    if actual["dtype"] != expected["dtype"]:
        problems.append(f"its {role} {actual['name']} is {actual['dtype']}, the source's {expected['name']} {expected['dtype']}")
    return problems


def _operations(block):
    for op in block.operations:
        yield op
        for nested in op.blocks:
            yield from _operations(nested)


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
        yield model, _describe(spec.description.input[0]), _describe(spec.description.output[0])


def _feed(model, inp: dict, out: dict, sample: np.ndarray, *, what: str) -> np.ndarray:
    try:
        result = model.predict({inp["name"]: sample[np.newaxis].astype(inp["dtype"])})
    except Exception as exc:
        raise StepError(f"{what} fails to run in Core ML ({type(exc).__name__}: {exc})") from exc
    return np.asarray(result[out["name"]], dtype=np.float32)


def predict(path: Path | str, x: np.ndarray, *, what: str, batch: int | None = None) -> np.ndarray:
    """Float outputs for float inputs ``x`` (already preprocessed), one sample at a time whatever ``batch`` asks
    (the input's batch is 1)."""
    _require_core_ml()
    with _loaded(path, what=what) as (model, inp, out):
        expected = tuple(inp["shape"][1:])
        if tuple(x.shape[1:]) != expected:
            raise StepError(f"{what} takes samples of shape {expected} but the evaluation data has {tuple(x.shape[1:])}")
        return np.concatenate([_feed(model, inp, out, sample, what=what) for sample in x])


def median_latency_ms(path: Path | str, *, what: str, sample: np.ndarray | None = None, warmup: int = 5, runs: int = 50) -> float:
    """Median wall time of one single-sample inference on this host's CPU."""
    _require_core_ml()
    with _loaded(path, what=what) as (model, inp, out):
        x = np.zeros(inp["shape"][1:], np.float32) if sample is None else sample
        timings = []
        for run in range(warmup + runs):
            start = time.perf_counter()
            _feed(model, inp, out, x, what=what)
            if run >= warmup:
                timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000.0)


def accelerator_coverage(path: Path | str, support: FormatSupport) -> dict | None:
    """None: Core ML places ops on the CPU, GPU or Neural Engine when the app loads the model, on the device."""
    return None
