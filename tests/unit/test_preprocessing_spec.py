"""Input preprocessing in models.yaml: exact scale/offset fractions and per-channel mean/std, and the error for each mistake.

As in test_spec.py, each bad spec is paired with the full text of the problem reported; the line
numbers are those of VALID_SPEC (tests/support/spec_workspace.py), whose line 12 is
``      input: {layout: NHWC, scale: 1/16}``.
"""
from __future__ import annotations

from fractions import Fraction

import pytest

from modelmake.preprocessing import RatioError, parse_ratio
from modelmake.spec import load_plan

from tests.support.spec_workspace import VALID_SPEC, edit, make_workspace, spec_problems

IMAGENET = "mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375]"


def _input(tmp_path, replacement: str):
    (model,) = load_plan(make_workspace(tmp_path, edit(VALID_SPEC, ("scale: 1/16", replacement))), environ={}).models
    return model.inputs[0]


def _problems(tmp_path, old: str, new: str) -> list[str]:
    return spec_problems(make_workspace(tmp_path, edit(VALID_SPEC, (old, new))))


@pytest.mark.parametrize(
    ("text", "value"),
    [("1/127.5", Fraction(2, 255)), ("0.0078125", Fraction(1, 128)), ("-1", Fraction(-1)), ("2/255", Fraction(2, 255)),
     ("1.5/0.5", Fraction(3)), ("0.1", Fraction(1, 10))],
)
def test_a_ratio_is_exact_whatever_its_parts(text, value):
    assert parse_ratio(text) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1/2/3", "is not a number or a fraction of two numbers: write a decimal, or one over another such as 1/127.5"),
        ("one", "is not a number or a fraction of two numbers: write a decimal, or one over another such as 1/127.5"),
        ("1/0.0", "divides by zero: use a non-zero denominator"),
        ("inf", "is not a finite number: write a decimal or a fraction such as 1/127.5"),
    ],
)
def test_a_ratio_that_cannot_be_used_says_why(text, reason):
    with pytest.raises(RatioError) as caught:
        parse_ratio(text)
    assert str(caught.value) == reason


def test_a_decimal_denominator_compiles_and_keeps_its_text(tmp_path):
    spec = _input(tmp_path, "scale: 1/127.5, offset: -1")
    assert (spec.scale, spec.offset, spec.mean, spec.std) == ("1/127.5", "-1", (), ())


def test_a_number_in_exponent_notation_is_kept_in_the_plain_form_the_manifest_documents(tmp_path):
    spec = _input(tmp_path, "scale: 1e-5, offset: -2.5e1")
    assert (spec.scale, spec.offset) == ("0.00001", "-25.0")


def test_per_channel_mean_and_std_compile_to_their_text(tmp_path):
    spec = _input(tmp_path, IMAGENET)
    assert spec.mean == ("123.675", "116.28", "103.53")
    assert spec.std == ("58.395", "57.12", "57.375")
    # scale and offset stay at no change, so an app that applies both forms in turn gets the same input.
    assert (spec.layout, spec.scale, spec.offset) == ("NHWC", "1", "0")


def test_mean_alone_divides_by_one(tmp_path):
    spec = _input(tmp_path, "mean: [0.5, 1/4]")
    assert (spec.mean, spec.std) == (("0.5", "1/4"), ("1", "1"))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "scale: 1/16",
            "scale: 1/2/3",
            "models.yaml:12:36: models -> digits -> io -> input -> scale: '1/2/3' is not valid: "
            "expected a number or a fraction such as 1/255",
            id="bad-fraction",
        ),
        pytest.param(
            "scale: 1/16",
            "scale: .inf",
            "models.yaml:12:36: models -> digits -> io -> input -> scale: expected a finite number, got .inf: "
            "give a number, or leave the key out for its default",
            id="infinite-scale",
        ),
        pytest.param(
            "scale: 1/16",
            "scale: 1/0.0",
            "models.yaml:12:36: models -> digits -> io -> input -> scale: '1/0.0' divides by zero: use a non-zero denominator",
            id="zero-decimal-denominator",
        ),
        pytest.param(
            "scale: 1/16",
            f"scale: 1/16, {IMAGENET}",
            "models.yaml:12:29: models -> digits -> io -> input -> scale: cannot be combined with mean and std, "
            "which replace scale and offset: give either scale and offset or mean and std",
            id="mean-and-scale",
        ),
        pytest.param(
            "scale: 1/16",
            "offset: -1, mean: [0.5]",
            "models.yaml:12:29: models -> digits -> io -> input -> offset: cannot be combined with mean, "
            "which replaces scale and offset: give either scale and offset or mean and std",
            id="mean-and-offset",
        ),
        pytest.param(
            "scale: 1/16",
            "mean: [123.675, 116.28, 103.53], std: [58.395, 57.12]",
            "models.yaml:12:67: models -> digits -> io -> input -> std: std has 2 values and mean has 3: "
            "give both one value per channel of the model input",
            id="unequal-lengths",
        ),
        pytest.param(
            "scale: 1/16",
            "mean: [0.5, 0.5], std: [0.25, 0]",
            "models.yaml:12:59: models -> digits -> io -> input -> std -> 1: '0' divides by zero "
            "(each channel is divided by its std): use a non-zero value",
            id="std-zero",
        ),
        pytest.param(
            "scale: 1/16",
            "mean: [0.5], std: [1/0]",
            "models.yaml:12:48: models -> digits -> io -> input -> std -> 0: '1/0' divides by zero: use a non-zero denominator",
            id="std-fraction-by-zero",
        ),
        pytest.param(
            "layout: NHWC, scale: 1/16",
            "layout: NC, mean: [0.5], std: [2]",
            "models.yaml:12:27: models -> digits -> io -> input -> mean: mean and std apply per channel, and the layout NC "
            "has no channel axis: set io -> input -> layout to NHWC or NCHW, or use scale and offset",
            id="layout-without-channels",
        ),
        pytest.param(
            "scale: 1/16",
            "mean: []",
            "models.yaml:12:35: models -> digits -> io -> input -> mean: must not be empty: expected one number per channel "
            "of the input, in channel order, such as [123.675, 116.28, 103.53]; in place of scale and offset, "
            "the model's input is (x - mean[c]) / std[c]",
            id="mean-empty",
        ),
        pytest.param(
            "scale: 1/16",
            "mean: [0.5, red]",
            "models.yaml:12:41: models -> digits -> io -> input -> mean -> 1: 'red' is not valid: "
            "expected a number or a fraction such as 1/255",
            id="mean-not-a-number",
        ),
    ],
)
def test_preprocessing_mistakes(tmp_path, old, new, expected):
    assert _problems(tmp_path, old, new) == [expected]
