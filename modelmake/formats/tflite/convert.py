"""TFLite conversion: SavedModel -> .tflite at the variant's precision.

fp32 converts as is; fp16 stores float16 weights; dynamic_int8 stores int8
weights with float activations; int8 quantizes weights and activations from
the calibration data, with int8 input and output tensors when the target
profile asks for integer-only I/O.  A .tflite source ships as it is at fp32
and is quantized by LiteRT Quantizer (``quantizer.py``) at the others.

Inputs and outputs keep the SavedModel's signature keys (the converter writes
them as the file's signature), and calibration feeds every input by those
keys.  Inputs whose io declares a ``shape`` are converted with it fixed, so
accelerators that need static shapes see no dynamic dimension there.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import fsutil
from ...contracts import ArtifactRecord, ConvertJob, SourceRecord
from ...errors import StepError
from ...kinds import Precision
from ...plan import InputSpec
from ...steps._arrays import calibration_samples
from ...tensors import INPUTS, Tensors, entry, shown
from ...versions import tool_versions
from ..base import tool_message
from . import TfliteSettings
from .runtime import io_details


def convert(job: ConvertJob) -> None:
    settings: TfliteSettings = job.support.settings
    integer_io = settings.integer_io and job.precision == Precision.INT8
    record = SourceRecord.read(job.source_record)
    samples = calibration_samples(job, record.signature) if job.precision == Precision.INT8 else None
    fixed = fixed_shapes(job.inputs, record.signature)
    extra: dict = {}
    tools = tool_versions("tensorflow")
    if record.kind == "tflite" and job.precision == Precision.FP32:
        source = Path(record.model).read_bytes()
        fsutil.write_bytes(job.out, with_fixed_input_shapes(source, fixed, what=f"tflite source {record.path}") if fixed else source)
    elif record.kind == "tflite":
        from .quantizer import quantize

        what = f"tflite source {record.path}"
        quantized = quantize(
            with_fixed_input_shapes(Path(record.model).read_bytes(), fixed, what=what),
            job.precision,
            per_channel=job.per_channel,
            integer_io=integer_io,
            calibration=samples,
            what=what,
        )
        if job.precision == Precision.FP16:
            _check_float16_range(quantized.model)
        fsutil.write_bytes(job.out, quantized.model)
        extra = {"quantization": quantized.summary}
        tools = tool_versions("ai-edge-quantizer", "ai-edge-litert")
    else:
        fsutil.write_bytes(
            job.out,
            _convert_saved_model(
                Path(record.model), job.precision, integer_io, job.per_channel, samples, fixed, sparse=_sparse(job)
            ),
        )
    _check_fixed_shapes(job.out, fixed, what=job.artifact_id)
    ArtifactRecord(
        precision=str(job.precision),
        integer_io=integer_io,
        per_channel=job.per_channel,
        delegates=list(settings.delegates),
        io=io_details(job.out, what=f"converted {Path(job.out).name}"),
        sha256=fsutil.sha256_file(job.out),
        size=Path(job.out).stat().st_size,
        tools=tools,
        extra=extra,
    ).write(job.out_record)


def _sparse(job: ConvertJob) -> bool:
    """Whether a pruned variant's zeros are stored sparse: at fp32 and fp16 only.  At the int8 kinds the converter's
    sparse weights are larger than dense int8 ones and XNNPACK (LiteRT 2.x) refuses to prepare their ops; they stay dense."""
    return job.prune is not None and job.precision in (Precision.FP32, Precision.FP16)


def fixed_shapes(inputs: tuple[InputSpec, ...], signature: dict) -> dict[str, tuple[int, ...]]:
    """The shapes io fixes, by the model's input names; each must keep the rank and every static dimension of the model's."""
    fixed = {}
    for spec in inputs:
        if spec.shape is None:
            continue
        model_input = entry(signature, INPUTS, spec.name)
        shape, declared = tuple(spec.shape), model_input["shape"]
        if len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape, strict=True)):
            raise StepError(
                f"io fixes input {model_input['name']} to {shape}, but the model takes {shown(declared)}: "
                "give a shape of the same rank that keeps every dimension the model fixes"
            )
        fixed[model_input["name"]] = shape
    return fixed


def with_fixed_input_shapes(data: bytes, fixed: dict[str, tuple[int, ...]], *, what: str) -> bytes:
    """A .tflite file whose named inputs declare the fixed shapes (shape and shape signature) instead of dynamic ones.

    The runtime then propagates them through the graph when it allocates the
    tensors, as it does for a file converted with static shapes.
    """
    if not fixed:
        return data
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    from .runtime import bindings

    inputs, _ = bindings(Interpreter(model_content=data))
    index = {binding.name: binding.index for binding in inputs}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    for name, shape in fixed.items():
        tensor = model.subgraphs[0].tensors[index[name]]
        tensor.shape = np.array(shape, np.int32)
        tensor.shapeSignature = None  # no signature: every dimension is the static shape
    try:
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    except Exception as exc:
        raise StepError(f"{what} could not be written with fixed input shapes ({tool_message(exc)}): remove shape from its io") from exc


def _converter(directory: Path, fixed: dict[str, tuple[int, ...]]):
    """The TFLite converter on the SavedModel's serving signature, with the fixed shapes applied to its inputs.

    A fixed shape goes in through a concrete function of the signature with
    those TensorSpecs, called by the same keyword arguments: the converter
    writes its keys as the file's signature, as it does from the SavedModel.
    """
    import tensorflow as tf

    if not fixed:
        return tf.lite.TFLiteConverter.from_saved_model(str(directory))
    loaded = tf.saved_model.load(str(directory))
    serving = loaded.signatures["serving_default"]
    specs = dict(serving.structured_input_signature[1])
    for name, shape in fixed.items():
        specs[name] = tf.TensorSpec(shape, specs[name].dtype, name=name)
    concrete = tf.function(lambda **tensors: serving(**tensors)).get_concrete_function(**specs)
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded)


def _check_fixed_shapes(path: str, fixed: dict[str, tuple[int, ...]], *, what: str) -> None:
    """The converted file must take the fixed shapes under the source's names (what an app binds)."""
    if not fixed:
        return
    inputs = {entry["name"]: entry["shape"] for entry in io_details(path, what=what)[INPUTS]}
    for name, shape in fixed.items():
        if inputs.get(name) != list(shape):
            raise StepError(
                f"{what}: the TFLite converter did not keep input {name} at the fixed shape {tuple(shape)} "
                f"(the file takes {', '.join(f'{n} {shown(s)}' for n, s in inputs.items())}): remove shape from this input's io"
            )


