"""How a task's change check and clean action read in doit's own commands.

``doit info`` prints a task's failing ``uptodate`` objects with ``repr``, and
``doit clean`` (``-n`` too) prints each clean action with ``str``; doit's own
objects show a raw dictionary and a function name there.  These are the same
doit objects with a readable face: ``JobUnchanged`` is ``config_changed`` over
the same dictionary (same digest, same key in the state file), which also
records what it hashed field by field so ``doit info`` can name what changed;
``RemoveOutputs`` is a python-action whose description lists the paths it
removes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from doit.action import PythonAction
from doit.tools import config_changed

# The state file's key for what the last successful run hashed, field by field (doit keeps the digest under its own key).
FIELDS_KEY = "_job_fields"


class JobUnchanged(config_changed):
    """doit ``uptodate``: the task's job, the versions of its tools and its keys are those of its last successful run."""

    def __init__(self, job_name: str, job: dict, tools: dict[str, str], keys: Any = None):
        super().__init__({"config": job, "tools": tools, "also": keys})
        self.job_name = job_name
        self.previous: dict[str, str] | None = None
        self.ran_before: bool | None = None  # None until doit has checked the task

    def configure_task(self, task) -> None:
        super().configure_task(task)
        task.value_savers.append(lambda: {FIELDS_KEY: self.fields()})

    def __call__(self, task, values) -> bool:
        self.ran_before = values.get("_config_changed") is not None
        self.previous = values.get(FIELDS_KEY)
        return super().__call__(task, values)

    def fields(self) -> dict[str, str]:
        """What the digest covers, one entry per job field (as a digest), per tool (its version) and for the keys."""
        fields = {f"{self.job_name}.{name}": _digest(value) for name, value in self.config["config"].items()}
        fields.update({f"tool {tool}": version for tool, version in self.config["tools"].items()})
        if self.config["also"] is not None:
            fields["keys"] = _digest(self.config["also"])
        return fields

    def changes(self) -> list[str]:
        """What differs from the last successful run, when that run recorded its fields."""
        if not self.previous:
            return []
        current = self.fields()
        changed = []
        for name in sorted(current.keys() | self.previous.keys()):
            before, now = self.previous.get(name), current.get(name)
            if before == now:
                continue
            if name.startswith("tool "):
                changed.append(f"{name[5:]} {before or 'absent'} -> {now or 'absent'}")
            elif name == "keys":
                changed.append("the signing or encryption keys")
            else:
                changed.append(name)
        return changed

    def summary(self) -> str:
        tools = ", ".join(f"{tool} {version}" for tool, version in self.config["tools"].items())
        keys = " and the keys" if self.config["also"] is not None else ""
        return f"{self.job_name} with {tools}{keys}"

    def __repr__(self) -> str:
        if self.ran_before is False:
            return f"no successful run recorded of {self.summary()}"
        changes = self.changes()
        if changes:
            return "changed since the last successful run: " + ", ".join(changes)
        if self.ran_before:
            return f"changed since the last successful run: {self.summary()}"
        return self.summary()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class RemoveOutputs(PythonAction):
    """doit ``clean`` action: removes a task's files and directories, and says which (``doit clean -n`` prints it)."""

    def __init__(self, files: list[str], dirs: list[str]):
        super().__init__(_remove, [list(files), list(dirs)])

    def __str__(self) -> str:
        files, dirs = self.args
        shown = [f"{d}/" for d in dirs]
        shown += [f for f in files if not any(Path(f).is_relative_to(d) for d in dirs)]
        return "remove " + ", ".join(shown) if shown else "remove nothing"


def _remove(files: list[str], dirs: list[str]) -> None:
    for file in files:
        Path(file).unlink(missing_ok=True)
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)
