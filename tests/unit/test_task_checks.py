"""What `doit info` and `doit clean` print of a task: what changed since its last run, and the paths it removes."""
from __future__ import annotations

from doit.tools import config_changed

from modelmake.task_checks import FIELDS_KEY, JobUnchanged, RemoveOutputs

JOB = {"precision": "int8", "per_channel": True}
TOOLS = {"modelmake": "0.1.0", "tensorflow": "2.21.0"}


class FakeTask:
    def __init__(self):
        self.value_savers: list = []


def last_run(check: JobUnchanged) -> dict:
    """The values doit records for a task after it ran successfully with ``check``."""
    task = FakeTask()
    check.configure_task(task)
    check(task, {})  # doit checks the task before it runs it
    values: dict = {}
    for saver in task.value_savers:
        values.update(saver())
    return values


def test_the_check_hashes_exactly_what_config_changed_hashes():
    check = JobUnchanged("ConvertJob", JOB, TOOLS, {"signing": "ab12"})
    values = last_run(check)
    plain = config_changed({"config": JOB, "tools": TOOLS, "also": {"signing": "ab12"}})
    assert plain(FakeTask(), values) is True
    assert values["_config_changed"] == plain.config_digest


def test_an_unchanged_job_is_up_to_date():
    values = last_run(JobUnchanged("ConvertJob", JOB, TOOLS))
    assert JobUnchanged("ConvertJob", JOB, TOOLS)(FakeTask(), values) is True


def test_a_changed_field_a_new_tool_version_and_new_keys_are_named():
    values = last_run(JobUnchanged("PackageJob", JOB, TOOLS, {"signing": "ab12"}))
    check = JobUnchanged("PackageJob", {**JOB, "per_channel": False}, {**TOOLS, "tensorflow": "2.22.0"}, {"signing": "cd34"})
    assert check(FakeTask(), values) is False
    assert repr(check) == (
        "changed since the last successful run: PackageJob.per_channel, the signing or encryption keys, tensorflow 2.21.0 -> 2.22.0"
    )


def test_a_run_recorded_without_fields_and_a_task_never_run_say_what_is_hashed():
    values = last_run(JobUnchanged("ConvertJob", JOB, TOOLS))
    del values[FIELDS_KEY]
    check = JobUnchanged("ConvertJob", {**JOB, "precision": "fp16"}, TOOLS)
    assert check(FakeTask(), values) is False
    assert repr(check) == "changed since the last successful run: ConvertJob with modelmake 0.1.0, tensorflow 2.21.0"

    never = JobUnchanged("ConvertJob", JOB, TOOLS)
    assert never(FakeTask(), {}) is False
    assert repr(never) == "no successful run recorded of ConvertJob with modelmake 0.1.0, tensorflow 2.21.0"


def test_the_clean_action_names_its_paths_and_removes_them(tmp_path):
    out = tmp_path / "out"
    (out / "inner").mkdir(parents=True)
    inside, beside = out / "inner" / "a.json", tmp_path / "b.zip"
    inside.write_text("{}")
    beside.write_bytes(b"zip")
    action = RemoveOutputs([str(inside), str(beside)], [str(out)])
    assert str(action) == f"remove {out}/, {beside}"
    action.execute()
    assert list(tmp_path.iterdir()) == []
