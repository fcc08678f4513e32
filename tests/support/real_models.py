"""A workspace of the models mobile teams ship besides classifiers, each built in code from fixed seeds.

- detector: a .tflite file with two outputs (boxes, scores) whose Reshape
  writes the batch as 1, the way converted detectors do; a custom metric
  scores its boxes against ground truth.
- fusion: a Keras recipe with two inputs (an image and a vector of
  metadata) and two outputs (class scores and an embedding).
- embedder: a Keras recipe whose one output is an L2-normalised embedding.
- vad: an ONNX voice-activity model with three inputs (audio chunk, sample
  rate as int64, recurrent state [2, batch, 16]) and two outputs
  (probability, next state), evaluated over sequences.
- textmap: an ONNX text-detector-like model, NCHW with dynamic height and
  width and a probability map out, fixed to 1x3x32x32 for the QNN target only.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from tests.support.workspaces import subprocess_env

PROFILES = {
    "tflite-all": "name: tflite-all\nsoc: generic arm64\nplatform: android\nformats:\n"
    "  tflite: {precisions: [fp32, fp16, dynamic_int8, int8]}\n",
    "onnx-cpu": "name: onnx-cpu\nsoc: generic x86-64\nplatform: android\nformats:\n"
    "  onnx: {execution_providers: [CPUExecutionProvider], precisions: [fp32, fp16, dynamic_int8, int8], opset: 17,"
    " quantization: cpu}\n",
    "onnx-qnn": "name: onnx-qnn\nsoc: Qualcomm Snapdragon 8 Gen 3\nplatform: android\nformats:\n"
    "  onnx: {execution_providers: [QNNExecutionProvider, CPUExecutionProvider], precisions: [fp32, fp16, int8], opset: 17,"
    " quantization: qnn, activation_type: uint16, accelerator: qnn}\n",
}

SPEC = """\
format: 1
bundle: {name: real-models, version: "1.0.0"}
models:
  detector:
    description: Two heads, boxes and scores, from a .tflite file with batch-1 reshapes
    source: {tflite: models/detector.tflite}
    data:
      calibration: {file: models/detector_calibration.npz}
      evaluation: {file: models/detector_evaluation.npz}
    io:
      inputs: {image: {layout: NHWC, scale: 1/255}}
      outputs: {boxes: {kind: boxes}, scores: {kind: scores}}
      metrics: {recipe: recipes/detection.py, names: [box_error, score_error]}
    variants: {fp32: {}, fp16: {quantize: fp16}, dynamic_int8: {quantize: dynamic_int8}, int8: {quantize: int8}}
    targets: {tflite-all: [fp32, fp16, dynamic_int8, int8]}
    budgets: {min_cosine_similarity: 0.95, max_box_error: 0.1}

  fusion:
    description: An image and its metadata in, class scores and an embedding out
    source: {recipe: recipes/fusion.py}
    data:
      calibration: {recipe: recipes/fusion.py, split: calibration}
      evaluation: {recipe: recipes/fusion.py, split: test}
    io:
      inputs: {image: {layout: NHWC, scale: 1/16}, meta: {layout: NC}}
      outputs: {digit: {kind: classes, top_k: 2}, embedding: {kind: embedding}}
    variants: {fp32: {}, fp16: {quantize: fp16}, dynamic_int8: {quantize: dynamic_int8}, int8: {quantize: int8}}
    targets:
      tflite-all: [fp32, fp16, dynamic_int8, int8]
      onnx-cpu: [fp32, fp16, dynamic_int8, int8]
      apple-a17: [fp32, fp16, int8]

  embedder:
    description: One L2-normalised vector per digit
    source: {recipe: recipes/embedder.py}
    data:
      calibration: {recipe: recipes/embedder.py, split: calibration}
      evaluation: {recipe: recipes/embedder.py, split: test}
    io:
      input: {layout: NHWC, scale: 1/16}
      output: {kind: embedding}
    variants: {fp32: {}, fp16: {quantize: fp16}, dynamic_int8: {quantize: dynamic_int8}, int8: {quantize: int8}}
    targets:
      tflite-all: [fp32, fp16, dynamic_int8, int8]
      onnx-cpu: [fp32, fp16, dynamic_int8, int8]
      apple-a17: [fp32, fp16, int8]

  vad:
    description: Voice activity over a stream of audio chunks, with a recurrent state
    source: {onnx: models/vad.onnx}
    data:
      evaluation: {file: models/vad_evaluation.npz}
    io:
      inputs: {audio: {layout: NC}, sr: {dtype: int64}, state: {layout: NC}}
      outputs: {prob: {kind: tensor}, next_state: {kind: tensor, state: state}}
    variants: {fp32: {}, fp16: {quantize: fp16}, dynamic_int8: {quantize: dynamic_int8}}
    targets: {onnx-cpu: [fp32, fp16, dynamic_int8]}

  textmap:
    description: A text-region probability map over an NCHW image of any size
    source: {onnx: models/textmap.onnx}
    data:
      calibration: {file: models/textmap_calibration.npz}
      evaluation: {file: models/textmap_evaluation.npz}
    io:
      inputs: {image: {layout: NCHW, scale: 1/255, shape: {onnx-qnn: [1, 3, 32, 32]}}}
      outputs: {prob: {kind: mask}}
    variants: {fp32: {}, fp16: {quantize: fp16}, dynamic_int8: {quantize: dynamic_int8}, int8: {quantize: int8}}
    targets:
      onnx-cpu: [fp32, fp16, dynamic_int8, int8]
      onnx-qnn: [fp32, fp16, int8]
