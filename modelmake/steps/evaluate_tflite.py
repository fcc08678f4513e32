"""Step `evaluate` for TFLite: prove the artifact loads and runs in LiteRT, measure it, hold it to its budgets."""
from __future__ import annotations

from pathlib import Path

from .. import fsutil, metrics
from ..errors import BudgetExceeded
from ..plan import Budget
from ..versions import tool_versions
from ._arrays import preprocess, read_dataset
from ._scoring import accuracy_figures
from ._tflite_runtime import median_latency_ms, predict


def evaluate(artifact: str, artifact_id: str, evaluation: str | None, reference: str | None, preprocessing: dict, top_k: int, budgets: list, out: str) -> str:
    what = f"artifact {artifact_id}"
    size = Path(artifact).stat().st_size
    figures = {metrics.SIZE_KB: size / 1024.0}
    sample = None
    if evaluation:
        x, y = read_dataset(evaluation, what="evaluation data")
        x = preprocess(x, preprocessing)
        sample = x[0]
        figures.update(accuracy_figures(predict(artifact, x, what=what), y, top_k))
        source = fsutil.read_json(reference)
        figures[metrics.ACCURACY_DROP] = source[metrics.top_k_metric(1)] - figures[metrics.top_k_metric(1)]
    figures[metrics.LATENCY_MS] = median_latency_ms(artifact, what=what, sample=sample)

    verdicts = [
        {**budget, "value": figures[budget["metric"]], "passed": Budget(**budget).holds_for(figures[budget["metric"]])}
        for budget in budgets
    ]
    fsutil.write_json(
        out,
        {
            "artifact": artifact_id,
            "size_bytes": size,
            "metrics": figures,
            "source": fsutil.read_json(reference) if reference else None,
            "budgets": verdicts,
            "tools": tool_versions("ai-edge-litert"),
            "latency_host": "build host CPU, 1 thread, median of 50 runs",
        },
    )
    broken = [v for v in verdicts if not v["passed"]]
    summary = ", ".join(f"{name} {value:.4g}" for name, value in figures.items())
    if broken:
        reasons = [f"{v['metric']} is {v['value']:.4g}, {'over' if v['bound'] == 'max' else 'under'} its {v['key']} of {v['limit']:g}" for v in broken]
        raise BudgetExceeded(f"{artifact_id} breaks its budget: {'; '.join(reasons)}")
    return f"{artifact_id}: {summary}; budgets {'ok' if verdicts else 'none'}"
