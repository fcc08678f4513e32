"""Step `source`: turn a model's declared source into the SavedModel (or .tflite, .onnx) the converters read.

Writes ``<out_dir>/model`` (a SavedModel directory, ``model.tflite`` for a
tflite source or ``model.onnx`` for an onnx source) and then ``record``, a
JSON file with the model's signature, a digest of the model, the recipe's
metadata and the tool versions.  The digest of a SavedModel is of what it
computes (``_model_digest``), not of its files, which differ between two
exports of the same model: re-running an unchanged source writes the same
record, and the conversions that depend on it stay up to date.
Downstream tasks depend on the record, which is written last.
"""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from .. import formats, fsutil
from ..contracts import DeclaredInput, DeclaredIo, SourceJob, SourceRecord
from ..errors import StepError
from ..formats.base import tensor_signature
from ..preprocessing import channel_count
from ..recipes import call_recipe, load_recipe, recipe_metadata
from ..tensors import INPUTS, OUTPUTS, entry, names, shown
from ..tensors import signature as make_signature
from ..versions import tool_versions
from ._model_digest import saved_model_digest


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
        _check_io(job.io, signature, path)
        with fsutil.atomic_output(model_path) as handle, open(path, "rb") as src:
            shutil.copyfileobj(src, handle)
        model_sha256 = fsutil.sha256_file(model_path)
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
                _seed(metadata.get("seed", 0), source.framework)
                model = call_recipe(module, path, source.function)
                _export(model, staging, what=f"recipe {path.name}: {source.function}()", framework=source.framework)
                if source.framework == TF_KERAS:
                    # Kept as built, for the variants that fine-tune it (the train step wraps this model).
                    save_keras_model(model, Path(job.out_dir) / "model.keras", what=f"recipe {path.name}: {source.function}()")
            else:
                raise StepError(f"{kind} sources are not built into TensorFlow models")
        loaded = _load_saved_model(model_path, what=f"{kind} source {path}")
        signature = _serving_signature(loaded)
        _check_io(job.io, signature, path)
        model_sha256 = saved_model_digest(loaded, model_path)

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    files += [Path(d) for d in source.depends]
    SourceRecord(
        kind=kind,
        path=source.path,
        model=model_path.as_posix(),
        model_sha256=model_sha256,
        source_files={p.as_posix(): fsutil.sha256_file(p) for p in files},
        signature=signature,
        metadata=metadata,
        tools=tool_versions("tensorflow", "keras", *(("tf-keras",) if source.framework == TF_KERAS else ())),
    ).write(job.record)
    described = {role: ", ".join(f"{e['name']} {shown(e['shape'])}" for e in signature[role]) for role in (INPUTS, OUTPUTS)}
    return f"source {path}: {described[INPUTS]} -> {described[OUTPUTS]}"


def _check_io(io: DeclaredIo | None, signature: dict, path: Path) -> None:
    """What io declares must match the model file: checked here, the first time the file is known, before any conversion."""
    if io is None:
        return
    for role, declared in ((INPUTS, [spec.name for spec in io.inputs]), (OUTPUTS, list(io.outputs))):
        actual = names(signature, role)
        singular = role[:-1]
        if declared == [""]:
            if len(actual) != 1:
                raise StepError(
                    f"{io.key}: {path} has {len(actual)} {role} ({', '.join(actual)}): declare each by its name under "
                    f"io -> {role}, e.g. io: {{{role}: {{{actual[0]}: {{...}}, ...}}}}"
                )
            continue
        unknown = [name for name in declared if name not in actual]
        undeclared = [name for name in actual if name not in declared]
        if unknown or undeclared:
            parts = [
                f"{path} has no {singular} {', '.join(unknown)}" if unknown else "",
                f"{', '.join(undeclared)} not declared" if undeclared else "",
            ]
            raise StepError(
                f"{io.key} -> {role}: {'; '.join(p for p in parts if p)}; the model's {role} are {', '.join(actual)}: "
                f"declare each of them by that name"
            )
    for spec in io.inputs:
        _check_input(spec, entry(signature, INPUTS, spec.name))
    for output, state_input in io.states:
        if state_input not in names(signature, INPUTS):
            raise StepError(
                f"{io.key} -> outputs -> {output} -> state: {path} has no input {state_input}; its inputs are "
                f"{', '.join(names(signature, INPUTS))}: name the input this output's value goes back into"
            )
        _check_state(io, entry(signature, OUTPUTS, output), entry(signature, INPUTS, state_input))


def _check_input(spec: DeclaredInput, model_input: dict) -> None:
    shape = model_input["shape"]
    if spec.dtype is not None and spec.dtype != model_input["dtype"]:
        raise StepError(
            f"{spec.key} -> dtype is {spec.dtype}, but the model input {model_input['name']} takes {model_input['dtype']}: "
            f"set dtype to {model_input['dtype']}, or remove it"
        )
    for target, fixed in spec.shapes:
        if len(fixed) != len(shape) or any(d is not None and d != s for d, s in zip(shape, fixed, strict=False)):
            key = f"{spec.key} -> shape" + (f" -> {target}" if target else "")
            raise StepError(
                f"{key} {list(fixed)} does not fit the model input {model_input['name']} {shown(shape)}: "
                "fix only its dynamic dimensions (shown ?) and keep the others"
            )
    count = channel_count(spec.layout, shape)
    if spec.channels is None or count is None or count == spec.channels:
        return  # a dynamic channel axis is checked against the data when it is preprocessed
    raise StepError(
        f"{spec.key} gives {spec.channels} mean/std values, but the model input {model_input['name']} {shown(shape)} has "
        f"{count} channel{'s' if count != 1 else ''} ({spec.layout}): give mean and std {count} value"
        f"{'s' if count != 1 else ''} each, or correct the layout"
    )


