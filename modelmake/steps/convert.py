"""Step `convert`: one artifact, converted by its format's backend."""
from __future__ import annotations

from .. import formats
from ..contracts import ConvertJob


def convert(job: ConvertJob) -> None:
    formats.backend(job.support.format).convert(job)