"""

DETECTION_METRICS = """\
import numpy as np


def metrics(outputs, data):
    \"\"\"Mean absolute error of the boxes and scores against the ground truth the evaluation data holds.\"\"\"
    return {
        "box_error": float(np.mean(np.abs(outputs["boxes"] - data["gt_boxes"]))),
        "score_error": float(np.mean(np.abs(outputs["scores"] - data["gt_scores"]))),
    }
"""

_DIGITS = """\
import numpy as np
from sklearn.datasets import load_digits

METADATA = {"seed": 0}


def _unit_length(keras, name):
    # keras.layers.UnitNormalization caps 1/norm at 1e12, a constant float16 cannot hold (the fp16 build refuses it).
    return keras.layers.Lambda(
        lambda t: t / keras.ops.sqrt(keras.ops.sum(t * t, axis=-1, keepdims=True) + 1e-6), name=name
    )


def _digits():
    digits = load_digits()
    images = digits.images.reshape(-1, 8, 8, 1).astype("float32")
    return images, digits.target.astype("int64")
"""

FUSION_RECIPE = _DIGITS + """

def _meta(images, labels):
    # Metadata that says something about the class: its parity and size, with noise.
    rng = np.random.default_rng(1)
    return np.stack([labels % 2, labels / 9.0, images.mean(axis=(1, 2, 3)) / 16.0, rng.normal(size=len(labels))], 1).astype("float32")


def build_model():
    import keras

    image = keras.Input((8, 8, 1), name="image")
    meta = keras.Input((4,), name="meta")
    h = keras.layers.Conv2D(8, 3, activation="relu")(keras.layers.Rescaling(1.0)(image))
    h = keras.layers.Flatten()(h)
    h = keras.layers.Concatenate()([h, keras.layers.Dense(8, activation="relu")(meta)])
    h = keras.layers.Dense(32, activation="relu")(h)
    digit = keras.layers.Dense(10, activation="softmax", name="digit")(h)
    embedding = _unit_length(keras, "embedding")(keras.layers.Dense(12)(h))
    model = keras.Model({"image": image, "meta": meta}, {"digit": digit, "embedding": embedding})
    images, labels = _digits()
    head = keras.Model(model.inputs, model.outputs["digit"] if isinstance(model.outputs, dict) else digit)
    head.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    head.fit({"image": images[:1200] / 16.0, "meta": _meta(images, labels)[:1200]}, labels[:1200], epochs=8, verbose=0)
    return model


def load_data(split):
    images, labels = _digits()
    rows = slice(1200, 1400) if split == "test" else slice(0, 200)
    return {"image": images[rows], "meta": _meta(images, labels)[rows], "y_digit": labels[rows]}
