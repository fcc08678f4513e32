"""A full disk or a read-only build/ fails a task with what and where, never a traceback, and loses nothing."""
from __future__ import annotations

import errno
import json
import os

import pytest
from doit.exceptions import TaskFailed

from modelmake import buildlock, errors, layout, taskcache
from modelmake.steps import report as report_step
from modelmake.steps import runner


@pytest.mark.parametrize(
    "code, expected",
    [
        (errno.ENOSPC, "cannot write build/reports/b/1.0/report.md (No space left on device): free space or make it writable"),
        (errno.EROFS, "cannot write build/reports/b/1.0/report.md (Read-only file system): free space or make it writable"),
        (errno.EACCES, "not permitted to use build/reports/b/1.0/report.md (Permission denied): fix its permissions"),
    ],
)
def test_a_refused_write_fails_the_task_with_the_file_and_the_output_code(tmp_path, monkeypatch, code, expected):
    monkeypatch.chdir(tmp_path)

    def refused(job):
        raise OSError(code, os.strerror(code), "build/reports/b/1.0/report.md")

    monkeypatch.setattr(report_step, "report", refused)
    result = runner.run_step("report.report", "report:b", None)
    assert isinstance(result, TaskFailed) and str(result).strip().endswith(f"{expected}, then run again; earlier outputs are intact")
    record = json.loads((tmp_path / layout.failure_record("report:b")).read_text())
    assert record["exit_code"] == errors.OutputError.exit_code == 24


def test_another_os_error_is_still_a_bug_with_its_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(report_step, "report", lambda job: open("no/such/file"))  # noqa: SIM115
    with pytest.raises(FileNotFoundError):
        runner.run_step("report.report", "report:b", None)


def test_a_build_directory_that_cannot_be_written_is_said_once_and_the_graph_still_loads(tmp_path, monkeypatch):
    (tmp_path / "build").mkdir()

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / layout.STATE))

    monkeypatch.setattr("modelmake.fsutil.atomic_output", refused)
    taskcache.store(tmp_path, [{"name": "t"}], [], [])  # the cache is an optimisation: nothing raised
    monkeypatch.setattr(buildlock.Path, "mkdir", refused)
    with pytest.raises(errors.OutputError, match=r"^not permitted to use .*build/\.modelmake \(Permission denied\)"):
        buildlock.acquire(tmp_path, ["run"])
