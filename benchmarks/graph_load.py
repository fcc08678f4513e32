"""(a) a no-op `doit` on the built example against `doit list` on an empty dodo.py;
(b) `doit list` on a generated spec of 100 models x 10 targets (target: under 3 s)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ._timing import DOIT, REPOSITORY, example_workspace, median_time, report, run

PROFILE = """name: {name}
soc: generated chip {index}
platform: android
formats:
  tflite: {{precisions: [fp32, fp16, dynamic_int8, int8], delegates: [xnnpack]}}
"""

NAMES = ("large_list", "noop")


def generated_spec(workspace: Path, models: int = 100, targets: int = 10) -> int:
    """A workspace with many models and targets; returns the number of artifacts it declares."""
    (workspace / "targets").mkdir(parents=True)
    (workspace / "recipes").mkdir()
    (workspace / "recipes" / "model.py").write_text("def build_model():\n    raise NotImplementedError\n")
    (workspace / "dodo.py").write_text((REPOSITORY / "dodo.py").read_text())
    for index in range(targets):
        (workspace / "targets" / f"chip-{index}.yaml").write_text(PROFILE.format(name=f"chip-{index}", index=index))
    lines = ["format: 1", "bundle: {name: generated, version: '1.0.0'}", "models:"]
    for index in range(models):
        lines += [
            f"  model-{index}:",
            "    source: {recipe: recipes/model.py}",
            "    data:",
            "      calibration: {recipe: recipes/model.py, split: calibration}",
            "      evaluation: {recipe: recipes/model.py, split: test}",
            "    variants: {fp32: {}, fp16: {quantize: fp16}, int8: {quantize: int8}}",
            "    targets:",
        ]
        lines += [f"      chip-{t}: [fp32, fp16, int8]" for t in range(targets)]
        lines.append("    budgets: {max_size_kb: 500, max_accuracy_drop: 0.01}")
    (workspace / "models.yaml").write_text("\n".join(lines) + "\n")
    return models * targets * 3


def empty_dodo_list(scratch: Path) -> float:
    empty = scratch / "empty"
    empty.mkdir()
    (empty / "dodo.py").write_text("")
    return median_time(DOIT + ["list"], empty)


def noop_build(scratch: Path, baseline: float) -> str:
    workspace = example_workspace(scratch / "example")
    run(DOIT, workspace)  # the build itself; only the second, no-op run is measured
    noop = median_time(DOIT, workspace)
    return report("no-op doit on the example", noop, baseline, "empty doit list", "target <= 2x", noop <= 2 * baseline)


def large_list(scratch: Path, baseline: float) -> str:
    workspace = scratch / "large"
    artifacts = generated_spec(workspace)
    listing = median_time(DOIT + ["list", "--all"], workspace, repeat=3)
    name = f"doit list, 100 models x 10 targets ({artifacts} artifacts)"
    line = report(name, listing, baseline, "empty doit list", "target < 3 s", listing < 3.0)
    return line


def main(names) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="modelmake-bench-") as directory:
        scratch = Path(directory)
        baseline = empty_dodo_list(scratch)
        lines = []
        if "large_list" in names:
            lines.append(large_list(scratch, baseline))
        if "noop" in names:
            lines.append(noop_build(scratch, baseline))
        return lines
