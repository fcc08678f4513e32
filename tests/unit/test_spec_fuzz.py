"""Mutated specs: whatever the edit, compiling the spec either succeeds or raises SpecError, never anything else.

Each case applies a few random edits (a deletion, a YAML token inserted, a value replaced) to a valid spec with a
publish section; the seeds are fixed, so a failure names a case that can be run again.  The default run is small;
the slow one tries many more.
"""
from __future__ import annotations

import random

import pytest

from modelmake.errors import SpecError
from modelmake.spec import load_plan

from tests.support.spec_workspace import VALID_SPEC, make_workspace

SPEC = VALID_SPEC + (
    "publish:\n  repository: out/repo\n  channels:\n    stable: {rollout: 12.5, previous: 1.3.0}\n"
    "    beta:\n      arms:\n        control: {weight: 33.33}\n        candidate: {weight: 66.67}\n"
)
# What a careless edit or a hostile file puts in a spec: structure, anchors, tags, odd numbers and paths.
TOKENS = [
    "[", "]", "{", "}", ":", ",", "-", " ", "\n", "? ", "&a ", "*a", "<<: *a", "!!str ", "'", '"', "#", "|", ">", "%", "\t",
    ".inf", ".nan", "-1", "0", "1e400", "99999999999999999999", "0x10", "1_000", "2020-01-01", "null", "~", "true", "..", "/",
]


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        position, choice = rng.randrange(len(text)), rng.random()
        if choice < 0.3:
            text = text[:position] + text[position + rng.randint(1, 8):]
        elif choice < 0.7:
            text = text[:position] + rng.choice(TOKENS) + text[position:]
        else:
            # The value of the key on this line, replaced.
            line_start = text.rfind("\n", 0, position) + 1
            line_end = text.find("\n", position) % (len(text) + 1)
            colon = text.find(": ", line_start, line_end)
            if colon >= 0:
                text = text[: colon + 2] + rng.choice(TOKENS) + text[line_end:]
    return text


def compile_mutants(tmp_path, seed: int, cases: int) -> None:
    rng = random.Random(seed)
    workspace = make_workspace(tmp_path / "workspace", SPEC)
    for case in range(cases):
        text = mutate(SPEC, rng)
        (workspace / "models.yaml").write_text(text, encoding="utf-8")
        try:
            load_plan(workspace, environ={})
        except SpecError:
            pass
        except Exception as error:  # noqa: BLE001 - any other error is the bug this test looks for
            pytest.fail(f"seed {seed}, case {case}: {type(error).__name__}: {error}\n--- models.yaml\n{text}")


def test_mutated_specs_compile_or_are_refused(tmp_path):
    compile_mutants(tmp_path, seed=1, cases=300)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 6))
def test_many_mutated_specs_compile_or_are_refused(tmp_path, seed):
    compile_mutants(tmp_path, seed=seed, cases=3000)
