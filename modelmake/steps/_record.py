"""The record every convert step writes beside its artifact; package and evaluate read it."""
from __future__ import annotations

from pathlib import Path

from .. import fsutil


def write_record(out: str | Path, out_record: str, *, precision: str, integer_io: bool, per_channel: bool, delegates, io: dict, tools: dict, **extra) -> None:
    """``extra`` holds what only one format has (Core ML's compression, deployment target)."""
    fsutil.write_json(
        out_record,
        {
            "precision": precision,
            "integer_io": integer_io,
            "per_channel": per_channel,
            "delegates": list(delegates),
            "io": io,
            "sha256": fsutil.sha256_file(out),
            "size": Path(out).stat().st_size,
            "tools": tools,
            **extra,
        },
    )
