"""Step `convert`: one artifact, converted by its format's backend."""
from __future__ import annotations

from .. import formats
from ..contracts import ConvertJob


def convert(job: ConvertJob) -> None:
    formats.backend(job.support.format).convert(job)
    if job.prune is not None:
        record_sparsity(job)
    record_training(job)


def record_training(job: ConvertJob) -> None:
    """An artifact converted from a fine-tuned model says how it was trained (the train step's record)."""
    from ..contracts import ArtifactRecord, SourceRecord

    training = SourceRecord.read(job.source_record).metadata.get("training")
    if not training:
        return
    record = ArtifactRecord.read(job.out_record)
    shown = {key: training[key] for key in ("method", "epochs", "learning_rate") if key in training}
    ArtifactRecord(**{**record.__dict__, "extra": {**record.extra, "training": shown}}).write(job.out_record)


def record_sparsity(job: ConvertJob) -> None:
    """A pruned artifact's record says how sparse the file really is (measured from it) beside the sparsity asked for."""
    from ..contracts import ArtifactRecord
    from ._sparsity import measured_sparsity

    assert job.prune is not None  # called for pruned variants only
    record = ArtifactRecord.read(job.out_record)
    measured = measured_sparsity(job.support.format, job.out)
    pruning = {"target": job.prune.sparsity, **measured}
    ArtifactRecord(**{**record.__dict__, "extra": {**record.extra, "pruning": pruning}}).write(job.out_record)