"""

EMBEDDER_RECIPE = _DIGITS + """

def build_model():
    import keras

    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    logits = keras.layers.Dense(10)(h)
    embedding = _unit_length(keras, "embedding")(keras.layers.Dense(16)(h))
    trainer = keras.Model(inputs, logits)
    trainer.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images, labels = _digits()
    trainer.fit(images[:1200] / 16.0, labels[:1200], epochs=6, verbose=0)
    return keras.Model(inputs, embedding)


def load_data(split):
    images, labels = _digits()
    rows = slice(1200, 1400) if split == "test" else slice(0, 200)
    return images[rows], labels[rows]
"""

DETECTOR_SAVE = """
import sys
import tempfile

import numpy as np
import tensorflow as tf

rng = np.random.default_rng(5)


class Detector(tf.Module):
    def __init__(self):
        self.k1 = tf.Variable(rng.normal(0.0, 0.5, (3, 3, 1, 8)).astype("float32"))
        self.k2 = tf.Variable(rng.normal(0.0, 0.4, (1, 1, 8, 5)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 1], tf.float32, name="image")])
    def serve(self, image):
        h = tf.nn.relu(tf.nn.conv2d(image, self.k1, 2, "SAME"))
        h = tf.nn.conv2d(h, self.k2, 2, "SAME")
        anchors = tf.reshape(h, (1, -1, 5))  # the batch written as 1, as converted detectors write it
        return {"boxes": tf.sigmoid(anchors[..., :4]), "scores": tf.sigmoid(anchors[..., 4])}


module = Detector()
with tempfile.TemporaryDirectory() as directory:
    tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})
    converted = tf.lite.TFLiteConverter.from_saved_model(directory).convert()
with open(sys.argv[1], "wb") as handle:
    handle.write(converted)
"""

DETECTOR_SHAPE = (16, 16, 1)


def write_detector(path: Path) -> Path:
    """The .tflite file, written in a subprocess so TensorFlow stays out of the test process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", DETECTOR_SAVE, str(path)], check=True, env=subprocess_env(), capture_output=True)
    return path


