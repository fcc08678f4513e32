"""(d) the example's key figures: every artifact's size, top-1 and drop from its source model, per model.

Figures to quote, not a verdict: the values are what the build measured (build/metrics and
build/reference); the slow test suite checks them against an independent recount.
"""
from __future__ import annotations

import json
from pathlib import Path

from ._timing import built_example

NAME = "figures"
NAMES = (NAME,)


def figures(workspace: Path) -> list[str]:
    build = workspace / "build"
    lines = []
    for reference in sorted((build / "reference").glob("*.json")):
        model = reference.stem
        source_top1 = json.loads(reference.read_text(encoding="utf-8"))["top1"]
        lines.append(f"{model}: source top-1 {source_top1:.4f}")
        for record in sorted((build / "metrics").glob(f"*/{model}.*.json")):
            target, (variant, fmt) = record.parent.name, record.stem.split(".")[1:]
            measured = json.loads(record.read_text(encoding="utf-8"))
            top1 = measured["metrics"].get("top1")
            accuracy = (
                f"top-1 {top1:.4f} ({(top1 - source_top1) * 100:+.2f} points)" if top1 is not None else "top-1 not measured"
            )
            artifact_id = f"{model}.{variant}.{fmt}@{target}"
            lines.append(f"  {artifact_id:45s} {measured['size_bytes'] / 1024:9.1f} KiB  {accuracy}")
    return lines


def main(names) -> list[str]:
    if NAME not in names:
        return []
    workspace, _ = built_example()
    return figures(workspace)
