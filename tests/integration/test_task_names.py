"""Task names are predictable, listed, described and runnable one at a time."""
from tests.support.workspaces import ALL_TASKS, ARTIFACTS, BUNDLE


def test_list_all_shows_every_task_by_its_predictable_name(built):
    run = built.workspace.doit("list", "--all")
    listed = {line.split()[0] for line in run.stdout.splitlines() if line.strip()}
    assert ALL_TASKS <= listed, f"missing from `doit list --all`: {sorted(ALL_TASKS - listed)}"
    for artifact in ARTIFACTS:
        assert f"convert:{artifact}" in listed
        assert f"evaluate:{artifact}" in listed
    assert {"source:digits", "data:digits.calibration", "reference:digits", f"package:{BUNDLE}", f"report:{BUNDLE}"} <= listed


def test_list_shows_one_group_per_task_kind(built):
    run = built.workspace.doit("list")
    listed = {line.split()[0] for line in run.stdout.splitlines() if line.strip()}
    assert {"source", "data", "reference", "convert", "evaluate", "package", "report"} <= listed


def test_info_describes_a_convert_task(built):
    run = built.workspace.doit("info", "convert:digits.int8.tflite@pixel-8")
    assert "convert:digits.int8.tflite@pixel-8" in run.stdout
    assert "up-to-date" in run.stdout
    # its inputs: the source model and the calibration data; its outputs: the artifact and its record
    assert "build/sources/digits/source.json" in run.stdout
    assert "build/data/digits/calibration.npz" in run.stdout
    assert "build/artifacts/pixel-8/digits.int8.tflite" in run.stdout


def test_info_on_an_unknown_task_fails_and_names_it(built):
    run = built.workspace.doit("info", "convert:digits.int4.tflite@pixel-8", ok=False)
    assert "convert:digits.int4.tflite@pixel-8" in run.output


def test_one_convert_task_runs_just_its_chain(fresh_workspace):
    task = "convert:digits.int8.tflite@pixel-8"
    run = fresh_workspace.doit(task)
    assert run.executed == {"source:digits", "data:digits.calibration", task}, run.describe()
    assert (fresh_workspace.build / "artifacts" / "pixel-8" / "digits.int8.tflite").is_file()
    assert not (fresh_workspace.build / "artifacts" / "android-arm64-cpu").exists()
    assert not (fresh_workspace.build / "bundles").exists()
    again = fresh_workspace.doit(task)
    assert again.executed == set(), again.describe()
