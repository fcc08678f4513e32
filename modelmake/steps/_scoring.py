"""Figures and their wording shared by the reference, evaluate, selection and report steps."""
from __future__ import annotations

import numpy as np

from .. import metrics


def accuracy_figures(outputs: np.ndarray, labels: np.ndarray, top_k: int) -> dict[str, float]:
    """top-1 and, when the model declares top_k > 1, top-k accuracy as fractions."""
    ranked = np.argsort(-outputs.reshape(len(outputs), -1), axis=1, kind="stable")
    figures = {metrics.top_k_metric(1): float(np.mean(ranked[:, 0] == labels))}
    if top_k > 1:
        figures[metrics.top_k_metric(top_k)] = float(np.mean(np.any(ranked[:, :top_k] == labels[:, None], axis=1)))
    return figures


def fallback_ops(coverage: dict) -> str:
    """The ops an accelerator leaves to the CPU, e.g. 'Erf x1, TOPK_V2 x2'."""
    return ", ".join(f"{op} x{count}" for op, count in coverage["fallback"].items())
