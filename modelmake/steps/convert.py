"""Step `convert`: one artifact, converted by its format's backend."""
from __future__ import annotations

from .. import formats
from ..contracts import ConvertJob


def convert(job: ConvertJob) -> None:
    formats.backend(job.support.format).convert(job)
    if job.prune is not None:
        record_sparsity(job)


def record_sparsity(job: ConvertJob) -> None:
    """A pruned artifact's record says how sparse the file really is (measured from it) beside the sparsity asked for."""
    from ..contracts import ArtifactRecord
    from ._sparsity import measured_sparsity

    assert job.prune is not None  # called for pruned variants only
    record = ArtifactRecord.read(job.out_record)
    measured = measured_sparsity(job.support.format, job.out)
    pruning = {"target": job.prune.sparsity, **measured}
    ArtifactRecord(**{**record.__dict__, "extra": {**record.extra, "pruning": pruning}}).write(job.out_record)
