"""The report's "training-time optimizations" table: each QAT variant beside its post-training twin (same precision,
target and format) and each pruned variant beside its dense twin, with size, download, accuracy drop and parity."""
from __future__ import annotations

from pathlib import Path

from .. import fsutil, metrics
from .tables import Cell, Column, Table, _fmt
from .views import ArtifactView, ModelView

TITLE = "Training-time optimizations"
NOTE = (
    "Each quantization-aware (QAT) variant beside its post-training twin (same precision, target and format) and each "
    "pruned variant beside its dense twin (same precision, without pruning). Download is the file's entry in the bundle's "
    "archives, which store entries uncompressed (bundle/archive.py), so it is the size of the file as shipped: a pruned "
    "variant downloads smaller only where its format stores the zeros sparse. Sparsity is the share of zero weights in "
    "the file's weight tensors, measured from it. Drops are in percentage points; cosine is parity with the source model."
)


def _record(view: ArtifactView) -> dict:
    path = Path(view.artifact.record)
    return fsutil.read_json(path) if path.is_file() else {}


def _optimization(record: dict) -> str | None:
    training, pruning = record.get("training"), record.get("pruning")
    if training and training.get("method") == "qat":
        return f"QAT ({training['epochs']} epochs)"
    if pruning:
        how = f"while fine-tuning ({training['epochs']} epochs)" if training else "after conversion"
        return f"pruned to {pruning['target']:g} {how}"
    if training:
        return f"fine-tuned ({training['epochs']} epochs)"
    return None


def _twin(view: ArtifactView, candidates: list[tuple[ArtifactView, dict]]) -> ArtifactView | None:
    """The same model, target, format and precision, neither trained nor pruned."""
    a = view.artifact
    for other, record in candidates:
        o = other.artifact
        if (o.target, o.format, o.precision) == (a.target, a.format, a.precision) and not record.get("training") and not record.get(
            "pruning"
        ):
            return other
    return None


def _pair(value, twin, spec: str, scale: float = 1.0) -> Cell:
    if value is None:
        return Cell("n/a")
    text = format(value * scale, spec)
    return Cell(text if twin is None else f"{text} vs {format(twin * scale, spec)}", float(value * scale))


def _absent(view: ArtifactView) -> Cell:
    return Cell("not measured" if view.measured.not_measured else "n/a")


def optimizations_table(models: list[ModelView]) -> Table | None:
    """None when no artifact was fine-tuned or pruned."""
    table = Table([
        Column("model"), Column("target"), Column("format"), Column("variant"), Column("optimization"), Column("twin"),
        Column("size KiB (vs twin)", numeric=True), Column("download KiB (vs twin)", numeric=True),
        Column("smaller than twin", numeric=True), Column("drop points (vs twin)", numeric=True),
        Column("cosine (vs twin)", numeric=True), Column("sparsity", numeric=True),
    ])
    for model in models:
        records = [(view, _record(view)) for view in model.artifacts]
        for view, record in records:
            optimization = _optimization(record)
            if optimization is None:
                continue
            twin = _twin(view, records)
            mine, theirs = view.measured.metrics, (twin.measured.metrics if twin else {})
            size, twin_size = record.get("size"), (_record(twin).get("size") if twin else None)
            smaller = None if not (size and twin_size) else 1 - size / twin_size
            drop, twin_drop = mine.get(metrics.ACCURACY_DROP), theirs.get(metrics.ACCURACY_DROP)
            sparsity = mine.get(metrics.SPARSITY)
            table.rows.append([
                Cell(model.model.name), Cell(view.artifact.target), Cell(view.artifact.format), Cell(view.artifact.variant),
                Cell(optimization), Cell(twin.artifact.variant if twin else "none built"),
                _pair(mine.get(metrics.SIZE_KB), theirs.get(metrics.SIZE_KB), ".1f"),
                _pair(None if size is None else size / 1024, None if twin_size is None else twin_size / 1024, ".1f"),
                _fmt(None if smaller is None else smaller * 100, "+.1f", missing="n/a"),
                _pair(drop, twin_drop, "+.2f", 100.0) if drop is not None else _absent(view),
                _pair(mine[metrics.COSINE_SIMILARITY], theirs.get(metrics.COSINE_SIMILARITY), ".5f")
                if metrics.COSINE_SIMILARITY in mine else _absent(view),
                _fmt(sparsity, ".3f", missing="—"),
            ])
    return table if table.rows else None
