"""The metrics an evaluation measures: the one list that budgets are checked against."""
from __future__ import annotations

SIZE_KB = "size_kb"  # kibibytes (1024 bytes) of the artifact file
LATENCY_MS = "latency_ms"  # median single-sample latency on the build host
ACCURACY_DROP = "accuracy_drop"  # source model's top-1 minus the artifact's, as a fraction


def top_k_metric(k: int) -> str:
    return f"top{k}"


def available_metrics(*, has_evaluation_data: bool, top_k: int) -> list[str]:
    """Names of the metrics an artifact of this model will have, in report order."""
    names = [SIZE_KB, LATENCY_MS]
    if has_evaluation_data:
        names += [top_k_metric(1)]
        if top_k > 1:
            names.append(top_k_metric(top_k))
        names.append(ACCURACY_DROP)
    return names
