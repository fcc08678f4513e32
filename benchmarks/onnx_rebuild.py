"""(e) Rebuilding one int8 ONNX variant after a change to its settings, against the same work from the SavedModel.

The workspace is the example's digits model (its recipe, data and
conditions) on one ONNX-only target at opset 17, with an fp32 and an int8
variant.  After a build from scratch, the int8 variant's per_channel setting
is flipped and `doit` rebuilds; each rebuild is a new doit process (graph,
a fresh step worker, convert, evaluate, report and package) and only
`convert` and `evaluate` of that variant run model code: its conversion
starts from the export task's float model (and, fixing no shape, from the
export's pre-processed copy of it), so it imports neither TensorFlow nor
tf2onnx nor the pre-processing's sympy.  Target: <= 2.5 s wall time (median
of three rebuilds).  The CPU time of each rebuild (doit and its step worker)
is printed too: on a machine shared with other work, wall time grows with
the load while CPU time stays what the rebuild costs.

The baseline is that conversion and evaluation as they were before exports
existed, in a fresh process as a fresh worker would run them: the same
ConvertJob without its export record (so the convert step loads the
SavedModel through TensorFlow and runs tf2onnx before quantizing) and the
same EvaluateJob, with nothing of doit, report or package around them; it
is a lower bound of what the rebuild took then.  The export alone (the work
a rebuild now skips) is printed beside it.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from ._timing import DOIT, REPOSITORY, example_workspace, quiet_env, report

NAME = "onnx_rebuild"
NAMES = (NAME,)
TARGET_SECONDS = 2.5
REPEAT = 3
VARIANT = "digits.int8.onnx@onnx-board"

SPEC = """\
format: 1
bundle: {name: onnx-rebuild, version: "1.0.0"}
models:
  digits:
    source: {recipe: recipes/digits.py, depends: [recipes/digits_data.py]}
    data:
      calibration: {recipe: recipes/digits.py, split: calibration, samples: 200, depends: [recipes/digits_data.py]}
      evaluation:
        recipe: recipes/digits.py
        split: test
        depends: [recipes/digits_data.py]
        conditions: {dim: 0.6, blur: 0.8, noise: 0.08}
    io:
      input: {layout: NHWC, scale: 1/16}
      output: {labels: recipes/digits_labels.txt, top_k: 3}
    variants:
      fp32: {}
      int8: {quantize: int8, per_channel: true}
    targets:
      onnx-board: [fp32, int8]
"""
PROFILE = """\
name: onnx-board
soc: a board that runs ONNX Runtime on its CPU
platform: linux
formats:
  onnx: {execution_providers: [CPUExecutionProvider], precisions: [fp32, int8], opset: 17, quantization: cpu}
