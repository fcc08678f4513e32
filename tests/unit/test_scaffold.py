"""The workspace `modelmake init` writes: the example's dodo.py, a spec and a profile of its own that build as they stand."""
from pathlib import Path

from modelmake import cli
from modelmake.spec import load_plan
from modelmake.spec.profiles import BUILTIN_PROFILES

REPO = Path(__file__).resolve().parents[2]


def test_the_example_dodo_is_the_one_init_writes():
    # Two copies, because a pip-installed engine cannot reach this repository's root; this keeps them one.
    assert (REPO / "dodo.py").read_bytes() == (REPO / "modelmake" / "scaffold" / "dodo.py").read_bytes()


def test_init_scaffolds_a_profile_of_its_own_that_the_starter_uses(tmp_path):
    assert cli.main(["init", str(tmp_path / "starter")]) == 0
    plan = load_plan(tmp_path / "starter", environ={})
    own = [target for target in plan.targets.values() if not target.profile_file.startswith("builtin:")]
    assert [(t.name, t.profile_file) for t in own] == [("exynos-2400", "targets/exynos-2400.yaml")]
    assert not (BUILTIN_PROFILES / "exynos-2400.yaml").exists(), "the starter's own profile is one modelmake does not ship"
    modeline = (tmp_path / "starter" / "targets" / "exynos-2400.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert modeline == f"# yaml-language-server: $schema={(REPO / 'modelmake' / 'schema' / 'target.schema.json').as_posix()}"


def test_the_starter_prefers_the_smaller_variant_on_generic_phones(tmp_path):
    cli.main(["init", str(tmp_path / "starter")])
    plan = load_plan(tmp_path / "starter", environ={})
    tflite = [a for a in plan.artifacts() if a.target == "android-arm64-cpu" and a.format == "tflite"]
    assert [a.precision.value for a in sorted(tflite, key=lambda a: a.preference)] == ["int8", "fp32"]


def test_the_example_uses_a_profile_of_its_own():
    plan = load_plan(REPO, environ={})
    own = {t.name: t.profile_file for t in plan.targets.values() if not t.profile_file.startswith("builtin:")}
    assert own == {"dimensity-9300": "targets/dimensity-9300.yaml"}
    assert not (BUILTIN_PROFILES / "dimensity-9300.yaml").exists()
