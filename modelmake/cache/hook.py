"""The shared cache in a build: a cacheable task's outputs are fetched instead of built, and uploaded once built.

``runner.run_step`` hands a cacheable task (``contracts.CacheableTask``) here.
The cache in force is read from the environment when the task runs, not when
the graph loads (``MODELMAKE_CACHE``, ``MODELMAKE_CACHE_WRITE``), falling back
to models.yaml's ``cache:`` section; so the graph, its cache and every task's
hash are the same with or without a cache.

A task's key is the SHA-256 of what decides whether it is up to date: its
kind, its job's type, what its ``JobUnchanged`` hashes (resolved config, tool
versions, keys) and the SHA-256 of each of its ``file_dep``.  A hit is
fetched and verified before anything in the workspace changes; an entry that
does not hold up is ignored with one warning line and the task runs.  A cache
that cannot be reached is given up for the rest of the build with one warning,
however many processes (``doit -n``) the build runs in: the first to find it
out leaves a marker in build/.modelmake/cache/ naming the build.

Each task's outcome goes, one JSON line each, into
build/.modelmake/cache/last-build.jsonl (its first line names the build), which
``modelmake cache`` and the build console summarise.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from .. import layout
from ..contracts import CacheableTask
from ..plan import CacheSettings

ENV_URL = "MODELMAKE_CACHE"
ENV_WRITE = "MODELMAKE_CACHE_WRITE"
OFF = frozenset({"off", "none", "0", "false", "no"})
KEY_FORMAT = 1

STATE = f"{layout.STATE}/cache"
STATS = f"{STATE}/last-build.jsonl"
UNAVAILABLE = f"{STATE}/unavailable.json"
STAGING = f"{STATE}/staging"
_LOCK = f"{STATE}/.lock"
_BUILD_LOCK = f"{layout.STATE}/build.lock"

_stores: dict[tuple[str, bool], object] = {}  # per process: (url, write) -> a checked CacheStore


def settings_in_force(spec: CacheSettings | None, environ=None) -> CacheSettings | None:
    """The cache this build uses: MODELMAKE_CACHE (a URL, or "off") over models.yaml's; MODELMAKE_CACHE_WRITE=0 reads only."""
    environ = os.environ if environ is None else environ
    url = environ.get(ENV_URL, "").strip()
    if url.lower() in OFF:
        return None
    settings = CacheSettings(url, spec.write if spec else True) if url else spec
    if settings is None:
        return None
    write = environ.get(ENV_WRITE, "").strip().lower()
    if write:
        settings = CacheSettings(settings.url, write not in OFF)
    return settings


