"""The repository's example workspace built end to end, its figures checked against an independent recount.

One `doit` builds a copy of the example (two trained models, about thirty
artifacts across six chipset profiles).  The tests then load every artifact
with the runtimes themselves (LiteRT, ONNX Runtime, coremltools), feed them
the evaluation data as models.yaml declares it (the recipe's
load_data('test'), times the declared scale), count top-1 themselves and
compare with what the build wrote under build/metrics, build/reference, the
bundle's manifest and the report.  Run with -s to see the figures.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support.signing_cli import model_signing_verify
from tests.support.workspaces import REPO, Workspace, subprocess_env

pytestmark = pytest.mark.slow

BUNDLE, VERSION = "acme-vision", "1.4.0"
SUFFIX = {"tflite": ".tflite", "onnx": ".onnx", "coreml": ".mlpackage.zip"}
BUILTIN_PROFILES = REPO / "modelmake" / "profiles"
# Percentage points of top-1 a full-int8 artifact may differ from its source model by.
INT8_TOLERANCE = 0.005


# --- the build ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Workspace:
    """The example workspace (dodo.py, models.yaml, recipes/, targets/), copied without build/ or keys/ and built once."""
    root = tmp_path_factory.mktemp("example") / "workspace"
    root.mkdir()
    for name in ("dodo.py", "models.yaml"):
        shutil.copyfile(REPO / name, root / name)
    for name in ("recipes", "targets"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    workspace = Workspace(root)
    run = workspace.doit(timeout=3 * 3600)
    print(f"\nexample build: {len(run.executed)} tasks ran")
    return workspace


@pytest.fixture(scope="module")
def spec(example) -> dict:
    return yaml.safe_load((example.root / "models.yaml").read_text(encoding="utf-8"))


def _profile(workspace: Workspace, target: str) -> dict:
    local = workspace.root / "targets" / f"{target}.yaml"
    path = local if local.is_file() else BUILTIN_PROFILES / f"{target}.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _target_variants(entry) -> tuple[list[str], bool]:
    """(variants in order, whether the target selects one of them)."""
    return (list(entry), False) if isinstance(entry, list) else (list(entry["prefer"]), True)


def _expected_artifacts(workspace: Workspace, spec: dict) -> list[dict]:
    """Every artifact models.yaml asks for, read from the spec and the profiles rather than from modelmake."""
    found = []
    for model, conf in spec["models"].items():
        for target, entry in conf["targets"].items():
            variants, selecting = _target_variants(entry)
            profile = _profile(workspace, target)
            for preference, variant in enumerate(variants):
                vconf = conf["variants"][variant] or {}
                for fmt, support in profile["formats"].items():
                    found.append({
                        "model": model, "variant": variant, "format": fmt, "target": target,
                        "precision": vconf.get("quantize", "fp32"), "selecting": selecting, "preference": preference,
                        "trained": "training" in vconf,
                        "integer_io": bool(support.get("integer_io")) and vconf.get("quantize") == "int8",
                        "id": f"{model}.{variant}.{fmt}@{target}",
                        "file": workspace.build / "artifacts" / target / f"{model}.{variant}{SUFFIX[fmt]}",
                        "metrics": workspace.build / "metrics" / target / f"{model}.{variant}.{fmt}.json",
                    })
    return found


@pytest.fixture(scope="module")
def artifacts(example, spec) -> list[dict]:
    return _expected_artifacts(example, spec)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def manifest(example) -> dict:
    return _read_json(example.build / "bundles" / BUNDLE / VERSION / "manifest.json")


@pytest.fixture(scope="module")
def report(example) -> str:
    return (example.build / "reports" / BUNDLE / VERSION / "report.md").read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _report_row(report: str, artifact: dict) -> dict[str, str]:
    """The report's row of one artifact, by column heading."""
    lines = report.splitlines()
    header = _cells(next(line for line in lines if line.startswith("| model |")))
    for line in lines:
        cells = _cells(line)
        if cells[:4] == [artifact["model"], artifact["target"], artifact["format"], artifact["variant"]]:
            return dict(zip(header, cells, strict=False))
    raise AssertionError(f"the report has no row for {artifact['id']}")


