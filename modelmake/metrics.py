"""The metrics an evaluation measures: the one list that budgets are checked against."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from .kinds import OutputKind, Precision

SIZE_KB = "size_kb"  # kibibytes (1024 bytes) of the artifact file
LATENCY_MS = "latency_ms"  # median single-sample latency on the build host
# Frames per second on the build host, 1000 / latency_ms: measured where a budget (min_fps) asks for it.  A
# device's own frame rate comes back in its telemetry (OTA.md) and is held to the same budget there.
FPS = "fps"
ACCURACY_DROP = "accuracy_drop"  # source model's top-1 minus the artifact's, as a fraction
# Parity with the source model's outputs on the evaluation inputs
MAX_ABS_ERROR = "max_abs_error"
COSINE_SIMILARITY = "cosine_similarity"  # mean over samples
# Signal to noise of the artifact's outputs against the source's, over all samples: 10*log10(sum(ref^2) / sum((out-ref)^2)).
SNR_DB = "snr_db"
# An exact match has no noise and an infinite SNR, which JSON cannot hold: figures are clipped to +-SNR_CAP_DB.
# 160 dB is beyond what float32 rounding leaves (about 140 dB), so only an exact match reaches it.
SNR_CAP_DB = 160.0
TOP1_AGREEMENT = "top1_agreement"  # fraction of samples whose top-1 class matches the source's
# Embeddings: the smallest per-sample cosine to the source's vector, which a mean hides.
WORST_COSINE_SIMILARITY = "worst_cosine_similarity"
# Masks, against per-pixel labels: intersection over union averaged over classes, and the share of pixels labelled right.
MEAN_IOU = "mean_iou"
PIXEL_ACCURACY = "pixel_accuracy"
IOU_DROP = "iou_drop"  # source model's mean IoU minus the artifact's, as a fraction
MASK_AGREEMENT = "mask_agreement"  # share of pixels whose class matches the source model's mask
ACCELERATOR_COVERAGE = "accelerator_coverage"  # fraction of ops the target's accelerator runs
# Fraction of the weight bytes stored at the variant's precision (float16, or 8-bit integers); quantized variants only.
QUANTIZED_SHARE = "quantized_share"
# Below this share the report flags a quantized artifact as mostly float.
MOSTLY_FLOAT_SHARE = 0.5

# The conditions phones meet, each applied to the raw evaluation inputs at a stated strength.
CONDITIONS = ("dim", "blur", "noise")

# A mask's default threshold on a one-channel probability map: a pixel belongs to the mask when its value is at least this.
DEFAULT_THRESHOLD = 0.5

# Parity tolerances each precision gets unless the spec sets its own, per output kind: only metrics the kind has.
# Cosine is shared by all kinds, with the classifiers' values.  A mask's pixels near a class boundary have close
# scores and flip first under rounding, as a classifier's close calls do, so mask_agreement gets top1_agreement's
# values.  An embedding is read whole (nearest neighbours, thresholds on distance), so one bad vector matters:
# its worst per-sample cosine gets a bound about one order of magnitude looser than the mean's, 0.95 at int8.
_COSINE = {Precision.FP32: 0.9999, Precision.FP16: 0.999, Precision.DYNAMIC_INT8: 0.99, Precision.INT8: 0.98}
_AGREEMENT = {Precision.FP32: 0.99, Precision.FP16: 0.98, Precision.DYNAMIC_INT8: 0.95, Precision.INT8: 0.95}
_WORST_COSINE = {Precision.FP32: 0.999, Precision.FP16: 0.99, Precision.DYNAMIC_INT8: 0.95, Precision.INT8: 0.95}

DEFAULT_TOLERANCES: dict[OutputKind, dict[Precision, dict[str, float]]] = {
    OutputKind.CLASSES: {
        p: {f"min_{COSINE_SIMILARITY}": _COSINE[p], f"min_{TOP1_AGREEMENT}": _AGREEMENT[p]} for p in Precision
    },
    OutputKind.MASK: {p: {f"min_{COSINE_SIMILARITY}": _COSINE[p], f"min_{MASK_AGREEMENT}": _AGREEMENT[p]} for p in Precision},
    OutputKind.EMBEDDING: {
        p: {f"min_{COSINE_SIMILARITY}": _COSINE[p], f"min_{WORST_COSINE_SIMILARITY}": _WORST_COSINE[p]} for p in Precision
    },
    # Detection heads are read as numbers (box decoding, mAP in a custom metric): parity only, as for any tensor.
    OutputKind.BOXES: {p: {f"min_{COSINE_SIMILARITY}": _COSINE[p]} for p in Precision},
    OutputKind.SCORES: {p: {f"min_{COSINE_SIMILARITY}": _COSINE[p]} for p in Precision},
    OutputKind.TENSOR: {p: {f"min_{COSINE_SIMILARITY}": _COSINE[p]} for p in Precision},
}

# Figures where less is better; every other figure is better the higher it is.
LOWER_IS_BETTER = (MAX_ABS_ERROR, ACCURACY_DROP, IOU_DROP, SIZE_KB, LATENCY_MS)


# What a budget may bound each figure to: sizes, latency and errors are never negative, shares and accuracies are fractions
# (a drop too: a budget below 0 would ask an artifact to beat its source), and cosines lie between -1 and 1.
NON_NEGATIVE = (SIZE_KB, LATENCY_MS, MAX_ABS_ERROR, FPS)
COSINES = (COSINE_SIMILARITY, WORST_COSINE_SIMILARITY)
FRACTIONS = (
    ACCURACY_DROP, TOP1_AGREEMENT, MEAN_IOU, PIXEL_ACCURACY, IOU_DROP, MASK_AGREEMENT, ACCELERATOR_COVERAGE, QUANTIZED_SHARE
)


def metric_range(name: str) -> tuple[float, float] | None:
    """The values a figure of this name can take, which bound its budgets; None for a figure of any value (snr_db, custom)."""
    if name in NON_NEGATIVE:
        return (0.0, float("inf"))
    if name in COSINES:
        return (-1.0, 1.0)
    conditioned = {condition_metric(c, kind) for c in CONDITIONS for kind in (OutputKind.CLASSES, OutputKind.MASK)}
    if name in FRACTIONS or name in conditioned or re.fullmatch(r"top[0-9]+", name):
        return (0.0, 1.0)
    return None


def top_k_metric(k: int) -> str:
    return f"top{k}"


def condition_metric(condition: str, kind: OutputKind = OutputKind.CLASSES) -> str:
    """The figure measured under a condition: top-1 for classes, mean IoU for masks."""
    return f"{MEAN_IOU if kind is OutputKind.MASK else 'top1'}_{condition}"


def parity_metrics(kind: OutputKind) -> list[str]:
    """Parity with the source model's outputs, which needs no labels.

    Classifiers keep the figures they have always had (their manifests keep their bytes);
    every other kind also gets the SNR, and an embedding its worst per-sample cosine.
    """
    if kind is OutputKind.CLASSES:
        return [MAX_ABS_ERROR, COSINE_SIMILARITY, TOP1_AGREEMENT]
    names = [MAX_ABS_ERROR, COSINE_SIMILARITY, SNR_DB]
    if kind is OutputKind.EMBEDDING:
        names.append(WORST_COSINE_SIMILARITY)
    if kind is OutputKind.MASK:
        names.append(MASK_AGREEMENT)
    return names


def labelled_metrics(kind: OutputKind, *, top_k: int = 1, conditions=()) -> list[str]:
    """The figures measured against the evaluation data's labels (absent where the data has none)."""
    if kind is OutputKind.CLASSES:
        names = [top_k_metric(1)] + ([top_k_metric(top_k)] if top_k > 1 else []) + [ACCURACY_DROP]
    elif kind is OutputKind.MASK:
        names = [MEAN_IOU, PIXEL_ACCURACY, IOU_DROP]
    else:
        return []
    return names + [condition_metric(c, kind) for c in conditions]


