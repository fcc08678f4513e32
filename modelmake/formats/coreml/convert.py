"""Core ML conversion: SavedModel -> an ML program package, shipped as a reproducible zip.

fp32 and fp16 set the program's compute precision (fp16 stores float16
weights); int8 (and dynamic_int8) store 8-bit linearly quantized weights on
top of the fp16 program, with float activations: Core ML's activation
quantization calibrates by running the model, which only macOS can do, so
no calibration data is read.  ``palettize`` replaces the weights with k-means
look-up tables of that many bits, on top of the variant's precision (an int8
variant gets int8 look-up tables, which needs iOS18).

Inputs and outputs keep the source's names (the SavedModel signature's keys),
so apps feed every platform the same way.  Every input gets a fixed shape: the
one io declares for it, else the source's with a batch of 1; float tensors are
float32 and integer ones int32 (Core ML has no int64 features).

The package directory is packed with ``archive.write_archive`` under
``<name>.mlpackage/`` so unzipping the artifact gives a package Xcode takes.
"""
from __future__ import annotations

import json
import re
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

from ... import fsutil, tensors
from ...bundle import archive
from ...contracts import ArtifactRecord, ConvertJob, SourceRecord
from ...errors import StepError
from ...kinds import Precision
from ...plan import InputSpec
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
        input_shapes = fixed_input_shapes(record.signature, job.inputs, what)
        model = _convert_saved_model(
            Path(record.model), record.signature, input_shapes, precision, deployment_target, compute_units, what
        )
        model, compression = _compress(model, precision, job.per_channel, palettize, what)
        if job.prune is not None:
            model, compression = _prune(model, job.prune.sparsity, "training" in record.metadata, compression, what)
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


# Feature names an ML program takes (coremltools refuses others when renaming).
_FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def fixed_input_shapes(signature: dict, declared: Iterable[InputSpec], what: str) -> dict[str, list[int]]:
    """Every input's shape in the package, by the source's input name: the shape io declares for it, else the
    source's with a batch of 1.  Core ML needs them fixed: a flexible shape would keep the Neural Engine away."""
    shapes = _declared_shapes(signature, declared, what)
    return {entry["name"]: shapes.get(entry["name"]) or _batch_of_one(entry, what) for entry in signature[tensors.INPUTS]}


def _declared_shapes(signature: dict, declared: Iterable[InputSpec], what: str) -> dict[str, list[int]]:
    shapes = {}
    for spec in declared:
        if spec.shape is None:
            continue
        try:
            name = tensors.resolve(signature, tensors.INPUTS, spec.name)
        except KeyError:
            known = ", ".join(tensors.names(signature, tensors.INPUTS))
            raise StepError(
                f"{what}: io declares a shape for input {spec.name or '(unnamed)'}, but the model's inputs are {known}: "
                "name each input under io -> inputs by the model's names"
            ) from None
        source_shape = tensors.entry(signature, tensors.INPUTS, name)["shape"]
        shape = [int(d) for d in spec.shape]
        fits = len(shape) == len(source_shape) and all(
            d > 0 and (want is None or d == want) for d, want in zip(shape, source_shape, strict=True)
        )
        if not fits:
            raise StepError(
                f"{what}: io -> inputs -> {name} -> shape is {tensors.shown(shape)}, but the model's input {name} has shape "
                f"{tensors.shown(source_shape)}: give every dimension, batch first, and change only the dynamic (?) ones"
            )
        shapes[name] = shape
    return shapes


def _batch_of_one(entry: dict, what: str) -> list[int]:
    """The source's shape with its dynamic batch (the first dimension) set to 1; other dynamic dimensions need a
    declared shape.  A static first dimension stays as it is."""
    shape = entry["shape"]
    if any(d is None for d in shape[1:]):
        raise StepError(
            f"{what}: the model's input {entry['name']} has shape {tensors.shown(shape)}, and Core ML needs every dimension "
            f"but the batch fixed: set io -> inputs -> {entry['name']} -> shape (every dimension, batch first), "
            "or give the model's keras.Input a fixed shape"
        )
    return [1 if d is None else int(d) for d in shape]


