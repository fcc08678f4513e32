"""Quantizing a .tflite source with LiteRT Quantizer (ai-edge-quantizer): fp16, dynamic int8, static int8.

A .tflite file has no SavedModel behind it, so the TFLite converter cannot
quantize it; LiteRT's own quantizer rewrites the flatbuffer instead.  Two
kinds of real files need care before it can:

- files from older converters carry no signature, and its calibration runs
  signatures: one is added for the calibration (keyed by the tensor names,
  which is how the runtime names such a file's inputs) and removed again, so
  the artifact keeps the source's interface;
- files whose weights are float16 constants behind DEQUANTIZE ops (a
  converter's fp16 output given as a source) hold no float32 weight an int8
  recipe would touch: their weights are widened back to float32 (exactly)
  before an int8 recipe runs, and the log says so.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ...errors import StepError
from ...kinds import Precision
from ..base import tool_message
from .weights import constant_tensors

# The signature key LiteRT Quantizer's own tools give a model's only signature.
SIGNATURE_KEY = "serving_default"


@dataclass(frozen=True)
class Quantized:
    model: bytes
    summary: dict  # what the artifact record says about the quantization


def recipe_name(precision: Precision, *, per_channel: bool, integer_io: bool) -> str:
    """The recipe's name as recorded: LiteRT Quantizer's own name for it, with what modelmake changed."""
    if precision == Precision.FP16:
        return "weight_only_wf16_afp32"
    if precision == Precision.DYNAMIC_INT8:
        return "dynamic_wi8_afp32"
    name = "static_wi8_ai8" + ("" if per_channel else "_tensorwise_weights")
    return name if integer_io else name + "_float_io"


def _recipe(precision: Precision, *, per_channel: bool, integer_io: bool):
    """The recipe as LiteRT Quantizer's RecipeManager holds it."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    manager = recipe_manager.RecipeManager()
    if precision == Precision.FP16:
        manager.add_weight_only_config(".*", ops.ALL_SUPPORTED, 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    elif precision == Precision.DYNAMIC_INT8:
        manager.add_dynamic_config(".*", ops.ALL_SUPPORTED, 8)
    elif precision == Precision.INT8:
        granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
        manager.add_static_config(".*", ops.ALL_SUPPORTED, 8, 8, granularity)
        if not integer_io:
            # Its static recipe also quantizes the model's inputs and outputs; modelmake's int8 artifacts take
            # and return float tensors unless the target asks for integer I/O, as the TFLite converter's do.
            # Outputs are dequantized after it runs (_dequantized_outputs): its own float outputs break a
            # graph where another op reads an output (it rewires that op to the float copy).
            manager.add_quantization_config(".*", ops.INPUT, None, AlgorithmName.NO_QUANTIZE)
    else:
        raise ValueError(f"no LiteRT Quantizer recipe for {precision}")
    return manager


def quantize(
    source: bytes,
    precision: Precision,
    *,
    per_channel: bool,
    integer_io: bool,
    calibration: Mapping[str, np.ndarray] | None,
    what: str,
) -> Quantized:
    """``source`` (a float .tflite file's bytes) quantized at ``precision``; ``calibration``: preprocessed samples
    for int8, by the names the runtime gives the file's inputs."""
    from ai_edge_quantizer import quantizer

    notes: list[str] = []
    before = _weight_types(source, what=what)
    model = source
    widened = 0
    if precision.weights_int8 and before.get("FLOAT16"):
        model, widened = _widen_float16_weights(model, what=what)
        if widened:
            notes.append(f"{widened} float16 weight tensors of the source widened to float32 before int8 quantization")
            print(
                f"{what}: the source stores {widened} weight tensors as float16 behind DEQUANTIZE ops; they were widened "
                "to float32 (exactly) so that the int8 recipe quantizes them"
            )
    model, signature_added = _with_signature(model)
    if signature_added:
        notes.append("the source has no signature: one was added for calibration and removed from the artifact")
        print(f"{what}: the source has no signature; calibrating through an added '{SIGNATURE_KEY}' signature")
    name = recipe_name(precision, per_channel=per_channel, integer_io=integer_io)
    try:
        recipe = _recipe(precision, per_channel=per_channel, integer_io=integer_io)
        engine = quantizer.Quantizer(model, recipe.get_quantization_recipe())
        calibration_result = None
        if engine.need_calibration:
            if calibration is None:
                raise StepError(f"{what} is full int8, which needs calibration data: give the model a calibration data set")
            calibration_result = _calibrate(model, recipe, calibration, what=what)
        result = engine.quantize(calibration_result, enable_progress_report=False)
    except StepError:
        raise
    except Exception as exc:
        raise StepError(
            f"LiteRT Quantizer could not quantize {what} to {precision} with recipe {name}: "
            f"{tool_message(exc)} (try another precision for this target, or give a float32 "
            ".tflite file written by the TFLite converter)"
        ) from exc
    quantized = bytes(result.quantized_model)
    if precision == Precision.INT8 and not integer_io:
        quantized = _dequantized_outputs(quantized)
    quantized = _with_io_names_of(source, quantized)
    if signature_added:
        quantized = _without_signatures(quantized)
    after = _weight_types(quantized, what=what)
    stored = "FLOAT16" if precision == Precision.FP16 else "INT8"
    count = max(after.get(stored, 0) - (0 if widened else before.get(stored, 0)), 0)
    summary = {
        "tool": "ai-edge-quantizer",
        "recipe": name,
        "tensors_quantized": count,
        "weights_in_source": dict(sorted(before.items())),
        "weights_in_artifact": dict(sorted(after.items())),
    }
    if notes:
        summary["notes"] = notes
    print(f"{what}: LiteRT Quantizer recipe {name} stored {count} weight tensors as {stored.lower()}")
    print(f"{what}: weight tensors by type, source {summary['weights_in_source']}, artifact {summary['weights_in_artifact']}")
    if count == 0:
        print(f"{what}: nothing was quantized: the artifact holds the source's weights as they were")
    return Quantized(quantized, summary)


def _weight_types(data: bytes, *, what: str) -> Counter:
    return Counter(kind for _, kind, _ in constant_tensors(data, what=what))


def _calibrate(model: bytes, recipe, samples: Mapping[str, np.ndarray], *, what: str) -> dict:
    """Each tensor's range over all calibration samples.

    ``Quantizer.calibrate`` keeps a moving average of each sample's range (weight 0.95 on the past), which
    forgets the extremes: on the digits CNN its int8 file scored cosine 0.989 to the float model against
    0.99993 with the whole range, which is also what the TFLite converter's calibration keeps.  One thread,
    so the figures do not depend on the host's core count.
    """
    from ai_edge_quantizer import calibrator

    engine = calibrator.Calibrator(model, num_threads=1, qsv_update_func=_widest_range)
    engine.calibrate(_calibration_data(model, samples, what=what), recipe)
    return engine.get_model_qsvs()


def _widest_range(seen: dict, new: dict) -> dict:
    if not seen:
        return new
    return {**seen, "min": np.minimum(seen["min"], new["min"]), "max": np.maximum(seen["max"], new["max"])}


def _calibration_data(model: bytes, samples: Mapping[str, np.ndarray], *, what: str) -> dict[str, list[dict[str, np.ndarray]]]:
    """One signature call per sample, every input by its key, as the TFLite converter's representative dataset feeds them."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=model).get_signature_list()
    key = SIGNATURE_KEY if SIGNATURE_KEY in signatures else next(iter(signatures))
    names = signatures[key]["inputs"]
    missing = [name for name in names if name not in samples]
    if missing:
        raise StepError(
            f"the calibration data for {what} has no array for its input {', '.join(missing)}: its inputs are "
            f"{', '.join(names)} (given {', '.join(samples) or 'none'})"
        )
    count = len(samples[names[0]]) if names else 0
    return {key: [{name: samples[name][i : i + 1] for name in names} for i in range(count)]}


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _read(data: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def _write(model) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _with_signature(data: bytes) -> tuple[bytes, bool]:
    """The model with a signature over its main subgraph's inputs and outputs, if it has none; and whether one was added."""
    model = _read(data)
    if model.signatureDefs:
        return data, False
    schema = _schema()
    main = model.subgraphs[0]

    def tensor_map(index: int):
        entry = schema.TensorMapT()
        name = main.tensors[index].name
        entry.name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        entry.tensorIndex = index
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE_KEY
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(i) for i in main.inputs]
    signature.outputs = [tensor_map(i) for i in main.outputs]
    model.signatureDefs = [signature]
    return _write(model), True


