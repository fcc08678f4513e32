"""The models mobile teams ship, besides classifiers, built from scratch through every variant their targets take.

One build of tests/support/real_models.py's workspace; each test reads what
it is about.  Parity is asserted per output against the source model, and the
figures that need no model (a detector's one-at-a-time outputs, a stream's
state carried by hand) are computed here independently of modelmake.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.support import real_models
from tests.support.workspaces import REPO, Workspace

pytestmark = pytest.mark.slow

# The worst cosine to the source model an artifact may have, per precision, on every output.
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "dynamic_int8": 0.95, "int8": 0.95}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("real") / "workspace"
    root.mkdir()
    shutil.copyfile(REPO / "dodo.py", root / "dodo.py")
    real_models.write_workspace(root)
    workspace = Workspace(root)
    workspace.doit(timeout=2400)
    return workspace


def _metrics(workspace: Workspace, target: str, artifact: str) -> dict:
    return json.loads((workspace.build / "metrics" / target / f"{artifact}.json").read_text())


def _record(workspace: Workspace, target: str, artifact: str) -> dict:
    """The artifact's record, beside its file (whose suffix is the format's: .tflite, .onnx, .mlpackage.zip)."""
    model, variant, _ = artifact.split(".")
    (path,) = (workspace.build / "artifacts" / target).glob(f"{model}.{variant}.*.json")
    return json.loads(path.read_text())


def _manifest(workspace: Workspace) -> dict:
    return json.loads(next((workspace.build / "bundles").rglob("manifest.json")).read_text())


def _built(workspace: Workspace, model: str) -> list[tuple[str, str, str]]:
    """(target, artifact, precision) of every artifact of a model that has figures."""
    found = []
    for path in sorted((workspace.build / "metrics").glob(f"*/{model}.*.json")):
        variant = path.name.split(".")[1]
        found.append((path.parent.name, path.name.removesuffix(".json"), variant))
    return found


def _assert_parity(figures: dict, precision: str, outputs: list[str]) -> None:
    per_output = figures.get("outputs") or {"": figures["metrics"]}
    assert sorted(per_output) == sorted(outputs)
    for name, measured in per_output.items():
        assert measured["cosine_similarity"] >= MIN_COSINE[precision], (name, precision, measured)
    assert figures["metrics"]["cosine_similarity"] == min(m["cosine_similarity"] for m in per_output.values())


def test_the_detector_builds_every_variant_and_is_measured_one_image_at_a_time(built):
    artifacts = _built(built, "detector")
    assert [a for _, a, _ in artifacts] == [f"detector.{v}.tflite" for v in ("dynamic_int8", "fp16", "fp32", "int8")]
    for target, artifact, precision in artifacts:
        figures = _metrics(built, target, artifact)
        assert figures["batching"].startswith("one sample at a time: batched output"), figures["batching"]
        _assert_parity(figures, precision, ["boxes", "scores"])
        assert {"box_error", "score_error", "snr_db"} <= set(figures["metrics"])
        assert "top1" not in figures["metrics"] and "top1_agreement" not in figures["metrics"]
    # The ground truth is the file's own float outputs one image at a time: the fp32 copy has no error against it.
    fp32 = _metrics(built, "tflite-all", "detector.fp32.tflite")["metrics"]
    assert fp32["box_error"] < 1e-6 and fp32["score_error"] < 1e-6
    record = _record(built, "tflite-all", "detector.int8.tflite")
    assert sorted(t["name"] for t in record["io"]["outputs"]) == ["boxes", "scores"]


def test_a_model_with_two_inputs_and_two_outputs_builds_for_every_format(built):
    artifacts = _built(built, "fusion")
    assert {(t, p) for t, _, p in artifacts} == {
        *(("tflite-all", p) for p in ("fp32", "fp16", "dynamic_int8", "int8")),
        *(("onnx-cpu", p) for p in ("fp32", "fp16", "dynamic_int8", "int8")),
        *(("apple-a17", p) for p in ("fp32", "fp16", "int8")),
    }
    source = json.loads((built.build / "reference" / "fusion.json").read_text())
    assert source["outputs"]["digit"]["top1"] > 0.8
    for target, artifact, precision in artifacts:
        record = _record(built, target, artifact)
        assert sorted(t["name"] for t in record["io"]["inputs"]) == ["image", "meta"]
        assert sorted(t["name"] for t in record["io"]["outputs"]) == ["digit", "embedding"]
        figures = _metrics(built, target, artifact)
        if target == "apple-a17":
            assert figures["structure"]["loads"] and figures["structure"]["io_matches"]
            assert "cosine_similarity" in figures["not_measured"]
            continue
        _assert_parity(figures, precision, ["digit", "embedding"])
        assert figures["outputs"]["digit"]["top1"] >= source["outputs"]["digit"]["top1"] - 0.05
        assert "worst_cosine_similarity" in figures["outputs"]["embedding"]
    manifest = _manifest(built)["models"]["fusion"]
    assert [i["name"] for i in manifest["inputs"]] == ["image", "meta"]
    assert [(o["name"], o["kind"]) for o in manifest["outputs"]] == [("digit", "classes"), ("embedding", "embedding")]


def test_an_embedding_model_builds_every_variant(built):
    artifacts = _built(built, "embedder")
    assert len(artifacts) == 11
    for target, artifact, precision in artifacts:
        figures = _metrics(built, target, artifact)
        if target == "apple-a17":
            continue
        _assert_parity(figures, precision, [""])
        worst = figures["metrics"]["worst_cosine_similarity"]
        assert worst >= (0.999 if precision == "fp32" else 0.9), (artifact, worst)


def test_a_stateful_model_is_evaluated_over_its_sequences_as_an_app_runs_it(built):
    expected = real_models.vad_stream(
        built.root / "models" / "vad.onnx", np.load(built.root / "models" / "vad_evaluation.npz")["audio"], 16000
    )
    with np.load(built.build / "reference" / "vad.npz") as saved:
        np.testing.assert_allclose(saved["outputs.prob"], expected["prob"], atol=1e-6)
        # Outputs come back samples first: each step's state (2, 1, 16) as one row (2, 16).
        np.testing.assert_allclose(saved["outputs.next_state"], expected["next_state"][:, :, 0], atol=1e-6)
    artifacts = _built(built, "vad")
    assert {p for _, _, p in artifacts} == {"fp32", "fp16", "dynamic_int8"}
    for target, artifact, precision in artifacts:
        figures = _metrics(built, target, artifact)
        assert figures["batching"].startswith("one sequence at a time")
        _assert_parity(figures, precision, ["prob", "next_state"])
    manifest = _manifest(built)["models"]["vad"]
    assert [(i["name"], i.get("dtype")) for i in manifest["inputs"]] == [("audio", "float32"), ("sr", "int64"), ("state", "float32")]
    assert manifest["outputs"][1] == {"name": "next_state", "kind": "tensor", "state": "state"}


def test_a_map_output_with_dynamic_height_and_width_is_fixed_for_the_npu_only(built):
    artifacts = _built(built, "textmap")
    assert {(t, p) for t, _, p in artifacts} == {
        *(("onnx-cpu", p) for p in ("fp32", "fp16", "dynamic_int8", "int8")),
        *(("onnx-qnn", p) for p in ("fp32", "fp16", "int8")),
    }
    for target, artifact, precision in artifacts:
        record = _record(built, target, artifact)
        # The shape is fixed for the NPU target only; the CPU target keeps any height and width.
        assert record["io"]["inputs"][0]["shape"] == ([1, 3, 32, 32] if target == "onnx-qnn" else [-1, 3, -1, -1])
        figures = _metrics(built, target, artifact)
        _assert_parity(figures, precision, [""] if "outputs" not in figures else ["prob"])
        assert figures["metrics"]["mean_iou"] > (0.95 if precision in ("fp32", "fp16") else 0.8)
        if target == "onnx-qnn":
            assert figures["coverage"]["accelerator"] == "qnn"


def test_the_report_shows_each_outputs_figures(built):
    report = next((built.build / "reports").rglob("report.md")).read_text()
    assert "## fusion (outputs digit: classes, embedding: embedding; worst of the outputs)" in report
    assert "| tflite-all | tflite | int8 | boxes (boxes) |" in report
    assert "next_state: tensor (state)" in report


def test_every_shipped_artifact_has_a_baseline_a_device_can_record_against(built):
    from modelmake.client.telemetry import TelemetryContext, TelemetryRecorder

    manifest_path = next((built.build / "bundles").rglob("manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    context = TelemetryContext(device="d", version=manifest["version"], chipset="c", app_version="1", channel="stable")
    documents = {}
    for model in manifest["models"].values():
        for vid, variant in model["variants"].items():
            document = json.loads((manifest_path.parent / variant["baseline"]["file"]).read_text())
            assert document["artifact"] == vid and document["file"] == variant["file"]
            TelemetryRecorder(document, context)
            documents[vid] = document
    for vid, document in documents.items():
        # Core ML cannot run here: its distributions are the source model's, and say so.
        assert document["measured_on"] == ("source model" if vid.endswith("@apple-a17") else "artifact"), vid
    vad = documents["vad.fp32.onnx@onnx-cpu"]
    assert set(vad["outputs"]) == {"prob"} and set(vad["inputs"]) == {"audio", "sr"}  # the state is the model's own
    assert vad["inputs"]["sr"] == {"kind": "features", "mean": [16000.0], "std": [0.0]}
    assert sum(vad["outputs"]["prob"]["values"]["counts"]) == vad["samples"]
    fusion = documents["fusion.int8.tflite@tflite-all"]
    assert {n: o["kind"] for n, o in fusion["outputs"].items()} == {"digit": "classes", "embedding": "embedding"}
    assert {n: i["kind"] for n, i in fusion["inputs"].items()} == {"image": "image", "meta": "features"}
    assert documents["textmap.int8.onnx@onnx-qnn"]["outputs"]["prob"]["kind"] == "mask"
    assert set(documents["detector.fp16.tflite@tflite-all"]["outputs"]) == {"boxes", "scores"}
