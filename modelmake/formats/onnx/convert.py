"""ONNX conversion: a SavedModel, .tflite or .onnx source -> .onnx at the variant's precision.

A SavedModel or .tflite source starts from its float model, exported by
tf2onnx once per opset by the export task (export.py) and shared by every
variant at that opset, so no conversion here imports TensorFlow; an ONNX
source is used as it is, upgraded first to the profile's opset when it was
exported at an older one (opset.py).  fp32 stops there; fp16 stores float16
weights and computes in float16 behind float32 inputs and outputs;
dynamic_int8 stores int8 weights and quantizes activations at run time; int8
is static QDQ calibrated on the calibration data, with the settings of the
profile's quantization scheme (chips.py).  An input io gives a shape is
fixed at it, at every precision; for execution providers that need static
shapes, every remaining dynamic batch dimension becomes 1.  Input and output
names are the source's throughout.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from ... import fsutil
from ...contracts import ArtifactRecord, ConvertJob, ExportRecord, SourceRecord
from ...errors import StepError, error_class_for
from ...kinds import Precision
from ...steps._arrays import calibration_samples
from ...steps._selection import NOT_BUILT
from ...tensors import INPUTS, Tensors, resolve, shown
from ...tensors import names as tensor_names
from ...tensors import samples as samples_in
from ...versions import tool_versions
from ..base import tool_message
from . import BACKEND, OnnxSettings, chips, feeds
from .canonical import sort_topologically
from .opset import upgraded
from .runtime import io_details, load_checked
from .scratch import working_directory
from .subgraphs import has_subgraphs, report_float_subgraph_nodes

# Samples per calibration run when the batch dimension is dynamic; MinMax
# calibration gives the same ranges however the samples are grouped.
CALIBRATION_BATCH = 32
# A serialized protobuf cannot exceed 2 GiB; larger models need ONNX external data, which a phone bundle does not carry.
MAX_MODEL_BYTES = 2**31 - 1


def convert(job: ConvertJob) -> None:
    settings: OnnxSettings = job.support.settings
    precision = job.precision
    record = SourceRecord.read(job.source_record)
    if precision not in BACKEND.precisions:
        raise StepError(
            f"ONNX artifacts are built at {', '.join(BACKEND.precisions)}, not {precision!r}: pick one of those for this variant"
        )
    samples = calibration_samples(job, record.signature) if precision == Precision.INT8 else None
    fixed = _fixed_shapes(job, record.signature)

    static_batch = chips.needs_static_batch(settings)
    if record.kind == "onnx" and precision == Precision.FP32 and not static_batch and not fixed:
        model = _load_onnx_source(Path(record.model), settings.opset, what=f"onnx source {record.path}")
        _finish(model)  # the checks only: the file ships byte for byte as it came
        with fsutil.atomic_output(job.out) as handle, open(record.model, "rb") as src:
            shutil.copyfileobj(src, handle)
    else:
        prepared = None
        if job.export_record:
            model, exported = _export(job.export_record)
            # The export's pre-processed model is that of a conversion that fixes no shape io gives.
            if precision in (Precision.INT8, Precision.DYNAMIC_INT8) and not fixed:
                prepared = _prepared(exported, PREPARED[static_batch], job.export_record)
        else:
            model = _float_model(record, settings.opset)
        model, batch_axes = before_quantizing(model, fixed, static_batch, what=job.artifact_id)
        with tempfile.TemporaryDirectory(prefix="modelmake-onnx-") as scratch, working_directory(Path(scratch)):
            directory = Path(scratch).resolve()
            if precision == Precision.FP16:
                model = _float16(model)
            elif precision == Precision.DYNAMIC_INT8:
                model = _dynamic_int8(model, job.per_channel, directory, prepared)
            elif samples is not None:  # int8: static QDQ from the calibration samples
                model = _static_int8(model, samples, settings, job.per_channel, directory, prepared)
        feeds.mark_batch_axes(model, batch_axes)
        fsutil.write_bytes(job.out, _finish(model))

    ArtifactRecord(
        # The QDQ format quantizes inside the graph: inputs and outputs stay float at every precision.
        precision=str(precision),
        integer_io=False,
        per_channel=job.per_channel,
        delegates=list(settings.execution_providers),
        io=io_details(job.out, what=f"converted {Path(job.out).name}"),
        sha256=fsutil.sha256_file(job.out),
        size=Path(job.out).stat().st_size,
        tools=tool_versions("tf2onnx", "onnx", "onnxruntime"),
    ).write(job.out_record)


# ---------------------------------------------------------------- float model


def _float_model(record: SourceRecord, opset: int):
    """The float model of the source at the opset, made here: for an ONNX source, or a job without an export."""
    if record.kind == "onnx":
        what = f"onnx source {record.path}"
        return upgraded(_load_onnx_source(Path(record.model), opset, what=what), opset, what=what)
    from .export import float_model

    return float_model(record, opset)


def _export(path: str):
    """The float model the export task wrote (export.py) and its record, the file checked against the record;
    a failed export fails the conversion with its reason."""
    import onnx

    document = fsutil.read_json(path)
    if NOT_BUILT in document:
        raise error_class_for(document.get("exit_code", StepError.exit_code))(
            f"{document[NOT_BUILT]} (the export failed: details in {document.get('log', 'its log')})"
        )
    exported = ExportRecord.from_document(document)
    return onnx.load_from_string(_exported_bytes(exported.model, exported.sha256, path)), exported


# The kinds of pre-processed model an export writes (ExportJob.out_prepared), by whether the batch is fixed at 1.
PREPARED = {False: "any-batch", True: "batch-1"}


def before_quantizing(model, fixed: dict[str, tuple[int, ...]], static_batch: bool, *, what: str):
    """The float model as the precisions take it, with the batch axes it had (the export does the same for its prepared copies)."""
    # Where each input and output holds its samples, known before any of them is fixed (feeds.py).
    batch_axes = feeds.batch_axes(model)
    model = _fix_shapes(model, fixed, what=what)
    if static_batch:
        model = _fix_batch(model)
    feeds.mark_batch_axes(model, batch_axes)  # the calibration reads them; the precision's tools may drop them
    return model, batch_axes


def _prepared(exported: ExportRecord, kind: str, record: str) -> tuple[str, bytes] | None:
    """The export's pre-processed model of this kind, as (the file name the pre-processing gave it, its bytes), if it wrote one."""
    prepared = exported.prepared.get(kind)
    if prepared is None:
        return None
    return prepared["name"], _exported_bytes(prepared["file"], prepared["sha256"], record)


