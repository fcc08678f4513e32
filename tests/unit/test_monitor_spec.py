"""The spec's monitor: section and staged rollouts: defaults, overrides, and bad settings named at their line."""
from __future__ import annotations

from modelmake.monitor.settings import HOLD, ROLLBACK, MonitorSettings
from modelmake.spec import load_plan
from modelmake.spec.compiler import build_settings_digest
from modelmake.yamlfile import load_yaml

from tests.support.spec_workspace import VALID_SPEC, make_workspace, spec_problems

STAGED = """\
publish:
  channels:
    stable:
      previous: 1.3.0
      rollout:
        steps: [5, 25, 50, 100]
        min_devices: 800
        guardrails: {latency: rollback, frame_rate: rollback}
"""


def plan_with(tmp_path, extra: str):
    return load_plan(make_workspace(tmp_path, VALID_SPEC + extra), environ={})


def test_without_a_monitor_section_the_defaults_apply(tmp_path):
    assert plan_with(tmp_path, "").monitor == MonitorSettings()


def test_monitor_settings_override_their_defaults(tmp_path):
    monitor = plan_with(tmp_path, "monitor: {max_psi: 0.1, min_devices: 20, max_js_distance: 0.2}\n").monitor
    assert (monitor.max_psi, monitor.min_devices, monitor.max_js_distance) == (0.1, 20, 0.2)
    assert monitor.min_labelled == MonitorSettings().min_labelled


def test_a_bad_monitor_setting_is_named_at_its_line(tmp_path):
    [problem] = spec_problems(make_workspace(tmp_path, VALID_SPEC + "monitor:\n  confidence: 1.5\n  min_devices: 10\n"))
    assert problem.startswith("models.yaml:") and "monitor -> confidence" in problem and "1.5" in problem
    [problem] = spec_problems(make_workspace(tmp_path / "b", VALID_SPEC + "monitor: {max_psy: 0.1}\n"))
    assert "unknown key 'max_psy'; did you mean 'max_psi'?" in problem


def test_a_staged_rollout_offers_its_first_step_and_declares_its_guardrails(tmp_path):
    publish = plan_with(tmp_path, STAGED).publish
    assert publish.channels["stable"]["digits"].rollout_basis_points == 500
    policy = publish.rollouts["stable"]["digits"]
    assert policy.steps == (500, 2500, 5000, 10_000) and policy.min_devices == 800
    assert policy.action("latency") == ROLLBACK and policy.action("drift") == HOLD


def test_a_plain_rollout_percentage_is_no_staged_rollout(tmp_path):
    publish = plan_with(tmp_path, "publish:\n  channels:\n    stable: {rollout: 10, previous: 1.3.0}\n").publish
    assert publish.channels["stable"]["digits"].rollout_basis_points == 1000 and not publish.rollouts


def test_steps_that_fall_or_an_unknown_action_are_refused_at_their_line(tmp_path):
    [problem] = spec_problems(make_workspace(tmp_path, VALID_SPEC + STAGED.replace("[5, 25, 50, 100]", "[50, 25]")))
    assert "rollout -> steps: the steps must rise" in problem
    [problem] = spec_problems(make_workspace(tmp_path / "b", VALID_SPEC + STAGED.replace("latency: rollback", "latency: retreat")))
    assert "guardrails -> latency" in problem and "retreat" in problem


def test_the_monitor_section_is_not_bundle_content(tmp_path):
    (tmp_path / "a.yaml").write_text(VALID_SPEC, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(VALID_SPEC + "monitor: {max_psi: 0.1}\n", encoding="utf-8")
    digests = {build_settings_digest(load_yaml(tmp_path / name, name).data) for name in ("a.yaml", "b.yaml")}
    assert len(digests) == 1
