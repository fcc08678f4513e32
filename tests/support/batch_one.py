"""A detector-style TFLite file whose Reshape hard-codes batch 1, and its figures computed one sample at a time.

Its input declares a dynamic batch, as converted Keras models do, but the
graph reshapes its feature map to ``(1, anchors, classes)``: fed a batch, it
folds every sample into one and returns a single row of scores, which a
whole-set evaluation used to score as if it were the first sample's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = 5
SHAPE = (8, 8, 1)

SAVE = """
import sys

import keras
import tensorflow as tf

keras.utils.set_random_seed(3)
init = keras.initializers.RandomNormal(stddev=0.6, seed=3)
inputs = keras.Input((8, 8, 1), name="image")
h = keras.layers.Conv2D(5, 3, padding="same", kernel_initializer=init)(inputs)
# Anchors laid out as converted detectors lay them out: the batch written as 1.
h = keras.layers.Lambda(lambda t: tf.reduce_max(tf.reshape(t, (1, -1, 5)), axis=1), output_shape=(5,))(h)
outputs = keras.layers.Softmax(name="scores")(h)
model = keras.Model(inputs, outputs)
with open(sys.argv[1], "wb") as handle:
    handle.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
"""


def write_model(path: Path) -> Path:
    """Write the .tflite file in a subprocess: Keras and the TFLite converter stay out of the test process."""
    import subprocess
    import sys

    from tests.support.workspaces import subprocess_env

    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", SAVE, str(path)], check=True, env=subprocess_env(), capture_output=True)
    return path


def evaluation_data(samples: int = 40) -> np.ndarray:
    """Raw samples whose scale and offset vary, so the class the model picks varies from sample to sample."""
    rng = np.random.default_rng(7)
    x = rng.uniform(0.0, 1.0, size=(samples, *SHAPE))
    scale = rng.uniform(0.2, 16.0, size=(samples, 1, 1, 1))
    offset = rng.uniform(-8.0, 8.0, size=(samples, 1, 1, 1))
    return (x * scale + offset).astype(np.float32)


def one_at_a_time(path: Path, x: np.ndarray) -> np.ndarray:
    """The file's outputs as an app runs it: LiteRT, one sample per invoke."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for sample in x:
        interpreter.set_tensor(inp["index"], sample[np.newaxis].astype(np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(outputs)


def labels_for(outputs: np.ndarray) -> np.ndarray:
    """The model's own classes, every fourth one moved to the next class: a top-1 of 0.75 that garbage cannot reach by chance."""
    labels = outputs.argmax(axis=1)
    labels[::4] = (labels[::4] + 1) % CLASSES
    return labels
