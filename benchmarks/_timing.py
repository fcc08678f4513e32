"""Timing helpers shared by the benchmarks."""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DOIT = [sys.executable, "-m", "doit"]


def run(command, cwd, env=None) -> float:
    """Wall time of one command; its output is discarded and a failure stops the benchmark."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(map(str, command))} in {cwd}\n{result.stdout[-3000:]}")
    return elapsed


def median_time(command, cwd, repeat=5, env=None) -> float:
    return statistics.median(run(command, cwd, env) for _ in range(repeat))


def example_workspace(destination: Path) -> Path:
    """A copy of the repository's example workspace, without its build outputs."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("dodo.py", "models.yaml"):
        shutil.copy2(REPOSITORY / name, destination / name)
    for name in ("recipes", "targets"):
        shutil.copytree(REPOSITORY / name, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


@cache
def built_example() -> tuple[Path, float]:
    """The example workspace built once per run from scratch, and the wall time of that build.

    Every benchmark that needs the built example shares this one build; the directory is removed when the run ends.
    """
    scratch = tempfile.TemporaryDirectory(prefix="modelmake-bench-example-")
    _KEEP.append(scratch)
    workspace = example_workspace(Path(scratch.name) / "example")
    return workspace, run(DOIT, workspace, env=quiet_env())


_KEEP: list[tempfile.TemporaryDirectory] = []  # alive until the interpreter exits, which removes them


def report(name: str, measured: float, baseline: float, baseline_name: str, target: str, passed: bool, unit="s") -> str:
    ratio = measured / baseline if baseline else float("inf")
    verdict = "PASS" if passed else "FAIL"
    return f"{name}: {measured:.3f} {unit} vs {baseline_name} {baseline:.3f} {unit} -> {ratio:.2f}x ({target}) {verdict}"


def quiet_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env
