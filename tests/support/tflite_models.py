"""Small models with several inputs and outputs, built in code as SavedModels and .tflite files, and what the TFLite tests share.

- a detector-style model: one image in, ``boxes`` (1, anchors, 4) and
  ``scores`` (1, anchors, classes) out, its Reshapes writing batch 1 as
  converted detectors do;
- a two-input model: a float ``image`` and an int32 ``class_id`` (an
  embedding look-up) in, ``logits`` and ``features`` out.

Their weights are random but fixed by a seed; the figures the tests hold
them to compare each file with the SavedModel it came from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from modelmake import fsutil
from modelmake.contracts import ConvertJob, SourceRecord
from modelmake.formats.tflite import TfliteSettings
from modelmake.kinds import Precision
from modelmake.plan import FormatSupport, InputSpec
from modelmake.steps import source

TFLITE = FormatSupport(format="tflite", precisions=tuple(Precision), settings=TfliteSettings())
INTEGER_IO = FormatSupport(format="tflite", precisions=tuple(Precision), settings=TfliteSettings(integer_io=True))
IMAGE = (8, 8, 1)
ANCHORS = 16  # 4x4 cells of the 8x8 image after one stride-2 convolution
DETECTOR_CLASSES = 3
CLASS_IDS = 5  # the two-input model's int32 input takes 0..4


def export_detector(directory: Path) -> Path:
    """The detector-style model as a SavedModel; its serving signature takes ``image`` and returns ``boxes`` and ``scores``."""
    import keras

    keras.utils.set_random_seed(11)
    image = keras.Input(IMAGE, name="image")
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(image)
    raw_boxes = keras.layers.Conv2D(4, 1)(h)
    raw_scores = keras.layers.Conv2D(DETECTOR_CLASSES, 1)(h)
    # Anchors laid out as converted detectors lay them out: the batch written as 1.
    boxes = keras.layers.Lambda(lambda t: keras.ops.reshape(t, (1, ANCHORS, 4)), output_shape=(ANCHORS, 4))(raw_boxes)
    scores = keras.layers.Lambda(
        lambda t: keras.ops.sigmoid(keras.ops.reshape(t, (1, ANCHORS, DETECTOR_CLASSES))), output_shape=(ANCHORS, DETECTOR_CLASSES)
    )(raw_scores)
    model = keras.Model({"image": image}, {"boxes": boxes, "scores": scores}, name="detector")
    model.export(str(directory), verbose=False)
    return directory


def export_two_input(directory: Path) -> Path:
    """The two-input model as a SavedModel: ``image`` (float) and ``class_id`` (int32) in, ``logits`` and ``features`` out."""
    import keras

    keras.utils.set_random_seed(5)
    image = keras.Input(IMAGE, name="image")
    class_id = keras.Input((1,), name="class_id", dtype="int32")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    embedded = keras.layers.Flatten()(keras.layers.Embedding(CLASS_IDS, 8)(class_id))
    features = keras.layers.Dense(16, activation="tanh", name="features")(keras.layers.Concatenate()([h, embedded]))
    logits = keras.layers.Dense(6, name="logits")(features)
    model = keras.Model({"image": image, "class_id": class_id}, {"logits": logits, "features": features}, name="two_input")
    model.export(str(directory), verbose=False)
    return directory


def two_input_data(samples: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(0.0, 1.0, size=(samples, *IMAGE)).astype(np.float32),
        "class_id": rng.integers(0, CLASS_IDS, size=(samples, 1)).astype(np.int32),
    }


def detector_data(samples: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(0.0, 1.0, size=(samples, *IMAGE)).astype(np.float32)}


def saved_model_signature(directory: Path) -> dict:
    """The serving signature as the source step records it."""
    return source.saved_model_signature(directory, what=str(directory))


def saved_model_outputs(directory: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The SavedModel's outputs one sample at a time (the detector takes no batch), joined by name."""
    import tensorflow as tf

    serving = tf.saved_model.load(str(directory)).signatures["serving_default"]
    count = len(next(iter(inputs.values())))
    parts = [serving(**{name: tf.constant(values[i : i + 1]) for name, values in inputs.items()}) for i in range(count)]
    return {name: np.concatenate([part[name].numpy() for part in parts]) for name in parts[0]}


def tflite_from_saved_model(directory: Path, out: Path) -> Path:
    """The float .tflite file the TFLite converter writes, as a user's given file would be."""
    import tensorflow as tf

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(directory)).convert())
    return out


def strip_signatures(data: bytes) -> bytes:
    """The file as older converters wrote it: the same graph with no SignatureDef."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.signatureDefs = []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def signatures(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_list()


def write_source_record(root: Path, kind: str, model: Path, signature: dict) -> Path:
    """The record the source step writes for a materialized source, so a convert job can read it."""
    record = root / "source.json"
    root.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(
        record,
        {
            "kind": kind, "path": str(model), "model": str(model), "model_sha256": "", "source_files": {},
            "signature": signature, "metadata": {}, "tools": {},
        },
    )
    SourceRecord.read(str(record))  # written as the record the convert step reads
    return record


def convert_job(
    record: Path, precision: str, out: Path, *, inputs: tuple[InputSpec, ...], calibration: Path | None = None,
    support: FormatSupport = TFLITE,
) -> ConvertJob:
    return ConvertJob(
        artifact_id=out.name, source_record=str(record), precision=Precision(precision), per_channel=True, palettize=None,
        calibration=str(calibration) if precision == "int8" else None, calibration_origin=None, inputs=inputs,
        support=support, out=str(out), out_record=str(out) + ".json",
    )


def cosine(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Mean over samples of the cosine between each sample's flattened output and the reference's."""
    a = reference.reshape(len(reference), -1).astype(np.float64)
    b = outputs.reshape(len(outputs), -1).astype(np.float64)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def max_abs_error(reference: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.max(np.abs(reference.astype(np.float64) - outputs)))