def task_key(task: CacheableTask) -> str:
    """The task's key: what its up-to-date check hashes, with the content of each file it depends on."""
    from .store import file_sha256

    document = {
        "format": KEY_FORMAT,
        "code": code_digest(),
        "kind": task.kind,
        "job": task.job_type,
        "hashed": task.hashed,
        "inputs": {path: file_sha256(Path(path)) for path in task.file_dep},
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@cache
def code_digest() -> str:
    """The SHA-256 of modelmake's own code: its version number alone does not change with every edit of a step.

    doit's own state trusts the version (a developer's edited step reruns after ``doit forget``); a cache
    shared by many machines must not serve what other code made.
    """
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def run_cached(task: CacheableTask, task_name: str, run: Callable[[], object]):
    """Fetch the task's outputs from the cache in force, or ``run()`` it and upload what it made; return what doit gets."""
    settings = settings_in_force(task.settings)
    if settings is None:
        return run()
    store = _store(settings)
    if store is None:
        return run()
    try:
        key = task_key(task)
    except OSError:
        return run()  # an input is missing: the step itself says so
    from .store import CacheEntryInvalid, CacheUnavailable

    # Counted per task, not from the store's totals: with a cluster, doit runs tasks in threads sharing one store.
    outcome = "miss"
    started = time.monotonic()
    try:
        entry = store.get_entry(key)
        if entry is not None:
            _check_covers(entry, task)
            store.fetch(entry, Path.cwd(), staging=Path(STAGING), replace_dirs=task.output_dirs)
            return _hit(task_name, settings, entry, entry.size, time.monotonic() - started)
    except CacheEntryInvalid as problem:
        outcome = "ignored"
        _warn(f"the cached outputs of {task_name} in {settings.url} were ignored ({problem}); running the task")
    except CacheUnavailable as problem:
        _give_up(settings, str(problem))
        return run()
    started = time.monotonic()
    result = run()
    duration = time.monotonic() - started
    uploaded, sent = False, 0
    # None is success; a recorded failure (a dict of values) or a TaskFailed is never shared.
    if result is None and settings.write and _usable():
        files = _outputs(task)
        if files is not None:
            try:
                from ..steps.runner import SUMMARIES

                meta = {"task": task_name, "duration_seconds": round(duration, 3), "summary": SUMMARIES.pop(task_name, None)}
                sent = store.put_entry(key, files, meta)
                uploaded = True
            except CacheUnavailable as problem:
                _give_up(settings, str(problem))
            except OSError:
                pass  # an output went while uploading: the build is not the cache's to fail
    _record(settings, {
        "task": task_name, "outcome": outcome, "uploaded": uploaded, "bytes_down": 0,
        "bytes_up": sent, "seconds": round(duration, 3),
    })
    return result


def _hit(task_name: str, settings: CacheSettings, entry, fetched: int, seconds: float):
    built_in = entry.meta.get("duration_seconds")
    built_in = float(built_in) if isinstance(built_in, int | float) and not isinstance(built_in, bool) else 0.0
    saved = max(0.0, built_in - seconds)
    _record(settings, {
        "task": task_name, "outcome": "hit", "uploaded": False, "bytes_down": fetched, "bytes_up": 0,
        "seconds": round(seconds, 3), "saved_seconds": round(saved, 3),
    })
    Path(layout.failure_record(task_name)).unlink(missing_ok=True)
    log = Path(layout.log_file(task_name))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"fetched from the cache {settings.url}, entry {entry.key} ({len(entry.files)} files, verified)\n", encoding="utf-8")
    summary = entry.meta.get("summary")
    line = f"{task_name}: from the cache ({_megabytes(fetched)}, built in {built_in:.1f} s)"
    # The step's own result line, as the build that made the outputs printed it (plain text only: it comes from the cache).
    shown = isinstance(summary, str) and summary and summary.isprintable() and len(summary) <= 1000
    print(f"{line}: {summary}" if shown else line)
    return None


def _check_covers(entry, task: CacheableTask) -> None:
    """An entry must hold every target of the task, and nothing outside its targets and output folders."""
    from .store import CacheEntryInvalid

    missing = [target for target in task.targets if target not in entry.files]
    if missing:
        raise CacheEntryInvalid(f"it lacks {missing[0]}")
    folders = tuple(folder.rstrip("/") + "/" for folder in task.output_dirs)
    for path in entry.files:
        if path not in task.targets and not path.startswith(folders):
            raise CacheEntryInvalid(f"it holds {path}, which is not an output of the task")


def _outputs(task: CacheableTask) -> dict[str, Path] | None:
    """The task's outputs by workspace-relative path: its targets and every file under its output folders; None if a target is missing."""
    files: dict[str, Path] = {}
    for target in task.targets:
        path = Path(target)
        if not path.is_file():
            return None
        files[target] = path
    for folder in task.output_dirs:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                files[path.as_posix()] = path
    return files


# --- the cache's state in this build: shared by every doit process of the build ----------------------------------


def build_id(workspace: Path | None = None) -> str:
    """The running build, as its lock names it (the doit process and when it started); this process when there is none."""
    try:
        record = json.loads((Path(workspace or ".") / _BUILD_LOCK).read_text(encoding="utf-8"))
        return f"{record['pid']}@{record['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{os.getpid()}@process"