def _dequantized_outputs(data: bytes) -> bytes:
    """Each quantized output of the main graph read through a DEQUANTIZE op appended to the graph, which the
    graph's output and its signature entry then name: float outputs, whatever else reads the integer tensor."""
    schema = _schema()
    model = _read(data)
    main = model.subgraphs[0]
    dequantize = _operator_code(model, schema.BuiltinOperator.DEQUANTIZE)
    replaced: dict[int, int] = {}
    for position, index in enumerate(main.outputs):
        tensor = main.tensors[index]
        if tensor.type not in (schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16):
            continue
        output = schema.TensorT()
        output.name, output.type = tensor.name, schema.TensorType.FLOAT32
        output.shape, output.shapeSignature = tensor.shape, tensor.shapeSignature
        output.buffer = _empty_buffer(model)
        tensor.name = _text(tensor.name) + "_quantized"
        main.tensors.append(output)
        operator = schema.OperatorT()
        operator.opcodeIndex, operator.inputs, operator.outputs = dequantize, [index], [len(main.tensors) - 1]
        main.operators.append(operator)
        main.outputs[position] = replaced[index] = len(main.tensors) - 1
    if not replaced:
        return data
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0:
            for entry in signature.outputs or []:
                entry.tensorIndex = replaced.get(entry.tensorIndex, entry.tensorIndex)
    return _write(model)


