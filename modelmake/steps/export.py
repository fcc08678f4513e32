"""Step `export`: a source model exported once into a format's float model, which that format's conversions start from."""
from __future__ import annotations

from .. import formats
from ..contracts import ExportJob


def export(job: ExportJob) -> None:
    formats.backend(job.format).export(job)