# Keys the reference step's record holds beside its figures: a custom metric cannot take these names.
RESERVED_NAMES = ("samples", "batching")


def builtin_metric(name: str) -> bool:
    """Whether modelmake measures a metric of this name itself (for some output kind, precision or target)."""
    if re.fullmatch(r"top[0-9]+", name) or name in RESERVED_NAMES:
        return True
    kinds_names = {
        m for kind in OutputKind for m in parity_metrics(kind) + labelled_metrics(kind, top_k=2, conditions=CONDITIONS)
    }
    return name in kinds_names | {SIZE_KB, LATENCY_MS, QUANTIZED_SHARE, ACCELERATOR_COVERAGE, FPS}


def default_tolerances(kinds: Iterable[OutputKind], precision: Precision) -> dict[str, float]:
    """The parity tolerances of a model whose outputs have these kinds: each kind's, which agree where they share a metric."""
    merged: dict[str, float] = {}
    for kind in dict.fromkeys(kinds):
        merged |= DEFAULT_TOLERANCES[kind][precision]
    return merged


def worst(metric: str, values: Iterable[float]) -> float:
    """The worst of several outputs' values of a figure: the largest where less is better, else the smallest."""
    return max(values) if metric in LOWER_IS_BETTER else min(values)


def model_figures(per_output: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """A model's figures from its outputs' (by output name): each figure is the worst over the outputs that have it.

    Budgets bound these: parity figures over every output, labelled figures over the outputs whose kind measures them.
    """
    names = dict.fromkeys(name for figures in per_output.values() for name in figures)
    return {name: worst(name, [figures[name] for figures in per_output.values() if name in figures]) for name in names}


def available_metrics(
    *,
    has_evaluation_data: bool,
    top_k: int | Iterable[int] = 1,
    conditions=(),
    quantized: bool = False,
    kind: OutputKind | Iterable[OutputKind] = OutputKind.CLASSES,
    custom: Sequence[str] = (),
) -> list[str]:
    """Names of the metrics an artifact of this model can have, in report order.

    A model with several outputs passes every output's kind (and every classes output's top_k):
    it has the union of their figures, each kind's in turn.

    The quantized share is read from the file, so every quantized artifact has it;
    an fp32 artifact stores nothing at a reduced precision and has no such figure.
    Accelerator coverage is measured only on targets whose profile names an accelerator;
    elsewhere, like accuracy on a host that cannot run the format, it is "not measured".
    A mask's figures against labels are measured only when its evaluation data has labels.
    Custom figures (``custom``, a recipe's) are measured on the evaluation data, after parity.
    """
    names = [SIZE_KB, *([QUANTIZED_SHARE] if quantized else []), LATENCY_MS]
    if has_evaluation_data:
        kinds = [kind] if isinstance(kind, OutputKind) else list(kind)
        top_ks = [top_k] if isinstance(top_k, int) else list(top_k)
        for each in dict.fromkeys(kinds):
            for k in dict.fromkeys(top_ks if each is OutputKind.CLASSES else [1]):
                names += [m for m in _kind_metrics(each, k, conditions) if m not in names]
        names += [m for m in custom if m not in names]
    names.append(ACCELERATOR_COVERAGE)
    return names


def _kind_metrics(kind: OutputKind, top_k: int, conditions) -> list[str]:
    """One output kind's figures on evaluation data, in report order."""
    labelled = labelled_metrics(kind, top_k=top_k, conditions=conditions)
    parity = parity_metrics(kind)
    if kind is OutputKind.CLASSES:
        # Today's order: accuracy, drop, parity, then the conditions.
        conditioned = [condition_metric(c, kind) for c in conditions]
        return [m for m in labelled if m not in conditioned] + parity + conditioned
    return labelled + parity


def budgetable(metric: str, known: Sequence[str]) -> bool:
    """Whether a budget may bound ``metric`` for a model that measures ``known``: those, and the frame rate
    wherever latency is measured (it is measured only for a budget that asks, so it is not in ``known``)."""
    return metric in known or (metric == FPS and LATENCY_MS in known)


def fps(latency_ms: float) -> float:
    """Frames per second of one inference per frame taking ``latency_ms``."""
    return 1000.0 / max(latency_ms, 1e-6)  # a finite figure even for a timer that read 0
