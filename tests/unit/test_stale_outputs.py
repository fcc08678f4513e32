"""A rebuild after the spec lost a target or a variant leaves nothing of them beside the new bundle."""
from __future__ import annotations

from pathlib import Path

from modelmake import layout
from modelmake.contracts import ArtifactInputs, BundleInputs, ModelInputs
from modelmake.plan import BundleSpec
from modelmake.steps.package import _remove_stale_outputs

from .test_selection import artifact


def bundle_inputs(*artifacts: ArtifactInputs) -> BundleInputs:
    """Bundle b 1.0.0 of one model m with these artifacts."""
    bundle = BundleSpec(name="b", version="1.0.0", created=0, signing_key=None, release=False, encrypt=False, encryption_key=None)
    return BundleInputs(bundle=bundle, targets={}, models=(ModelInputs("m", "", "", None, (), (), (), (), artifacts),))


def test_slices_of_dropped_platforms_and_files_of_removed_variants_are_removed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kept = artifact(Path("build/artifacts/phone"), "int8", "phone", 20)
    inputs = bundle_inputs(kept)
    archives = {"all": layout.bundle_archive("b", "1.0.0"), "android": layout.bundle_archive("b", "1.0.0", "android")}
    stale = [
        layout.bundle_archive("b", "1.0.0", "ios"),  # a slice for a target the spec no longer has
        "build/artifacts/tablet/m.fp32.tflite",  # a removed target's artifact, its record and its figures
        "build/artifacts/tablet/m.fp32.tflite.json",
        "build/metrics/tablet/m.fp32.tflite.json",
        "build/artifacts/phone/m.fp16.tflite",  # a removed variant
    ]
    other_version = layout.bundle_archive("b", "0.9.0", "ios")
    for path in [*archives.values(), *stale, other_version, kept.file, kept.record]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"x")

    _remove_stale_outputs(inputs, archives)

    assert [p for p in stale if Path(p).exists()] == []
    assert all(Path(p).exists() for p in [*archives.values(), other_version, kept.file, kept.record, kept.metrics])
    assert not Path("build/artifacts/tablet").exists() and not Path("build/metrics/tablet").exists()
