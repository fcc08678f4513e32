"""One build at a time in a workspace.

Two doit processes in one workspace would both run every task and write the
same outputs.  A doit command that runs or removes tasks' outputs takes an
exclusive lock on build/.modelmake/build.lock while it loads the graph, and
holds it until the process ends (the kernel releases it however the process
ends, so a killed build leaves no stale lock).  The file says who holds it;
a second build stops at once with that, before doing anything.  Commands
that only read (``doit list``, ``doit info``) take no lock and create nothing.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from . import layout
from .errors import BuildInProgressError, output_error

LOCK = f"{layout.STATE}/build.lock"
# doit's commands that read the state and the graph only.
READ_ONLY_COMMANDS = frozenset({"list", "info", "help", "dumpdb", "tabcompletion"})

_held: dict[Path, int] = {}  # workspace -> the descriptor whose lock this process holds


def doit_command(args: list[str]) -> str:
    """The doit command in a command line (``run`` when none is named, as doit does)."""
    from doit.doit_cmd import DoitMain

    names = {command.get_name() for command in DoitMain.DOIT_CMDS}
    return next((arg for arg in args if arg in names), "run")


def acquire(workspace: Path, args: list[str]) -> None:
    """Take the workspace's build lock for this process unless the command only reads; raise when another holds it."""
    workspace = Path(workspace).resolve()
    if workspace in _held or doit_command(args) in READ_ONLY_COMMANDS:
        return
    import fcntl

    path = workspace / LOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise output_error(error) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(descriptor)
        os.close(descriptor)
        raise BuildInProgressError(
            f"another build is running in this workspace: {holder}; wait for it to finish, or stop it, then run again"
        ) from None
    os.ftruncate(descriptor, 0)
    program = Path(sys.argv[0]).name
    command = " ".join(["doit" if program == "__main__.py" else program, *args])  # `python -m doit` runs doit's __main__
    record = {"pid": os.getpid(), "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    os.pwrite(descriptor, json.dumps(record).encode("utf-8"), 0)
    _held[workspace] = descriptor


def _holder(descriptor: int) -> str:
    try:
        record = json.loads(os.pread(descriptor, 4096, 0))
        return f"process {record['pid']} (`{record['command']}`, started {record['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said which"


def release(workspace: Path) -> None:
    """Give the lock up before the process ends (a process that ends releases it anyway)."""
    descriptor = _held.pop(Path(workspace).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)