def _exported_bytes(file: str, sha256: str | None, record: str) -> bytes:
    content = Path(file).read_bytes()
    if hashlib.sha256(content).hexdigest() != sha256:
        raise StepError(
            f"{file} is not the file its export record {record} describes (it was changed after the export): "
            f"delete {record} and build again to export it anew"
        )
    return content


def _load_onnx_source(path: Path, opset: int, *, what: str):
    model = load_checked(path, what=what, advice="re-export it, or fix the graph it names")
    used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if used is not None and used > opset:
        raise StepError(
            f"{what} uses ONNX opset {used}, newer than the opset {opset} the target profile runs: "
            f"re-export it at opset {opset} or lower, or raise the profile's onnx opset"
        )
    return model


def _fixed_shapes(job: ConvertJob, signature: dict) -> dict[str, tuple[int, ...]]:
    """The shapes io fixes, by the model's input names."""
    fixed = {}
    for spec in job.inputs:
        if spec.shape is not None:
            try:
                name = resolve(signature, INPUTS, spec.name)
            except KeyError as exc:
                raise StepError(
                    f"{job.artifact_id}: io fixes the shape of input {spec.name or '(unnamed)'}, which the source model does not have "
                    f"(its inputs: {', '.join(tensor_names(signature, INPUTS))}): use one of those names"
                ) from exc
            fixed[name] = tuple(int(d) for d in spec.shape)
    return fixed


