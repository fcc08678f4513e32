"""Core ML conversion: SavedModel -> an ML program package, shipped as a reproducible zip.

fp32 and fp16 set the program's compute precision (fp16 stores float16
weights); int8 (and dynamic_int8) store 8-bit linearly quantized weights on
top of the fp16 program, with float activations: Core ML's activation
quantization calibrates by running the model, which only macOS can do, so
no calibration data is read.  ``palettize`` replaces the weights with k-means
look-up tables of that many bits, on top of the variant's precision (an int8
variant gets int8 look-up tables, which needs iOS18).  Inputs and outputs keep
the source's names and float types with a batch of 1, so apps feed every
platform the same way.

The package directory is packed with ``archive.write_archive`` under
``<name>.mlpackage/`` so unzipping the artifact gives a package Xcode takes.
"""
from __future__ import annotations

import json
import re
import tempfile
import uuid
from pathlib import Path

from ... import fsutil
from ...bundle import archive
from ...contracts import ArtifactRecord, ConvertJob, SourceRecord
from ...errors import StepError
from ...kinds import Precision
from ...versions import tool_versions
from . import BACKEND, CoremlSettings, fp16range
from .runtime import io_details

# Item identifiers in Manifest.json are random UUIDs; this namespace turns each
# item's path into a stable one instead (uuid5 is a pure function of its inputs).
MANIFEST_NAMESPACE = uuid.UUID("6d6f6465-6c6d-616b-6500-636f72656d6c")
CONVERSION_DATE_KEY = "com.github.apple.coremltools.conversion_date"
COMPRESSED = {"linear_quantize": "int8-quantized", "palettize": "palettized"}


def convert(job: ConvertJob) -> None:
    settings: CoremlSettings = job.support.settings
    precision, palettize = Precision(job.precision), job.palettize
    record = SourceRecord.read(job.source_record)
    what = f"Core ML conversion of {Path(job.out).name}"
    if record.kind not in BACKEND.source_kinds:
        kinds = ", ".join(BACKEND.source_kinds[:-1]) + f" or {BACKEND.source_kinds[-1]}"
        raise StepError(f"{what}: a {record.kind} source cannot be converted to Core ML; use a {kinds} source")
    # The spec refuses such a variant before any work; this catches a job made some other way.
    problem = BACKEND.variant_problem(job.support, precision, palettize)
    if problem:
        raise StepError(f"{what}: {problem}")

    out_path = Path(job.out)
    package_name = _package_name(out_path)
    with tempfile.TemporaryDirectory(prefix="modelmake-coreml-") as scratch:
        package = Path(scratch) / package_name
        deployment_target, compute_units = _target(settings, what)
        model = _convert_saved_model(Path(record.model), record.signature, precision, deployment_target, compute_units, what)
        model, compression = _compress(model, precision, job.per_channel, palettize, what)
        # coremltools keeps such ops in float32 on its own, and says nothing; read from the final
        # program, so the names are those the structural check finds in the package.
        kept = fp16range.float32_kept(model.get_spec().mlProgram, Path(model.weights_dir))[0] if precision != Precision.FP32 else {}
        if kept:
            print(
                f"{what}: kept in float32, fed constants beyond float16's range (|x| > {fp16range.FLOAT16_MAX:g}): "
                f"{fp16range.describe(kept)}; their outputs are float16 again for the next op, so an output beyond that range "
                "still overflows: compare the fp16 figures with fp32 on a Mac, or rescale the layer"
            )
        _check_deployment(model, deployment_target, compression, what)
        model.save(str(package))
        del model  # coremltools keeps a temporary package per model until the object goes
        _normalise_package(package)
        files = {f"{package_name}/{p.relative_to(package).as_posix()}": p for p in package.rglob("*") if p.is_file()}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        # The earliest time a zip can hold: the bytes never depend on when or where the build ran.
        archive.write_archive(out_path, files, archive.ZIP_EPOCH_MIN)

    tools = ("tensorflow", "coremltools") + (("scikit-learn",) if palettize else ())
    ArtifactRecord(
        precision=str(precision),
        integer_io=False,
        per_channel=job.per_channel,
        # Core ML picks the compute units when an app loads the model; the package does not
        # store them, so they are recorded as its "delegates" for the app to pass to MLModelConfiguration.
        delegates=[settings.compute_units],
        io=io_details(out_path, what=f"converted {out_path.name}"),
        sha256=fsutil.sha256_file(out_path),
        size=out_path.stat().st_size,
        tools=tool_versions(*tools),
        extra={
            "palettize": palettize,
            "compression": compression,
            "minimum_deployment_target": settings.minimum_deployment_target,
            # Only where there are such ops, so other records keep their bytes.
            **({"float32_ops": {op: sorted(c) for op, c in sorted(kept.items())}} if kept else {}),
        },
    ).write(job.out_record)


