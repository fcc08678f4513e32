"""The conditions phones meet, applied to raw evaluation inputs before the model's preprocessing.

Raw inputs are what a camera pipeline hands over (pixel values where 0 is
black), so these transforms work in that space: dim scales light down, blur
is a Gaussian over the spatial axes, noise is Gaussian sensor noise.  They are
deterministic: the same data and strength give the same inputs.
"""
from __future__ import annotations

import math

import numpy as np

NOISE_SEED = 0
SPATIAL_AXES = {"NHWC": (1, 2), "NCHW": (2, 3), "NC": ()}


def dim(x: np.ndarray, strength: float) -> np.ndarray:
    """Lose ``strength`` of the light: 0.6 leaves 40% of every pixel value."""
    return x * (1.0 - strength)


def blur(x: np.ndarray, sigma: float, layout: str) -> np.ndarray:
    """Separable Gaussian blur with ``sigma`` in pixels, edges extended."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = x.astype(np.float64)
    for axis in SPATIAL_AXES[layout]:
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        out = sum(w * np.take(padded, range(i, i + out.shape[axis]), axis=axis) for i, w in enumerate(kernel))
    return out.astype(x.dtype)


def noise(x: np.ndarray, strength: float) -> np.ndarray:
    """Add Gaussian noise with sigma = ``strength`` of the data's value range, clipped to that range."""
    low, high = float(x.min()), float(x.max())
    rng = np.random.default_rng(NOISE_SEED)
    return np.clip(x + rng.normal(0.0, strength * (high - low), size=x.shape), low, high).astype(x.dtype)


def apply(x: np.ndarray, condition: str, strength: float, layout: str) -> np.ndarray:
    if condition == "dim":
        return dim(x, strength)
    if condition == "blur":
        return blur(x, strength, layout)
    if condition == "noise":
        return noise(x, strength)
    raise ValueError(f"unknown condition {condition!r}")
