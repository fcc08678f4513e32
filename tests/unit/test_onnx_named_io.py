"""ONNX models with named inputs and outputs: several of each, integer inputs, NCHW maps, recurrent state, fixed shapes.

The models are written in code with onnx.helper from fixed seeds: a
segmenter (NCHW image with dynamic height and width -> probability map), a
recurrent voice-activity-style model (audio, an int64 sample rate and a
state [2, N, 16] in; a probability and the new state out) and a classifier
whose convolutions sit in the branches of an ``If``.  Every artifact is run
in ONNX Runtime through the runtime module and compared with its source,
output by output.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.contracts import ConvertJob, SourceRecord
from modelmake.errors import StepError
from modelmake.formats.onnx import OnnxSettings
from modelmake.kinds import Precision
from modelmake.plan import FormatSupport, InputSpec

from tests.support.onnx_workspaces import ONNX_CPU as CPU
from tests.support.onnx_workspaces import onnx_source

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelmake.formats.onnx import runtime  # noqa: E402
from modelmake.formats.onnx.subgraphs import all_graphs  # noqa: E402
from modelmake.formats.onnx.weights import weight_bytes  # noqa: E402
from modelmake.steps import convert  # noqa: E402
from modelmake.steps._arrays import write_npz  # noqa: E402

QNN = FormatSupport(
    format="onnx",
    precisions=tuple(Precision),
    settings=OnnxSettings(execution_providers=("QNNExecutionProvider", "CPUExecutionProvider"), quantization="qnn", opset=17),
    accelerator="qnn",
)
PRECISIONS = ("fp32", "fp16", "dynamic_int8", "int8")


def _save(model, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _convert(record: Path, precision: str, out: Path, inputs: tuple[InputSpec, ...], *, calibration: Path | None = None,
             support: FormatSupport = CPU) -> Path:
    convert.convert(
        ConvertJob(
            artifact_id=out.name,
            source_record=str(record),
            precision=Precision(precision),
            per_channel=True,
            palettize=None,
            calibration=str(calibration) if calibration else None,
            calibration_origin=None,
            inputs=inputs,
            support=support,
            out=str(out),
            out_record=str(out) + ".json",
        )
    )
    return out


def _cosine(expected: np.ndarray, actual: np.ndarray) -> float:
    expected, actual = expected.ravel().astype(np.float64), actual.ravel().astype(np.float64)
    return float(expected @ actual / (np.linalg.norm(expected) * np.linalg.norm(actual)))


def _parity(expected: dict, actual: dict) -> dict[str, tuple[float, float]]:
    """(cosine similarity, max abs error) per output."""
    assert set(actual) == set(expected)
    return {name: (_cosine(expected[name], actual[name]), float(np.abs(expected[name] - actual[name]).max())) for name in expected}


# ---------------------------------------------------------------- an NCHW segmenter with dynamic height and width

IMAGE_SHAPE = (1, 3, 32, 32)
SEGMENTER_INPUTS = (InputSpec(name="image", layout="NCHW", shape=IMAGE_SHAPE),)


def _segmenter(path: Path) -> Path:
    """image [N, 3, H, W] -> Conv 3x3 (8) -> Relu -> Conv 1x1 (1) -> Sigmoid -> probability [N, 1, H, W]."""
    rng = np.random.default_rng(4)
    weights: dict[str, np.ndarray] = {
        "conv1_w": rng.normal(0.0, 0.4, (8, 3, 3, 3)).astype(np.float32),
        "conv1_b": rng.normal(0.0, 0.1, 8).astype(np.float32),
        "conv2_w": rng.normal(0.0, 0.5, (1, 8, 1, 1)).astype(np.float32),
        "conv2_b": np.array([-0.5], np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "conv1_w", "conv1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2_w", "conv2_b"], ["logits"], name="conv2"),
        helper.make_node("Sigmoid", ["logits"], ["probability"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "segmenter",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _images(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, *IMAGE_SHAPE[1:])).astype(np.float32)


class Segmenter:
    def __init__(self, root: Path):
        self.original = _segmenter(root / "given" / "segmenter.onnx")
        self.record = onnx_source(self.original, root / "source")
        self.calibration = root / "calibration.npz"
        write_npz(self.calibration, image=_images(1, 32))
        self.x = {"image": _images(2, 24)}
        self.reference = runtime.predict(self.original, self.x, what="segmenter source")
        self.artifacts = {
            precision: _convert(
                self.record, precision, root / f"segmenter.{precision}.onnx", SEGMENTER_INPUTS,
                calibration=self.calibration if precision == "int8" else None,
            )
            for precision in PRECISIONS
        }


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Segmenter:
    return Segmenter(tmp_path_factory.mktemp("segmenter"))


def test_the_source_signature_names_every_dynamic_dimension(segmenter):
    assert SourceRecord.read(str(segmenter.record)).signature == {
        "inputs": [{"name": "image", "shape": [None, 3, None, None], "dtype": "float32"}],
        "outputs": [{"name": "probability", "shape": [None, 1, None, None], "dtype": "float32"}],
    }
    assert segmenter.reference["probability"].shape == (24, 1, 32, 32)


# (precision, lowest cosine similarity to the source's probability map)
SEGMENTER_PARITY = [("fp32", 0.99999), ("fp16", 0.99), ("dynamic_int8", 0.95), ("int8", 0.95)]


@pytest.mark.parametrize(("precision", "cosine"), SEGMENTER_PARITY)
def test_a_fixed_shape_reaches_every_precision_and_keeps_parity(segmenter, precision, cosine):
    path = segmenter.artifacts[precision]
    io = fsutil.read_json(str(path) + ".json")["io"]
    assert io["inputs"] == [{"name": "image", "dtype": "float32", "shape": list(IMAGE_SHAPE)}]
    assert io["outputs"] == [{"name": "probability", "dtype": "float32", "shape": [1, 1, 32, 32]}]
    # The file fixes a batch of one: the runtime feeds it one sample a run, and batch=1 gives the same.
    outputs = runtime.predict(path, segmenter.x, what=path.name)
    np.testing.assert_array_equal(outputs["probability"], runtime.predict(path, segmenter.x, what=path.name, batch=1)["probability"])
    measured = _parity(segmenter.reference, outputs)
    assert measured["probability"][0] >= cosine, measured


def test_a_fixed_shape_makes_the_onnx_source_a_new_file_the_npu_sees_whole(segmenter):
    assert segmenter.artifacts["fp32"].read_bytes() != segmenter.original.read_bytes()
    coverage = runtime.accelerator_coverage(segmenter.artifacts["int8"], QNN)
    assert coverage is not None and not any("dynamic shape" in name for name in coverage["fallback"]), coverage
    assert coverage["on_accelerator"] == coverage["ops"]
    # Without the fixed shape, height and width stay dynamic and the provider takes nothing.
    dynamic = runtime.accelerator_coverage(segmenter.original, QNN)
    assert dynamic is not None and dynamic["on_accelerator"] == 0


def test_a_shape_of_the_wrong_rank_or_against_a_static_dimension_is_refused(segmenter, tmp_path):
    for shape, problem in [((1, 3, 32), "Rank mismatch"), ((1, 4, 32, 32), "Can't replace existing fixed size")]:
        with pytest.raises(StepError) as caught:
            _convert(segmenter.record, "fp32", tmp_path / "o.onnx", (InputSpec(name="image", layout="NCHW", shape=shape),))
        message = str(caught.value)
        assert "input image" in message and "(?, 3, ?, ?)" in message and problem in message, message
    with pytest.raises(StepError, match=r"input mask, which the source model does not have \(its inputs: image\)"):
        _convert(segmenter.record, "fp32", tmp_path / "o.onnx", (InputSpec(name="mask", shape=IMAGE_SHAPE),))
    assert not (tmp_path / "o.onnx").exists()


# ---------------------------------------------------------------- a recurrent model: three inputs, two outputs

AUDIO, STATE = 64, 16
RECURRENT_INPUTS = (InputSpec(name="audio"), InputSpec(name="sr", dtype="int64"), InputSpec(name="state"))


def _recurrent(path: Path, *, scalar_rate: bool = False) -> Path:
    """audio [N, 64], sr (int64 [1] or scalar), state [2, N, 16] -> prob [N, 1], new_state [2, N, 16].

    h = tanh(audio W + state[0] U0) * sr / 16000; g = tanh(h A + state[1] U1); new_state = [h, g]; prob = sigmoid(g w).
    """
    rng = np.random.default_rng(12)
    weights: dict[str, np.ndarray] = {
        "w_in": rng.normal(0.0, 0.2, (AUDIO, STATE)).astype(np.float32),
        "u0": rng.normal(0.0, 0.3, (STATE, STATE)).astype(np.float32),
        "a": rng.normal(0.0, 0.3, (STATE, STATE)).astype(np.float32),
        "u1": rng.normal(0.0, 0.3, (STATE, STATE)).astype(np.float32),
        "w_out": rng.normal(0.0, 0.5, (STATE, 1)).astype(np.float32),
        "rate": np.array(16000.0, np.float32),
        "first": np.array(0, np.int64),
        "second": np.array(1, np.int64),
        "axis0": np.array([0], np.int64),
    }
    nodes = [
        helper.make_node("MatMul", ["audio", "w_in"], ["x_in"], name="input_dense"),
        helper.make_node("Gather", ["state", "first"], ["s0"], name="state0", axis=0),
        helper.make_node("Gather", ["state", "second"], ["s1"], name="state1", axis=0),
        helper.make_node("MatMul", ["s0", "u0"], ["r0"], name="recur0"),
        helper.make_node("Add", ["x_in", "r0"], ["z0"], name="sum0"),
        helper.make_node("Tanh", ["z0"], ["t0"], name="tanh0"),
        helper.make_node("Cast", ["sr"], ["sr_f"], name="rate_float", to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_f", "rate"], ["gain"], name="gain"),
        helper.make_node("Mul", ["t0", "gain"], ["h"], name="scaled"),
        helper.make_node("MatMul", ["h", "a"], ["x1"], name="dense1"),
        helper.make_node("MatMul", ["s1", "u1"], ["r1"], name="recur1"),
        helper.make_node("Add", ["x1", "r1"], ["z1"], name="sum1"),
        helper.make_node("Tanh", ["z1"], ["g"], name="tanh1"),
        helper.make_node("Unsqueeze", ["h", "axis0"], ["h_u"], name="stack_h"),
        helper.make_node("Unsqueeze", ["g", "axis0"], ["g_u"], name="stack_g"),
        helper.make_node("Concat", ["h_u", "g_u"], ["new_state"], name="new_state", axis=0),
        helper.make_node("MatMul", ["g", "w_out"], ["logit"], name="output_dense"),
        helper.make_node("Sigmoid", ["logit"], ["prob"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "recurrent",
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", AUDIO]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, [] if scalar_rate else [1]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", STATE]),
        ],
        [
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [2, "N", STATE]),
        ],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _stream(seed: int, steps: int) -> dict[str, np.ndarray]:
    """One stream's audio chunks, a constant sample rate, and a random starting state per step (samples first)."""
    rng = np.random.default_rng(seed)
    return {
        "audio": rng.normal(0.0, 1.0, (steps, AUDIO)).astype(np.float32),
        "sr": np.full(steps, 16000, np.int64),
        "state": rng.normal(0.0, 0.5, (steps, 2, STATE)).astype(np.float32),
    }


