"""ONNX export: a SavedModel or .tflite source -> its float ONNX model at one opset, through tf2onnx.

Made once per source and opset by the export task; every ONNX variant of the
model at that opset (its precision, per-channel and chip settings whatever
they are) is converted from this file (convert.py), so TensorFlow and tf2onnx
run here only.  The graph is canonicalised (canonical.py), so the same source
gives the same bytes whatever tf2onnx's state was.  Beside it go the same
model as the quantizers take it (after ONNX Runtime's quantization
pre-processing, which imports sympy), with a dynamic batch and with the batch
fixed at 1 (for static-shape providers): the int8 and dynamic int8 variants
whose io fixes no shape quantize one of those instead of preparing the model again.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ... import fsutil
from ...contracts import ExportJob, ExportRecord, SourceRecord
from ...errors import StepError
from ...tensors import INPUTS, OUTPUTS
from ...tensors import names as tensor_names
from ...versions import tool_versions
from ..base import tool_message
from .canonical import canonicalize
from .convert import MAX_MODEL_BYTES, PREPARED, _all_nodes, before_quantizing
from .convert import _preprocessed as preprocessed
from .scratch import working_directory


def export(job: ExportJob) -> None:
    record = SourceRecord.read(job.source_record)
    model = float_model(record, job.options["opset"])
    if model.ByteSize() > MAX_MODEL_BYTES:
        raise StepError(f"the exported model is {model.ByteSize()} bytes, over the 2 GiB a single .onnx file holds: ship a smaller model")
    fsutil.write_bytes(job.out, model.SerializeToString())
    prepared = {kind: _prepared(model, kind, out) for kind, out in job.out_prepared.items()}
    ExportRecord(
        format=job.format,
        options=dict(job.options),
        source_record=job.source_record,
        model=job.out,
        sha256=fsutil.sha256_file(job.out),
        size=Path(job.out).stat().st_size,
        tools=tool_versions("tf2onnx", "onnx", *(["onnxruntime"] if prepared else [])),
        prepared=prepared,
    ).write(job.out_record)


def _prepared(model, kind: str, out: str) -> dict[str, str]:
    """Write the float model as a conversion that fixes no shape io gives hands it to the quantizers (convert.py: its
    batch fixed at 1 or not, its batch axes marked, then ONNX Runtime's pre-processing), so that such conversions need not
    repeat it; returns where it is, its digest and the name the quantizers read it under."""
    import onnx

    static_batch = {name: static for static, name in PREPARED.items()}[kind]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    ready, _ = before_quantizing(copy, {}, static_batch, what=out)
    with tempfile.TemporaryDirectory(prefix="modelmake-onnx-") as scratch:
        with working_directory(Path(scratch)):  # as in convert.py: the pre-processing writes beside its input
            path = preprocessed(ready, Path(scratch).resolve())
        # ``out`` is relative to the workspace, the working directory again.
        fsutil.write_bytes(out, path.read_bytes())
    return {"file": out, "sha256": fsutil.sha256_file(out), "name": path.name}


def float_model(record: SourceRecord, opset: int):
    """The float ONNX model of a SavedModel (keras, saved_model, recipe) or .tflite source at ``opset``, canonicalised."""
    kind, path = record.kind, Path(record.model)
    _check_opset_for_tf2onnx(opset)
    if kind == "tflite":
        model = _run_tf2onnx(lambda tf2onnx: tf2onnx.convert.from_tflite(str(path), opset=opset), what=f"tflite source {record.path}")
        _rename_io(model, _tflite_signature_keys(path), record.signature)
    else:
        model = _run_tf2onnx(lambda tf2onnx: _saved_model_to_onnx(tf2onnx, path, opset), what=f"{kind} source {record.path}")
    _check_expressible(model, opset)
    canonicalize(model)
    return model


def _tflite_signature_keys(path: Path) -> dict[str, str]:
    """Tensor name -> signature key of the inputs and outputs of a .tflite file's only signature; empty without one.

    tf2onnx names the ONNX inputs and outputs after the file's tensors
    (serving_default_image:0); a file with one signature is bound by its keys.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        return {}
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    details = {**runner.get_input_details(), **runner.get_output_details()}
    return {detail["name"]: key for key, detail in details.items()}


def _rename_io(model, renames: dict[str, str], signature: dict) -> None:
    """Give the graph's inputs and outputs the source signature's names where they carry the tensors' names instead."""
    wanted = set(tensor_names(signature, INPUTS)) | set(tensor_names(signature, OUTPUTS))
    graph = model.graph
    applied = {
        value.name: renames[value.name]
        for value in [*graph.input, *graph.output]
        if value.name not in wanted and renames.get(value.name) in wanted
    }
    if not applied:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = applied.get(value.name, value.name)
    for node in _all_nodes(model):
        node.input[:] = [applied.get(name, name) for name in node.input]
        node.output[:] = [applied.get(name, name) for name in node.output]


def _check_opset_for_tf2onnx(opset: int) -> None:
    import tf2onnx

    newest = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
    if opset > newest:
        raise StepError(
            f"tf2onnx {tf2onnx.__version__} produces ONNX opsets up to {newest}, but the target profile asks for opset {opset}: "
            f"set opset to {newest} or lower in the profile's onnx section, or give the model an onnx source exported at opset {opset}"
        )


def _saved_model_to_onnx(tf2onnx, directory: Path, opset: int):
    """The serving_default signature (the one Keras' model.export writes), as the tf2onnx command line converts it."""
    from tf2onnx import tf_loader

    graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
        str(directory), None, None, tag=["serve"], signatures=["serving_default"], return_tensors_to_rename=True
    )
    # The name ends up in the graph's doc_string: a fixed one keeps the build directory out of the file.
    return tf2onnx.convert.from_graph_def(
        graph_def, name="model", input_names=inputs, output_names=outputs, opset=opset, tensors_to_rename=renames
    )


