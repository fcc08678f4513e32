"""Crashes contained: a native crash fails its task, not the build; a selecting target drops a candidate that fails to convert."""
from __future__ import annotations

import json
import textwrap

from modelmake import errors

from tests.support.onnx_workspaces import report_rows
from tests.support.workspaces import BUNDLE, VERSION, modelmake

# A recipe whose model building dies in native code, as a converter or runtime with a bug does.
CRASHING_RECIPE = textwrap.dedent(
    """\
    def build_model():
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    """
)

CRASHING_MODEL = """\
crashy:
  description: A model whose source crashes natively
  source: {recipe: recipes/crashy.py}
  io:
    input: {layout: NC}
  variants:
    fp32: {}
  targets:
    android-arm64-cpu: [fp32]
"""

# One weight beyond float16's range: the TFLite fp16 conversion would clamp it, so modelmake refuses that variant.
HUGE_RECIPE = textwrap.dedent(
    """\
    import numpy as np


    def load_data(split):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(64, 4)).astype(np.float32)
        return x, np.argmax(x[:, :3], axis=1).astype(np.int64)


    def build_model():
        import keras

        def init(shape, dtype=None):
            w = np.eye(4, 3, dtype=np.float32)
            w[3, 0] = 1e6
            return w

        inputs = keras.Input((4,), name="features")
        return keras.Model(inputs, keras.layers.Dense(3, kernel_initializer=init, name="huge")(inputs), name="huge")
    """
)

HUGE_MODEL = """\
huge:
  description: A linear model with one weight beyond float16's range
  source: {recipe: recipes/huge.py}
  data:
    evaluation: {recipe: recipes/huge.py, split: test}
  io:
    input: {layout: NC}
  variants:
    fp16: {quantize: fp16}
    fp32: {}
  targets:
    pixel-8: {prefer: [fp16, fp32], select: first_passing}
"""


def test_a_native_crash_fails_its_task_naming_the_signal_and_the_build_goes_on(built_workspace):
    workspace = built_workspace
    workspace.write("recipes/crashy.py", CRASHING_RECIPE)
    workspace.add_model(CRASHING_MODEL)
    # A task that needs a worker after the crash: it must get a fresh one.
    workspace.doit("forget", "evaluate:glyphs.fp32.tflite@android-arm64-cpu")

    run = workspace.doit("--continue", ok=False)
    # doit reports the failed task (1), or the tasks it could not run after it (2): not a dead process (-11)
    assert run.returncode in (1, 2), run.describe()
    assert (
        "source:crashy: the source step crashed (signal 11, SIGSEGV) while materializing the source of crashy" in run.output
    ), run.describe()
    assert "(details in build/logs/source/crashy.log)" in run.output
    assert "Segmentation fault" in (workspace.build / "logs" / "source" / "crashy.log").read_text(encoding="utf-8")
    assert "evaluate:glyphs.fp32.tflite@android-arm64-cpu" in run.executed, run.describe()
    assert "glyphs.fp32.tflite@android-arm64-cpu: size_kb" in run.stdout
    assert "Traceback" not in run.output

    result = modelmake("build", cwd=workspace.root)
    assert result.returncode == errors.StepError.exit_code == 21, result.stdout + result.stderr
    assert "source:crashy failed (exit 21)" in result.stderr


def test_a_selecting_target_ships_the_next_candidate_when_one_fails_to_convert(built_workspace):
    workspace = built_workspace
    workspace.write("recipes/huge.py", HUGE_RECIPE)
    workspace.add_model(HUGE_MODEL)

    result = modelmake("build", cwd=workspace.root)
    assert result.returncode == 0, result.stdout + result.stderr
    dropped = "huge.fp16.tflite@pixel-8: NOT BUILT: constant tensor"
    assert dropped in result.stdout and "beyond float16's range" in result.stdout, result.stdout
    assert not (workspace.build / "artifacts" / "pixel-8" / "huge.fp16.tflite").exists()
    metrics = json.loads((workspace.build / "metrics" / "pixel-8" / "huge.fp16.tflite.json").read_text(encoding="utf-8"))
    assert "beyond float16's range" in metrics["not_built"]

    bundle = workspace.build / "bundles" / BUNDLE / VERSION
    variants = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["models"]["huge"]["variants"]
    assert sorted(variants) == ["huge.fp32.tflite@pixel-8"]
    assert (bundle / variants["huge.fp32.tflite@pixel-8"]["file"]).is_file()
    report = (workspace.build / "reports" / BUNDLE / VERSION / "report.md").read_text(encoding="utf-8")
    rows = report_rows(report, "huge", "pixel-8")
    assert "dropped: not built: constant tensor" in rows["fp16"] and "beyond float16's range" in rows["fp16"], rows["fp16"]
    assert rows["fp32"].rstrip(" |").endswith("shipped"), rows["fp32"]

    # The failed conversion is tried again (its file is missing); the same failure changes nothing after it.
    again = workspace.doit()
    assert again.executed == {"convert:huge.fp16.tflite@pixel-8"}, again.describe()