def _package_name(out: Path) -> str:
    name = out.name.removesuffix(".zip")
    return name if name.endswith(".mlpackage") else f"{name}.mlpackage"


def _fixed_shape(signature: dict, role: str, what: str) -> list[int]:
    shape = signature[role]["shape"]
    if not shape:
        return []
    if any(d is None for d in shape[1:]):
        shown = tuple("?" if d is None else d for d in shape)
        raise StepError(
            f"{what}: the model's {role} has shape {shown}, and Core ML needs every dimension but the batch fixed: "
            "give the model's keras.Input a fixed shape"
        )
    return [1, *shape[1:]]


def _target(settings: CoremlSettings, what: str):
    """The profile's minimum_deployment_target and compute_units as coremltools values."""
    import coremltools as ct

    try:
        return ct.target[settings.minimum_deployment_target], ct.ComputeUnit[settings.compute_units]
    except KeyError as exc:
        raise StepError(
            f"{what}: coremltools {ct.__version__} does not know {exc.args[0]!r} from the target profile: "
            "pick a minimum_deployment_target and compute_units it supports"
        ) from exc


def _check_deployment(model, deployment, compression: dict | None, what: str) -> None:
    """Compressed weights need newer ops; coremltools then raises the package's OS version without saying so.

    The spec's rule (``deployment_problem``) is checked before conversion; this
    checks what coremltools actually produced, should a release need more.
    """
    import coremltools as ct

    required = model.get_spec().specificationVersion
    if required > deployment.value:
        needs = "/".join(name for name, t in ct.target.__members__.items() if t.value == required and name.startswith(("iOS", "macOS")))
        raise StepError(
            f"{what}: {COMPRESSED.get(compression['method'], 'compressed') if compression else 'the converted'} "
            f"weights need {needs} or later, "
            f"but the target's minimum_deployment_target is {deployment.name}: drop this variant from the target, "
            "or raise the profile's minimum_deployment_target"
        )


def _convert_saved_model(directory: Path, signature: dict, precision: Precision, deployment, compute_units, what: str):
    import coremltools as ct
    import numpy as np
    import tensorflow as tf

    try:
        # `loaded` must outlive the conversion: the concrete function only references its
        # variables, which are freed with the object that owns them.
        loaded = tf.saved_model.load(str(directory))
        function = loaded.signatures["serving_default"]
    except Exception as exc:
        raise StepError(
            f"{what}: {directory} does not load as a SavedModel with a serving_default signature ({type(exc).__name__}: {exc})"
        ) from exc
    graph_input = function.inputs[0].name.split(":")[0]
    graph_output = function.outputs[0].name.split(":")[0]
    input_shape = _fixed_shape(signature, "input", what)
    try:
        model = ct.convert(
            [function],
            source="tensorflow",
            convert_to="mlprogram",
            minimum_deployment_target=deployment,
            compute_precision=ct.precision.FLOAT32 if precision == Precision.FP32 else ct.precision.FLOAT16,
            compute_units=compute_units,
            # Typed explicitly: left alone, coremltools gives an fp16 program fp16 inputs and
            # outputs, and an unknown batch a flexible range.
            inputs=[ct.TensorType(name=graph_input, shape=input_shape, dtype=np.dtype(signature["input"]["dtype"]).type)],
            outputs=[ct.TensorType(name=graph_output, dtype=np.dtype(signature["output"]["dtype"]).type)],
            skip_model_load=True,
        )
    except Exception as exc:
        raise StepError(_conversion_failure(exc, what, precision, ct.__version__)) from exc
    del loaded
    return _rename_features(model, {graph_input: signature["input"]["name"], graph_output: signature["output"]["name"]})


_UNSUPPORTED_TF_OP = re.compile(r"Conversion for TF op '([^']+)' not implemented")
_NODE_NAME = re.compile(r'^name: "([^"]+)"', re.MULTILINE)
_MIL_OP = re.compile(r'Op "([^"]+)" \(op_type: (\w+)\)')


def _conversion_failure(exc: Exception, what: str, precision: Precision, version: str) -> str:
    text = str(exc)
    unsupported = _UNSUPPORTED_TF_OP.search(text)
    if unsupported:
        op = unsupported.group(1)
        node = _NODE_NAME.search(text)
        where = ""
        if node:
            # Node names are the Keras layer path ending in the op, e.g. model/lgamma_layer/Lgamma.
            parts = [p for p in node.group(1).split("/") if p != "StatefulPartitionedCall"]
            layer = parts[-2] if len(parts) >= 2 else None
            where = f" (node {node.group(1)}" + (f", in layer {layer!r}" if layer else "") + ")"
        return (
            f"{what} failed: TensorFlow op {op}{where} has no Core ML equivalent in coremltools {version}: "
            f"rewrite that layer with ops Core ML supports, or drop Core ML targets for this model"
        )
    mil_op = _MIL_OP.search(text)
    detail = text.strip().splitlines()
    reason = detail[-1] if detail else type(exc).__name__
    if mil_op:
        return (
            f"{what} to {precision} failed at op {mil_op.group(1)} ({mil_op.group(2)}): {reason} "
            "(raise the target profile's minimum_deployment_target, or change that layer)"
        )
    return (
        f"{what} to {precision} failed: {type(exc).__name__}: {reason} "
        "(a layer coremltools cannot convert at this precision or deployment target; try another precision for this target)"
    )