def _fix_shapes(model, fixed: dict[str, tuple[int, ...]], *, what: str):
    """Fix the inputs io gives a shape, so that accelerators needing static shapes see them, and infer the outputs'."""
    from onnxruntime.tools.onnx_model_utils import make_input_shape_fixed

    if not fixed:
        return model
    for name, shape in fixed.items():
        value = next(v for v in model.graph.input if v.name == name)
        before = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim]
        try:
            make_input_shape_fixed(model.graph, name, list(shape))
        except ValueError as exc:
            raise StepError(
                f"{what}: io fixes input {name} at shape {list(shape)}, but the model's input is {shown(before)} ({exc}): "
                "give every dimension, keeping the ones the model fixes"
            ) from exc
    return _infer_output_shapes(model)


def _fix_batch(model):
    """Give every dynamic batch dimension (feeds.py) the size 1, and the outputs the static shapes that follow from it."""
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

    inputs, _ = feeds.graph_layouts(model)
    axes = {layout.name: layout.batch_axis for layout in inputs}
    changed = False
    for value in model.graph.input:
        axis = axes.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if axis is None or axis >= len(dims) or (dims[axis].HasField("dim_value") and dims[axis].dim_value > 0):
            continue
        if dims[axis].HasField("dim_param"):
            make_dim_param_fixed(model.graph, dims[axis].dim_param, 1)
        else:
            dims[axis].dim_value = 1
        changed = True
    return _infer_output_shapes(model) if changed else model


