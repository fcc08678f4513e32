"""Step `train`: fine-tune one variant's model from its source recipe, then export it like a source.

The source step of a ``framework: tf-keras`` recipe keeps the model it built
(``model.keras``).  This step loads it, wraps it with
tensorflow-model-optimization — ``quantize_model`` for quantization-aware
training, ``prune_low_magnitude`` for pruning — and hands it to the recipe's
fine-tuning function with the settings (``FineTuning``):

    def fine_tune(model, training):
        x, y = load_data("train")
        model.compile(optimizer=keras.optimizers.Adam(training.learning_rate), loss=...)
        model.fit(x, y, epochs=training.epochs, callbacks=training.callbacks)
        return model

Pruning wrappers are stripped afterwards, so the SavedModel holds plain layers
whose weights are zero where they were pruned.  The record is a source record
of the fine-tuned model (same signature as the source, checked), which the
variant's conversions read instead of the source's.  Runs in the legacy-Keras
worker (``worker.keras_flavour``), where TF_USE_LEGACY_KERAS=1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import fsutil
from ..contracts import SourceRecord, TrainJob
from ..errors import StepError
from ..plan import Pruning
from ..recipes import call_recipe, load_recipe, recipe_metadata
from ..tensors import INPUTS, OUTPUTS, shown
from ..versions import tool_versions
from ._model_digest import saved_model_digest
from .source import TF_KERAS, _export, _load_saved_model, _seed, _serving_signature, keras_module

DEFAULT_EPOCHS = 2
DEFAULT_LEARNING_RATE = 1e-4
# How often (in steps) the pruning masks are recomputed while the sparsity rises.
PRUNING_FREQUENCY = 5


@dataclass
class FineTuning:
    """What the recipe's fine-tuning function receives beside the wrapped model."""

    method: str  # qat | fine_tune
    epochs: int
    learning_rate: float
    callbacks: list = field(default_factory=list)  # pass them to model.fit: pruning needs its step counter
    sparsity: float | None = None  # the target sparsity when the variant prunes
    variant: str = ""  # model.variant, for the recipe's own messages


def train(job: TrainJob) -> str:
    path = Path(job.source.path)
    source = SourceRecord.read(job.source_record)
    what = f"train {job.variant}"
    module = load_recipe(path)
    metadata = recipe_metadata(module)
    _seed(metadata.get("seed", 0), TF_KERAS)
    keras = keras_module(TF_KERAS)
    tfmot = _model_optimization(what)

    try:
        model = keras.models.load_model(job.keras_model, compile=False)
    except Exception as exc:
        raise StepError(
            f"{what}: the source's model {job.keras_model} does not load ({type(exc).__name__}: {exc}); rebuild the source"
        ) from exc
    epochs: Any = job.training.epochs or getattr(module, "FINE_TUNE_EPOCHS", DEFAULT_EPOCHS)
    learning_rate: Any = job.training.learning_rate or getattr(module, "FINE_TUNE_LEARNING_RATE", DEFAULT_LEARNING_RATE)
    settings = FineTuning(
        method=job.training.method,
        epochs=int(epochs),
        learning_rate=float(learning_rate),
        sparsity=job.prune.sparsity if job.prune else None,
        variant=job.variant,
    )
    model = _wrapped(model, job, settings, tfmot, what)
    returned = call_recipe(module, path, job.training.function, model, settings)
    if returned is not None:
        if not isinstance(returned, keras.Model):
            raise StepError(
                f"recipe {path.name}: {job.training.function}() returned {type(returned).__name__}: return the model it was given "
                "(or nothing)"
            )
        model = returned
    if job.prune is not None:
        model = tfmot.sparsity.keras.strip_pruning(model)
    kernel_sparsity = _kernel_sparsity(model)

    model_path = Path(job.out_dir) / "saved_model"
    with fsutil.atomic_directory(model_path) as staging:
        _export(model, staging, what=f"{what}: the fine-tuned model", framework=TF_KERAS)
    loaded = _load_saved_model(model_path, what=f"{what}: the fine-tuned model")
    signature = _serving_signature(loaded)
    if signature != source.signature:
        raise StepError(
            f"{what}: the fine-tuned model takes {_described(signature)}, but the source takes {_described(source.signature)}: "
            f"{job.training.function}() must keep the model's inputs and outputs"
        )
    trained = {
        "method": settings.method,
        "epochs": settings.epochs,
        "learning_rate": settings.learning_rate,
        **({"prune": {"sparsity": job.prune.sparsity, "schedule": job.prune.schedule}} if job.prune else {}),
        "kernel_sparsity": round(kernel_sparsity, 6),
    }
    SourceRecord(
        kind=source.kind,
        path=source.path,
        model=model_path.as_posix(),
        model_sha256=saved_model_digest(loaded, model_path),
        source_files=source.source_files,
        signature=signature,
        metadata={**source.metadata, "training": trained},
        tools=tool_versions("tensorflow", "tf-keras", "tensorflow-model-optimization"),
    ).write(job.record)
    pruned = f", kernels {kernel_sparsity:.1%} zero" if job.prune else ""
    return f"{job.variant}: {settings.method} for {settings.epochs} epochs at learning rate {settings.learning_rate:g}{pruned}"