# --- independent evaluation -----------------------------------------------------------------------


def _load_recipe(path: Path):
    """A recipe module loaded from the workspace copy, with its folder importable (recipes import digits_data)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"example_recipe_{path.stem}", path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


@pytest.fixture(scope="module")
def evaluation(example, spec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model: (x, y), the declared evaluation split run through the declared preprocessing, x * scale + offset."""
    data = {}
    for model, conf in spec["models"].items():
        declared = conf["data"]["evaluation"]
        recipe = _load_recipe(example.root / declared["recipe"])
        raw, labels = getattr(recipe, declared.get("function", "load_data"))(declared["split"])
        io = conf.get("io", {}).get("input", {})
        scale, offset = Fraction(str(io.get("scale", "1"))), Fraction(str(io.get("offset", "0")))
        data[model] = ((raw.astype(np.float32) * np.float32(scale) + np.float32(offset)).astype(np.float32), np.asarray(labels))
    return data


def _run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    results = []
    for sample in x:
        feed = sample[np.newaxis]
        if inp["dtype"] != np.float32:  # integer input: quantize with the tensor's own scale and zero point
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            feed = np.clip(np.round(feed / scale + zero), info.min, info.max)
        interpreter.set_tensor(inp["index"], feed.astype(inp["dtype"]))
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            result = (result.astype(np.float32) - zero) * scale
        results.append(result[0].astype(np.float32))
    return np.stack(results)


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.type == "tensor(float)" and out.type == "tensor(float)", f"{path.name}: {inp.type} -> {out.type}"
    if isinstance(inp.shape[0], int):  # a fixed batch (static-shape execution providers)
        assert inp.shape[0] == 1, inp.shape
        return np.concatenate([session.run(None, {inp.name: x[i : i + 1]})[0] for i in range(len(x))])
    return np.concatenate([session.run(None, {inp.name: x[i : i + 128]})[0] for i in range(0, len(x), 128)])


def _top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs.reshape(len(outputs), -1), axis=1) == labels))