def _infer_output_shapes(model):
    """Copy onto the outputs the static shapes shape inference finds for them; leave the others as they are."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return model
    for output, known in zip(model.graph.output, inferred.graph.output, strict=True):
        shape = known.type.tensor_type.shape
        if shape.dim and all(d.HasField("dim_value") for d in shape.dim):
            output.type.tensor_type.shape.CopyFrom(shape)
    return model


# ---------------------------------------------------------------- precisions


def _float16(model):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from .weights import beyond_float16

    kept = beyond_float16(model)
    if kept:
        # The converter clamps such constants to 65504; the ops they feed stay float32 instead.
        print("kept in float32, fed constants beyond float16's range: " + "; ".join(f"{n} ({', '.join(t)})" for n, t in kept.items()))
    try:
        # keep_io_types: the app keeps feeding and reading float32, as for every other precision.
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(kept))
    except Exception as exc:
        raise StepError(f"float16 conversion failed ({type(exc).__name__}: {exc}): try the fp32 variant for this target") from exc
    # The converter appends its input and output Casts at the end of the node
    # list; ONNX Runtime sorts on load, but the ONNX checker (and other runtimes) want the order sorted.
    sort_topologically(converted.graph)
    return converted


def _preprocessed(model, scratch: Path, prepared: tuple[str, bytes] | None = None) -> Path:
    """The model after ONNX Runtime's quantization pre-processing, saved for the quantizer.

    Symbolic shape inference gives the quantizer the tensor types and shapes
    it needs, and the basic optimizations fold the shape arithmetic tf2onnx
    emits, so fewer tensors are quantized for nothing.  A model the
    pre-processing cannot handle is quantized as it is.  ``prepared`` is that
    result for this model, made once by the export (export.py): its file name and bytes.
    """
    import onnx

    if prepared is not None:
        name, content = prepared
        (scratch / name).write_bytes(content)
        return scratch / name
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = scratch / "float.onnx"
    onnx.save(model, str(source))
    target = scratch / "preprocessed.onnx"
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=skip_symbolic)
            return target
        except Exception:
            continue
    return source


def _dynamic_int8(model, per_channel: bool, scratch: Path, prepared: tuple[str, bytes] | None = None):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = _preprocessed(model, scratch, prepared)
    target = scratch / "dynamic_int8.onnx"
    # Only asked for where there are bodies: the option changes nothing else, and today's files keep their bytes.
    extra = {"EnableSubgraph": True} if has_subgraphs(model) else None
    try:
        quantize_dynamic(str(source), str(target), per_channel=per_channel, weight_type=QuantType.QInt8, extra_options=extra)
    except Exception as exc:
        raise StepError(
            f"dynamic int8 quantization failed ({type(exc).__name__}: {exc}): try the int8 or fp32 variant for this target"
        ) from exc
    quantized = onnx.load(str(target))
    report_float_subgraph_nodes(quantized, str(Precision.DYNAMIC_INT8))
    return quantized


def _static_int8(
    model, samples: Tensors, profile: OnnxSettings, per_channel: bool, scratch: Path, prepared: tuple[str, bytes] | None = None
):
    import onnx
    from onnxruntime.quantization import quantize

    settings = chips.static_quantization_settings(profile, per_channel)
    source = _preprocessed(model, scratch, prepared)
    target = scratch / "int8.onnx"
    try:
        if settings.preprocess is not None and settings.preprocess(source, scratch / "prepared.onnx"):
            source = scratch / "prepared.onnx"
        reader = _calibration_reader(onnx.load(str(source)), samples)
        quantize(str(source), str(target), settings.make_config(source, reader))
    except StepError:
        raise
    except Exception as exc:
        raise StepError(
            f"static int8 quantization ({settings.scheme} settings, {settings.activation_type} activations) failed: "
            f"{tool_message(exc)}; check the calibration data, or try another precision for this target"
        ) from exc
    quantized = onnx.load(str(target))
    report_float_subgraph_nodes(quantized, str(Precision.INT8))
    return _keep_opset(quantized, max(profile.opset, _default_opset(model)), settings.activation_type)


def _default_opset(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _keep_opset(model, opset: int, activation_type: str):
    """Bring a quantized model back to the target profile's opset (or its source's, if newer).

    ORT's quantizer raises a model to opset 21 whenever it uses 16-bit types,
    even when (as for QNN below opset 21) it writes the 16-bit Q/DQ nodes in
    the com.microsoft domain, which every opset takes.  The target profile's
    opset is what the device's runtime loads, so the bump is undone.
    """
    import onnx

    if _default_opset(model) <= opset:
        return model
    try:
        lowered = onnx.version_converter.convert_version(model, opset)
        onnx.checker.check_model(lowered, full_check=True)
    except Exception as exc:
        raise StepError(
            f"the quantizer wrote ONNX opset {_default_opset(model)} and the model cannot be brought back to opset {opset} "
            f"({type(exc).__name__}: {exc}); with {activation_type} activations, "
            "raise the profile's onnx opset to 21 or use uint8 activations"
        ) from exc
    return lowered


def _calibration_reader(model, samples: Tensors):
    """Feeds the calibration samples, every input by name, in runs the model's inputs take.

    A fixed batch size is filled by cycling through the samples, so the
    padding adds no value calibration has not seen.
    """
    from onnxruntime.quantization import CalibrationDataReader

    if samples_in(samples) == 0:
        raise StepError("the calibration data has no samples: int8 quantization needs at least one")
    inputs, outputs = feeds.graph_layouts(model)
    feeds.check_inputs(inputs, samples, what="the model being quantized")
    runs = [feed for feed, _ in feeds.runs(inputs, outputs, samples, CALIBRATION_BATCH, pad="cycle")]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.position = 0

        def get_next(self):
            if self.position >= len(runs):
                return None
            self.position += 1
            return runs[self.position - 1]

        def rewind(self):
            self.position = 0

    return Reader()


# ---------------------------------------------------------------- output


def _finish(model) -> bytes:
    """Drop unused opset imports, prove the model passes the ONNX checker, and serialize it."""
    import onnx

    used = {node.domain for node in _all_nodes(model)}
    kept = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    if model.ByteSize() > MAX_MODEL_BYTES:
        raise StepError(f"the converted model is {model.ByteSize()} bytes, over the 2 GiB a single .onnx file holds: ship a smaller model")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise StepError(
            f"the converted model fails the ONNX checker ({tool_message(exc, first=True)}): "
            "try another precision or opset for this target"
        ) from exc
    return model.SerializeToString()


def _all_nodes(model):
    def walk(graph):
        for node in graph.node:
            yield node
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    yield from walk(attribute.g)
                for sub in attribute.graphs:
                    yield from walk(sub)

    yield from walk(model.graph)
    for function in model.functions:
        yield from function.node