def _run_tf2onnx(call, *, what: str):
    import tf2onnx

    try:
        model, _ = call(tf2onnx)
    except StepError:
        raise
    except Exception as exc:
        raise StepError(
            f"tf2onnx {tf2onnx.__version__} could not convert the {what}: {tool_message(exc)}"
        ) from exc
    return model


def _check_expressible(model, opset: int) -> None:
    """tf2onnx keeps a TensorFlow op it cannot convert as a node of the same name; such a node has no ONNX schema."""
    import onnx
    import tf2onnx

    missing: dict[str, list[str]] = {}
    for node in model.graph.node:
        try:
            onnx.defs.get_schema(
                node.op_type, max_inclusive_version=opset if node.domain in ("", "ai.onnx") else 2**31 - 1, domain=node.domain
            )
        except onnx.defs.SchemaError:
            missing.setdefault(node.op_type, []).append(node.name)
    if not missing:
        return
    needed = _opsets_with_a_conversion()
    problems = []
    for op, names in sorted(missing.items()):
        where = f"node {', '.join(names[:3])}"
        if op not in needed:
            problems.append(f"{op} ({where}; tf2onnx has no conversion for it)")
        elif needed[op] > opset:
            problems.append(
                f"{op} ({where}; tf2onnx converts it from opset {needed[op]}: set opset: {needed[op]} in the target profile's onnx section)"
            )
        else:
            problems.append(f"{op} ({where}; its conversion failed at this opset, see the task's log)")
    raise StepError(
        f"tf2onnx {tf2onnx.__version__} cannot express these TensorFlow ops in ONNX opset {opset}: {'; '.join(problems)}. "
        "Where no opset helps, replace the layers that use them with ops ONNX has, or drop the onnx format for this model"
    )


def _opsets_with_a_conversion() -> dict[str, int]:
    """For each TensorFlow op tf2onnx converts to standard ONNX, the lowest opset its conversion needs."""
    import tf2onnx.onnx_opset  # noqa: F401  (registers the handlers)
    from tf2onnx.handler import tf_op

    first: dict[str, int] = {}
    for version, handlers in enumerate(tf_op.get_opsets().get("", [])):
        for op in handlers:
            first.setdefault(op, version)
    return first