def _operator_code(model, builtin: int) -> int:
    """The index of the model's operator code for a builtin op, added when the model has none."""
    from ai_edge_litert.tools import flatbuffer_utils

    for index, code in enumerate(model.operatorCodes or []):
        if flatbuffer_utils.get_builtin_code_from_operator_code(code) == builtin:
            return index
    code = _schema().OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 2
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _empty_buffer(model) -> int:
    """A buffer without data, as every non-constant tensor points to (the flatbuffer's first, by convention)."""
    if model.buffers and (model.buffers[0].data is None or len(model.buffers[0].data) == 0):
        return 0
    model.buffers.append(_schema().BufferT())
    return len(model.buffers) - 1


def _with_io_names_of(source: bytes, data: bytes) -> bytes:
    """The main graph's input and output tensors renamed after the source's, position by position.

    A file without a signature is fed and read by those names, and the
    quantizer renames a tensor it wraps ("..._dequant"); every artifact keeps
    its source's names.
    """
    original, model = _read(source).subgraphs[0], _read(data)
    main = model.subgraphs[0]
    renamed = False
    for before, after in ((original.inputs, main.inputs), (original.outputs, main.outputs)):
        if len(before) != len(after):
            continue
        for old, new in zip(before, after, strict=True):
            name = _text(original.tensors[old].name)
            if _text(main.tensors[new].name) != name:
                clash = [t for i, t in enumerate(main.tensors) if i != new and _text(t.name) == name]
                for tensor in clash:  # the quantized tensor the quantizer left under the source's name
                    tensor.name = name + "_quantized"
                main.tensors[new].name = name
                renamed = True
    return _write(model) if renamed else data


def _text(name) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _without_signatures(data: bytes) -> bytes:
    model = _read(data)
    model.signatureDefs = []
    return _write(model)


def _widen_float16_weights(data: bytes, *, what: str) -> tuple[bytes, int]:
    """Float16 constants read only by DEQUANTIZE ops become float32 constants in place of those ops' outputs."""
    from ai_edge_litert.tools import flatbuffer_utils

    schema = _schema()
    model = _read(data)
    dequantize = {
        index
        for index, code in enumerate(model.operatorCodes or [])
        if flatbuffer_utils.get_builtin_code_from_operator_code(code) == schema.BuiltinOperator.DEQUANTIZE
    }
    widened = 0
    for number, subgraph in enumerate(model.subgraphs or []):
        readers = Counter(i for op in subgraph.operators or [] for i in op.inputs if i >= 0)
        orphans = set()
        kept = []
        for op in subgraph.operators or []:
            if op.opcodeIndex in dequantize and len(op.inputs) == 1 and len(op.outputs) == 1:
                source, target = subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]]
                buffer = model.buffers[source.buffer] if source.buffer < len(model.buffers) else None
                if (
                    source.type == schema.TensorType.FLOAT16
                    and buffer is not None
                    and buffer.data is not None
                    and len(buffer.data) > 0
                    and readers[op.inputs[0]] == 1
                    and op.inputs[0] not in subgraph.inputs
                ):
                    values = np.frombuffer(bytes(buffer.data), np.float16).astype(np.float32)
                    buffer.data = np.frombuffer(values.tobytes(), np.uint8)
                    target.buffer = source.buffer
                    orphans.add(op.inputs[0])
                    widened += 1
                    continue
            kept.append(op)
        subgraph.operators = kept
        _drop_tensors(model, number, orphans)
    if not widened:
        return data, 0
    try:
        return _write(model), widened
    except Exception as exc:
        raise StepError(
            f"{what} stores its weights as float16 and they could not be widened to float32 for int8 quantization "
            f"({type(exc).__name__}: {exc}): give the float32 .tflite file (the converter's output without float16 weights)"
        ) from exc


def _drop_tensors(model, number: int, dropped: set[int]) -> None:
    """Remove tensors no op reads any more from subgraph ``number``, renumbering every reference to the others.

    LiteRT Quantizer's calibration reads every tensor of the graph, so none may be left without data.
    """
    if not dropped:
        return
    subgraph = model.subgraphs[number]
    renumbered: dict[int, int] = {}
    kept: list = []
    for index, tensor in enumerate(subgraph.tensors):
        if index not in dropped:
            renumbered[index] = len(kept)
            kept.append(tensor)
    subgraph.tensors = kept

    def remap(indices):
        return None if indices is None else [renumbered[i] if i >= 0 else i for i in indices]

    for op in subgraph.operators or []:
        op.inputs, op.outputs, op.intermediates = remap(op.inputs), remap(op.outputs), remap(op.intermediates)
    subgraph.inputs, subgraph.outputs = remap(subgraph.inputs), remap(subgraph.outputs)
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == number:
            for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
                entry.tensorIndex = renumbered[entry.tensorIndex]
