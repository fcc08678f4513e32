"""Step `convert` for TFLite: SavedModel -> .tflite at the variant's precision.

fp32 converts as is; fp16 stores float16 weights; dynamic_int8 stores int8
weights with float activations; int8 quantizes weights and activations from
the calibration data, with int8 input and output tensors when the target
profile asks for integer-only I/O.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .. import fsutil
from ..errors import StepError
from ..versions import tool_versions
from ._record import write_record
from ._arrays import check_sample_shape, preprocess, read_dataset
from ._tflite_runtime import io_details


def convert(
    source_record: str,
    precision: str,
    integer_io: bool,
    per_channel: bool,
    calibration: str | None,
    preprocessing: dict,
    target_format: dict,
    out: str,
    out_record: str,
    calibration_origin: str | None = None,
) -> str:
    record = fsutil.read_json(source_record)
    if record["kind"] == "tflite":
        # A converted model ships as it is; spec.py allows only fp32 variants of it.
        with fsutil.atomic_output(out) as handle, open(record["model"], "rb") as src:
            shutil.copyfileobj(src, handle)
    else:
        samples = None
        if precision == "int8":
            x, _ = read_dataset(calibration, what="calibration data")
            check_sample_shape(x, record["signature"]["input"]["shape"], what=f"calibration data from {calibration_origin or calibration}")
            samples = preprocess(x, preprocessing)
        fsutil.write_bytes(out, _convert_saved_model(Path(record["model"]), precision, integer_io, per_channel, samples))
    details = io_details(out, what=f"converted {Path(out).name}")
    write_record(
        out, out_record, precision=precision, integer_io=integer_io, per_channel=per_channel,
        delegates=target_format["delegates"], io=details, tools=tool_versions("tensorflow"),
    )
    return None


def _convert_saved_model(directory: Path, precision: str, integer_io: bool, per_channel: bool, calibration) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory))
    if precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not per_channel:
            # The converter exposes per-tensor weight scales only through this attribute; it
            # has kept its name since TF 2.4, and the example's size figures show its effect.
            converter._experimental_disable_per_channel = True
        if integer_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        raise StepError(
            f"TFLite conversion to {precision} failed: {detail[-1] if detail else type(exc).__name__} "
            "(an op the TFLite builtins cannot express at this precision; try another precision for this target)"
        ) from exc