"""

# The old path in a fresh process: the convert step from the SavedModel, then the evaluate step.
OLD_WAY = textwrap.dedent(
    """
    import os, pickle, sys
    os.chdir(sys.argv[2])
    jobs = pickle.load(open(sys.argv[1], "rb"))
    from modelmake.steps import convert, evaluate, export
    for step, job in jobs:
        {"export": export.export, "convert": convert.convert, "evaluate": evaluate.evaluate}[step](job)
    """
)


def _cpu_seconds() -> float:
    """User and system time of the finished child processes (doit and the step worker it started, once reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _doit(workspace: Path, *args: str) -> tuple[float, float, set[str]]:
    """Wall time, CPU time and the tasks that ran of one `doit` in the workspace."""
    cpu = _cpu_seconds()
    start = time.perf_counter()
    result = subprocess.run([*DOIT, *args], cwd=workspace, env=quiet_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark build failed in {workspace}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed, _cpu_seconds() - cpu, set(re.findall(r"^\.  (\S+)$", result.stdout, re.M))


def _jobs(workspace: Path) -> dict[str, Any]:
    from modelmake.graph import plan_tasks
    from modelmake.spec import load_plan

    return {f"{t['basename']}:{t['name']}": t["actions"][0][1][2] for t in plan_tasks(load_plan(workspace), workspace) if t.get("name")}


def _fresh_process(jobs: list, workspace: Path, scratch: Path) -> tuple[float, float]:
    """Wall and CPU time of the steps run on their jobs in one new process."""
    pickled = scratch / "jobs.pickle"
    pickled.write_bytes(pickle.dumps(jobs))
    cpu = _cpu_seconds()
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", OLD_WAY, str(pickled), str(workspace)], cwd=REPOSITORY, env=quiet_env(), capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark baseline failed:\n{result.stderr[-3000:]}")
    return elapsed, _cpu_seconds() - cpu


def main(names) -> list[str]:
    if NAME not in names:
        return []
    with tempfile.TemporaryDirectory(prefix="modelmake-bench-onnx-") as directory:
        scratch = Path(directory)
        workspace = example_workspace(scratch / "workspace")
        (workspace / "models.yaml").write_text(SPEC, encoding="utf-8")
        (workspace / "targets" / "onnx-board.yaml").write_text(PROFILE, encoding="utf-8")
        cold, _, _ = _doit(workspace)

        rebuilds, cpu = [], []
        per_channel = "true"
        for _ in range(REPEAT):
            flipped = "false" if per_channel == "true" else "true"
            spec = workspace / "models.yaml"
            spec.write_text(spec.read_text(encoding="utf-8").replace(f"per_channel: {per_channel}", f"per_channel: {flipped}"), "utf-8")
            per_channel = flipped
            elapsed, seconds, ran = _doit(workspace)
            model_work = {name for name in ran if not name.startswith(("package:", "report:"))}
            if model_work != {f"convert:{VARIANT}", f"evaluate:{VARIANT}"}:
                raise SystemExit(f"the rebuild after a settings change ran {sorted(ran)}, not just the variant's convert and evaluate")
            rebuilds.append(elapsed)
            cpu.append(seconds)

        jobs = _jobs(workspace)
        convert, evaluate = jobs[f"convert:{VARIANT}"], jobs[f"evaluate:{VARIANT}"]
        [export] = [job for name, job in jobs.items() if name.startswith("export:")]
        old_dir = scratch / "old"
        old_dir.mkdir()
        artifact = str(old_dir / "digits.int8.onnx")
        old_convert = dataclasses.replace(convert, export_record=None, out=artifact, out_record=artifact + ".json")
        old_evaluate = dataclasses.replace(evaluate, artifact=artifact, record=artifact + ".json", out=str(old_dir / "metrics.json"))
        old_runs = [_fresh_process([("convert", old_convert), ("evaluate", old_evaluate)], workspace, scratch) for _ in range(REPEAT)]
        old, old_cpu = [wall for wall, _ in old_runs], [seconds for _, seconds in old_runs]
        if Path(artifact).read_bytes() != (workspace / convert.out).read_bytes():
            raise SystemExit("the conversion from the SavedModel gave other bytes than the one from the export")
        out = str(old_dir / "export.onnx")
        prepared = {kind: str(old_dir / f"export.{kind}.onnx") for kind in export.out_prepared}
        alone = dataclasses.replace(export, out=out, out_record=out + ".json", out_prepared=prepared)
        export_alone, _ = _fresh_process([("export", alone)], workspace, scratch)

    measured, baseline = statistics.median(rebuilds), statistics.median(old)
    line = report(
        "rebuild one int8 ONNX variant after a settings change", measured, baseline,
        "its convert+evaluate from the SavedModel", f"target <= {TARGET_SECONDS} s", measured <= TARGET_SECONDS,
    )
    return [
        f"onnx rebuild: cold build {cold:.1f} s; rebuilds {', '.join(f'{t:.2f}' for t in rebuilds)} s "
        f"(CPU {', '.join(f'{t:.2f}' for t in cpu)} s, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); "
        f"old-way convert+evaluate {', '.join(f'{t:.2f}' for t in old)} s (CPU {', '.join(f'{t:.2f}' for t in old_cpu)} s); "
        f"the export alone (now skipped) {export_alone:.2f} s; CPU ratio {statistics.median(cpu) / statistics.median(old_cpu):.2f}x",
        line,
    ]
