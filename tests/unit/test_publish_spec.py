"""The spec's publish section: defaults, per-model overrides, and bad settings named at their line."""
from __future__ import annotations

from modelmake.repository.offer import BASIS_POINTS, Arm, Offer
from modelmake.spec import load_plan
from modelmake.spec.compiler import in_hundredths, percent_basis_points
from modelmake.yamlfile import load_yaml

from tests.support.spec_workspace import VALID_SPEC, make_workspace, spec_problems

PUBLISH = """\
publish:
  repository: out/repo
  expires_after_days: 7
  channels:
    stable:
      rollout: 12.5
      previous: 1.3.0
      models:
        digits: {version: 1.2.0, min_app_version: "5.1"}
    beta:
      arms:
        control: {weight: 30, version: 1.3.0}
        candidate: {weight: 70}
"""


def load(tmp_path, text):
    (tmp_path / "values.yaml").write_text(text, encoding="utf-8")
    return load_yaml(tmp_path / "values.yaml", "values.yaml")


def plan_with(tmp_path, publish: str):
    return load_plan(make_workspace(tmp_path, VALID_SPEC + publish), environ={})


def test_without_a_publish_section_every_model_goes_to_every_device_on_stable(tmp_path):
    publish = plan_with(tmp_path, "").publish
    assert publish.repository == "build/repository"
    assert not publish.on_build and publish.expires_after_days == 30
    assert dict(publish.channels) == {"stable": {"digits": Offer(version="1.4.0")}}


def test_channel_settings_apply_to_every_model_and_models_override_them(tmp_path):
    publish = plan_with(tmp_path, PUBLISH).publish
    assert publish.repository == "out/repo" and publish.expires_after_days == 7
    assert publish.channels["stable"]["digits"] == Offer(
        version="1.2.0", rollout_basis_points=1250, previous="1.3.0", min_app_version="5.1"
    )
    assert publish.channels["beta"]["digits"] == Offer(
        version="1.4.0", arms=(Arm("control", 3000, "1.3.0"), Arm("candidate", 7000, "1.4.0"))
    )


def test_arms_that_do_not_add_up_to_100_are_reported_at_the_arms(tmp_path):
    spec = VALID_SPEC + PUBLISH.replace("weight: 70", "weight: 60")
    assert spec_problems(make_workspace(tmp_path, spec)) == [
        "models.yaml:35:9: publish -> channels -> beta -> arms: "
        "the arms' weights add up to 90, not 100: adjust them so that every device falls in one arm"
    ]


def test_an_override_for_an_unknown_model_names_the_known_ones(tmp_path):
    spec = VALID_SPEC + PUBLISH.replace("digits: {version", "digit: {version")
    assert spec_problems(make_workspace(tmp_path, spec)) == [
        "models.yaml:32:9: publish -> channels -> stable -> models -> digit: there is no model 'digit' in models: offer one of digits"
    ]


def test_previous_equal_to_the_offered_version_is_refused(tmp_path):
    spec = VALID_SPEC + PUBLISH.replace("previous: 1.3.0", "previous: 1.2.0")
    assert spec_problems(make_workspace(tmp_path, spec)) == [
        "models.yaml:30:17: publish -> channels -> stable -> previous: previous is the offered version 1.2.0 itself: "
        "name the version devices outside the rollout get, or remove previous"
    ]


def test_a_rollout_over_100_percent_is_a_schema_error(tmp_path):
    spec = VALID_SPEC + PUBLISH.replace("rollout: 12.5", "rollout: 150")
    [problem] = spec_problems(make_workspace(tmp_path, spec))
    assert problem.startswith("models.yaml:29:16: publish -> channels -> stable -> rollout: ")
    assert "150" in problem and "100" in problem


def test_every_percentage_with_two_decimals_is_accepted_as_its_basis_points(tmp_path):
    # YAML reads 1.15, 0.07 or 33.33 as floats that are not exact hundredths: each of the 10 001 texts counts.
    texts = [f"{points // 100}.{points % 100:02d}" for points in range(BASIS_POINTS + 1)]
    values = load(tmp_path, f"values: [{', '.join(texts)}]\n").data["values"]

    assert all(in_hundredths(value) for value in values)
    assert [percent_basis_points(value) for value in values] == list(range(BASIS_POINTS + 1))


def test_a_percentage_with_three_decimals_is_refused_by_the_rule():
    # Every value from 0.001 to 99.999 whose third decimal is not 0.
    refused = [points / 1000 for points in range(100_000) if points % 10]
    assert not any(in_hundredths(value) for value in refused)


def test_shares_the_schema_refused_are_offered(tmp_path):
    spec = VALID_SPEC + PUBLISH.replace("rollout: 12.5", "rollout: 1.15").replace(
        "control: {weight: 30, version: 1.3.0}\n        candidate: {weight: 70}",
        "control: {weight: 33.33, version: 1.3.0}\n        candidate: {weight: 33.33}\n        holdout: {weight: 33.34}",
    )
    channels = plan_with(tmp_path, spec.removeprefix(VALID_SPEC)).publish.channels
    assert channels["stable"]["digits"].rollout_basis_points == 115
    assert [arm.basis_points for arm in channels["beta"]["digits"].arms] == [3333, 3333, 3334]
    small = plan_with(tmp_path / "small", PUBLISH.replace("rollout: 12.5", "rollout: 0.07")).publish.channels
    assert small["stable"]["digits"].rollout_basis_points == 7
