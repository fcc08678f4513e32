"""scikit-learn's digits data set, split the same way on every machine.

1,797 greyscale 8x8 images of handwritten digits with pixel values 0..16; it
ships inside scikit-learn, so nothing is downloaded.  The splits are disjoint:
the model trains on ``train``, quantization calibrates on ``calibration`` and
every figure in the report comes from ``test``.
"""
import numpy as np

SPLITS = ("train", "calibration", "test")
SPLIT_SEED = 20240611
TEST_FRACTION = 0.2
CALIBRATION_SAMPLES = 200
DESCRIPTION = "scikit-learn digits: 1,797 8x8 greyscale handwritten digits, pixel values 0..16"


def load_split(split: str, upscale: int = 1):
    """Return (x, y): x float32 of shape (n, 8*upscale, 8*upscale, 1) with raw pixel values, y int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; this recipe provides {', '.join(SPLITS)}")
    digits = load_digits()
    images = digits.images.astype(np.float32)
    labels = digits.target.astype(np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    train_x, calib_x, train_y, calib_y = train_test_split(
        rest_x, rest_y, test_size=CALIBRATION_SAMPLES, random_state=SPLIT_SEED, stratify=rest_y
    )
    x, y = {"train": (train_x, train_y), "calibration": (calib_x, calib_y), "test": (test_x, test_y)}[split]
    if upscale > 1:
        x = np.kron(x, np.ones((upscale, upscale), dtype=np.float32))
    return x[..., np.newaxis], y