def _representative_dataset(calibration: Tensors):
    """One signature call per sample, every input by its key (the converter calibrates multi-input models so)."""
    count = len(next(iter(calibration.values())))
    return lambda: ({name: values[i : i + 1] for name, values in calibration.items()} for i in range(count))


def _convert_saved_model(
    directory: Path, precision: Precision, integer_io: bool, per_channel: bool, calibration: Tensors | None, fixed: dict,
    sparse: bool = False,
) -> bytes:
    import tensorflow as tf

    converter = _converter(directory, fixed)
    if precision != Precision.FP32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if sparse:
        # A pruned model's zeros stored sparse (the weights' sparsity parameters) where the converter finds it pays.
        converter.optimizations = [*converter.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if precision == Precision.FP16:
        converter.target_spec.supported_types = [tf.float16]
    elif precision == Precision.INT8:
        assert calibration is not None  # convert() reads it for every int8 variant
        converter.representative_dataset = _representative_dataset(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not per_channel:
            # The converter exposes per-tensor weight scales only through this attribute; it
            # has kept its name since TF 2.4, and the example's size figures show its effect.
            converter._experimental_disable_per_channel = True
        if integer_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        converted = converter.convert()
    except Exception as exc:
        raise StepError(
            f"TFLite conversion to {precision} failed: {tool_message(exc)} "
            "(an op the TFLite builtins cannot express at this precision; try another precision for this target)"
        ) from exc
    if precision == Precision.FP16:
        _check_float16_range(converted)
    return converted


def _check_float16_range(converted: bytes) -> None:
    """The converter clamps constants beyond float16's range to its largest value, silently changing the model.

    Its float16 mode has no way to keep single tensors in float32, so such a model cannot be built at fp16.
    """
    from .weights import FLOAT16_MAX, clamped_float16

    clamped = clamped_float16(converted)
    if clamped:
        raise StepError(
            f"constant tensor {', '.join(clamped[:5])} holds values beyond float16's range (|x| > {FLOAT16_MAX:g}), "
            "which the TFLite fp16 conversion clamps: rescale the layer (a BatchNormalization's variance, a large "
            "constant factor) into range, or build this model at fp32 or an int8 precision for this target"
        )
