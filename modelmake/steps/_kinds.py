"""What an output's figures are, per output kind (kinds.OutputKind): the reference and evaluate steps stay generic.

Every kind is compared with the source model's outputs on the same inputs
(parity, no labels needed); classes and masks are also scored against the
evaluation data's labels when it has them.  A figure that does not apply to
a kind is absent, never a number that means nothing (a top-1 of a mask).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import metrics
from ..errors import StepError
from ..kinds import OutputKind
from ._scoring import accuracy_figures

# The source model's figure each kind's drop is measured from: (source figure, drop metric).
_DROPS = {
    OutputKind.CLASSES: (metrics.top_k_metric(1), metrics.ACCURACY_DROP),
    OutputKind.MASK: (metrics.MEAN_IOU, metrics.IOU_DROP),
}


@dataclass(frozen=True)
class Scoring:
    """How to read one output: its kind, the input layout its map follows, top-k and a mask's threshold."""

    kind: OutputKind
    layout: str = "NHWC"
    top_k: int = 1
    threshold: float = metrics.DEFAULT_THRESHOLD

    # --- before anything runs ------------------------------------------------------------

    def check_shape(self, shape: list | None, *, what: str) -> None:
        """The model's declared output shape can hold this kind; a StepError that says what to do otherwise."""
        if shape is None:
            return
        rank = len(shape)
        fix = "set models -> <model> -> io -> output -> kind to what the output holds (tensor fits any output)"
        if self.kind is OutputKind.EMBEDDING and rank != 2:
            raise StepError(
                f"{what}: an embedding output has shape (samples, dimensions), but the model's output is {_shown(shape)}: {fix}"
            )
        if self.kind is OutputKind.MASK and rank not in (3, 4):
            raise StepError(
                f"{what}: a mask output is a map of shape (samples, height, width) with an optional class axis "
                f"({self.layout}), but the model's output is {_shown(shape)}: {fix}"
            )

    def check_labels(self, outputs: np.ndarray, labels: np.ndarray | None, *, what: str) -> None:
        if labels is None or self.kind is not OutputKind.MASK:
            return
        mask_shape = self.mask(outputs[:1]).shape[1:]
        if tuple(labels.shape[1:]) != tuple(mask_shape):
            raise StepError(
                f"{what}: the labels y are {tuple(labels.shape[1:])} class ids per sample but the model's mask is "
                f"{tuple(mask_shape)} (height, width): give labels at the output's resolution"
            )

    # --- figures ------------------------------------------------------------------------

    def mask(self, outputs: np.ndarray) -> np.ndarray:
        """Class ids per pixel, (samples, height, width): argmax over the class axis, or a one-channel map thresholded."""
        if outputs.ndim == 4:
            axis = 1 if self.layout == "NCHW" else 3
            if outputs.shape[axis] > 1:
                return np.argmax(outputs, axis=axis)
            outputs = np.squeeze(outputs, axis=axis)
        return (outputs >= self.threshold).astype(np.int64)

    def labelled(self, outputs: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
        """Figures against the labels; none without labels or for kinds that have none."""
        if labels is None:
            return {}
        if self.kind is OutputKind.CLASSES:
            return accuracy_figures(outputs, labels, self.top_k)
        if self.kind is OutputKind.MASK:
            predicted = self.mask(outputs)
            return {metrics.MEAN_IOU: mean_iou(predicted, labels), metrics.PIXEL_ACCURACY: float(np.mean(predicted == labels))}
        return {}

    def condition(self, outputs: np.ndarray, labels: np.ndarray | None, condition: str) -> dict[str, float]:
        """The headline labelled figure (top-1 or mean IoU) on inputs changed by a condition."""
        if labels is None or self.kind not in _DROPS:
            return {}
        headline = _DROPS[self.kind][0]
        figures = Scoring(self.kind, self.layout, 1, self.threshold).labelled(outputs, labels)
        return {metrics.condition_metric(condition, self.kind): figures[headline]}

    def drop(self, source: dict, figures: dict) -> dict[str, float]:
        """The source model's headline figure minus the artifact's, where both were measured."""
        if self.kind not in _DROPS:
            return {}
        headline, drop = _DROPS[self.kind]
        if headline not in source or headline not in figures:
            return {}
        return {drop: source[headline] - figures[headline]}

    def parity(self, outputs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        """How closely an artifact reproduces its source model's outputs on the same inputs."""
        a = outputs.reshape(len(outputs), -1).astype(np.float64)
        b = reference.reshape(len(reference), -1).astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = np.where(norms > 0, np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
        figures = {
            metrics.MAX_ABS_ERROR: float(np.max(np.abs(a - b))),
            metrics.COSINE_SIMILARITY: float(np.mean(cosine)),
        }
        if self.kind is OutputKind.CLASSES:
            figures[metrics.TOP1_AGREEMENT] = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
            return figures
        figures[metrics.SNR_DB] = snr_db(a, b)
        if self.kind is OutputKind.EMBEDDING:
            figures[metrics.WORST_COSINE_SIMILARITY] = float(np.min(cosine))
        if self.kind is OutputKind.MASK:
            figures[metrics.MASK_AGREEMENT] = float(np.mean(self.mask(outputs) == self.mask(reference)))
        return figures


def mean_iou(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Intersection over union per class over every pixel of every sample, averaged over the classes present in
    the labels or the prediction (a class in neither has no union and no IoU)."""
    labels = labels.astype(np.int64)
    predicted = predicted.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise StepError(f"mask labels must be class ids from 0; the evaluation labels hold {int(labels.min())}")
    classes = int(max(labels.max(initial=0), predicted.max(initial=0))) + 1
    confusion = np.bincount((labels * classes + predicted).ravel(), minlength=classes * classes).reshape(classes, classes)
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    present = union > 0
    return float(np.mean(intersection[present] / union[present])) if present.any() else 1.0


def snr_db(outputs: np.ndarray, reference: np.ndarray) -> float:
    """10*log10(signal energy / error energy) over all samples, clipped to +-SNR_CAP_DB (an exact match is the cap)."""
    signal = float(np.sum(np.square(reference, dtype=np.float64)))
    noise = float(np.sum(np.square(np.asarray(outputs, np.float64) - reference)))
    cap = metrics.SNR_CAP_DB
    if noise == 0.0:
        return cap
    if signal == 0.0:
        return -cap
    return float(np.clip(10.0 * np.log10(signal / noise), -cap, cap))


def _shown(shape: list) -> str:
    return "(" + ", ".join("?" if d in (None, -1) else str(d) for d in shape) + ")"