def _mean_iou(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Per-pixel classes (class axis last) against label masks: IoU per class over all pixels, averaged over the classes seen."""
    predicted = np.argmax(outputs, axis=-1)
    ious = []
    for c in np.union1d(np.unique(predicted), np.unique(labels)):
        union = np.sum((predicted == c) | (labels == c))
        ious.append(np.sum((predicted == c) & (labels == c)) / union)
    return float(np.mean(ious))


# Per output kind: the headline figure against labels, its drop from the source's, and how to recount it here.
FIGURES = {"classes": ("top1", "accuracy_drop", _top1), "mask": ("mean_iou", "iou_drop", _mean_iou)}


def _kind(spec: dict, model: str) -> str:
    return spec["models"][model].get("io", {}).get("output", {}).get("kind", "classes")


RUN_SAVED_MODEL = """
import sys
import numpy as np
import tensorflow as tf

function = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
(name, spec), = function.structured_input_signature[1].items()
x = np.load(sys.argv[2])
(output,) = function(**{name: tf.constant(x, dtype=spec.dtype)}).values()
np.save(sys.argv[3], output.numpy().astype(np.float32))
"""


@pytest.fixture(scope="module")
def source_figure(example, spec, evaluation, tmp_path_factory) -> dict[str, float]:
    """Each source model's headline figure (top-1, or mean IoU), run from its SavedModel with TensorFlow in a separate process."""
    scratch = tmp_path_factory.mktemp("sources")
    found = {}
    for model in spec["models"]:
        x, y = evaluation[model]
        np.save(scratch / f"{model}.x.npy", x)
        subprocess.run(
            [sys.executable, "-c", RUN_SAVED_MODEL, str(example.build / "sources" / model / "saved_model"),
             str(scratch / f"{model}.x.npy"), str(scratch / f"{model}.out.npy")],
            check=True, capture_output=True, env=subprocess_env(), timeout=600,
        )
        found[model] = FIGURES[_kind(spec, model)][2](np.load(scratch / f"{model}.out.npy"), y)
    return found


@pytest.fixture(scope="module")
def recount(artifacts, evaluation, spec) -> dict[str, float]:
    """The headline figure of every TFLite and ONNX artifact, run here with LiteRT and ONNX Runtime."""
    runners = {"tflite": _run_tflite, "onnx": _run_onnx}
    found = {}
    for artifact in artifacts:
        if artifact["format"] in runners:
            x, y = evaluation[artifact["model"]]
            outputs = runners[artifact["format"]](artifact["file"], x)
            kind = _kind(spec, artifact["model"])
            # Ten digits per sample, or eleven classes (background and the digits) per pixel of each label mask.
            expected = (len(y), 10) if kind == "classes" else (*y.shape, 11)
            assert outputs.shape == expected, f"{artifact['id']}: outputs of shape {outputs.shape}"
            assert np.all(np.isfinite(outputs)), artifact["id"]
            found[artifact["id"]] = FIGURES[kind][2](outputs, y)
    return found


def _size(artifact: dict) -> int:
    return artifact["file"].stat().st_size


def _find(artifacts, **match) -> dict:
    (found,) = [a for a in artifacts if all(a[k] == v for k, v in match.items())]
    return found


def _shipped(artifacts: list[dict]) -> tuple[set[str], dict[str, str]]:
    """Which artifacts should ship: all of a listing target's, the first passing of a selecting one's (by measured verdicts)."""
    shipped, dropped = set(), {}
    groups: dict[tuple, list[dict]] = {}
    for artifact in artifacts:
        if artifact["selecting"]:
            groups.setdefault((artifact["model"], artifact["target"], artifact["format"]), []).append(artifact)
        else:
            shipped.add(artifact["id"])
    for candidates in groups.values():
        winner = None
        for artifact in sorted(candidates, key=lambda a: a["preference"]):
            broken = [v["key"] for v in _read_json(artifact["metrics"])["budgets"] if v["passed"] is False]
            if winner is None and not broken:
                winner = artifact
                shipped.add(artifact["id"])
            else:
                dropped[artifact["id"]] = ", ".join(broken) or "a preferred variant passes"
    return shipped, dropped


# --- the tests ------------------------------------------------------------------------------------


def test_every_target_has_an_artifact_in_every_format_its_profile_builds(example, spec, artifacts):
    for target in sorted({a["target"] for a in artifacts}):
        formats = set(_profile(example, target)["formats"])
        for model, conf in spec["models"].items():
            if target not in conf["targets"]:
                continue
            built = {a["format"] for a in artifacts if a["target"] == target and a["model"] == model and a["file"].is_file()}
            assert built == formats, f"{model} on {target}: built {sorted(built)}, the profile runs {sorted(formats)}"
            print(f"{model:10s} {target:20s} {', '.join(sorted(built))}")
    for artifact in artifacts:
        assert artifact["file"].is_file(), f"{artifact['id']}: no {artifact['file']}"
        assert artifact["metrics"].is_file(), f"{artifact['id']}: no {artifact['metrics']}"
    # Nothing under build/artifacts that the spec did not ask for.
    on_disk = {p for p in (example.build / "artifacts").rglob("*") if p.is_file() and not p.name.endswith(".json")}
    assert on_disk == {a["file"] for a in artifacts}
    assert {"tflite", "onnx", "coreml"} == {a["format"] for a in artifacts}
    print(f"{len(artifacts)} artifacts")


def test_the_manifest_lists_every_artifact_except_those_selection_dropped(example, artifacts, manifest):
    shipped, dropped = _shipped(artifacts)
    listed = {vid for model in manifest["models"].values() for vid in model["variants"]}
    assert listed == shipped, f"missing: {sorted(shipped - listed)}; unexpected: {sorted(listed - shipped)}"
    assert dropped, "the example's selecting target dropped nothing"
    bundle = example.build / "bundles" / BUNDLE / VERSION
    by_id = {a["id"]: a for a in artifacts}
    for model in manifest["models"].values():
        for vid, entry in model["variants"].items():
            artifact = by_id[vid]
            assert (entry["target"], entry["format"], entry["variant"], entry["precision"]) == (
                artifact["target"], artifact["format"], artifact["variant"], artifact["precision"])
            shipped_file = bundle / entry["file"]
            assert hashlib.sha256(shipped_file.read_bytes()).hexdigest() == entry["sha256"]
            assert shipped_file.read_bytes() == artifact["file"].read_bytes(), f"{vid}: the bundle's file is not the artifact"
            assert entry["size"] == _size(artifact)
    files = {p.relative_to(bundle / "files").as_posix() for p in (bundle / "files").rglob("*") if p.is_file()}
    assert files == {f"{by_id[i]['target']}/{by_id[i]['file'].name}" for i in shipped}
    for vid, why in sorted(dropped.items()):
        print(f"dropped {vid}: {why}")


def test_onnx_runtime_and_litert_run_every_artifact_and_agree_with_the_metrics(artifacts, recount, evaluation, spec):
    measurable = [a for a in artifacts if a["format"] in ("tflite", "onnx")]
    assert sorted(recount) == sorted(a["id"] for a in measurable)
    print(f"\n{'artifact':45s} {'KiB':>9s} {'figure':>10s} {'here':>10s} {'build':>10s}")
    for artifact in measurable:
        measured = _read_json(artifact["metrics"])
        samples = len(evaluation[artifact["model"]][1])
        figure = FIGURES[_kind(spec, artifact["model"])][0]
        ours, theirs = recount[artifact["id"]], measured["metrics"][figure]
        print(f"{artifact['id']:45s} {_size(artifact) / 1024:9.1f} {figure:>10s} {ours:10.4f} {theirs:10.4f}")
        # The same inputs through the same runtimes: at most one sample apart (integer I/O rounds on the way in).
        assert abs(ours - theirs) <= 1.0 / samples + 1e-9, f"{artifact['id']}: {figure} {ours:.4f} here, {theirs:.4f} in its metrics"
        assert measured["size_bytes"] == _size(artifact)
        assert measured["metrics"]["size_kb"] == pytest.approx(_size(artifact) / 1024)
        assert "latency_ms" in measured["metrics"] and measured["metrics"]["latency_ms"] > 0


def test_source_models_match_their_reference_figures(example, spec, source_figure, evaluation):
    for model in spec["models"]:
        reference = _read_json(example.build / "reference" / f"{model}.json")
        figure = FIGURES[_kind(spec, model)][0]
        print(f"source {model}: {figure} {source_figure[model]:.4f} here (TensorFlow), {reference[figure]:.4f} in build/reference")
        assert reference["samples"] == len(evaluation[model][1])
        assert source_figure[model] == pytest.approx(reference[figure], abs=1e-6)
        assert reference[figure] > 0.85, f"{model} did not learn the digits"


def test_int8_artifacts_are_small_and_keep_the_source_accuracy(example, spec, artifacts, recount, source_figure):
    pi = dict(model="mobilenet", target="raspberry-pi-5")
    ratios = {}
    for fmt, least in (("tflite", 3.9), ("onnx", 3.5)):
        fp32, int8 = _find(artifacts, variant="fp32", format=fmt, **pi), _find(artifacts, variant="int8", format=fmt, **pi)
        ratio = _size(fp32) / _size(int8)
        ratios[fmt] = ratio
        print(f"mobilenet {fmt} on raspberry-pi-5: fp32 {_size(fp32) / 1024:.1f} KiB, int8 {_size(int8) / 1024:.1f} KiB, "
              f"{ratio:.2f}x smaller; top-1 fp32 {recount[fp32['id']]:.4f}, int8 {recount[int8['id']]:.4f}, "
              f"source {source_figure['mobilenet']:.4f}")
        assert ratio >= least, f"mobilenet {fmt} int8 is only {ratio:.2f}x smaller than fp32 (at least {least}x expected)"

    for artifact in artifacts:
        if artifact["precision"] != "int8" or artifact["id"] not in recount:
            continue
        model = artifact["model"]
        figure, drop, _ = FIGURES[_kind(spec, model)]
        reference = _read_json(example.build / "reference" / f"{model}.json")[figure]
        difference = recount[artifact["id"]] - source_figure[model]
        ours = recount[artifact["id"]]
        print(f"{artifact['id']:45s} {figure} {ours:.4f} vs source {source_figure[model]:.4f}: {difference * 100:+.2f} points")
        if artifact["trained"]:
            # Fine-tuned with int8 simulated: it may beat its source, and must not lose more than its post-training twin.
            twin = _find(artifacts, model=model, variant="int8", format=artifact["format"], target=artifact["target"])
            assert difference >= -INT8_TOLERANCE - 1e-9, f"{artifact['id']} is {difference * 100:+.2f} points from its source"
            assert difference >= recount[twin["id"]] - source_figure[model] - 1e-9, f"{artifact['id']} loses more than {twin['id']}"
        else:
            assert abs(difference) <= INT8_TOLERANCE + 1e-9, f"{artifact['id']} is {difference * 100:+.2f} points from its source"
        measured = _read_json(artifact["metrics"])["metrics"]
        assert measured[drop] == pytest.approx(reference - measured[figure], abs=1e-9)


def test_pixel_8_ships_mobilenet_int8_and_says_why_fp32_and_fp16_were_dropped(artifacts, manifest, report, spec):
    limit = spec["models"]["mobilenet"]["budget_overrides"]["pixel-8"]["max_size_kb"]
    variants = manifest["models"]["mobilenet"]["variants"]
    on_pixel = sorted(v for v in variants if v.endswith("@pixel-8"))
    assert on_pixel == ["mobilenet.int8.tflite@pixel-8"]
    for variant in ("fp32", "fp16"):
        artifact = _find(artifacts, model="mobilenet", variant=variant, target="pixel-8")
        measured = _read_json(artifact["metrics"])
        (verdict,) = [v for v in measured["budgets"] if v["key"] == "max_size_kb"]
        assert verdict["passed"] is False and verdict["limit"] == limit
        assert verdict["value"] == pytest.approx(_size(artifact) / 1024)
        assert [v["key"] for v in measured["budgets"] if v["passed"] is False] == ["max_size_kb"]
        row = _report_row(report, artifact)
        excess = f"{(verdict['value'] - limit) / limit:+.0%}"
        expected = f"dropped: over budget: size_kb is {verdict['value']:.0f}, over its max_size_kb of {limit:g} ({excess})"
        assert row["bundle"] == expected, row
        print(f"pixel-8 mobilenet {variant}: {verdict['value']:.1f} KiB > {limit:g} KiB, dropped")
    int8 = _find(artifacts, model="mobilenet", variant="int8", target="pixel-8")
    assert all(v["passed"] is not False for v in _read_json(int8["metrics"])["budgets"])
    assert _report_row(report, int8)["bundle"] == "shipped"
    print(f"pixel-8 mobilenet int8: {_size(int8) / 1024:.1f} KiB, shipped")


def _unpacked_package(archive: Path, into: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(into)
    (package,) = {p.parent for p in into.rglob("Manifest.json")}
    return package


def _mil_weights(model) -> dict:
    """Weight tensors of an ML program by how they are stored: float consts by dtype, int8 quantized, palettized."""
    from coremltools.proto import MIL_pb2

    found: dict = {"float": {}, "quantized": [], "palettized": []}
    for function in model.get_spec().mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                output = op.outputs[0].type.tensorType
                elements = int(np.prod([d.constant.size for d in output.dimensions])) if output.rank else 1
                if op.type == "const" and output.rank >= 1:
                    dtype = MIL_pb2.DataType.Name(output.dataType)
                    if dtype.startswith("FLOAT"):
                        found["float"].setdefault(dtype, []).append(elements)
                elif op.type in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"):
                    data = op.attributes.get("quantized_data") or op.attributes.get("data")
                    stored = MIL_pb2.DataType.Name(data.type.tensorType.dataType) if data is not None else "?"
                    if data is None and "data" in op.inputs:
                        stored = MIL_pb2.DataType.Name(op.inputs["data"].arguments[0].value.type.tensorType.dataType)
                    found["quantized"].append((stored, elements))
                elif op.type == "constexpr_lut_to_dense":
                    lut = op.attributes.get("lut")
                    entries = int(np.prod([d.constant.size for d in lut.type.tensorType.dimensions])) if lut is not None else None
                    found["palettized"].append((entries, elements))
    return found


def test_core_ml_packages_load_and_carry_the_requested_precision(example, spec, artifacts, manifest, report, tmp_path):
    import coremltools as ct

    packages = [a for a in artifacts if a["format"] == "coreml"]
    assert packages
    for artifact in packages:
        package = _unpacked_package(artifact["file"], tmp_path / artifact["id"])
        model = ct.models.MLModel(str(package), skip_model_load=True)
        assert model.get_spec().WhichOneof("Type") == "mlProgram"
        weights = _mil_weights(model)
        vconf = spec["models"][artifact["model"]]["variants"][artifact["variant"]] or {}
        float_elements = {dtype: sum(sizes) for dtype, sizes in weights["float"].items()}
        compressed = sum(n for _, n in weights["quantized"]) + sum(n for _, n in weights["palettized"])
        total = compressed + sum(float_elements.values())
        assert "FLOAT32" not in float_elements, f"{artifact['id']} keeps float32 weights: {float_elements}"
        if vconf.get("palettize"):
            bits = vconf["palettize"]
            assert weights["palettized"], f"{artifact['id']}: no palettized weights"
            assert {entries for entries, _ in weights["palettized"]} == {2**bits}, weights["palettized"]
            share, kind = compressed / total, f"{bits}-bit palettes"
        elif artifact["precision"] == "int8":
            assert weights["quantized"], f"{artifact['id']}: no int8 weights"
            assert {stored for stored, _ in weights["quantized"]} <= {"INT8", "UINT8"}, weights["quantized"]
            assert not weights["palettized"]
            share, kind = compressed / total, "int8 linear quantization"
        else:
            assert artifact["precision"] == "fp16"
            assert not weights["quantized"] and not weights["palettized"]
            share, kind = float_elements.get("FLOAT16", 0) / total, "float16"
        # Core ML leaves the smallest tensors uncompressed; the bulk of the weights must carry the precision.
        assert share >= 0.9, f"{artifact['id']}: only {share:.0%} of its weights are {kind}"
        print(f"{artifact['id']:40s} {_size(artifact) / 1024:8.1f} KiB  {share:.1%} of {total} weights as {kind}")

        measured = _read_json(artifact["metrics"])
        # What can be read from the package is measured; what needs Core ML itself is not.
        readable = {"size_kb", "quantized_share", "accelerator_coverage"} | ({"sparsity"} if vconf.get("prune") else set())
        assert set(measured["metrics"]) <= readable, measured["metrics"]
        assert measured["metrics"]["quantized_share"] >= 0.9, measured["metrics"]
        classifier = _kind(spec, artifact["model"]) == "classes"
        needs_core_ml = ("top1", "accuracy_drop", "top1_agreement") if classifier else ("mean_iou", "iou_drop", "mask_agreement")
        for metric in (*needs_core_ml, "cosine_similarity", "latency_ms"):
            assert metric not in measured["metrics"]
            assert "macOS" in measured["not_measured"][metric], measured["not_measured"]
        for verdict in measured["budgets"]:
            if verdict["metric"] in readable:  # read from the package: checked here, and the example meets it
                assert verdict["passed"] is True, verdict
            else:
                assert verdict["value"] is None and verdict["passed"] is None, verdict
                assert verdict["note"].startswith("not checked"), verdict
        entry = manifest["models"][artifact["model"]]["variants"].get(artifact["id"])
        if entry is not None:
            assert set(entry["metrics"]) <= readable, entry["metrics"]
        if classifier:
            row = _report_row(report, artifact)
            for column in ("top-1", "top-k", "drop (points)", "cosine", "top-1 agreement", "latency"):
                assert row[column] == "not measured", row


def test_the_bundle_and_its_slices_verify_with_model_signing(example, tmp_path):
    public_key = example.root / "keys" / "dev" / "signing.pub.pem"
    assert public_key.is_file()
    bundle = example.build / "bundles" / BUNDLE / VERSION
    directories = [bundle]
    for archive in sorted((example.build / "bundles" / BUNDLE).glob(f"{BUNDLE}-{VERSION}-*.zip")):
        target = tmp_path / archive.stem
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(target)
        directories.append(target)
    assert len(directories) == 4  # the bundle, and the android, ios and linux slices
    for directory in directories:
        result = model_signing_verify(directory, public_key)
        assert result.returncode == 0, f"{directory}:\n{result.stdout}\n{result.stderr}"
        print(f"model_signing verify key {directory.name}: {result.stdout.strip() or 'ok'}")
    assert _read_json(bundle / "manifest.json")["signing"] == "development"


def test_a_second_build_runs_nothing(example):
    run = example.doit()
    assert run.executed == set(), run.describe()
    assert run.up_to_date, run.describe()
    print(f"second doit: {len(run.up_to_date)} tasks up to date, none ran")


def test_publishing_the_example_twice_gives_the_same_repository_and_a_phone_installs_from_it(example, evaluation, tmp_path):
    """Two publishes of the example at one time are byte-identical; a Pixel 8 then gets its variant over HTTP."""
    from modelmake.bundle.keyring import build_keys
    from modelmake.bundle.keys import public_key_pem
    from modelmake.client import Client, DeviceProfile, UpdateStatus

    from tests.support.ota_server import RepositoryServer

    repositories = []
    env = subprocess_env() | {"SOURCE_DATE_EPOCH": str(int(time.time()))}
    for name in ("first", "second"):
        copy = Workspace(shutil.copytree(example.root, tmp_path / name, symlinks=True))
        subprocess.run([sys.executable, "-m", "doit", "publish"], cwd=copy.root, env=env, check=True, capture_output=True, timeout=900)
        root = copy.build / "repository"
        repositories.append({p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
    assert repositories[0] == repositories[1]

    public_key = public_key_pem(build_keys(example.root, None, False, None).signing_key)
    with RepositoryServer(tmp_path / "first" / "build" / "repository") as server:
        client = Client(base_url=server.url, cache_dir=tmp_path / "phone", repository=BUNDLE, trusted_keys=[public_key])
        # The example's stable channel rolls 1.4.0 out to 10% of devices: find one inside it.
        for number in range(1000):
            pixel = DeviceProfile("android", "Tensor G3", "34", "1.0", f"device-{number}", {"tflite"})
            if client.update(pixel, "mobilenet").status is UpdateStatus.INSTALLED:
                break
        installed = client.installed("mobilenet")
    assert installed is not None and installed.variant_id == "mobilenet.int8.tflite@pixel-8"
    shipped = example.build / "artifacts" / "pixel-8" / "mobilenet.int8.tflite"
    assert installed.path.read_bytes() == shipped.read_bytes()
    x, _ = evaluation["mobilenet"]
    assert np.array_equal(_run_tflite(installed.path, x[:8]), _run_tflite(shipped, x[:8]))
    print(f"OTA: {pixel.device_id} installed {installed.variant_id} ({installed.size} bytes)")