def _check_state(io: DeclaredIo, output: dict, state_input: dict) -> None:
    """A state output must fit the input it feeds: same rank and the same fixed dimensions."""
    a, b = output["shape"], state_input["shape"]
    if len(a) != len(b) or any(x is not None and y is not None and x != y for x, y in zip(a, b, strict=False)):
        raise StepError(
            f"{io.key} -> outputs -> {output['name']} -> state: the output {output['name']} {shown(a)} cannot feed the "
            f"input {state_input['name']} {shown(b)}: name the input this output's value goes back into"
        )


def _seed(seed: int, framework: str = "keras") -> None:
    """Make a recipe's training repeatable: same seed, deterministic kernels, fresh layer names.

    Keras numbers layer and model names per process (dense, dense_1, ...); the
    names end up in the converted files, so without a fresh session a model's
    bytes would depend on which models the same process built before it.
    """
    import tensorflow as tf

    keras = keras_module(framework)
    keras.backend.clear_session()
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


TF_KERAS = "tf-keras"


def keras_module(framework: str):
    """The Keras a recipe builds with: Keras 3, or tf-keras (only in the worker started with TF_USE_LEGACY_KERAS=1)."""
    if framework != TF_KERAS:
        import keras

        return keras
    import os

    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise StepError("a tf-keras recipe ran outside the legacy-Keras worker (TF_USE_LEGACY_KERAS=1): this is a modelmake bug")
    try:
        import tf_keras
    except ImportError as exc:
        raise StepError("framework: tf-keras needs the tf-keras package: pip install tf-keras (./run setup installs it)") from exc
    return tf_keras


def save_keras_model(model, path: Path, what: str) -> None:
    """The model in Keras's own file format, written atomically."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".model-", dir=path.parent) as scratch:
        staged = Path(scratch) / path.name
        try:
            model.save(str(staged))
        except Exception as exc:
            raise StepError(f"{what}: saving the model as {path.name} failed ({type(exc).__name__}: {exc})") from exc
        staged.replace(path)


def _load_keras(path: Path):
    if path.is_file() and not zipfile.is_zipfile(path):
        # Keras reports any file it cannot open as an archive as "File not found".
        raise StepError(
            f"keras source {path} is not a .keras archive (the zip model.save('model.keras') writes): "
            "save the model again with model.save, or use a saved_model or recipe source"
        )
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise StepError(
            f"keras source {path} does not load ({type(exc).__name__}: {exc}): check that it is a .keras file saved by model.save()"
        ) from exc


def _export(model, directory: Path, what: str = "the model", framework: str = "keras") -> None:
    keras = keras_module(framework)
    if not isinstance(model, keras.Model):
        other = "keras.Model (Keras 3)" if framework == TF_KERAS else "tf_keras.Model"
        hint = f"; it is a {other}: set the source's framework to match the recipe" if _is_other_keras(model, framework) else ""
        name = "tf_keras.Model" if framework == TF_KERAS else "keras.Model"
        raise StepError(f"{what} returned {type(model).__name__}, not a {name}: return the model object{hint}")
    try:
        if framework == TF_KERAS:
            model.export(str(directory))
        else:
            model.export(str(directory), format="tf_saved_model", verbose=False)
    except Exception as exc:
        raise StepError(f"{what}: exporting to a SavedModel failed ({type(exc).__name__}: {exc})") from exc


def _is_other_keras(model, framework: str) -> bool:
    module = type(model).__module__
    return module.startswith("keras") if framework == TF_KERAS else module.startswith("tf_keras")


def saved_model_signature(directory: Path, what: str) -> dict:
    """The serving_default signature's inputs and outputs (tensors.signature), as every source record holds them."""
    return _serving_signature(_load_saved_model(directory, what))


def _load_saved_model(directory: Path, what: str):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(directory))
        loaded.signatures["serving_default"]  # one without it is refused here, like one that does not load
    except Exception as exc:
        raise StepError(f"{what} does not load as a SavedModel with a serving_default signature ({type(exc).__name__}: {exc})") from exc
    return loaded


def _serving_signature(loaded) -> dict:
    """The signature's inputs and outputs in name order.

    A SavedModel keeps them in maps, which a loaded model lists in an order
    that changes from one process to the next; by name, as the TFLite
    converter orders a signature too, the record is the same every time.
    """
    function = loaded.signatures["serving_default"]
    inputs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    return make_signature(
        [tensor_signature(name, inputs[name].shape.as_list(), inputs[name].dtype.name) for name in sorted(inputs)],
        [tensor_signature(name, outputs[name].shape.as_list(), outputs[name].dtype.name) for name in sorted(outputs)],
    )
