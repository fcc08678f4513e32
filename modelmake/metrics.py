"""The metrics an evaluation measures: the one list that budgets are checked against."""
from __future__ import annotations

from .kinds import Precision

SIZE_KB = "size_kb"  # kibibytes (1024 bytes) of the artifact file
LATENCY_MS = "latency_ms"  # median single-sample latency on the build host
ACCURACY_DROP = "accuracy_drop"  # source model's top-1 minus the artifact's, as a fraction
# Parity with the source model's outputs on the evaluation inputs
MAX_ABS_ERROR = "max_abs_error"
COSINE_SIMILARITY = "cosine_similarity"  # mean over samples
TOP1_AGREEMENT = "top1_agreement"  # fraction of samples whose top-1 class matches the source's
ACCELERATOR_COVERAGE = "accelerator_coverage"  # fraction of ops the target's accelerator runs
# Fraction of the weight bytes stored at the variant's precision (float16, or 8-bit integers); quantized variants only.
QUANTIZED_SHARE = "quantized_share"
# Below this share the report flags a quantized artifact as mostly float.
MOSTLY_FLOAT_SHARE = 0.5

# The conditions phones meet, each applied to the raw evaluation inputs at a stated strength.
CONDITIONS = ("dim", "blur", "noise")

# Parity tolerances each precision gets unless the spec sets its own.
DEFAULT_TOLERANCES: dict[Precision, dict[str, float]] = {
    Precision.FP32: {f"min_{COSINE_SIMILARITY}": 0.9999, f"min_{TOP1_AGREEMENT}": 0.99},
    Precision.FP16: {f"min_{COSINE_SIMILARITY}": 0.999, f"min_{TOP1_AGREEMENT}": 0.98},
    Precision.DYNAMIC_INT8: {f"min_{COSINE_SIMILARITY}": 0.99, f"min_{TOP1_AGREEMENT}": 0.95},
    Precision.INT8: {f"min_{COSINE_SIMILARITY}": 0.98, f"min_{TOP1_AGREEMENT}": 0.95},
}


def top_k_metric(k: int) -> str:
    return f"top{k}"


def condition_metric(condition: str) -> str:
    return f"top1_{condition}"


def available_metrics(*, has_evaluation_data: bool, top_k: int, conditions=(), quantized: bool = False) -> list[str]:
    """Names of the metrics an artifact of this model can have, in report order.

    The quantized share is read from the file, so every quantized artifact has it;
    an fp32 artifact stores nothing at a reduced precision and has no such figure.
    Accelerator coverage is measured only on targets whose profile names an accelerator;
    elsewhere, like accuracy on a host that cannot run the format, it is "not measured".
    """
    names = [SIZE_KB, *([QUANTIZED_SHARE] if quantized else []), LATENCY_MS]
    if has_evaluation_data:
        names += [top_k_metric(1)]
        if top_k > 1:
            names.append(top_k_metric(top_k))
        names += [ACCURACY_DROP, MAX_ABS_ERROR, COSINE_SIMILARITY, TOP1_AGREEMENT]
        names += [condition_metric(c) for c in conditions]
    names.append(ACCELERATOR_COVERAGE)
    return names