def detector_one_at_a_time(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """The detector's outputs as an app runs it: LiteRT, one image per invoke, by signature names."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()
    outputs: dict[str, list] = {}
    for image in images:
        for name, value in runner(image=image[np.newaxis].astype(np.float32)).items():
            outputs.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in outputs.items()}


def detector_images(samples: int, seed: int) -> np.ndarray:
    """Raw 8-bit-like images: bright blobs on a dark background."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 40, (samples, *DETECTOR_SHAPE))
    for image in images:
        y, x = rng.integers(0, 12, 2)
        image[y : y + 5, x : x + 5] += rng.uniform(120, 215)
    return images.astype(np.float32)


VAD_UNITS = 16
VAD_CHUNK = 64


def write_vad(path: Path) -> Path:
    """audio [N, 64] float, sr [1] int64, state [2, N, 16] -> prob [N, 1], next_state [2, N, 16]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    weights: dict[str, np.ndarray] = {
        "wx": rng.normal(0, 0.25, (VAD_CHUNK, VAD_UNITS)).astype(np.float32),
        "wh": rng.normal(0, 0.4, (VAD_UNITS, VAD_UNITS)).astype(np.float32),
        "wo": rng.normal(0, 0.6, (VAD_UNITS, 1)).astype(np.float32),
        "ref_rate": np.array(16000.0, np.float32),
        "zero": np.array([0], np.int64),
        "one": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_f", "ref_rate"], ["rate"]),
        helper.make_node("Mul", ["audio", "rate"], ["scaled"]),
        helper.make_node("Gather", ["state", "zero"], ["h0_"], axis=0),
        helper.make_node("Squeeze", ["h0_", "zero"], ["h0"]),
        helper.make_node("Gather", ["state", "one"], ["c0_"], axis=0),
        helper.make_node("Squeeze", ["c0_", "zero"], ["c0"]),
        helper.make_node("MatMul", ["scaled", "wx"], ["xin"]),
        helper.make_node("MatMul", ["h0", "wh"], ["hin"]),
        helper.make_node("Add", ["xin", "hin"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h1"]),
        helper.make_node("Add", ["c0", "h1"], ["c_sum"]),
        helper.make_node("Tanh", ["c_sum"], ["c1"]),
        helper.make_node("Unsqueeze", ["h1", "zero"], ["h1_"]),
        helper.make_node("Unsqueeze", ["c1", "zero"], ["c1_"]),
        helper.make_node("Concat", ["h1_", "c1_"], ["next_state"], axis=0),
        helper.make_node("MatMul", ["c1", "wo"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes,
        "vad",
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", VAD_CHUNK]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", VAD_UNITS]),
        ],
        [
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("next_state", TensorProto.FLOAT, [2, "batch", VAD_UNITS]),
        ],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return _save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def vad_stream(path: Path, audio: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    """The vad model run as an app runs it: one chunk at a time per sequence, its state fed back."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, states = [], []
    for sequence in audio:
        state = np.zeros((2, 1, VAD_UNITS), np.float32)
        for chunk in sequence:
            prob, state = session.run(None, {"audio": chunk[np.newaxis], "sr": np.array([rate], np.int64), "state": state})
            probs.append(prob)
            states.append(state)
    return {"prob": np.concatenate(probs), "next_state": np.stack(states)}


def write_textmap(path: Path) -> Path:
    """image [N, 3, H, W] -> prob [N, 1, H, W]: two convolutions and a sigmoid, any height and width."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(13)
    weights: dict[str, np.ndarray] = {
        "k1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "k2": rng.normal(0, 0.5, (1, 8, 1, 1)).astype(np.float32),
        "b2": np.array([-0.6], np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "k1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "k2", "b2"], ["c2"]),
        helper.make_node("Sigmoid", ["c2"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes,
        "textmap",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return _save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def textmap_images(samples: int, seed: int) -> np.ndarray:
    """Raw RGB images, 0..255, with a bright bar (the "text") somewhere in each."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 60, (samples, 3, 32, 32))
    for image in images:
        y, x = rng.integers(2, 22, 2)
        image[:, y : y + 4, x : x + 10] += 180
    return images.astype(np.float32)


def _save_onnx(model, path: Path) -> Path:
    import onnx

    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_workspace(root: Path) -> None:
    """Every model, data set, recipe and profile of the spec above, under ``root`` (which has dodo.py)."""
    import onnxruntime as ort

    models = root / "models"
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "targets").mkdir(exist_ok=True)
    (root / "models.yaml").write_text(SPEC, encoding="utf-8")
    for name, text in PROFILES.items():
        (root / "targets" / f"{name}.yaml").write_text(text, encoding="utf-8")
    (root / "recipes" / "fusion.py").write_text(FUSION_RECIPE, encoding="utf-8")
    (root / "recipes" / "embedder.py").write_text(EMBEDDER_RECIPE, encoding="utf-8")
    (root / "recipes" / "detection.py").write_text(DETECTION_METRICS, encoding="utf-8")

    detector = write_detector(models / "detector.tflite")
    images = detector_images(24, seed=1)
    truth = detector_one_at_a_time(detector, images / 255.0)
    np.savez(models / "detector_evaluation.npz", image=images, gt_boxes=truth["boxes"], gt_scores=truth["scores"])
    np.savez(models / "detector_calibration.npz", image=detector_images(32, seed=2))

    vad = write_vad(models / "vad.onnx")
    audio = np.random.default_rng(17).normal(0, 0.5, (4, 12, VAD_CHUNK)).astype(np.float32)
    np.savez(models / "vad_evaluation.npz", audio=audio, sr=np.full((4, 12, 1), 16000, np.int64))
    del vad

    textmap = write_textmap(models / "textmap.onnx")
    evaluation = textmap_images(16, seed=3)
    session = ort.InferenceSession(str(textmap), providers=["CPUExecutionProvider"])
    (prob,) = session.run(None, {"image": evaluation / 255.0})
    np.savez(models / "textmap_evaluation.npz", image=evaluation, y_prob=(prob[:, 0] >= 0.5).astype(np.int64))
    np.savez(models / "textmap_calibration.npz", image=textmap_images(16, seed=4))


def indent(text: str) -> str:
    return textwrap.indent(text, "    ")
