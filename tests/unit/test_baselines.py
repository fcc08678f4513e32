"""Baselines (steps/_baselines.py): what the evaluation data looked like to a model, in the bins devices report in.

The models here are plain functions over named tensors, so each kind of model
(a classifier, a segmenter, several outputs, a stream) is measured in
milliseconds.  The property every test leans on: a device running the same
inputs through the same model reports exactly the baseline's counts.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.client.telemetry import TelemetryContext, TelemetryRecorder
from modelmake.contracts import SourceRecord
from modelmake.kinds import OutputKind
from modelmake.plan import Budget, InputSpec, OutputSpec
from modelmake.steps import _baselines, _evaluation, _streams
from modelmake.steps._arrays import write_npz
from modelmake.steps.evaluate import _source_distributions
from modelmake.tensors import signature

RNG = np.random.default_rng(7)
CONTEXT = TelemetryContext(device="d", version="1.0.0", chipset="c", app_version="1", channel="stable")
WHEN = datetime(2027, 1, 1, tzinfo=UTC)


def load(tmp_path, sig, inputs, outputs, **arrays):
    path = tmp_path / "evaluation.npz"
    write_npz(path, **arrays)
    return _evaluation.load(str(path), inputs, outputs, sig, origin="evaluation data")


def as_document(measured: dict, labels: dict | None = None) -> dict:
    """The bundle's file for ``measured``, without a package step: what the recorder is given on the device."""
    outputs = {}
    for name, entry in measured["outputs"].items():
        if entry["kind"] == "classes":
            count = len(entry["classes"]["counts"])
            entry = {**entry, "classes": {**entry["classes"], "labels": (labels or {}).get(name, [str(i) for i in range(count)])}}
        outputs[name] = entry
    return {"format": 1, "artifact": "m.fp32.tflite@t", "model": "m", "file": "files/t/m.fp32.tflite",
            **measured, "outputs": outputs}


def device_counts(measured: dict, inputs: dict, outputs: dict, *, one_at_a_time: bool = False) -> dict:
    recorder = TelemetryRecorder(as_document(measured), CONTEXT, start=WHEN)
    count = len(next(iter(outputs.values())))
    if one_at_a_time:
        for i in range(count):
            recorder.observe({k: v[i:i + 1] for k, v in inputs.items()}, {k: v[i:i + 1] for k, v in outputs.items()}, 1.0)
    else:
        recorder.observe(inputs, outputs, 1.0)
    return recorder.record(WHEN)


