"""(c) the full example build against the raw calls it makes, timed in one process.

The baseline does the same work with the libraries alone: each recipe's
build_model() and SavedModel export, every TFLite conversion, and every
LiteRT evaluation (the whole evaluation split plus 55 single-sample runs).
The ratio is what modelmake's orchestration costs on top (target: <= 1.3x).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from ._timing import DOIT, example_workspace, quiet_env, report, run

RAW_CALLS = textwrap.dedent(
    """
    import json, sys, time, importlib.util, os
    start = time.perf_counter()
    import numpy as np, keras, tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from modelmake.spec import load_plan
    from fractions import Fraction
    workspace = sys.argv[1]
    os.chdir(workspace)
    plan = load_plan(workspace)
    for model in plan.models:
        sys.path.insert(0, os.path.dirname(os.path.abspath(model.source.path)))
        spec = importlib.util.spec_from_file_location("recipe_" + model.name, model.source.path)
        recipe = importlib.util.module_from_spec(spec); spec.loader.exec_module(recipe)
        keras.utils.set_random_seed(recipe.METADATA.get("seed", 0)); tf.config.experimental.enable_op_determinism()
        saved = f"raw/{model.name}"
        getattr(recipe, model.source.function)().export(saved, verbose=False)
        scale, offset = float(Fraction(model.input.scale)), float(Fraction(model.input.offset))
        calib = getattr(recipe, model.calibration.function)(model.calibration.split)[0][: model.calibration.samples] * scale + offset
        x, y = getattr(recipe, model.evaluation.function)(model.evaluation.split)
        x = (x * scale + offset).astype(np.float32)
        for artifact in model.artifacts:
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            if artifact.precision != "fp32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if artifact.precision == "fp16":
                converter.target_spec.supported_types = [tf.float16]
            if artifact.precision == "int8":
                converter.representative_dataset = lambda: ([s[None].astype(np.float32)] for s in calib)
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                if artifact.integer_io:
                    converter.inference_input_type = converter.inference_output_type = tf.int8
            content = converter.convert()
            interpreter = Interpreter(model_content=content, num_threads=1)
            detail = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(detail["index"], [len(x), *detail["shape"][1:]])
            interpreter.allocate_tensors()
            scale_q, zero = interpreter.get_input_details()[0]["quantization"]
            feed = x if detail["dtype"] == np.float32 else np.clip(np.round(x / scale_q + zero), -128, 127).astype(detail["dtype"])
            interpreter.set_tensor(detail["index"], feed); interpreter.invoke()
            single = Interpreter(model_content=content, num_threads=1); single.allocate_tensors()
            single.set_tensor(detail["index"], feed[:1])
            for _ in range(55):
                single.invoke()
    print(json.dumps({"seconds": time.perf_counter() - start}))
    """
)


def main(names) -> list[str]:
    if "build" not in names:
        return []
    with tempfile.TemporaryDirectory(prefix="modelmake-bench-") as scratch:
        workspace = example_workspace(Path(scratch) / "example")
        build = run(DOIT, workspace, env=quiet_env())
        raw = subprocess.run([sys.executable, "-c", RAW_CALLS, str(workspace)], capture_output=True, text=True, env=quiet_env(), cwd=workspace)
        if raw.returncode != 0:
            raise SystemExit(f"raw baseline failed:\n{raw.stderr[-3000:]}")
        baseline = json.loads(raw.stdout.strip().splitlines()[-1])["seconds"]
    return [report("full example build", build, baseline, "raw library calls", "target <= 1.3x", build <= 1.3 * baseline)]
