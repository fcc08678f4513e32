"""The enumerations the spec, the plan and the steps share: one list each."""
from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """What a variant's ``quantize`` asks for; the schema's enum is generated from this list."""

    FP32 = "fp32"  # no quantization
    FP16 = "fp16"  # float16 weights
    DYNAMIC_INT8 = "dynamic_int8"  # int8 weights, float activations
    INT8 = "int8"  # full integer, calibrated on the calibration data

    @property
    def weights_int8(self) -> bool:
        return self in (Precision.DYNAMIC_INT8, Precision.INT8)


class OutputKind(StrEnum):
    """What a model's output means, which decides the figures an evaluation can give."""

    CLASSES = "classes"  # class scores: top-k accuracy against integer labels
    MASK = "mask"  # a per-pixel segmentation map: class scores per pixel, or one probability map
    EMBEDDING = "embedding"  # one vector per sample, compared with the source's by cosine
    BOXES = "boxes"  # a detection head's box coordinates: parity, and a custom metric for mAP
    SCORES = "scores"  # a detection head's per-box scores: parity, and a custom metric for mAP
    TENSOR = "tensor"  # anything else: parity with the source model only

    @property
    def has_labels(self) -> bool:
        """Whether evaluation data may carry labels for this kind (class ids per sample or per pixel)."""
        return self in (OutputKind.CLASSES, OutputKind.MASK)
