"""Workspaces whose models are ONNX files written with onnx.helper: they build without TensorFlow, in seconds.

The model is a two-layer perceptron over 64 inputs (an 8x8 image flattened,
raw pixel values 0..16 scaled by 1/16), optionally with one extra op after the
hidden layer.  Its evaluation labels are its own float predictions on samples
whose top two classes are far apart, so the float model scores 1.0 and a
quantized copy keeps its top-1 while inputs that are changed (dimmed, noisy)
move some predictions.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from modelmake.formats.onnx import OnnxSettings
from modelmake.kinds import Precision
from modelmake.plan import FormatSupport

from tests.support.workspaces import Workspace

# An ONNX target running on the CPU at opset 17: what most tests of the ONNX steps convert for.
ONNX_CPU = FormatSupport(
    format="onnx",
    precisions=tuple(Precision),
    settings=OnnxSettings(execution_providers=("CPUExecutionProvider",), quantization="cpu", opset=17),
)

INPUTS = 64
HIDDEN = 256  # 64x256 + 256x10 float weights: about 75 KiB as fp32, about a quarter of that as int8
CLASSES = 10
OPSET = 17
SCALE = 1.0 / 16.0


def mlp_onnx(path: Path, *, extra_op: str | None = None, seed: int = 0, batch: int | str = "batch") -> Path:
    """Write the perceptron (x -> MatMul -> Add -> Relu [-> extra_op] -> MatMul -> Add -> Softmax -> y)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    # Centred so that the ten classes share random inputs about evenly, with logits a few units apart.
    w1 = rng.normal(0.0, 1.0 / np.sqrt(INPUTS), (INPUTS, HIDDEN)).astype(np.float32)
    b1 = (-0.5 * w1.sum(axis=0) + rng.normal(0.0, 0.1, HIDDEN)).astype(np.float32)
    reference = rng.integers(0, 17, (1000, INPUTS)).astype(np.float32) * SCALE
    hidden = np.maximum(reference @ w1 + b1, 0.0)
    w2 = rng.normal(0.0, 1.0, (HIDDEN, CLASSES))
    w2 = (w2 * 3.0 / (hidden @ w2).std()).astype(np.float32)
    b2 = (-(hidden @ w2).mean(axis=0)).astype(np.float32)
    weights = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="dense1"),
        helper.make_node("Add", ["h1", "b1"], ["h2"], name="bias1"),
        helper.make_node("Relu", ["h2"], ["h3"], name="relu"),
    ]
    last = "h3"
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["h3"], ["h4"], name=extra_op.lower()))
        last = "h4"
    nodes += [
        helper.make_node("MatMul", [last, "w2"], ["l1"], name="dense2"),
        helper.make_node("Add", ["l1", "b2"], ["logits"], name="bias2"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, INPUTS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, CLASSES])],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelmake-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def onnx_source(model_file: Path, directory: Path) -> Path:
    """The source record of an ONNX file, made by the source step: the file copied, its signature read."""
    from modelmake.contracts import SourceJob
    from modelmake.plan import Source
    from modelmake.steps import source

    record = directory / "source.json"
    source.materialize(SourceJob(Source(kind="onnx", path=str(model_file)), str(directory), str(record)))
    return record


def predict(path: Path, raw: np.ndarray) -> np.ndarray:
    """The model's float outputs on raw (unscaled) samples, with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = session.get_inputs()[0].shape[0]
    x = (raw * SCALE).astype(np.float32)
    if isinstance(batch, int):
        return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    return session.run(None, {name: x})[0]


def write_data(model: Path, directory: Path, *, evaluation: int = 200, calibration: int = 100, seed: int = 1) -> None:
    """calibration.npz and evaluation.npz beside each other: raw 0..16 pixel values, labelled by the model itself."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 17, (20 * evaluation, INPUTS)).astype(np.float32)
    outputs = predict(model, pool)
    ordered = np.sort(outputs, axis=1)
    clear = pool[(ordered[:, -1] - ordered[:, -2]) > 0.2]
    assert len(clear) >= evaluation + calibration, "too few samples with a clear top class"
    directory.mkdir(parents=True, exist_ok=True)
    test = clear[:evaluation]
    np.savez(directory / "evaluation.npz", x=test, y=np.argmax(predict(model, test), axis=1).astype(np.int64))
    calib = clear[evaluation : evaluation + calibration]
    np.savez(directory / "calibration.npz", x=calib, y=np.argmax(predict(model, calib), axis=1).astype(np.int64))


def profile(name: str, *, accelerator: str | None = None, require_full_coverage: bool | None = None, precisions=("fp32", "int8")) -> str:
    """A chipset profile that builds ONNX only, run by the QNN execution provider when accelerator is qnn."""
    lines = [
        f"name: {name}",
        "soc: Example SoC",
        "platform: android",
        "min_os: Android 14 (API 34)",
        "formats:",
        "  onnx:",
        "    execution_providers: [QNNExecutionProvider, CPUExecutionProvider]" if accelerator == "qnn"
        else "    execution_providers: [CPUExecutionProvider]",
        f"    precisions: [{', '.join(precisions)}]",
        f"    opset: {OPSET}",
        "    quantization: cpu",
    ]
    if accelerator:
        lines.append(f"    accelerator: {accelerator}")
    if require_full_coverage is not None:
        lines.append(f"    require_full_coverage: {str(require_full_coverage).lower()}")
    return "\n".join(lines) + "\n"


def spec(model_block: str, *, bundle: str = "formats", version: str = "1.0.0") -> str:
    """models.yaml with one bundle and the given models (their YAML, as written under `models:`)."""
    return (
        "format: 1\n"
        f'bundle: {{name: {bundle}, version: "{version}", signing: {{key: "file:keys/signing.pem"}}}}\n'
        "models:\n" + textwrap.indent(textwrap.dedent(model_block), "  ")
    )


def onnx_workspace(workspace: Workspace, *, model_block: str, profiles: dict[str, str], extra_op: str | None = None) -> Workspace:
    """Turn a copy of the test template into a workspace with models/mlp.onnx, data/*.npz, the profiles and the spec."""
    model = mlp_onnx(workspace.root / "models" / "mlp.onnx", extra_op=extra_op)
    write_data(model, workspace.root / "data")
    for name, text in profiles.items():
        workspace.write(f"targets/{name}.yaml", text)
    workspace.write("models.yaml", spec(model_block))
    return workspace


def metrics(workspace: Workspace, target: str, artifact: str) -> dict:
    return json.loads((workspace.build / "metrics" / target / f"{artifact}.json").read_text(encoding="utf-8"))


def report(workspace: Workspace, bundle: str = "formats", version: str = "1.0.0") -> str:
    return (workspace.build / "reports" / bundle / version / "report.md").read_text(encoding="utf-8")


def report_rows(text: str, model: str, target: str) -> dict[str, str]:
    """The report's table rows of one model on one target, by variant."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 4 and cells[0] == model and cells[1] == target:
            rows[cells[3]] = line
    return rows


def manifest(workspace: Workspace, bundle: str = "formats", version: str = "1.0.0") -> dict:
    return json.loads((workspace.build / "bundles" / bundle / version / "manifest.json").read_text(encoding="utf-8"))


def bundle_files(workspace: Workspace, bundle: str = "formats", version: str = "1.0.0") -> list[str]:
    root = workspace.build / "bundles" / bundle / version / "files"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