@contextmanager
def _locked():
    Path(STATE).mkdir(parents=True, exist_ok=True)
    descriptor = os.open(_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _usable() -> bool:
    """False once any process of this build has found the cache unusable."""
    try:
        marker = json.loads(Path(UNAVAILABLE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not (isinstance(marker, dict) and marker.get("build") == build_id())


def _store(settings: CacheSettings):
    """This process's store for ``settings``, checked once; None when the cache is unusable in this build."""
    if not _usable():
        return None
    key = (settings.url, settings.write)
    if key not in _stores:
        from .store import CacheStore, CacheUnavailable

        try:
            store = CacheStore(settings.url, write=settings.write, storage_options=_fresh_client(settings.url))
            store.check()
        except CacheUnavailable as problem:
            _give_up(settings, str(problem))
            return None
        _stores[key] = store
    return _stores[key]


def _fresh_client(url: str) -> dict:
    """A client made from this process's environment, not one fsspec kept from another configuration."""
    import fsspec

    return {"skip_instance_cache": True} if fsspec.utils.get_protocol(url) not in ("file", "local") else {}


def _give_up(settings: CacheSettings, reason: str) -> None:
    """Mark the cache unusable for this build; the first process to do so prints the build's one warning."""
    with _locked():
        if not _usable():
            return
        from ..fsutil import write_json

        write_json(UNAVAILABLE, {"build": build_id(), "url": settings.url, "reason": reason})
        _append_locked(settings, {"event": "unavailable", "reason": reason})
    _warn(
        f"the cache {settings.url} cannot be used ({reason}); this build runs without it. "
        f"Check {ENV_URL} (or models.yaml's cache: url), the endpoint and the credentials in the environment"
    )


def _warn(message: str) -> None:
    print(f"modelmake: warning: {message}", file=sys.stderr, flush=True)


def _record(settings: CacheSettings, event: dict) -> None:
    try:
        with _locked():
            _append_locked(settings, event)
    except OSError:
        pass  # the figures are a report; a full disk must not fail a task that succeeded


def _append_locked(settings: CacheSettings, event: dict) -> None:
    """Append one line to this build's record, starting it afresh when it belongs to an earlier build."""
    build = build_id()
    path = Path(STATS)
    header = None
    try:
        with open(path, encoding="utf-8") as handle:
            header = json.loads(handle.readline() or "null")
    except (OSError, ValueError):
        pass
    mode = "a" if isinstance(header, dict) and header.get("build") == build else "w"
    with open(path, mode, encoding="utf-8") as handle:
        if mode == "w":
            handle.write(json.dumps({"build": build, "url": settings.url, "write": settings.write}) + "\n")
        handle.write(json.dumps(event, sort_keys=True) + "\n")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"


# --- reading the record back ---------------------------------------------------------------------------------------


def last_build(workspace: Path) -> dict | None:
    """The summary of the last build that used a cache in ``workspace``: None when none did."""
    try:
        lines = (Path(workspace) / STATS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line a killed build left half-written
    if not events or not isinstance(events[0], dict) or "build" not in events[0]:
        return None
    header, tasks = events[0], [e for e in events[1:] if isinstance(e, dict) and "task" in e]
    unavailable = [e["reason"] for e in events[1:] if isinstance(e, dict) and e.get("event") == "unavailable"]
    outcome = [t.get("outcome") for t in tasks]
    return {
        "build": header["build"],
        "url": header.get("url"),
        "write": header.get("write", True),
        "tasks": len(tasks),
        "hits": outcome.count("hit"),
        "misses": outcome.count("miss"),
        "ignored": outcome.count("ignored"),
        "uploads": sum(1 for t in tasks if t.get("uploaded")),
        "bytes_down": sum(int(t.get("bytes_down", 0)) for t in tasks),
        "bytes_up": sum(int(t.get("bytes_up", 0)) for t in tasks),
        "seconds_saved": round(sum(float(t.get("saved_seconds", 0)) for t in tasks), 1),
        "unavailable": unavailable[0] if unavailable else None,
        "ignored_tasks": [t["task"] for t in tasks if t.get("outcome") == "ignored"],
    }


def console_line(summary: dict) -> str:
    """One line for the build console: how many tasks came from where, what moved and what it saved."""
    if summary.get("unavailable"):
        return f"cache: not used ({summary['url']} could not be reached); every task ran here"
    moved = f"{_megabytes(summary['bytes_down'])} fetched, {summary['seconds_saved']:.0f} s saved"
    if summary["uploads"]:
        moved += f", {summary['uploads']} uploaded"
    return f"cache: {summary['hits']} of {summary['tasks']} tasks from {summary['url']} ({moved})"
