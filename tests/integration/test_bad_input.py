"""Bad input fails with a message that names the file and says what to do, and leaves the other models' outputs alone."""
import os
import re

from modelmake.errors import SpecError

from tests.support.workspaces import BUNDLE, model_tasks


def _assert_only_new_outputs_of(model, before, after):
    """Every output that existed is unchanged, but the report, written for every build; anything new belongs to ``model``."""
    changed = sorted(path for path in before if after.get(path) != before[path] and "reports/" not in path)
    assert changed == [], f"outputs changed or removed: {changed}"
    foreign = sorted(path for path in set(after) - set(before) if model not in path)
    assert foreign == [], f"new outputs of other models: {foreign}"


def test_corrupt_tflite_source_fails_its_task_with_the_file_and_what_to_do(built_workspace):
    built_workspace.write("models/broken.tflite", os.urandom(4096))
    built_workspace.add_model(
        """\
        broken:
          source: {tflite: models/broken.tflite}
          variants:
            fp32: {}
          targets:
            pixel-8: [fp32]
        """
    )
    before = built_workspace.outputs()
    run = built_workspace.doit(ok=False)
    assert "source:broken" in run.executed
    assert re.search(r"TaskFailed.*source:broken", run.output), run.describe()
    assert "models/broken.tflite" in run.output
    assert "not a TFLite model" in run.output
    assert "replace models/broken.tflite" in run.output
    assert "Traceback" not in run.output, run.describe()
    _assert_only_new_outputs_of("broken", before, built_workspace.outputs())


def test_corrupt_tflite_source_fails_when_its_task_is_run_alone(built_workspace):
    built_workspace.write("models/broken.tflite", b"TFL3" + bytes(range(256)) * 4)
    built_workspace.add_model(
        """\
        broken:
          source: {tflite: models/broken.tflite}
          variants:
            fp32: {}
          targets:
            pixel-8: [fp32]
        """
    )
    run = built_workspace.doit("evaluate:broken.fp32.tflite@pixel-8", ok=False)
    assert run.executed == {"source:broken"}, run.describe()
    assert "models/broken.tflite" in run.output and "not a TFLite model" in run.output


def test_recipe_that_raises_names_the_recipe_and_the_exception(built_workspace):
    built_workspace.write(
        "recipes/exploding.py",
        'METADATA = {"seed": 1}\n\n\ndef build_model():\n    raise RuntimeError("no training data in /nonexistent")\n',
    )
    built_workspace.add_model(
        """\
        exploding:
          source: {recipe: recipes/exploding.py}
          variants:
            fp32: {}
          targets:
            pixel-8: [fp32]
        """
    )
    before = built_workspace.outputs()
    run = built_workspace.doit(ok=False)
    assert re.search(r"TaskFailed.*source:exploding", run.output), run.describe()
    assert "recipe exploding.py" in run.output
    assert "build_model()" in run.output
    assert "RuntimeError: no training data in /nonexistent" in run.output
    assert "fix the recipe" in run.output
    assert "Traceback" not in run.output, "the recipe's traceback belongs in the task's log"
    log = (built_workspace.build / "logs" / "source" / "exploding.log").read_text(encoding="utf-8")
    assert "Traceback" in log and "exploding.py" in log
    _assert_only_new_outputs_of("exploding", before, built_workspace.outputs())


def test_calibration_data_of_the_wrong_shape_gives_both_shapes_and_the_recipe(built_workspace):
    built_workspace.write(
        "recipes/small_data.py",
        "import numpy as np\n\n\ndef load_data(split):\n"
        "    rng = np.random.default_rng(0)\n"
        "    return rng.uniform(0, 16, size=(50, 5, 5)).astype(np.float32), rng.integers(0, 10, size=50)\n",
    )
    built_workspace.add_model(
        """\
        shapes:
          source: {recipe: recipes/digits.py}
          data:
            calibration: {recipe: recipes/small_data.py, split: calibration}
          variants:
            int8: {quantize: int8}
          targets:
            pixel-8: [int8]
        """
    )
    before = built_workspace.outputs()
    run = built_workspace.doit(ok=False)
    assert f"TaskFailed - taskid:package:{BUNDLE}" in run.output, run.describe()
    assert "shapes.int8.tflite@pixel-8: NOT BUILT: " in run.output and "recipes/small_data.py" in run.output
    assert "(5, 5)" in run.output and "(8, 8)" in run.output
    assert "Traceback" not in run.output, run.describe()
    _assert_only_new_outputs_of("shapes", before, built_workspace.outputs())


def test_unknown_key_in_the_spec_exits_with_the_spec_code_and_the_line_and_builds_nothing(built_workspace):
    built_workspace.edit_spec("  version: \"0.3.0\"\n", "  version: \"0.3.0\"\n  colour: blue\n")
    line = built_workspace.spec().splitlines().index("  colour: blue") + 1
    before = built_workspace.outputs(logs=True)
    run = built_workspace.doit(ok=False)
    assert run.returncode == SpecError.exit_code, run.describe()
    assert f"models.yaml:{line}:" in run.stderr
    assert "unknown key 'colour'" in run.stderr
    assert "allowed keys" in run.stderr
    assert "Traceback" not in run.output
    assert run.executed == set()
    assert built_workspace.outputs(logs=True) == before


def test_unknown_key_in_a_new_workspace_builds_nothing(fresh_workspace):
    fresh_workspace.edit_spec("    budgets: {max_size_kb: 64", "    budget: {max_size_kb: 64")
    run = fresh_workspace.doit(ok=False)
    assert run.returncode == SpecError.exit_code, run.describe()
    assert "unknown key 'budget'" in run.stderr and "models.yaml:" in run.stderr
    assert not fresh_workspace.build.exists() or fresh_workspace.outputs(logs=True) == {}


def test_a_budget_tighter_than_the_measured_figure_fails_with_both_numbers(built, built_workspace):
    built_workspace.edit_spec("budgets: {max_size_kb: 64,", "budgets: {max_size_kb: 1,")
    run = built_workspace.doit(ok=False)
    assert f"TaskFailed - taskid:package:{BUNDLE}" in run.output, run.describe()
    broken = re.findall(r"- (digits\.\S+): over budget: size_kb is ([0-9.]+), over its max_size_kb of 1 \(\+\d+%\)", run.output)
    assert {artifact for artifact, _ in broken} == {t.removeprefix("evaluate:") for t in model_tasks("digits") if t.startswith("evaluate:")}
    assert all(float(size) > 1 for _, size in broken)
    assert built_workspace.bundle_bytes() == built.bundle, f"the {BUNDLE} bundle changed though a budget failed"