def _model_optimization(what: str):
    try:
        import tensorflow_model_optimization
    except ImportError:
        raise StepError(
            f"{what}: tensorflow-model-optimization is not installed; ./run setup installs it, or: "
            "pip install --no-deps -c constraints.txt tensorflow-model-optimization (its absl-py pin is stale)"
        ) from None
    return tensorflow_model_optimization


def _wrapped(model, job: TrainJob, settings: FineTuning, tfmot, what: str):
    """The model wrapped for the variant's training: fake-quantized (QAT) or pruned as it trains."""
    try:
        if job.training.method == "qat":
            return tfmot.quantization.keras.quantize_model(model)
        if job.prune is not None:
            schedule, callbacks = _schedule(job.prune, tfmot)
            settings.callbacks += [tfmot.sparsity.keras.UpdatePruningStep(), *callbacks]
            return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    except (ValueError, RuntimeError, TypeError) as exc:
        doing = "quantization-aware training" if job.training.method == "qat" else "pruning"
        raise StepError(
            f"{what}: tensorflow-model-optimization cannot wrap this model for {doing} ({type(exc).__name__}: {exc}); "
            "it takes Sequential and functional tf-keras models of the layers it knows: use post-training optimization for this model"
        ) from exc
    return model


def _schedule(prune: Pruning, tfmot) -> tuple[Any, list]:
    """The pruning schedule, and the callbacks it needs beside tfmot's step counter."""
    if prune.schedule == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(prune.sparsity, begin_step=0, frequency=PRUNING_FREQUENCY), []
    return _polynomial_over_the_fine_tuning(prune.sparsity, tfmot)


def _polynomial_over_the_fine_tuning(target: float, tfmot) -> tuple[Any, list]:
    """Sparsity from 0 up to the target over every step the fine-tuning takes, a number known only when ``fit`` starts:
    a callback sets the schedule's last step then (tfmot's PolynomialDecay needs it when the model is wrapped)."""
    import tensorflow as tf

    schedule_base: Any = tfmot.sparsity.keras.PruningSchedule
    callback_base: Any = keras_module(TF_KERAS).callbacks.Callback

    class Schedule(schedule_base):
        def __init__(self):
            self.target = float(target)
            self.end_step = tf.Variable(1, dtype=tf.int64, trainable=False, name="pruning_end_step")

        def __call__(self, step):
            step = tf.cast(step, tf.int64)
            end = tf.maximum(self.end_step, 1)
            progress = tf.minimum(1.0, tf.cast(step, tf.float32) / tf.cast(end, tf.float32))
            sparsity = self.target * (1.0 - (1.0 - progress) ** 3)
            due = tf.logical_or(tf.equal(step % PRUNING_FREQUENCY, 0), tf.equal(step, end))
            return tf.logical_and(due, step <= end), sparsity

        def get_config(self):
            return {"class_name": "PolynomialOverFineTuning", "config": {"target_sparsity": self.target}}

    schedule = Schedule()

    class Length(callback_base):
        def on_train_begin(self, logs=None):
            steps = int(self.params.get("epochs") or 1) * int(self.params.get("steps") or 1)
            schedule.end_step.assign(max(1, steps - 1))

    return schedule, [Length()]


def _kernel_sparsity(model) -> float:
    """The share of zeros in the model's weight tensors of rank 2 and up (kernels): what pruning set."""
    import numpy as np

    total = zeros = 0
    for weights in model.get_weights():
        if weights.ndim >= 2:
            total += weights.size
            zeros += int(np.count_nonzero(weights == 0))
    return zeros / total if total else 0.0


def _described(signature: dict) -> str:
    return "; ".join(
        f"{role} " + ", ".join(f"{e['name']} {shown(e['shape'])}" for e in signature[role]) for role in (INPUTS, OUTPUTS)
    )