def _feature_dtype(entry: dict, role: str, what: str):
    """The Core ML type of an input or output: float32 for floats (an fp16 program casts inside; left alone,
    coremltools would give it float16 features), int32 for integers (Core ML has no int64 features: an int64
    input such as a sample rate is fed as int32, which the app, and predict, cast to)."""
    import numpy as np

    try:
        kind = np.dtype(entry["dtype"]).kind
    except TypeError:
        kind = "not numeric"  # a string tensor
    if kind == "f":
        return np.float32
    if kind in "iu":
        return np.int32
    raise StepError(
        f"{what}: the model's {role} {entry['name']} is {entry['dtype']}, which Core ML features cannot hold "
        "(only float and integer arrays): change that tensor's type in the model"
    )


def _check_feature_names(signature: dict, what: str) -> None:
    for role in (tensors.INPUTS, tensors.OUTPUTS):
        for name in tensors.names(signature, role):
            if not _FEATURE_NAME.fullmatch(name):
                raise StepError(
                    f"{what}: the model's {role[:-1]} {name!r} cannot keep its name in Core ML, whose input and output "
                    "names are letters, digits and underscores, not starting with a digit: rename it in the model "
                    "(the Keras Input's name, or the key of the output)"
                )


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


def _convert_saved_model(
    directory: Path, signature: dict, input_shapes: dict[str, list[int]], precision: Precision, deployment, compute_units, what: str
):
    import coremltools as ct
    import tensorflow as tf

    _check_feature_names(signature, what)
    try:
        # `loaded` must outlive the conversion: the concrete function only references its
        # variables, which are freed with the object that owns them.
        loaded = tf.saved_model.load(str(directory))
        function = loaded.signatures["serving_default"]
    except Exception as exc:
        raise StepError(
            f"{what}: {directory} does not load as a SavedModel with a serving_default signature ({type(exc).__name__}: {exc})"
        ) from exc
    graph_inputs, graph_outputs = _graph_names(function, tf)
    for role, graph in ((tensors.INPUTS, graph_inputs), (tensors.OUTPUTS, graph_outputs)):
        missing = [name for name in tensors.names(signature, role) if name not in graph]
        if missing:
            raise StepError(
                f"{what}: the SavedModel's serving_default signature has no {role} {', '.join(missing)} (it has "
                f"{', '.join(graph) or 'none'}): the source record does not describe this model; rebuild the source"
            )
    # Typed explicitly, in the source's order: left alone, coremltools gives an fp16 program fp16 inputs and
    # outputs, and an unknown dimension a flexible range.
    inputs = [
        ct.TensorType(name=graph_inputs[e["name"]], shape=input_shapes[e["name"]], dtype=_feature_dtype(e, "input", what))
        for e in signature[tensors.INPUTS]
    ]
    outputs = [ct.TensorType(name=graph_outputs[e["name"]], dtype=_feature_dtype(e, "output", what)) for e in signature[tensors.OUTPUTS]]
    try:
        model = ct.convert(
            [function],
            source="tensorflow",
            convert_to="mlprogram",
            minimum_deployment_target=deployment,
            compute_precision=ct.precision.FLOAT32 if precision == Precision.FP32 else ct.precision.FLOAT16,
            compute_units=compute_units,
            inputs=inputs,
            outputs=outputs,
            skip_model_load=True,
        )
    except Exception as exc:
        raise StepError(_conversion_failure(exc, what, precision, ct.__version__)) from exc
    del loaded
    renames = {graph_inputs[name]: name for name in tensors.names(signature, tensors.INPUTS)}
    renames |= {graph_outputs[name]: name for name in tensors.names(signature, tensors.OUTPUTS)}
    model = _rename_features(model, renames, what)
    _check_names(model, signature, what)
    return model


