"""Core ML conversion and its structural check, on a tiny CNN built here.

Core ML cannot run off macOS, so these tests prove what the files show: the
package loads in coremltools, its inputs and outputs match the source, its
weights carry the requested precision, and the same inputs give the same bytes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.contracts import ConvertJob, SourceRecord
from modelmake.errors import StepError
from modelmake.formats.base import NotMeasurable
from modelmake.formats.coreml import CoremlSettings
from modelmake.kinds import Precision
from modelmake.plan import FormatSupport, InputSpec
from modelmake.steps import source

pytest.importorskip("coremltools")
pytest.importorskip("tensorflow")

from modelmake.formats.coreml import convert as coreml_convert  # noqa: E402
from modelmake.formats.coreml import runtime as coreml_runtime  # noqa: E402
from modelmake.steps import convert  # noqa: E402

A17 = FormatSupport(
    format="coreml",
    precisions=(Precision.FP32, Precision.FP16, Precision.INT8),
    settings=CoremlSettings(compute_units="ALL", minimum_deployment_target="iOS17"),
)
IOS18 = replace(A17, settings=replace(A17.settings, minimum_deployment_target="iOS18"))
# (variant, precision, per_channel, palettize bits)
VARIANTS = {
    "fp32": (Precision.FP32, True, None),
    "fp16": (Precision.FP16, True, None),
    "int8": (Precision.INT8, True, None),
    "palette4": (Precision.FP16, True, 4),
}


def _deployment(target: str) -> FormatSupport:
    return replace(A17, settings=replace(A17.settings, minimum_deployment_target=target))


def _job(
    record: str,
    precision: Precision,
    out: Path | str,
    *,
    support: FormatSupport = A17,
    per_channel: bool = True,
    palettize: int | None = None,
    inputs: tuple[InputSpec, ...] = (InputSpec(),),
) -> ConvertJob:
    """The ConvertJob the graph gives a Core ML artifact (no calibration: Core ML's int8 quantizes weights only)."""
    return ConvertJob(
        artifact_id=Path(out).name,
        source_record=record,
        precision=precision,
        per_channel=per_channel,
        palettize=palettize,
        calibration=None,
        calibration_origin=None,
        inputs=inputs,
        support=support,
        out=str(out),
        out_record=str(out) + ".json",
    )
WEIGHTS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8 (linear, per-channel)", "palette4": "palettized 4-bit"}


def _export(build, directory: Path) -> dict:
    """Build a Keras model from a fresh session and fixed seed, export it, and write its source record."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(7)
    saved_model = directory / "saved_model"
    build().export(str(saved_model), format="tf_saved_model", verbose=False)
    signature = source.saved_model_signature(saved_model, what=str(saved_model))
    record = directory / "source.json"
    SourceRecord(
        kind="keras",
        path="built in code",
        model=saved_model.as_posix(),
        model_sha256="",
        source_files={},
        signature=signature,
        metadata={},
        tools={},
    ).write(str(record))
    return {"record": str(record), "signature": signature}


def _tiny_cnn():
    import keras

    return keras.Sequential(
        [
            keras.Input((16, 16, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            # 392 x 64 weights: above coremltools' 2048-element threshold, so compression applies
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probabilities"),
        ]
    )


def _log_gamma_model():
    """A layer whose op (Lgamma) has no Core ML equivalent."""
    import keras
    import tensorflow as tf

    class LogGamma(keras.layers.Layer):
        def call(self, x):
            return tf.math.lgamma(x + 1.0)

    return keras.Sequential([keras.Input((8,), name="features"), keras.layers.Dense(16), LogGamma(name="log_gamma"), keras.layers.Dense(4)])


def _convert(source: dict, out: Path, variant: str, support: FormatSupport = A17, per_channel: bool | None = None) -> dict:
    precision, default_per_channel, bits = VARIANTS[variant]
    job = _job(
        source["record"],
        precision,
        out,
        support=support,
        per_channel=default_per_channel if per_channel is None else per_channel,
        palettize=bits,
    )
    convert.convert(job)
    return fsutil.read_json(str(out) + ".json")


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> dict:
    return _export(_tiny_cnn, tmp_path_factory.mktemp("cnn"))


@pytest.fixture(scope="module")
def built(cnn, tmp_path_factory) -> dict:
    """Every variant converted once: variant -> (path, record)."""
    out_dir = tmp_path_factory.mktemp("artifacts")
    result = {}
    for variant in VARIANTS:
        out = out_dir / f"cnn.{variant}.mlpackage.zip"
        result[variant] = (out, _convert(cnn, out, variant))
    return result


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_converts_and_passes_the_structural_check(built, cnn, variant):
    path, _ = built[variant]
    precision, _, bits = VARIANTS[variant]
    report = coreml_runtime.structural_check(path, what=variant, source_signature=cnn["signature"], precision=precision, palettize=bits)
    assert report["loads"] is True and report["io_matches"] is True
    assert report["weights"] == WEIGHTS[variant]
    assert report["ops"] > 0
    assert report["checked"].startswith("structure only")


def test_record_fields(built):
    path, record = built["int8"]
    assert record["precision"] == "int8" and record["integer_io"] is False and record["per_channel"] is True
    assert record["delegates"] == ["ALL"] and record["minimum_deployment_target"] == "iOS17"
    assert record["compression"]["method"] == "linear_quantize" and record["compression"]["granularity"] == "per_channel"
    assert record["sha256"] == fsutil.sha256_file(path) and record["size"] == path.stat().st_size
    assert set(record["tools"]) == {"tensorflow", "coremltools"}
    assert record["io"] == {
        "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 16, 16, 1]}],
        "outputs": [{"name": "output_0", "dtype": "float32", "shape": [1, 10]}],
    }
    _, palettized = built["palette4"]
    assert palettized["palettize"] == 4 and palettized["compression"]["nbits"] == 4
    assert "scikit-learn" in palettized["tools"]  # its k-means makes the tables
    assert built["fp16"][1]["compression"] is None


def test_io_details_read_the_package(built):
    path, record = built["fp16"]
    assert coreml_runtime.io_details(path, what="fp16") == record["io"]


def test_archive_holds_one_package_with_fixed_entries(built):
    path, _ = built["fp16"]
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        manifest = json.loads(archive.read("cnn.fp16.mlpackage/Manifest.json"))
    assert names == sorted(names)
    assert set(names) == {
        "cnn.fp16.mlpackage/Manifest.json",
        "cnn.fp16.mlpackage/Data/com.apple.CoreML/model.mlmodel",
        "cnn.fp16.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
    }
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert manifest["rootModelIdentifier"] in manifest["itemInfoEntries"]


def test_conversion_date_is_not_in_the_package(built):
    from coremltools.proto import Model_pb2

    path, _ = built["fp16"]
    with zipfile.ZipFile(path) as archive:
        spec = Model_pb2.Model.FromString(archive.read("cnn.fp16.mlpackage/Data/com.apple.CoreML/model.mlmodel"))
    assert coreml_convert.CONVERSION_DATE_KEY not in spec.description.metadata.userDefined
    assert spec.description.metadata.userDefined["com.github.apple.coremltools.version"]


def test_compressed_variants_are_smaller_than_fp16(built):
    sizes = {variant: path.stat().st_size for variant, (path, _) in built.items()}
    assert sizes["fp16"] < sizes["fp32"]
    assert sizes["int8"] < sizes["fp16"]
    assert sizes["palette4"] < sizes["int8"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converting_again_gives_the_same_bytes(built, cnn, variant, tmp_path):
    first, _ = built[variant]
    again = tmp_path / "elsewhere" / first.name  # another build directory, the same artifact name
    _convert(cnn, again, variant)
    assert again.read_bytes() == first.read_bytes()


def test_per_tensor_int8_is_reported_and_smaller(built, cnn, tmp_path):
    out = tmp_path / "cnn.int8pt.mlpackage.zip"
    record = _convert(cnn, out, "int8", per_channel=False)
    assert record["compression"]["granularity"] == "per_tensor"
    report = coreml_runtime.structural_check(
        out, what="int8 per-tensor", source_signature=cnn["signature"], precision=Precision.INT8, palettize=None
    )
    assert report["weights"] == "int8 (linear, per-tensor)"
    assert out.stat().st_size < built["int8"][0].stat().st_size


def test_int8_palettized_needs_ios18(cnn, tmp_path):
    out = tmp_path / "cnn.int8p4.mlpackage.zip"
    with pytest.raises(StepError, match=r"iOS18.*iOS17"):
        convert.convert(_job(cnn["record"], Precision.INT8, out, support=A17, palettize=4))
    assert not out.exists()
    convert.convert(_job(cnn["record"], Precision.INT8, out, support=IOS18, palettize=4))
    report = coreml_runtime.structural_check(out, what="joint", source_signature=cnn["signature"], precision=Precision.INT8, palettize=4)
    assert report["weights"] == "palettized 4-bit, int8 look-up tables"


def test_compression_the_target_os_cannot_run_fails(cnn, tmp_path):
    out = tmp_path / "cnn.int8.mlpackage.zip"
    # The spec's deployment rule refuses it before any conversion...
    with pytest.raises(StepError, match=r"compressed weights need iOS16.*targets iOS15"):
        _convert(cnn, out, "int8", support=_deployment("iOS15"))
    assert not out.exists()
    for target in ("macOS12", "iOS15"):
        with pytest.raises(StepError, match=rf"targets {target}"):
            _convert(cnn, out, "palette4", support=_deployment(target))


def test_the_package_coremltools_made_is_checked_against_the_target_os(cnn):
    """...and the converter checks what coremltools produced, which raises the package's OS without saying so."""
    import coremltools as ct

    what = "int8 for iOS15"
    model_dir = Path(SourceRecord.read(cnn["record"]).model)
    shapes = coreml_convert.fixed_input_shapes(cnn["signature"], (InputSpec(),), what)
    model = coreml_convert._convert_saved_model(
        model_dir, cnn["signature"], shapes, Precision.INT8, ct.target.iOS15, ct.ComputeUnit.ALL, what
    )
    model, compression = coreml_convert._compress(model, Precision.INT8, True, None, what)
    with pytest.raises(StepError, match=r"int8-quantized weights need iOS16.*minimum_deployment_target is iOS15"):
        coreml_convert._check_deployment(model, ct.target.iOS15, compression, what)


@pytest.mark.parametrize(
    "variant, claimed, bits, message",
    [
        ("fp16", "int8", None, "no weight is quantized"),
        ("int8", "fp16", None, "its weights are quantized"),
        ("fp16", "fp32", None, "its weights are fp16, not fp32"),
        ("palette4", "fp16", 2, "palettized to 4 bits"),
        ("palette4", "fp16", None, "its weights are palettized"),
    ],
)
def test_structural_check_refuses_the_wrong_precision(built, cnn, variant, claimed, bits, message):
    path, _ = built[variant]
    with pytest.raises(StepError, match=message):
        coreml_runtime.structural_check(
            path, what="artifact", source_signature=cnn["signature"], precision=Precision(claimed), palettize=bits
        )


def test_structural_check_refuses_io_that_differs_from_the_source(built, cnn):
    path, _ = built["fp16"]
    signature = json.loads(json.dumps(cnn["signature"]))
    signature["inputs"][0]["shape"] = [None, 28, 28, 1]
    with pytest.raises(StepError, match=r"input image has shape \(1, 16, 16, 1\), the source's \(\?, 28, 28, 1\)"):
        coreml_runtime.structural_check(path, what="artifact", source_signature=signature, precision=Precision.FP16, palettize=None)


def test_structural_check_refuses_a_file_that_is_not_a_package(tmp_path, cnn):
    not_a_zip = tmp_path / "broken.mlpackage.zip"
    not_a_zip.write_bytes(b"not a zip")
    with pytest.raises(StepError, match="does not unpack"):
        coreml_runtime.structural_check(
            not_a_zip, what="broken", source_signature=cnn["signature"], precision=Precision.FP16, palettize=None
        )
    empty = tmp_path / "empty.mlpackage.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "no package here")
    with pytest.raises(StepError, match="holds no .mlpackage"):
        coreml_runtime.structural_check(empty, what="empty", source_signature=cnn["signature"], precision=Precision.FP16, palettize=None)


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS")
def test_running_off_macos_is_not_measurable(built):
    path, _ = built["fp16"]
    with pytest.raises(NotMeasurable, match="needs macOS"):
        coreml_runtime.predict(path, {"image": np.zeros((2, 16, 16, 1), np.float32)}, what="fp16")
    with pytest.raises(NotMeasurable, match="needs macOS"):
        coreml_runtime.median_latency_ms(path, what="fp16")
    assert coreml_runtime.accelerator_coverage(path, A17) is None


def test_a_layer_core_ml_cannot_convert_names_its_op(tmp_path):
    source = _export(_log_gamma_model, tmp_path)
    out = tmp_path / "lgamma.fp16.mlpackage.zip"
    with pytest.raises(
        StepError, match=r"TensorFlow op Lgamma \(node \S*log_gamma\S*/Lgamma, in layer 'log_gamma\S*'\) has no Core ML equivalent"
    ) as error:
        _convert(source, out, "fp16")
    assert "drop Core ML targets" in str(error.value)
    assert not out.exists() and not Path(str(out) + ".json").exists()


def test_a_variable_input_shape_is_refused(tmp_path):
    import keras

    source = _export(lambda: keras.Sequential([keras.Input((None, 3), name="sequence"), keras.layers.Dense(4)]), tmp_path)
    with pytest.raises(StepError, match=r"input sequence has shape \(\?, \?, 3\).*set io -> inputs -> sequence -> shape"):
        _convert(source, tmp_path / "seq.fp16.mlpackage.zip", "fp16")


@pytest.mark.slow
def test_the_same_bytes_from_another_process_time_zone_and_umask(built, cnn, tmp_path):
    """A fresh interpreter (other hash seed, time zone, umask, working directory) gives the same bytes."""
    script = textwrap.dedent(
        f"""
        import os
        os.umask(0o077)
        from modelmake.contracts import ConvertJob
        from modelmake.formats.coreml import CoremlSettings
        from modelmake.kinds import Precision
        from modelmake.plan import FormatSupport, InputSpec
        from modelmake.steps import convert
        support = FormatSupport(format="coreml", precisions=tuple(Precision), """  # one line of the script, split for the line length
        f"""settings=CoremlSettings(compute_units="ALL", minimum_deployment_target="iOS17"))
        for variant, precision, bits in [("int8", "int8", None), ("palette4", "fp16", 4)]:
            out = os.path.join({str(tmp_path)!r}, f"cnn.{{variant}}.mlpackage.zip")
            convert.convert(ConvertJob(
                artifact_id=variant, source_record={cnn["record"]!r}, precision=Precision(precision), per_channel=True, palettize=bits,
                calibration=None, calibration_origin=None, inputs=(InputSpec(),), support=support, out=out, out_record=out + ".json",
            ))
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "TZ": "Pacific/Kiritimati", "LC_ALL": "C"}
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, capture_output=True)
    for variant in ("int8", "palette4"):
        assert (tmp_path / f"cnn.{variant}.mlpackage.zip").read_bytes() == built[variant][0].read_bytes()


# The share of weight bytes stored compressed (fp16, int8, or palettized), read from the package off macOS too.
SHARES = {"fp32": None, "fp16": (0.99, 1.0), "int8": (0.9, 1.0), "palette4": (0.9, 1.0)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_weight_share_is_read_from_the_package(built, variant):
    path, _ = built[variant]
    precision, _, bits = VARIANTS[variant]
    share = coreml_runtime.weight_share(path, precision, bits)
    if SHARES[variant] is None:
        assert share is None
    else:
        low, high = SHARES[variant]
        assert share is not None and low <= share <= high, share