def assert_device_matches(measured: dict, record: dict) -> None:
    for name, entry in measured["outputs"].items():
        if entry["kind"] == "classes":
            assert record["outputs"][name]["confidence"]["counts"] == entry["confidence"]["counts"]
            assert record["outputs"][name]["classes"]["counts"] == entry["classes"]["counts"]
        else:
            assert record["outputs"][name]["values"]["counts"] == entry["values"]["counts"]
    for name, entry in measured["inputs"].items():
        if entry["kind"] == "image":
            assert record["inputs"][name]["brightness"]["counts"] == entry["brightness"]["counts"]
            assert record["inputs"][name]["contrast"]["counts"] == entry["contrast"]["counts"]
        else:
            summed = record["inputs"][name]
            mean = np.asarray(summed["sum"]) / summed["count"]
            std = np.sqrt(np.asarray(summed["sum_sq"]) / summed["count"] - mean**2)
            np.testing.assert_allclose(mean, entry["mean"], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(std, entry["std"], rtol=1e-3, atol=1e-5)


# --- a classifier ----------------------------------------------------------------------------


def classifier(images: np.ndarray) -> np.ndarray:
    """Ten logits from the image's mean, sharper for brighter images."""
    flat = images.reshape(len(images), -1).mean(axis=1)
    return np.stack([-(flat * 10 - k) ** 2 for k in range(10)], axis=1).astype(np.float32)


def test_a_classifiers_confidence_classes_and_image_statistics(tmp_path):
    raw = RNG.integers(0, 256, (64, 8, 8, 1)).astype(np.float32) * RNG.uniform(0.2, 1.0, (64, 1, 1, 1)).astype(np.float32)
    sig = signature([{"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32"}],
                    [{"name": "logits", "shape": [None, 10], "dtype": "float32"}])
    data = load(tmp_path, sig, (InputSpec(layout="NHWC", scale="1/255"),), (OutputSpec(kind=OutputKind.CLASSES),),
                x=raw, y=RNG.integers(0, 10, 64))
    outputs = {"logits": classifier(data.inputs["image"])}
    measured = _baselines.measure(data, outputs, measured_on=_baselines.ARTIFACT)

    assert measured["measured_on"] == "artifact" and measured["samples"] == 64
    logits = measured["outputs"]["logits"]
    assert logits["kind"] == "classes" and logits["scores"] == "logits"
    assert logits["confidence"]["edges"] == _baselines.CONFIDENCE_EDGES and sum(logits["confidence"]["counts"]) == 64
    assert logits["classes"]["counts"] == np.bincount(outputs["logits"].argmax(axis=1), minlength=10).tolist()
    image = measured["inputs"]["image"]
    assert image["kind"] == "image"
    low, high = image["range"]
    assert low == pytest.approx(data.inputs["image"].min(), rel=1e-5) and high == pytest.approx(data.inputs["image"].max(), rel=1e-5)
    assert sum(image["brightness"]["counts"]) == sum(image["contrast"]["counts"]) == 64
    assert_device_matches(measured, device_counts(measured, data.inputs, outputs))
    assert_device_matches(measured, device_counts(measured, data.inputs, outputs, one_at_a_time=True))


def test_softmax_outputs_are_read_as_probabilities(tmp_path):
    sig = signature([{"name": "x", "shape": [None, 4], "dtype": "float32"}], [{"name": "p", "shape": [None, 3], "dtype": "float32"}])
    data = load(tmp_path, sig, (InputSpec(layout="NC"),), (OutputSpec(kind=OutputKind.CLASSES),),
                x=RNG.normal(size=(20, 4)).astype(np.float32), y=np.zeros(20, np.int64))
    logits = RNG.normal(size=(20, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    measured = _baselines.measure(data, {"p": probabilities}, measured_on=_baselines.ARTIFACT)
    assert measured["outputs"]["p"]["scores"] == "probabilities"
    from_logits = _baselines.measure(data, {"p": logits}, measured_on=_baselines.ARTIFACT)
    assert from_logits["outputs"]["p"]["confidence"] == measured["outputs"]["p"]["confidence"]
    assert measured["inputs"]["x"]["kind"] == "features" and len(measured["inputs"]["x"]["mean"]) == 4


# --- a segmenter -------------------------------------------------------------------------------


def test_a_segmenters_mask_has_a_value_histogram_over_its_range(tmp_path):
    sig = signature([{"name": "image", "shape": [None, 3, 8, 8], "dtype": "float32"}],
                    [{"name": "mask", "shape": [None, 1, 8, 8], "dtype": "float32"}])
    images = RNG.uniform(0, 1, (30, 3, 8, 8)).astype(np.float32)
    data = load(tmp_path, sig, (InputSpec(layout="NCHW"),), (OutputSpec(kind=OutputKind.MASK),),
                x=images, y=RNG.integers(0, 2, (30, 8, 8)))
    mask = 1 / (1 + np.exp(-(images.mean(axis=1, keepdims=True) - 0.5) * 8))
    measured = _baselines.measure(data, {"mask": mask}, measured_on=_baselines.ARTIFACT)

    values = measured["outputs"]["mask"]
    assert values["kind"] == "mask" and set(values) == {"kind", "values"}
    assert values["values"]["statistic"] == "mean" and len(values["values"]["edges"]) == _baselines.BINS + 1
    means = mask.reshape(30, -1).mean(axis=1)
    edges = values["values"]["edges"]
    assert edges[0] < means.min() and edges[-1] > means.max()  # a margin each side, for drift to show in
    assert sum(values["values"]["counts"]) == 30
    assert measured["inputs"]["image"]["kind"] == "image"
    assert_device_matches(measured, device_counts(measured, data.inputs, {"mask": mask}))


def test_value_edges_of_a_constant_output_are_still_increasing():
    edges = _baselines.value_edges(np.full(10, 3.0))
    assert len(edges) == _baselines.BINS + 1 and all(b > a for a, b in zip(edges, edges[1:], strict=False))
    assert edges[0] < 3.0 < edges[-1]


# --- several outputs and inputs ---------------------------------------------------------------


def test_a_model_with_two_inputs_and_two_outputs_has_each_described(tmp_path):
    sig = signature(
        [{"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32"}, {"name": "meta", "shape": [None, 3], "dtype": "float32"}],
        [{"name": "digit", "shape": [None, 10], "dtype": "float32"}, {"name": "embedding", "shape": [None, 16], "dtype": "float32"}],
    )
    images = RNG.uniform(0, 16, (40, 8, 8, 1)).astype(np.float32)
    meta = RNG.normal(loc=[1.0, -2.0, 0.0], scale=[0.5, 1.0, 2.0], size=(40, 3)).astype(np.float32)
    data = load(tmp_path, sig,
                (InputSpec(name="image", layout="NHWC", scale="1/16"), InputSpec(name="meta", layout="NC")),
                (OutputSpec(name="digit", kind=OutputKind.CLASSES), OutputSpec(name="embedding", kind=OutputKind.EMBEDDING)),
                image=images, meta=meta, y_digit=RNG.integers(0, 10, 40))
    embedding = RNG.normal(size=(40, 16))
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    outputs = {"digit": classifier(data.inputs["image"]), "embedding": embedding}
    measured = _baselines.measure(data, outputs, measured_on=_baselines.ARTIFACT)

    assert measured["outputs"]["digit"]["kind"] == "classes" and measured["outputs"]["embedding"]["kind"] == "embedding"
    assert measured["inputs"]["image"]["kind"] == "image" and measured["inputs"]["meta"]["kind"] == "features"
    np.testing.assert_allclose(measured["inputs"]["meta"]["mean"], meta.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(measured["inputs"]["meta"]["std"], meta.std(axis=0), rtol=1e-5)
    assert_device_matches(measured, device_counts(measured, data.inputs, outputs))


# --- a stream --------------------------------------------------------------------------------


def test_a_stream_is_described_per_step_without_its_state(tmp_path):
    sequences, steps, width = 3, 5, 4
    sig = signature(
        [{"name": "audio", "shape": [None, width], "dtype": "float32"}, {"name": "sr", "shape": [], "dtype": "int64"},
         {"name": "state", "shape": [None, width], "dtype": "float32"}],
        [{"name": "speech", "shape": [None, 1], "dtype": "float32"}, {"name": "state_out", "shape": [None, width], "dtype": "float32"}],
    )
    audio = RNG.normal(size=(sequences, steps, width)).astype(np.float32)
    data = load(
        tmp_path, sig,
        (InputSpec(name="audio", layout="NC"), InputSpec(name="sr", layout="NC"), InputSpec(name="state", layout="NC")),
        (OutputSpec(name="speech", kind=OutputKind.TENSOR), OutputSpec(name="state_out", kind=OutputKind.TENSOR, state="state")),
        audio=audio, sr=np.full((sequences, steps), 16000, np.int64),
    )

    def step(inputs, batch):
        state = inputs["state"] + inputs["audio"]
        return {"speech": 1 / (1 + np.exp(-state.sum(axis=1, keepdims=True))), "state_out": state}

    outputs = data.run(step, data.decide(step, [None, None, None], 1e-4))
    measured = _baselines.measure(data, outputs, measured_on=_baselines.ARTIFACT)

    assert measured["samples"] == sequences * steps
    assert set(measured["outputs"]) == {"speech"} and set(measured["inputs"]) == {"audio", "sr"}
    assert sum(measured["outputs"]["speech"]["values"]["counts"]) == sequences * steps
    assert measured["inputs"]["sr"] == {"kind": "features", "mean": [16000.0], "std": [0.0]}
    # The app observes one step at a time, its state left out, as it runs the stream.
    recorder = TelemetryRecorder(as_document(measured), CONTEXT, start=WHEN)
    flat_audio, flat_sr = _streams.flatten(data.inputs["audio"]), _streams.flatten(data.inputs["sr"])
    for i in range(sequences * steps):
        recorder.observe({"audio": flat_audio[i:i + 1], "sr": flat_sr[i], "state": np.zeros((1, width))},
                         {"speech": outputs["speech"][i:i + 1], "state_out": outputs["state_out"][i:i + 1]}, 2.0)
    assert_device_matches(measured, recorder.record(WHEN))


# --- where the artifact cannot run, and the bundle's file -----------------------------------


def test_without_the_artifact_the_source_models_outputs_are_used_and_said_to_be(tmp_path):
    sig = signature([{"name": "x", "shape": [None, 4], "dtype": "float32"}], [{"name": "y", "shape": [None, 3], "dtype": "float32"}])
    write_npz(tmp_path / "evaluation.npz", x=RNG.normal(size=(12, 4)).astype(np.float32), y=np.zeros(12, np.int64))
    write_npz(tmp_path / "reference.npz", **{"outputs.y": RNG.normal(size=(12, 3)).astype(np.float32)})
    SourceRecord(kind="recipe", path="r.py", model="", model_sha256="", source_files={}, signature=sig, metadata={},
                 tools={}).write(str(tmp_path / "source.json"))
    job = SimpleNamespace(evaluation=str(tmp_path / "evaluation.npz"), reference_outputs=str(tmp_path / "reference.npz"),
                          source_record=str(tmp_path / "source.json"), inputs=(InputSpec(layout="NC"),),
                          outputs=(OutputSpec(kind=OutputKind.CLASSES),))
    measured = _source_distributions(job)
    assert measured["measured_on"] == "source model" and measured["samples"] == 12
    assert sum(measured["outputs"]["y"]["classes"]["counts"]) == 12
    assert _source_distributions(SimpleNamespace(evaluation=None, reference_outputs=None)) is None


def test_the_bundles_file_names_the_artifact_its_labels_and_the_device_budgets(tmp_path):
    sig = signature([{"name": "x", "shape": [None, 4], "dtype": "float32"}], [{"name": "logits", "shape": [None, 3], "dtype": "float32"}])
    SourceRecord(kind="recipe", path="r.py", model="", model_sha256="", source_files={}, signature=sig, metadata={},
                 tools={}).write(str(tmp_path / "source.json"))
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    model = SimpleNamespace(name="pets", source_record=str(tmp_path / "source.json"),
                            outputs=(OutputSpec(kind=OutputKind.CLASSES, labels=str(tmp_path / "labels.txt")),))
    budgets = tuple(Budget.parse(k, v) for k, v in {"max_size_kb": 100, "max_latency_ms": 12, "min_fps": 30}.items())
    artifact = SimpleNamespace(id="pets.int8.tflite@pixel-8", variant="int8", target="pixel-8",
                               bundle_path="files/pixel-8/pets.int8.tflite", budgets=budgets)
    measured = {"measured_on": "artifact", "samples": 4, "inputs": {},
                "outputs": {"logits": {"kind": "classes", "scores": "logits",
                                       "confidence": {"edges": _baselines.CONFIDENCE_EDGES, "counts": [0] * 19 + [4]},
                                       "classes": {"counts": [1, 2, 1]}}}}
    document = _baselines.document(artifact=artifact, model=model, measured=measured)
    assert document["format"] == 1 and document["artifact"] == "pets.int8.tflite@pixel-8"
    assert (document["model"], document["variant"], document["target"]) == ("pets", "int8", "pixel-8")
    assert document["file"] == "files/pixel-8/pets.int8.tflite"
    assert document["outputs"]["logits"]["classes"] == {"labels": ["cat", "dog", "bird"], "counts": [1, 2, 1]}
    assert document["budgets"] == {"max_latency_ms": 12.0, "min_fps": 30.0}
    assert "latency_ms" not in document  # the build host's timings vary run to run: the bundle's bytes must not
    # It is what the recorder reads, and it serializes as the bundle stores it.
    TelemetryRecorder(json.loads(fsutil.canonical_json_document(document)), CONTEXT, start=WHEN)

    empty = _baselines.document(artifact=artifact, model=model, measured=None)
    assert empty["measured_on"] is None and empty["samples"] == 0 and empty["outputs"] == {} and empty["inputs"] == {}


# --- the manifest's entry --------------------------------------------------------------------


def _manifest(baseline) -> bytes:
    variant = {"target": "t", "platform": "android", "format": "tflite", "precision": "fp32", "file": "files/t/m.tflite",
               "sha256": "a" * 64, "size": 1}
    if baseline is not None:
        variant["baseline"] = baseline
    return json.dumps({"format_version": 1, "bundle": "b", "version": "1.0.0", "targets": {},
                       "models": {"m": {"variants": {"m.fp32.tflite@t": variant}}}}).encode()


def test_a_manifests_baseline_entry_is_checked_before_any_file_is_read():
    from modelmake.bundle.manifest import baselines_of, parse_manifest
    from modelmake.errors import VerificationError

    good = {"file": "baselines/m.fp32.tflite@t.json", "sha256": "b" * 64, "size": 10}
    assert baselines_of(parse_manifest(_manifest(good), "manifest.json")) == {good["file"]: "b" * 64}
    assert baselines_of(parse_manifest(_manifest(None), "manifest.json")) == {}  # a bundle from before baselines
    for bad, reason in [
        ({**good, "file": "baselines/../../x.json"}, "'..' component"),
        ({**good, "file": "files/t/m.json"}, "is not under baselines/"),
        ({**good, "sha256": "B" * 64}, "baseline.sha256 is not 64 lowercase"),
        ({**good, "size": -1}, "baseline.size is not an integer"),
        ("baselines/x.json", "baseline is not an object"),
    ]:
        with pytest.raises(VerificationError, match=reason):
            parse_manifest(_manifest(bad), "manifest.json")


def test_the_evaluate_job_names_the_baseline_format_so_a_new_one_evaluates_again():
    import dataclasses

    from modelmake.client.telemetry import BASELINE_FORMAT
    from modelmake.contracts import EvaluateJob

    (field,) = [f for f in dataclasses.fields(EvaluateJob) if f.name == "baseline_format"]
    assert field.default == BASELINE_FORMAT and field.metadata.get("hashed") is not False