def _graph_names(function, tf) -> tuple[dict[str, str], dict[str, str]]:
    """The graph tensor (as coremltools names it) behind each signature key, for the inputs and the outputs.

    A signature function's inputs are its keyword arguments, flattened in tf.nest's order (by key) and followed
    by the captured variables; its outputs are its structured outputs flattened the same way.
    """
    arguments = function.structured_input_signature[1]
    input_keys = tf.nest.flatten({key: key for key in arguments})
    inputs = {key: tensor.name.split(":")[0] for key, tensor in zip(input_keys, function.inputs[: len(input_keys)], strict=True)}
    output_keys = tf.nest.flatten({key: key for key in function.structured_outputs})
    outputs = {key: tensor.name.split(":")[0] for key, tensor in zip(output_keys, function.outputs, strict=True)}
    return inputs, outputs


def _check_names(model, signature: dict, what: str) -> None:
    """The package's inputs and outputs must be the source's, by name and in its order."""
    description = model.get_spec().description
    for role, features in ((tensors.INPUTS, description.input), (tensors.OUTPUTS, description.output)):
        got, wanted = [f.name for f in features], tensors.names(signature, role)
        if got != wanted:
            raise StepError(
                f"{what}: coremltools named the package's {role} {', '.join(got)}, not the source's {', '.join(wanted)}; "
                "this coremltools release converts this model differently: report it with the model"
            )


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


def _rename_features(model, names: dict[str, str], what: str):
    """Give the package the source signature's input and output names (checked to be valid feature names)."""
    import coremltools as ct

    renames = {old: new for old, new in names.items() if old != new}
    if not renames:
        return model
    spec = model.get_spec()
    # rename_feature renames every variable of that name: a new name already used inside the program would join two.
    taken = _program_names(spec.mlProgram) - renames.keys()
    clashes = sorted(set(renames.values()) & taken)
    if clashes:
        raise StepError(
            f"{what}: the model's {', '.join(clashes)} is also the name of a tensor inside the converted program, "
            "so the package cannot take it: rename that input or output in the model"
        )
    # Through temporary names, so that two names can swap (an output named like another's graph tensor).
    temporary = {old: f"modelmake_renamed_{i}" for i, old in enumerate(renames)}
    for old, new in [*temporary.items(), *((temporary[old], new) for old, new in renames.items())]:
        ct.utils.rename_feature(spec, old, new)
    return ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True)


def _program_names(program) -> set[str]:
    """Every variable an ML program names: its functions' inputs and its ops' outputs."""
    names = {value.name for function in program.functions.values() for value in function.inputs}
    for function in program.functions.values():
        for block in function.block_specializations.values():
            names |= {out.name for op in fp16range.proto_operations(block) for out in op.outputs}
    return names


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


def _prune(model, sparsity: float, trained: bool, compression: dict | None, what: str):
    """Sparse weights: a model pruned while it trained has its zeros stored sparse; another is pruned here by magnitude."""
    import coremltools.optimize.coreml as cto

    if trained:
        # Only exact zeros are dropped: the weights are those the fine-tuning left.
        config = cto.OpThresholdPrunerConfig(threshold=1e-12, minimum_sparsity_percentile=0.0, weight_threshold=2048)
        applied = {"method": "prune", "mode": "threshold", "threshold": 1e-12}
    else:
        config = cto.OpMagnitudePrunerConfig(target_sparsity=sparsity, weight_threshold=2048)
        applied = {"method": "prune", "mode": "magnitude", "target_sparsity": sparsity}
    try:
        model = cto.prune_weights(model, cto.OptimizationConfig(global_config=config), joint_compression=compression is not None)
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        raise StepError(
            f"{what}: pruning the weights to {sparsity:g} sparsity failed: {type(exc).__name__}: {detail[-1] if detail else ''} "
            "(sparse weights need iOS16/macOS13 or later; check the target profile's minimum_deployment_target)"
        ) from exc
    applied["weight_threshold"] = 2048
    return model, ({**compression, "then": applied} if compression else applied)


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
    # A program whose weights are all inline leaves an empty weights directory, which a zip of files cannot
    # hold: its manifest item would name nothing, and the unpacked package would not load.
    items = {key: entry for key, entry in manifest["itemInfoEntries"].items() if not _empty_directory(package / "Data" / entry["path"])}
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


def _empty_directory(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())