def _rename_features(model, names: dict[str, str]):
    """Give the package the source signature's input and output names, where Core ML can take them."""
    import coremltools as ct

    spec = model.get_spec()
    renames = {
        old: new
        for old, new in names.items()
        if old != new and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", new)  # an ML program variable name
    }
    if not renames:
        return model
    for old, new in renames.items():
        ct.utils.rename_feature(spec, old, new)
    return ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True)


def _compress(model, precision: Precision, per_channel: bool, palettize_bits: int | None, what: str):
    """The compressed model and a record of what was applied (None: the weights are stored as computed)."""
    import coremltools.optimize.coreml as cto

    applied = None
    try:
        if palettize_bits:
            # scikit-learn's k-means with the random_state coremltools fixes (0), so the same
            # weights give the same tables; one worker keeps the order of work fixed as well.
            config = cto.OpPalettizerConfig(mode="kmeans", nbits=palettize_bits, granularity="per_tensor", num_kmeans_workers=1)
            model = cto.palettize_weights(model, cto.OptimizationConfig(global_config=config))
            applied = {"method": "palettize", "mode": "kmeans", "nbits": palettize_bits, "granularity": "per_tensor"}
            if precision.weights_int8:
                model = cto.linear_quantize_weights(model, _quantizer_config(per_channel=False), joint_compression=True)
                applied["lut"] = {"method": "linear_quantize", "mode": "linear_symmetric", "dtype": "int8", "granularity": "per_tensor"}
        elif precision.weights_int8:
            model = cto.linear_quantize_weights(model, _quantizer_config(per_channel))
            applied = {
                "method": "linear_quantize",
                "mode": "linear_symmetric",
                "dtype": "int8",
                "granularity": "per_channel" if per_channel else "per_tensor",
            }
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        raise StepError(
            f"{what}: compressing the weights ({precision}{f', palettize {palettize_bits} bits' if palettize_bits else ''}) failed: "
            f"{type(exc).__name__}: {detail[-1] if detail else ''} (compressed weights need iOS16/macOS13 or later; "
            "check the target profile's minimum_deployment_target)"
        ) from exc
    if applied is not None:
        # coremltools leaves tensors under 2048 elements alone; say so, since it explains the sizes.
        applied["weight_threshold"] = 2048
    return model, applied


def _quantizer_config(per_channel: bool):
    import coremltools.optimize.coreml as cto

    config = cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel" if per_channel else "per_tensor", weight_threshold=2048
    )
    return cto.OptimizationConfig(global_config=config)


def _normalise_package(package: Path) -> None:
    """Remove what makes two conversions of the same model differ.

    coremltools writes the conversion date into the model's user metadata (and, in
    some versions, the program's buildInfo), and Manifest.json names each item by a
    random UUID. The date is dropped; each identifier becomes a uuid5 of the item's
    path, so it is stable and still unique; the manifest is rewritten with sorted
    keys. The specification is re-serialized deterministically (map entries sorted),
    since protobuf does not otherwise promise an order for map fields. The weight
    file is always weights/weight.bin, and its bytes depend only on the program.
    """
    from coremltools.proto import Model_pb2

    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    items = manifest["itemInfoEntries"]
    new_ids = {old: str(uuid.uuid5(MANIFEST_NAMESPACE, entry["path"])) for old, entry in items.items()}
    manifest["itemInfoEntries"] = {new_ids[old]: entry for old, entry in items.items()}
    manifest["rootModelIdentifier"] = new_ids[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n", encoding="utf-8")

    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    spec_path = package / "Data" / root["path"]
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    user_defined = spec.description.metadata.userDefined
    if CONVERSION_DATE_KEY in user_defined:
        del user_defined[CONVERSION_DATE_KEY]
    if spec.WhichOneof("Type") == "mlProgram" and "buildInfo" in spec.mlProgram.attributes:
        entries = spec.mlProgram.attributes["buildInfo"].immediateValue.dictionary.values
        dated = [e for e in entries if "date" in "".join(e.key.immediateValue.tensor.strings.values)]
        for entry in dated:
            entries.remove(entry)
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))
