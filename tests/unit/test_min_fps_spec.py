"""`min_fps`: a frame-rate budget, merged like every budget and refused out of range before any model work."""
from __future__ import annotations

from modelmake import metrics
from modelmake.plan import Budget
from modelmake.spec import load_plan

from tests.support.spec_workspace import VALID_SPEC, edit, make_workspace, spec_problems


def test_min_fps_is_a_budget_merged_per_model_and_target(tmp_path):
    spec = edit(
        VALID_SPEC,
        ("max_latency_ms: 33}", "max_latency_ms: 33, min_fps: 30}"),
        ("{max_latency_ms: 10}", "{max_latency_ms: 10, min_fps: 60}"),
    )
    plan = load_plan(make_workspace(tmp_path, spec), environ={})
    budgets = {a.id: {b.key: b for b in a.budgets} for a in plan.artifacts()}
    assert budgets["digits.int8.tflite@pixel-8"]["min_fps"] == Budget(key="min_fps", metric="fps", bound="min", limit=30.0)
    assert budgets["digits.int8.tflite@snapdragon-8-gen-3"]["min_fps"].limit == 60.0


def test_a_negative_frame_rate_is_refused(tmp_path):
    spec = edit(VALID_SPEC, ("max_latency_ms: 33}", "max_latency_ms: 33, min_fps: -5}"))
    (problem,) = spec_problems(make_workspace(tmp_path, spec), None)
    assert "models -> digits -> budgets -> min_fps: min_fps is -5, out of range: fps is never below 0" in problem


def test_the_frame_rate_is_budgetable_wherever_latency_is_measured():
    assert metrics.budgetable(metrics.FPS, [metrics.SIZE_KB, metrics.LATENCY_MS])
    assert not metrics.budgetable(metrics.FPS, [metrics.SIZE_KB])
    assert metrics.fps(20.0) == 50.0 and metrics.fps(0.0) > 0
    assert metrics.builtin_metric(metrics.FPS)  # a custom metric cannot take its name


def test_a_broken_frame_rate_says_it_is_the_build_hosts():
    from modelmake.steps._selection import broken_budget

    verdict = {"metric": "fps", "key": "min_fps", "bound": "min", "limit": 30.0, "value": 20.0, "passed": False}
    assert broken_budget(verdict, None).startswith("fps is 20, under its min_fps of 30 (-33%) (the build host's frame rate")
