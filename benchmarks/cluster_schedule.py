"""(g) the generated workspace (graph_load.generated_spec) at 10, 50 and 100 models x 10 targets on the cluster path.

For each size: the graph's load time (`doit list --all` with no build/, so no
cached graph), and a whole build on the cluster path with every step stubbed
(``_schedule_stub``): doit's up-to-date checks and order with 8 tasks in
flight, each model step's upload list computed and its submission recorded,
no model work and no model file read.  Then the graph's load time again,
from the graph cache the stubbed build left.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ._timing import DOIT, REPOSITORY, median_time, quiet_env
from .graph_load import generated_spec

NAME = "schedule"
NAMES = (NAME,)
SIZES = (10, 50, 100)
THREADS = 8


def main(names) -> list[str]:
    if NAME not in names:
        return []
    env = quiet_env()
    env["PYTHONPATH"] = str(REPOSITORY)
    lines = []
    with tempfile.TemporaryDirectory(prefix="modelmake-bench-schedule-") as directory:
        for models in SIZES:
            workspace = Path(directory) / f"m{models}"
            artifacts = generated_spec(workspace, models=models, targets=10)
            cold = median_time(DOIT + ["list", "--all"], workspace, repeat=3, env=env)
            out = workspace.parent / f"m{models}.json"
            completed = subprocess.run(
                [sys.executable, "-m", "benchmarks._schedule_stub", str(workspace), str(THREADS), str(out)],
                cwd=REPOSITORY, env=env, capture_output=True, text=True,
            )
            if completed.returncode != 0 or not out.is_file():
                lines.append(f"{models} models: the stubbed build failed ({completed.returncode}): {completed.stderr[-2000:]}")
                continue
            stub = json.loads(out.read_text(encoding="utf-8"))
            warm = median_time(DOIT + ["list", "--all"], workspace, repeat=3, env=env)
            sources = list((workspace / "build" / "sources").rglob("saved_model"))
            lines.append(
                f"{models} models x 10 targets ({artifacts} artifacts): graph load (doit list --all) {cold:.2f} s cold, "
                f"{warm:.2f} s from the graph cache; stubbed cluster build {stub['seconds']:.2f} s, "
                f"{stub['submissions']} submissions {stub['by_kind']}, at most {stub['most_in_flight']} in flight, "
                f"first {stub['first'][:3]}, model files written: {len(sources)}"
            )
    return lines