def _by_hand(path: Path, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ONNX Runtime fed one sample at a time in the model's own layout: the state's batch axis is its second."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rank = len(session.get_inputs()[1].shape)
    probs, states = [], []
    for i in range(len(samples["audio"])):
        sr = np.asarray(samples["sr"][i]).reshape((1,) * rank)
        prob, state = session.run(None, {"audio": samples["audio"][i : i + 1], "sr": sr, "state": samples["state"][i][:, None]})
        probs.append(prob[0])
        states.append(state[:, 0])
    return {"prob": np.stack(probs), "new_state": np.stack(states)}


@pytest.fixture(scope="module")
def recurrent(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("recurrent")
    original = _recurrent(root / "given" / "vad.onnx")
    calibration = root / "calibration.npz"
    write_npz(calibration, **_stream(1, 64))
    return {"root": root, "original": original, "record": onnx_source(original, root / "source"), "calibration": calibration}


def test_the_recurrent_signature_keeps_order_dtypes_and_the_state_layout(recurrent):
    signature = SourceRecord.read(str(recurrent["record"])).signature
    assert signature == {
        "inputs": [
            {"name": "audio", "shape": [None, AUDIO], "dtype": "float32"},
            {"name": "sr", "shape": [1], "dtype": "int64"},
            {"name": "state", "shape": [2, None, STATE], "dtype": "float32"},
        ],
        "outputs": [
            {"name": "prob", "shape": [None, 1], "dtype": "float32"},
            {"name": "new_state", "shape": [2, None, STATE], "dtype": "float32"},
        ],
    }


@pytest.mark.parametrize("scalar_rate", [False, True])
def test_predict_feeds_every_input_by_name_one_sample_or_many(tmp_path, scalar_rate):
    path = _recurrent(tmp_path / "vad.onnx", scalar_rate=scalar_rate)
    samples = _stream(3, 9)
    expected = _by_hand(path, samples)
    one = runtime.predict(path, samples, what="vad", batch=1)
    assert list(one) == ["prob", "new_state"]
    assert one["prob"].shape == (9, 1) and one["new_state"].shape == (9, 2, STATE)
    assert all(array.dtype == np.float32 for array in one.values())
    for name in expected:
        np.testing.assert_allclose(one[name], expected[name], atol=1e-6)
        # The sample rate is the same for every sample, so larger runs serve them; another rate runs alone.
        np.testing.assert_allclose(runtime.predict(path, samples, what="vad")[name], expected[name], atol=1e-6)
    mixed = {**samples, "sr": np.where(np.arange(9) % 2 == 0, 16000, 8000).astype(np.int64)}
    np.testing.assert_allclose(runtime.predict(path, mixed, what="vad", batch=4)["prob"], _by_hand(path, mixed)["prob"], atol=1e-6)


def test_the_state_carries_from_step_to_step_as_an_app_runs_it(recurrent):
    path = recurrent["original"]
    stream = _stream(4, 6)
    state = np.zeros((1, 2, STATE), np.float32)
    probs = []
    for step in range(6):
        feed = {"audio": stream["audio"][step : step + 1], "sr": stream["sr"][:1], "state": state}
        outputs = runtime.predict(path, feed, what="vad", batch=1)
        state = outputs["new_state"]
        probs.append(outputs["prob"][0, 0])
    # The same recurrence in numpy: h = tanh(a W + s0 U0), g = tanh(h A + s1 U1).
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    s0 = s1 = np.zeros(STATE, np.float32)
    for step in range(6):
        h = np.tanh(stream["audio"][step] @ weights["w_in"] + s0 @ weights["u0"])
        g = np.tanh(h @ weights["a"] + s1 @ weights["u1"])
        s0, s1 = h, g
        assert abs(float(1 / (1 + np.exp(-(g @ weights["w_out"])[0]))) - probs[step]) < 1e-5


@pytest.mark.parametrize("scalar_rate", [False, True])
def test_one_step_fed_in_the_model_layout_as_a_stream_feeds_it(tmp_path, scalar_rate):
    """A state [2, 1, 16] as the model takes it, a scalar rate as a 0-d array: read as one sample."""
    path = _recurrent(tmp_path / "vad.onnx", scalar_rate=scalar_rate)
    step = _stream(8, 1)
    rate = np.array(16000, np.int64) if scalar_rate else np.array([16000], np.int64)
    outputs = runtime.predict(path, {"audio": step["audio"], "sr": rate, "state": step["state"][0][:, None]}, what="vad", batch=1)
    expected = _by_hand(path, step)
    np.testing.assert_allclose(outputs["new_state"], expected["new_state"], atol=1e-6)
    np.testing.assert_allclose(outputs["prob"], expected["prob"], atol=1e-6)
    # Read back into the input's own layout, the state output feeds the next step.
    assert outputs["new_state"].reshape(2, 1, STATE).shape == (2, 1, STATE)


def test_a_missing_or_unknown_input_names_the_file_inputs(recurrent):
    samples = _stream(5, 2)
    with pytest.raises(StepError, match=r"vad needs every one of its inputs \(audio, sr, state\); no samples were given for state"):
        runtime.predict(recurrent["original"], {"audio": samples["audio"], "sr": samples["sr"]}, what="vad")
    with pytest.raises(StepError, match=r"vad has no input named rate; its inputs are audio, sr, state"):
        runtime.predict(recurrent["original"], {**samples, "rate": samples["sr"]}, what="vad")
    with pytest.raises(StepError, match=r"takes samples of shape \(2, 16\) for its input state, but was given \(16,\)"):
        runtime.predict(recurrent["original"], {**samples, "state": samples["state"][:, 0]}, what="vad")


def test_latency_takes_one_sample_by_name_and_zeros_for_the_rest(recurrent):
    path = recurrent["original"]
    stream = _stream(6, 1)
    assert runtime.median_latency_ms(path, what="vad", runs=3) > 0
    assert runtime.median_latency_ms(path, what="vad", sample={"audio": stream["audio"][0], "sr": stream["sr"][0]}, runs=3) > 0
    with pytest.raises(StepError, match="no input named volume"):
        runtime.median_latency_ms(path, what="vad", sample={"volume": np.zeros(1)}, runs=1)


def test_io_details_lists_every_input_and_output(recurrent):
    assert runtime.io_details(recurrent["original"], what="vad") == {
        "inputs": [
            {"name": "audio", "dtype": "float32", "shape": [-1, AUDIO]},
            {"name": "sr", "dtype": "int64", "shape": [1]},
            {"name": "state", "dtype": "float32", "shape": [2, -1, STATE]},
        ],
        "outputs": [
            {"name": "prob", "dtype": "float32", "shape": [-1, 1]},
            {"name": "new_state", "dtype": "float32", "shape": [2, -1, STATE]},
        ],
    }


# (precision, target, lowest cosine of prob, lowest cosine of new_state)
RECURRENT_PARITY = [
    ("fp32", "qnn", 0.99999, 0.99999),
    ("fp16", "cpu", 0.999, 0.999),
    ("dynamic_int8", "cpu", 0.99, 0.99),
    ("int8", "cpu", 0.99, 0.99),
    ("int8", "qnn", 0.99, 0.99),
]


@pytest.mark.parametrize(("precision", "target", "prob_cosine", "state_cosine"), RECURRENT_PARITY)
def test_recurrent_variants_keep_names_and_parity(recurrent, precision, target, prob_cosine, state_cosine):
    support = {"cpu": CPU, "qnn": QNN}[target]
    out = recurrent["root"] / f"vad.{precision}.{target}.onnx"
    calibration = recurrent["calibration"] if precision == "int8" else None
    path = _convert(recurrent["record"], precision, out, RECURRENT_INPUTS, calibration=calibration, support=support)
    io = fsutil.read_json(str(path) + ".json")["io"]
    assert [entry["name"] for entry in io["inputs"]] == ["audio", "sr", "state"]
    assert [entry["name"] for entry in io["outputs"]] == ["prob", "new_state"]
    assert io["inputs"][1]["dtype"] == "int64"
    if target == "qnn":  # static shapes: the batch, wherever it sits, becomes 1; the state's 2 and 16 stay
        assert [entry["shape"] for entry in io["inputs"]] == [[1, AUDIO], [1], [2, 1, STATE]]
        assert [entry["shape"] for entry in io["outputs"]] == [[1, 1], [2, 1, STATE]]
        coverage = runtime.accelerator_coverage(path, QNN)
        assert coverage is not None and not any("dynamic shape" in name for name in coverage["fallback"]), coverage
    samples = _stream(7, 40)
    expected = runtime.predict(recurrent["original"], samples, what="vad source")
    measured = _parity(expected, runtime.predict(path, samples, what=path.name))
    assert measured["prob"][0] >= prob_cosine and measured["new_state"][0] >= state_cosine, measured
    one = runtime.predict(path, samples, what=path.name, batch=1)
    assert _parity(expected, one)["new_state"][0] >= state_cosine


def test_calibration_data_must_name_every_input(recurrent, tmp_path):
    calibration = tmp_path / "calibration.npz"
    stream = _stream(1, 8)
    write_npz(calibration, audio=stream["audio"], sr=stream["sr"])
    with pytest.raises(StepError, match=r"has no array state for the model input state; it has audio, sr"):
        _convert(recurrent["record"], "int8", tmp_path / "o.onnx", RECURRENT_INPUTS, calibration=calibration)


# ---------------------------------------------------------------- convolutions inside If branches, static int8


def _branch(name: str, seed: int):
    """A body convolving the outer scope's ``x`` with 32 filters: most of the model's weights."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(0.0, 0.3, (32, 3, 3, 3)).astype(np.float32), f"{name}_w"),
        numpy_helper.from_array(rng.normal(0.0, 0.1, 32).astype(np.float32), f"{name}_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", f"{name}_w", f"{name}_b"], [f"{name}_c"], name=f"{name}_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [f"{name}_c"], [f"{name}_out"], name=f"{name}_relu"),
    ]
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)], weights)


def _if_model(path: Path) -> Path:
    """x [N, 3, 8, 8] -> If(mean > 0.5) {Conv} else {Conv} -> GlobalAveragePool -> Flatten -> MatMul (32 x 4) -> y [N, 4]."""
    rng = np.random.default_rng(21)
    inits = [
        numpy_helper.from_array(rng.normal(0.0, 0.5, (32, 4)).astype(np.float32), "dense_w"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", keepdims=0),
        helper.make_node("Greater", ["mean", "half"], ["bright"], name="bright"),
        helper.make_node("If", ["bright"], ["h"], name="choose", then_branch=_branch("then", 1), else_branch=_branch("else", 2)),
        helper.make_node("GlobalAveragePool", ["h"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "dense_w"], ["y"], name="dense"),
    ]
    graph = helper.make_graph(
        nodes,
        "if_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _brightness_varied(seed: int, count: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.1, 0.9, (count, 1, 1, 1))
    return np.clip(rng.normal(level, 0.2, (count, 3, 8, 8)), 0.0, 1.0).astype(np.float32)


def test_static_int8_of_if_branches_reports_the_share_it_really_quantized(tmp_path, capsys):
    original = _if_model(tmp_path / "given" / "branches.onnx")
    record = onnx_source(original, tmp_path / "source")
    calibration = tmp_path / "calibration.npz"
    write_npz(calibration, x=_brightness_varied(1, 32))
    inputs = (InputSpec(layout="NCHW"),)
    static = _convert(record, "int8", tmp_path / "branches.int8.onnx", inputs, calibration=calibration)
    dynamic = _convert(record, "dynamic_int8", tmp_path / "branches.dynamic_int8.onnx", inputs)
    # ORT's static QDQ quantizer does not enter the branches: their convolutions stay float, and the log says so.
    bodies = all_graphs(onnx.load(str(static)).graph)[1:]
    assert sum((Counter(n.op_type for n in body.node) for body in bodies), Counter())["Conv"] == 2
    assert "2 weighted node(s) there stay float" in capsys.readouterr().out
    # The share of weight bytes stored as int8 is what the file holds: the small dense layer only.
    counted = weight_bytes(onnx.load(str(static)))
    share = runtime.weight_share(static, Precision.INT8)
    assert share == pytest.approx(counted["int8"] / sum(counted.values()))
    assert share < 0.1, share
    # The dynamic quantizer enters the branches: nearly every weight byte is int8.
    assert runtime.weight_share(dynamic, Precision.DYNAMIC_INT8) > 0.8
    x = {"x": _brightness_varied(2, 40)}
    expected = runtime.predict(original, x, what="source")
    for path, lowest in ((static, 0.95), (dynamic, 0.99)):
        cosine, _ = _parity(expected, runtime.predict(path, x, what=path.name))["y"]
        assert cosine > lowest, (path.name, cosine)


# ---------------------------------------------------------------- a SavedModel with two inputs and two outputs


def _signature_record(path: Path, kind: str, model: Path) -> Path:
    def entry(name: str, size: int) -> dict:
        return {"name": name, "shape": [None, size], "dtype": "float32"}

    SourceRecord(
        kind=kind, path=str(model), model=model.as_posix(), model_sha256="", source_files={},
        signature={"inputs": [entry("features", 4), entry("scale", 1)], "outputs": [entry("scaled", 4), entry("scores", 3)]},
        metadata={}, tools={},
    ).write(str(path))
    return path


@pytest.mark.parametrize("kind", ["saved_model", "tflite"])
def test_tf2onnx_keeps_the_signature_keys_of_a_two_input_two_output_model(tmp_path, kind):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    weights = np.random.default_rng(8).normal(0.0, 0.5, (4, 3)).astype(np.float32)
    module = tf.Module()
    module.serve = tf.function(
        lambda features, scale: {"scores": tf.nn.softmax(tf.matmul(features, weights)), "scaled": features * scale},
        input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features"), tf.TensorSpec([None, 1], tf.float32, name="scale")],
    )
    saved_model = tmp_path / "saved_model"
    tf.saved_model.save(module, str(saved_model), signatures={"serving_default": module.serve})
    model = saved_model
    if kind == "tflite":  # tf2onnx names its tensors serving_default_features:0 ...; the file's signature keys win
        model = tmp_path / "two.tflite"
        model.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert())
    record = _signature_record(tmp_path / "source.json", kind, model)
    calibration = tmp_path / "calibration.npz"
    rng = np.random.default_rng(9)
    samples = {"features": rng.normal(size=(32, 4)).astype(np.float32), "scale": rng.uniform(0.5, 2.0, (32, 1)).astype(np.float32)}
    write_npz(calibration, **samples)
    expected = {"scores": tf.nn.softmax(samples["features"] @ weights).numpy(), "scaled": samples["features"] * samples["scale"]}
    inputs = (InputSpec(name="features"), InputSpec(name="scale"))
    for precision, lowest in (("fp32", 0.99999), ("int8", 0.99)):
        path = _convert(record, precision, tmp_path / f"two.{precision}.onnx", inputs, calibration=calibration)
        io = fsutil.read_json(str(path) + ".json")["io"]
        assert sorted(entry["name"] for entry in io["inputs"]) == ["features", "scale"]
        assert sorted(entry["name"] for entry in io["outputs"]) == ["scaled", "scores"]
        measured = _parity(expected, runtime.predict(path, samples, what=path.name))
        assert all(cosine >= lowest for cosine, _ in measured.values()), (precision, measured)
