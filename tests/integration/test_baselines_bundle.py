"""Every shipped artifact's baseline in the bundle: measured at build time, listed by the manifest, signed, in
its platform's slice, and read by the reference client's telemetry recorder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from modelmake.bundle import keys
from modelmake.bundle.archive import extract_archive
from modelmake.client.telemetry import TelemetryContext, TelemetryRecorder

from tests.support.workspaces import BUNDLE, VERSION, Workspace, copy_workspace, modelmake

TAMPERED = 9


def bundle_dir(workspace: Workspace) -> Path:
    return workspace.build / "bundles" / BUNDLE / VERSION


def variants(manifest: dict) -> dict[str, dict]:
    return {vid: v for m in manifest["models"].values() for vid, v in m["variants"].items()}


@pytest.fixture(scope="module")
def public_pem(built, tmp_path_factory) -> Path:
    destination = tmp_path_factory.mktemp("keys") / "signing.pub.pem"
    keys.write_public_key(destination, keys.load_private_key((built.workspace.root / "keys" / "signing.pem").read_bytes()))
    return destination


@pytest.fixture(scope="module")
def selecting(built, tmp_path_factory) -> Workspace:
    """The built workspace where pixel-8 ships the first passing of fp16 and int8, and digits asks for 1 frame a second."""
    workspace = copy_workspace(built.workspace.root, tmp_path_factory.mktemp("selecting") / "workspace")
    workspace.edit_spec("pixel-8: [fp32, fp16, int8]", "pixel-8: {prefer: [fp16, int8], select: first_passing}")
    workspace.edit_spec("budgets: {max_size_kb: 64, max_accuracy_drop: 0.05}",
                        "budgets: {max_size_kb: 64, max_accuracy_drop: 0.05, min_fps: 1}")
    workspace.doit()
    return workspace


def test_each_shipped_artifact_has_its_baseline_listed_and_signed(built, public_pem, tmp_path):
    directory = bundle_dir(built.workspace)
    manifest = json.loads((directory / "manifest.json").read_bytes())
    provenance = json.loads((directory / "provenance.json").read_bytes())
    subjects = {s["name"]: s["digest"]["sha256"] for s in provenance["subject"]}
    on_disk = sorted(p.name for p in (directory / "baselines").iterdir())
    assert on_disk == sorted(f"{vid}.json" for vid in variants(manifest))
    for vid, variant in variants(manifest).items():
        entry = variant["baseline"]
        assert entry["file"] == f"baselines/{vid}.json" and subjects[entry["file"]] == entry["sha256"]
        document = json.loads((directory / entry["file"]).read_bytes())
        assert (document["format"], document["artifact"], document["file"]) == (1, vid, variant["file"])
        assert document["measured_on"] == "artifact" and document["samples"] > 0
        # A device's recorder takes it as it is.
        TelemetryRecorder(document, TelemetryContext(device="d", version=VERSION, chipset="c", app_version="1", channel="stable"))
    digits = json.loads((directory / "baselines" / "digits.int8.tflite@pixel-8.json").read_bytes())
    classes = digits["outputs"]["output_0" if "output_0" in digits["outputs"] else next(iter(digits["outputs"]))]
    assert classes["kind"] == "classes" and classes["classes"]["labels"] == [str(d) for d in range(10)]
    assert sum(classes["confidence"]["counts"]) == sum(classes["classes"]["counts"]) == digits["samples"]
    (image,) = digits["inputs"].values()
    assert image["kind"] == "image" and sum(image["brightness"]["counts"]) == digits["samples"]
    glyphs = json.loads((directory / "baselines" / "glyphs.fp32.tflite@android-arm64-cpu.json").read_bytes())
    (features,) = glyphs["inputs"].values()
    assert features["kind"] == "features" and len(features["mean"]) == len(features["std"]) == 64
    result = modelmake("verify", directory, "--public-key", public_pem, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_platform_slice_carries_its_baselines(built, tmp_path):
    archive = built.workspace.build / "bundles" / BUNDLE / f"{BUNDLE}-{VERSION}-android.zip"
    extract_archive(archive, tmp_path / "android")
    manifest = json.loads((tmp_path / "android" / "manifest.json").read_bytes())
    for variant in variants(manifest).values():
        assert (tmp_path / "android" / variant["baseline"]["file"]).is_file()


def test_an_altered_baseline_fails_verification(built, public_pem, tmp_path):
    copy = tmp_path / VERSION
    shutil.copytree(bundle_dir(built.workspace), copy)
    victim = copy / "baselines" / "digits.int8.tflite@pixel-8.json"
    document = json.loads(victim.read_bytes())
    document["samples"] += 1
    victim.write_text(json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n")
    result = modelmake("verify", copy, "--public-key", public_pem, cwd=tmp_path)
    assert result.returncode == TAMPERED, result.stderr
    assert "baselines/digits.int8.tflite@pixel-8.json" in result.stderr


def test_only_shipped_artifacts_have_baselines_and_min_fps_reaches_them(selecting):
    directory = bundle_dir(selecting)
    manifest = json.loads((directory / "manifest.json").read_bytes())
    shipped = set(variants(manifest))
    pixel = {vid for vid in shipped if vid.endswith("@pixel-8")}
    assert len(pixel) == 1, shipped
    assert sorted(p.name for p in (directory / "baselines").iterdir()) == sorted(f"{vid}.json" for vid in shipped)
    for vid in shipped:
        budgets = json.loads((directory / "baselines" / f"{vid}.json").read_bytes())["budgets"]
        assert budgets == ({"min_fps": 1.0} if vid.startswith("digits.") else {})
    # The build host's frame rate, measured against the budget and labelled as the host's.
    (chosen,) = pixel
    record = json.loads((selecting.build / "metrics" / "pixel-8" / f"{chosen.split('@')[0]}.json").read_text())
    verdict = next(v for v in record["budgets"] if v["key"] == "min_fps")
    assert verdict["passed"] is True and verdict["value"] == pytest.approx(1000 / record["metrics"]["latency_ms"])
    assert record["latency_host"].startswith("build host")
    assert "fps" not in manifest["models"]["digits"]["variants"][chosen]["metrics"]  # it varies from run to run
    assert np.isfinite(verdict["value"])
