"""Bad specs and what modelmake says about them: tests/corpus/specs/, each refused with its exact message.

Each ``<name>.yaml`` there is a whole models.yaml; the specs that are too big, too odd or not text to keep in the
repository (a 50 MB file, an alias bomb, control characters, a pipe) are made by GENERATED below.  The message each
gets is ``<name>.expected``: the error as the user reads it after ``modelmake:``.  When a message changes on purpose,
rewrite the files with `pytest tests/unit/test_spec_corpus.py --regenerate-golden` and review the diff.  To add an
attack, add a spec (or a generator) and regenerate: the new case fails until its .expected file exists.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelmake.errors import SpecError
from modelmake.spec import load_plan

from tests.support.spec_workspace import VALID_SPEC, edit, make_workspace

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "specs"
# Every case is refused at once: the limits stop the big ones long before they cost anything.
SECONDS_PER_CASE = 10


def _with_text(text: str) -> Callable[[Path], object]:
    return lambda path: path.write_text(text, encoding="utf-8")


def _alias_bomb(path: Path) -> None:
    """About 1 KB that expands to 10^9 list items: each level repeats the one before ten times."""
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        aliases = ", ".join([f"*lol{level - 1}"] * 10)
        lines.append(f"lol{level}: &lol{level} [{aliases}]")
    path.write_text(VALID_SPEC + "\n".join(lines) + "\n", encoding="utf-8")


def _unknown_keys(size: int, key: str) -> Callable[[Path], object]:
    """models.yaml followed by unknown top-level keys (``key`` and a number) up to ``size`` bytes."""

    def write(path: Path) -> None:
        with path.open("w", encoding="utf-8") as handle:
            handle.write(VALID_SPEC)
            written, index = len(VALID_SPEC), 0
            while written < size:
                line = f"{key}{index}: {index}\n"
                handle.write(line)
                written, index = written + len(line), index + 1

    return write


def _deep_nesting(path: Path) -> None:
    path.write_text(VALID_SPEC.replace("    budget_overrides:", f"    description: {'[' * 5000}{']' * 5000}\n    budget_overrides:"))


GENERATED: dict[str, Callable[[Path], object]] = {
    # Control characters gave a 51-line traceback from the YAML reader.
    "control-form-feed": _with_text(edit(VALID_SPEC, ("name: acme-vision", "name: acme\x0cvision"))),
    "control-escape": _with_text(edit(VALID_SPEC, ("labels: recipes/digits_labels.txt", "labels: \x1b[31mred\x1b[0m"))),
    "control-nul": _with_text(edit(VALID_SPEC, ('version: "1.4.0"', 'version: "1.4.0\x00"'))),
    "not-utf8": lambda path: path.write_bytes(edit(VALID_SPEC, ("acme-vision", "acme-vision-caf\xe9")).encode("latin-1")),
    # 5 000 levels gave a RecursionError traceback.
    "deep-nesting": _deep_nesting,
    # 1 KB ran 120 s and took 5.3 GB.
    "alias-bomb": _alias_bomb,
    # 50 MB ran 591 s, took 6.3 GB and printed 3.3 million lines.
    "huge-unknown-keys": _unknown_keys(50 * 1024 * 1024, "unknown_key_"),
    # Small enough to read, too many keys to hold.
    "many-unknown-keys": _unknown_keys(250 * 1024, "k"),
    # A pipe blocked forever: nothing ever writes to it.
    "fifo": lambda path: os.mkfifo(path),
    "directory": lambda path: path.mkdir(),
}

STORED = sorted(path.stem for path in CORPUS.glob("*.yaml"))


def test_the_stored_and_generated_cases_have_distinct_names_and_each_its_expected_message():
    assert not set(STORED) & set(GENERATED)
    cases = set(STORED) | set(GENERATED)
    expected = {path.stem for path in CORPUS.glob("*.expected")}
    assert expected - cases == set(), "an .expected file without its case: remove it"


@pytest.mark.parametrize("name", STORED + sorted(GENERATED))
def test_a_bad_spec_is_refused_with_its_expected_message(tmp_path, request, name):
    workspace = make_workspace(tmp_path / "workspace", spec=None)
    spec = workspace / "models.yaml"
    if name in GENERATED:
        GENERATED[name](spec)
    else:
        spec.write_bytes((CORPUS / f"{name}.yaml").read_bytes())

    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_plan(workspace, environ={})
    elapsed = time.monotonic() - started
    message = f"{caught.value}\n"

    golden = CORPUS / f"{name}.expected"
    if request.config.getoption("--regenerate-golden"):
        golden.write_text(message, encoding="utf-8")
    assert golden.is_file(), f"no {golden}: run pytest {__file__} --regenerate-golden and review it"
    assert message == golden.read_text(encoding="utf-8")
    assert elapsed < SECONDS_PER_CASE
    assert str(tmp_path) not in message


PROFILE = (Path(__file__).resolve().parents[2] / "modelmake" / "profiles" / "pixel-8.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("python-tag", "targets/pixel-8.yaml:3:14: the tag !!python/object/apply:os.system is not allowed (a spec holds plain values): "
         "remove it, or quote the value"),
        ("control-escape", "targets/pixel-8.yaml:3:26: invalid YAML: control character U+001B is not allowed: remove it"),
        ("alias-bomb", "targets/pixel-8.yaml:22:14: aliases expand to more than 20000 keys, values and list items, "
         "the most a spec may hold: write the repeated parts out, or use fewer aliases"),
        ("fifo", "targets/pixel-8.yaml: not a regular file (a directory, pipe or device): make it a plain YAML file"),
    ],
)
def test_a_target_profile_has_the_same_limits(tmp_path, name, expected):
    workspace = make_workspace(tmp_path / "workspace", VALID_SPEC)
    profile = workspace / "targets" / "pixel-8.yaml"
    profile.parent.mkdir()
    if name == "python-tag":
        profile.write_text(edit(PROFILE, ("description: Google", "description: !!python/object/apply:os.system ['true'] #")))
    elif name == "control-escape":
        profile.write_text(edit(PROFILE, ("Google Pixel 8 and", "Google Pixel\x1b 8 and")))
    elif name == "alias-bomb":
        _alias_bomb(profile)
        profile.write_text(PROFILE + profile.read_text().removeprefix(VALID_SPEC))
    else:
        os.mkfifo(profile)

    with pytest.raises(SpecError) as caught:
        load_plan(workspace, environ={})

    assert caught.value.problems == [expected]
