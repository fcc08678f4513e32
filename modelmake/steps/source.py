"""Step `source`: turn a model's declared source into the SavedModel (or .tflite, .onnx) the converters read.

Writes ``<out_dir>/model`` (a SavedModel directory, ``model.tflite`` for a
tflite source or ``model.onnx`` for an onnx source) and then ``record``, a
JSON file with the model's signature, a digest of its files, the recipe's
metadata and the tool versions.
Downstream tasks depend on the record, which is written last.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .. import formats, fsutil
from ..contracts import ChannelValues, SourceJob, SourceRecord
from ..errors import StepError
from ..formats.base import tensor_signature
from ..preprocessing import channel_count
from ..recipes import call_recipe, load_recipe, recipe_metadata
from ..versions import tool_versions


def materialize(job: SourceJob) -> str:
    source = job.source
    kind, path = source.kind, Path(source.path)
    out = Path(job.out_dir)
    metadata: dict = {}
    foreign = formats.for_source_kind(kind)
    if foreign is not None:
        # A file already in a format: checked and described by its own runtime, then copied as it is.
        model_path = out / f"model{foreign.suffix}"
        signature = foreign.source_signature(path, what=f"{kind} source {path}")
        _check_channels(job.channels, signature)
        with fsutil.atomic_output(model_path) as handle, open(path, "rb") as src:
            shutil.copyfileobj(src, handle)
    else:
        model_path = out / "saved_model"
        with fsutil.atomic_directory(model_path) as staging:
            if kind == "saved_model":
                shutil.copytree(path, staging, dirs_exist_ok=True)
            elif kind == "keras":
                _export(_load_keras(path), staging)
            elif kind == "recipe":
                module = load_recipe(path)
                metadata = recipe_metadata(module)
                _seed(metadata.get("seed", 0))
                model = call_recipe(module, path, source.function)
                _export(model, staging, what=f"recipe {path.name}: {source.function}()")
            else:
                raise StepError(f"{kind} sources are not built into TensorFlow models")
        signature = _saved_model_signature(model_path, what=f"{kind} source {path}")
        _check_channels(job.channels, signature)

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    files += [Path(d) for d in source.depends]
    SourceRecord(
        kind=kind,
        path=source.path,
        model=model_path.as_posix(),
        model_sha256=fsutil.sha256_tree(model_path) if model_path.is_dir() else fsutil.sha256_file(model_path),
        source_files={p.as_posix(): fsutil.sha256_file(p) for p in files},
        signature=signature,
        metadata=metadata,
        tools=tool_versions("tensorflow", "keras"),
    ).write(job.record)
    return f"source {path}: input {signature['input']['shape']} -> output {signature['output']['shape']}"


def _check_channels(channels: ChannelValues | None, signature: dict) -> None:
    """Per-channel mean/std must fit the model's channel axis: checked here, the first time its shape is known."""
    if channels is None:
        return
    shape = signature["input"]["shape"]
    count = channel_count(channels.layout, shape)
    if count is None or count == channels.count:
        return  # a dynamic channel axis is checked against the data when it is preprocessed
    shown = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    raise StepError(
        f"{channels.key} gives {channels.count} values, but the model input {signature['input']['name']} {shown} has "
        f"{count} channel{'s' if count != 1 else ''} ({channels.layout}): give mean and std {count} value"
        f"{'s' if count != 1 else ''} each, or correct io -> input -> layout"
    )


def _seed(seed: int) -> None:
    """Make a recipe's training repeatable: same seed, deterministic kernels, fresh layer names.

    Keras numbers layer and model names per process (dense, dense_1, ...); the
    names end up in the converted files, so without a fresh session a model's
    bytes would depend on which models the same process built before it.
    """
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def _load_keras(path: Path):
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise StepError(
            f"keras source {path} does not load ({type(exc).__name__}: {exc}): check that it is a .keras file saved by model.save()"
        ) from exc


def _export(model, directory: Path, what: str = "the model") -> None:
    import keras

    if not isinstance(model, keras.Model):
        raise StepError(f"{what} returned {type(model).__name__}, not a keras.Model: return the model object")
    try:
        model.export(str(directory), format="tf_saved_model", verbose=False)
    except Exception as exc:
        raise StepError(f"{what}: exporting to a SavedModel failed ({type(exc).__name__}: {exc})") from exc


def _saved_model_signature(directory: Path, what: str) -> dict:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(directory))
        function = loaded.signatures["serving_default"]
    except Exception as exc:
        raise StepError(f"{what} does not load as a SavedModel with a serving_default signature ({type(exc).__name__}: {exc})") from exc
    inputs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise StepError(f"{what} has {len(inputs)} inputs and {len(outputs)} outputs; modelmake builds single-input, single-output models")
    (in_name, in_spec), = inputs.items()
    (out_name, out_spec), = outputs.items()
    return {
        "input": tensor_signature(in_name, in_spec.shape.as_list(), in_spec.dtype.name),
        "output": tensor_signature(out_name, out_spec.shape.as_list(), out_spec.dtype.name),
    }
