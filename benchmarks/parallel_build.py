"""(f) the example built from an empty build/ serially (`modelmake build`) and on two local workers (`modelmake build -j 2`).

Target: the two-worker build at least 1.3x faster than the serial one on a
2-core machine.  Both builds run in this run, one after the other; each
prints the bundle digest check, and the parallel build's per-step timings
(build/.modelmake/cluster-timings.json) are summed to show where its time
went: the steps themselves, the transfers through the store, or waiting.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from ._timing import REPOSITORY, example_workspace, quiet_env, report, run

NAME = "parallel"
NAMES = (NAME,)
MODELMAKE = [sys.executable, "-m", "modelmake.cli", "build"]


def _environment() -> dict:
    env = quiet_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # This checkout's modelmake, in doit and in the workers alike.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    for name in [n for n in env if n.startswith("MODELMAKE_")]:
        del env[name]
    return env


def _bundles(workspace: Path) -> dict[str, bytes]:
    root = workspace / "build" / "bundles"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _where_time_went(workspace: Path) -> str:
    path = workspace / "build" / ".modelmake" / "cluster-timings.json"
    if not path.is_file():
        return "no cluster timings recorded"
    steps = json.loads(path.read_text(encoding="utf-8"))["steps"]
    totals: dict[str, float] = defaultdict(float)
    for step in steps:
        for key, value in step.items():
            if isinstance(value, (int, float)) and key != "submitted_at":
                totals[key] += value
    by_kind: dict[str, float] = defaultdict(float)
    for step in steps:
        by_kind[step["task"].split(":", 1)[0]] += step.get("step", 0.0)
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in totals.items())
    kinds = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]))
    return f"  {len(steps)} steps on the cluster, summed: {parts}\n  step time by kind: {kinds}"


def main(names) -> list[str]:
    if NAME not in names:
        return []
    env = _environment()
    with tempfile.TemporaryDirectory(prefix="modelmake-bench-parallel-") as directory:
        scratch = Path(directory)
        serial_workspace = example_workspace(scratch / "serial")
        parallel_workspace = example_workspace(scratch / "parallel")
        # One set of development keys for both, so that their signed bundles can be compared byte for byte.
        run([sys.executable, "-m", "modelmake.cli", "keygen", "--out", "keys/dev"], serial_workspace, env=env)
        shutil.copytree(serial_workspace / "keys", parallel_workspace / "keys")
        serial = run(MODELMAKE, serial_workspace, env=env)
        parallel = run(MODELMAKE + ["-j", "2"], parallel_workspace, env=env)
        serial_bundles, parallel_bundles = _bundles(serial_workspace), _bundles(parallel_workspace)
        same = serial_bundles == parallel_bundles
        differing = sorted(p for p in set(serial_bundles) | set(parallel_bundles) if serial_bundles.get(p) != parallel_bundles.get(p))
        sources = {
            record.parent.name: json.loads(record.read_text(encoding="utf-8"))["model_sha256"]
            == json.loads((parallel_workspace / record.relative_to(serial_workspace)).read_text(encoding="utf-8"))["model_sha256"]
            for record in sorted((serial_workspace / "build" / "sources").glob("*/source.json"))
        }
        speedup = serial / parallel
        return [
            f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f} (a shared machine makes these figures noisy)",
            f"bundles of the two builds byte-identical: {same}" + ("" if same else f" (differ: {', '.join(differing[:8])})"),
            f"source models the same (digest of what they compute): {sources}",
            _where_time_went(parallel_workspace),
            report(
                "modelmake build -j 2 (LocalCluster, 2 workers) vs serial, example from empty build/", parallel, serial,
                "modelmake build", f"speed-up {speedup:.2f}x, target >= 1.3x", speedup >= 1.3 and same,
            ),
        ]
