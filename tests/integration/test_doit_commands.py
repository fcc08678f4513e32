"""`doit clean`, `doit forget` and `doit -n N` behave as doit users expect."""
from tests.support.workspaces import ALL_TASKS, BUNDLE_TASKS, NOISE


def test_clean_removes_outputs_and_a_parallel_rebuild_gives_the_same_bundle(built, built_workspace):
    assert built_workspace.outputs()
    built_workspace.doit("clean")
    assert built_workspace.outputs() == {}, "doit clean left outputs behind"
    assert not (built_workspace.build / "bundles" / "test-bundle" / "0.3.0").exists()

    run = built_workspace.doit("-n", "2")
    assert run.executed == ALL_TASKS, run.describe()
    noisy = [pattern.pattern for pattern in NOISE if pattern.search(run.output)]
    assert noisy == [], f"framework noise on the console of a parallel build: {noisy}\n{run.output}"
    assert built_workspace.bundle_bytes() == built.bundle
    assert built_workspace.doit().executed == set()


def test_forget_one_task_makes_just_it_run_again(built_workspace):
    task = "convert:digits.fp16.tflite@pixel-8"
    built_workspace.doit("forget", task)
    run = built_workspace.doit()
    # the conversion gives the same bytes again, so nothing downstream has to run
    assert run.executed == {task}, run.describe()


def test_forget_without_arguments_forgets_the_default_tasks(built, built_workspace):
    built_workspace.doit("forget")
    run = built_workspace.doit()
    assert run.executed == BUNDLE_TASKS, run.describe()
    assert built_workspace.bundle_bytes() == built.bundle
