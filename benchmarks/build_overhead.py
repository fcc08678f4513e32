"""(c) the full example build against the raw library calls it makes, timed in one process.

The baseline does the same work with the libraries alone, in one process:
each recipe's build_model() and SavedModel export, the source model's
predictions, every conversion (TFLite converter, tf2onnx and ONNX Runtime's
quantizers, coremltools with its weight compression) and every evaluation
(the evaluation split once per condition, plus 55 single-sample runs) in
LiteRT and ONNX Runtime.  The ratio is what modelmake costs on top: doit,
hashing, records, logs, packaging and signing (target: <= 1.3x).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from ._timing import built_example, quiet_env, report

RAW_CALLS = textwrap.dedent(
    """
    import importlib.util, json, os, sys, tempfile, time
    from fractions import Fraction
    start = time.perf_counter()
    import numpy as np, keras, tensorflow as tf, onnxruntime as ort, tf2onnx, coremltools as ct
    from ai_edge_litert.interpreter import Interpreter
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.transformers.float16 import convert_float_to_float16
    import onnx
    from modelmake.spec import load_plan

    workspace = sys.argv[1]
    os.chdir(workspace)
    scratch = tempfile.mkdtemp()
    plan = load_plan(workspace)

    def run_tflite(content, x):
        interpreter = Interpreter(model_content=content, num_threads=1)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], [len(x), *detail["shape"][1:]])
        interpreter.allocate_tensors()
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        single = Interpreter(model_content=content, num_threads=1)
        single.allocate_tensors()
        single.set_tensor(detail["index"], x[:1])
        for _ in range(55):
            single.invoke()

    def run_onnx(path, x):
        options = ort.SessionOptions(); options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for i in range(0, len(x), 256):
            session.run(None, {name: x[i:i + 256]})
        for _ in range(55):
            session.run(None, {name: x[:1]})

    class Reader(CalibrationDataReader):
        def __init__(self, name, samples):
            self.items = iter([{name: s[None].astype(np.float32)} for s in samples])
        def get_next(self):
            return next(self.items, None)

    for model in plan.models:
        sys.path.insert(0, os.path.dirname(os.path.abspath(model.source.path)))
        spec = importlib.util.spec_from_file_location("recipe_" + model.name, model.source.path)
        recipe = importlib.util.module_from_spec(spec); spec.loader.exec_module(recipe)
        keras.utils.set_random_seed(recipe.METADATA.get("seed", 0)); tf.config.experimental.enable_op_determinism()
        saved = os.path.join(scratch, model.name)
        getattr(recipe, model.source.function)().export(saved, verbose=False)
        scale, offset = float(Fraction(model.input.scale)), float(Fraction(model.input.offset))
        calib_x = getattr(recipe, model.calibration.function)(model.calibration.split)[0][: model.calibration.samples]
        calib = (calib_x * scale + offset).astype(np.float32)
        x, y = getattr(recipe, model.evaluation.function)(model.evaluation.split)
        inputs = [(x * scale + offset).astype(np.float32)] * (1 + len(model.evaluation.conditions))
        loaded = tf.saved_model.load(saved)  # kept: the signature needs the object's variables alive
        function = loaded.signatures["serving_default"]
        (input_name, input_spec), = function.structured_input_signature[1].items()
        function(**{input_name: tf.constant(inputs[0])})
        for artifact in model.artifacts:
            if artifact.format == "tflite":
                converter = tf.lite.TFLiteConverter.from_saved_model(saved)
                if artifact.precision != "fp32":
                    converter.optimizations = [tf.lite.Optimize.DEFAULT]
                if artifact.precision == "fp16":
                    converter.target_spec.supported_types = [tf.float16]
                if artifact.precision == "int8":
                    converter.representative_dataset = lambda: ([s[None]] for s in calib)
                    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                content = converter.convert()
                for batch in inputs:
                    run_tflite(content, batch)
            elif artifact.format == "onnx":
                spec_ = [tf.TensorSpec([None, *input_spec.shape[1:]], tf.float32, name=input_name)]
                wrapped = tf.function(lambda x: function(**{input_name: x}))
                proto, _ = tf2onnx.convert.from_function(wrapped, input_signature=spec_, opset=17)
                path = os.path.join(scratch, artifact.id + ".onnx")
                onnx.save(proto, path)
                if artifact.precision == "fp16":
                    onnx.save(convert_float_to_float16(proto, keep_io_types=True), path)
                elif artifact.precision == "dynamic_int8":
                    quantize_dynamic(path, path, weight_type=QuantType.QInt8)
                elif artifact.precision == "int8":
                    quantize_static(path, path, Reader(proto.graph.input[0].name, calib), per_channel=True)
                for batch in inputs:
                    run_onnx(path, batch)
            else:
                shape = (1, *input_spec.shape[1:])
                precision = ct.precision.FLOAT32 if artifact.precision == "fp32" else ct.precision.FLOAT16
                ml = ct.convert([function], source="tensorflow", convert_to="mlprogram", compute_precision=precision,
                                inputs=[ct.TensorType(name=input_name, shape=shape)], minimum_deployment_target=ct.target.iOS17)
                if artifact.precision in ("int8", "dynamic_int8"):
                    quantizer = ct.optimize.coreml.OpLinearQuantizerConfig(mode="linear_symmetric")
                    config = ct.optimize.coreml.OptimizationConfig(global_config=quantizer)
                    ml = ct.optimize.coreml.linear_quantize_weights(ml, config)
                if artifact.palettize:
                    palettizer = ct.optimize.coreml.OpPalettizerConfig(nbits=artifact.palettize)
                    config = ct.optimize.coreml.OptimizationConfig(global_config=palettizer)
                    ml = ct.optimize.coreml.palettize_weights(ml, config)
                path = os.path.join(scratch, artifact.id + ".mlpackage")
                ml.save(path)
                ct.models.MLModel(path, skip_model_load=True)
    print(json.dumps({"seconds": time.perf_counter() - start}))
    """
)

NAMES = ("build",)


def main(names) -> list[str]:
    if "build" not in names:
        return []
    workspace, build = built_example()
    raw = subprocess.run(
        [sys.executable, "-c", RAW_CALLS, str(workspace)], capture_output=True, text=True, env=quiet_env(), cwd=workspace
    )
    if raw.returncode != 0:
        raise SystemExit(f"raw baseline failed:\n{raw.stderr[-3000:]}")
    baseline = json.loads(raw.stdout.strip().splitlines()[-1])["seconds"]
    return [report("full example build", build, baseline, "raw library calls", "target <= 1.3x", build <= 1.3 * baseline)]
