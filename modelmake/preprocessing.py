"""What a model's input preprocessing means, shared by the spec (which checks it) and the steps (which apply it).

Constants are exact: a decimal, or a fraction of two decimals ('1/127.5',
'0.0078125', '-1', '2/255'). The spec checks them with this parser and the
steps apply them with it, so a value the plan accepts is one the steps can
use. ``fractions.Fraction`` alone takes no decimal denominator ('1/127.5'), so
each side is read as a ``decimal.Decimal`` and the quotient kept exact.
"""
from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# The axis per-channel mean/std apply to, by layout; a layout not listed has no channel axis.
CHANNEL_AXIS = {"NHWC": -1, "NCHW": 1}

NOT_A_RATIO = "is not a number or a fraction of two numbers: write a decimal, or one over another such as 1/127.5"


class RatioError(ValueError):
    """Why a text is not a usable ratio, worded to follow the quoted text in a message."""


def ratio_text(value: str | int | float) -> str:
    """A spec value as the text the plan and the manifest keep: a YAML number in plain notation (1e-05 -> 0.00001)."""
    if isinstance(value, float) and math.isfinite(value):
        return format(Decimal(repr(value)), "f")
    return str(value)


def parse_ratio(text: str) -> Fraction:
    """The exact value of ``text``; RatioError if a part is not a finite decimal or the denominator is zero."""
    parts = str(text).split("/")
    if len(parts) > 2:
        raise RatioError(NOT_A_RATIO)
    values = []
    for part in parts:
        try:
            value = Decimal(part.strip())
        except InvalidOperation:
            raise RatioError(NOT_A_RATIO) from None
        if not value.is_finite():
            raise RatioError("is not a finite number: write a decimal or a fraction such as 1/127.5")
        values.append(Fraction(value))
    if len(values) == 2:
        if values[1] == 0:
            raise RatioError("divides by zero: use a non-zero denominator")
        return values[0] / values[1]
    return values[0]


def ratio(text: str) -> float:
    """``text``'s value as a float, rounded once from the exact value."""
    return float(parse_ratio(text))


def channel_count(layout: str, shape: list) -> int | None:
    """The size of the channel axis of a model input's shape; None where it is dynamic or the layout has none."""
    axis = CHANNEL_AXIS.get(layout)
    if axis is None or len(shape) < 2:
        return None
    return shape[axis]
