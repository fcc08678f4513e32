"""The YAML loader: plain data out, 1-based positions of keys and values kept, syntax errors as one line each."""
from __future__ import annotations

import os
import textwrap

import pytest

from modelmake.errors import SpecError
from modelmake.spec import schema_problems
from modelmake.yamlfile import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, Position, load_yaml

from tests.support.spec_workspace import VALID_SPEC, edit, make_workspace, spec_problems

DOCUMENT = textwrap.dedent(
    """\
    # a comment on line 1
    bundle:
      name: acme-vision
      version: "1.4.0"
    list:
      - first
      - {a: 1}
    flow: {x: 1.5, y: [a, b]}
    empty:
    quoted: '3'
    """
)


def load(tmp_path, text, name="models.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_yaml(path, name)


def yaml_problem(tmp_path, text):
    with pytest.raises(SpecError) as caught:
        load(tmp_path, text)
    return caught.value.problems


def test_the_data_is_plain_python(tmp_path):
    doc = load(tmp_path, DOCUMENT)

    assert doc.data == {
        "bundle": {"name": "acme-vision", "version": "1.4.0"},
        "list": ["first", {"a": 1}],
        "flow": {"x": 1.5, "y": ["a", "b"]},
        "empty": None,
        "quoted": "3",
    }
    assert type(doc.data["bundle"]) is dict and type(doc.data["list"]) is list
    assert type(doc.data["flow"]["x"]) is float and type(doc.data["quoted"]) is str


def test_ruamel_scalar_types_become_plain_ones(tmp_path):
    doc = load(tmp_path, "hex: 0x10\nfloat: 1.0e+3\nanchored: &yes true\nalias: *yes\nnot: false\n")

    assert doc.data == {"hex": 16, "float": 1000.0, "anchored": True, "alias": True, "not": False}
    assert [type(v) for v in doc.data.values()] == [int, float, bool, bool, bool]


def test_positions_are_one_based(tmp_path):
    doc = load(tmp_path, "format: 1\n")

    assert doc.key_positions[("format",)] == Position(line=1, column=1)
    assert doc.value_positions[("format",)] == Position(line=1, column=9)
    assert doc.value_positions[()] == Position(line=1, column=1)


def test_keys_and_values_have_their_own_positions(tmp_path):
    doc = load(tmp_path, DOCUMENT)

    assert doc.value_positions[()] == Position(2, 1)  # the document starts after the comment
    assert doc.key_positions[("bundle", "version")] == Position(4, 3)
    assert doc.value_positions[("bundle", "version")] == Position(4, 12)
    assert doc.value_positions[("bundle",)] == Position(3, 3)  # a block mapping starts at its first key
    assert doc.value_positions[("list", 0)] == Position(6, 5)
    assert doc.value_positions[("list", 1)] == Position(7, 5)
    assert doc.key_positions[("list", 1, "a")] == Position(7, 6)
    assert doc.value_positions[("list", 1, "a")] == Position(7, 9)
    assert doc.key_positions[("flow", "y")] == Position(8, 16)
    assert doc.value_positions[("flow", "y", 1)] == Position(8, 23)


def test_an_empty_value_is_placed_on_its_own_key_not_the_next_line(tmp_path):
    doc = load(tmp_path, DOCUMENT)

    assert doc.value_positions[("empty",)] == Position(9, 1) == doc.key_positions[("empty",)]


def test_position_falls_back_to_the_nearest_enclosing_node(tmp_path):
    doc = load(tmp_path, DOCUMENT)

    assert doc.position(("bundle", "signing", "key")) == Position(3, 3)
    assert doc.position(("bundle", "signing"), of_key=True) == Position(2, 1)  # the key of the nearest parent
    assert doc.position(("bundle", "name"), of_key=True) == Position(3, 3)
    assert doc.position(("bundle", "name")) == Position(3, 9)
    assert doc.position(("nowhere",)) == Position(2, 1)


def test_problem_lines_name_the_file_position_and_yaml_path(tmp_path):
    doc = load(tmp_path, DOCUMENT)

    assert doc.problem(("bundle", "version"), "bad") == "models.yaml:4:12: bundle -> version: bad"
    assert doc.problem(("bundle", "version"), "bad", of_key=True) == "models.yaml:4:3: bundle -> version: bad"
    assert doc.problem(("list", 1, "a"), "bad") == "models.yaml:7:9: list -> 1 -> a: bad"
    assert doc.problem((), "bad") == "models.yaml:2:1: (top level): bad"


def test_an_unknown_key_error_points_at_the_key(tmp_path):
    # `quantise` is a key at column 14 of line 17; its value `int8` starts at column 24.
    problems = spec_problems(make_workspace(tmp_path, edit(VALID_SPEC, ("int8: {quantize: int8}", "int8: {quantise: int8}"))))

    assert problems[0].startswith("models.yaml:17:14: models -> digits -> variants -> int8 -> quantise: unknown key")


def test_a_type_error_points_at_the_value(tmp_path):
    # `samples` is at column 68 of line 9; its value is at column 77.
    problems = spec_problems(make_workspace(tmp_path, edit(VALID_SPEC, ("samples: 200", "samples: many"))))

    assert problems == [
        "models.yaml:9:77: models -> digits -> data -> calibration -> samples: expected an integer, got a string 'many'",
    ]


def test_schema_problems_are_sorted_by_position(tmp_path):
    doc = load(tmp_path, "models: {}\nformat: 2\nextra: true\n")

    assert schema_problems(doc, "models.schema.json") == [
        "models.yaml:1:1: (top level): missing required key 'bundle'",
        "models.yaml:1:9: models: must not be empty",
        "models.yaml:2:9: format: must be 1, got 2",
        "models.yaml:3:1: extra: unknown key 'extra'; allowed keys: bundle, cache, format, models, publish",
    ]


def test_a_block_mapping_given_an_empty_value_is_reported_on_its_own_line(tmp_path):
    doc = load(tmp_path, "format: 1\nbundle:\nmodels:\n  digits: {}\n")

    assert schema_problems(doc, "models.schema.json")[0] == "models.yaml:2:1: bundle: expected a mapping, got nothing (an empty value)"


def test_merge_keys_load_and_keep_a_position(tmp_path):
    doc = load(tmp_path, "base: &base {x: 1, y: 2}\nother:\n  <<: *base\n  y: 3\n")

    assert doc.data["other"] == {"x": 1, "y": 3}
    assert doc.value_positions[("other", "y")] == Position(4, 6)
    assert doc.key_positions[("other", "x")] == Position(3, 3)  # merged in: the merging mapping


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "a:\n  name: x\n  b: 1\n  name: y\n",
            'models.yaml:4:3: invalid YAML: found duplicate key "name" with value "y" (original value: "x") '
            "in the mapping that starts on line 2; keep only one of them",
            id="duplicate-key",
        ),
        pytest.param(
            "a: {name: x, name: y}\n",
            'models.yaml:1:14: invalid YAML: found duplicate key "name" with value "y" (original value: "x"); '
            "keep only one of them",
            id="duplicate-key-same-line",
        ),
        pytest.param(
            "a:\n  l: [1, 2\n  b: 3\n",
            "models.yaml:3:4: invalid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence that starts on line 2, column 6); close the '[' opened there",
            id="unclosed-bracket",
        ),
        pytest.param(
            "a: {b: 1\n",
            "models.yaml:2:1: invalid YAML: expected ',' or '}', but got '<stream end>' "
            "(while parsing a flow mapping that starts on line 1, column 4); close the '{' opened there",
            id="unclosed-brace",
        ),
        pytest.param(
            "a: 'x\n",
            "models.yaml:2:1: invalid YAML: found unexpected end of stream "
            "(while scanning a quoted scalar that starts on line 1, column 4); close the quote opened there",
            id="unclosed-quote",
        ),
        pytest.param(
            "a:\n  b: 1\n   c: 2\n",
            "models.yaml:3:5: invalid YAML: mapping values are not allowed here; "
            "check the indentation of this line, or quote a value that contains ': '",
            id="over-indented",
        ),
        pytest.param(
            "a:\n  b: 1\n c: 2\n",
            "models.yaml:3:2: invalid YAML: expected <block end>, but found '<block mapping start>' "
            "(while parsing a block mapping); check the indentation of this line and the one before",
            id="under-indented",
        ),
        pytest.param(
            "a:\n\tb: 1\n",
            "models.yaml:2:1: invalid YAML: found character '\\t' that cannot start any token "
            "(while scanning for the next token); indent with spaces; YAML does not allow tabs",
            id="tab",
        ),
        pytest.param(
            "a: 1\n---\nb: 2\n",
            "models.yaml:2:1: invalid YAML: expected a single document in the stream but found another document; "
            "keep one YAML document in the file: remove the '---' line",
            id="two-documents",
        ),
    ],
)
def test_a_syntax_error_is_one_line_with_its_position(tmp_path, text, expected):
    assert yaml_problem(tmp_path, text) == [expected]


def test_a_missing_file(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_yaml(tmp_path / "models.yaml", "models.yaml")

    assert caught.value.problems == ["models.yaml: file not found: create it, or run `modelmake init` for a starting point"]


def test_a_file_that_is_not_utf8(tmp_path):
    (tmp_path / "models.yaml").write_bytes(b"name: \xff\n")
    with pytest.raises(SpecError) as caught:
        load_yaml(tmp_path / "models.yaml", "models.yaml")

    assert caught.value.problems == [
        "models.yaml:1:7: the file is not UTF-8 text (byte 0xff): save it as UTF-8",
    ]


def test_the_display_name_is_what_errors_show(tmp_path):
    (tmp_path / "targets").mkdir()
    path = tmp_path / "targets" / "pixel-8.yaml"
    path.write_text("a: [\n", encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_yaml(path, "targets/pixel-8.yaml")

    assert caught.value.problems[0].startswith("targets/pixel-8.yaml:2:1: invalid YAML: ")
    assert str(tmp_path) not in caught.value.problems[0]


# --- limits: a hostile file is refused before it costs anything (tests/corpus/specs/ has the attacks themselves) ---


def test_a_file_of_the_largest_size_loads_and_one_byte_more_is_refused(tmp_path):
    text = "a: 1\n"
    largest = text + "#" * (MAX_YAML_BYTES - len(text) - 1) + "\n"
    assert len(largest.encode()) == MAX_YAML_BYTES
    assert load(tmp_path, largest).data == {"a": 1}

    assert yaml_problem(tmp_path, largest + "\n") == [
        f"models.yaml: the file is larger than {MAX_YAML_BYTES // 1024} KiB, the most a spec may be: "
        "keep only the models and targets you build"
    ]


def test_nesting_up_to_the_deepest_level_loads_and_one_more_is_refused(tmp_path):
    # The top-level mapping is the first level, each list one more.
    lists = MAX_YAML_DEPTH - 1
    assert load(tmp_path, f"a: {'[' * lists}{']' * lists}\n").data["a"] is not None

    assert yaml_problem(tmp_path, f"a: {'[' * (lists + 1)}{']' * (lists + 1)}\n") == [
        f"models.yaml:1:{lists + 4}: nested more than {MAX_YAML_DEPTH} levels deep, the most a spec may be: "
        "check the brackets and the indentation"
    ]


def test_the_most_nodes_load_and_one_more_is_refused(tmp_path):
    # The top-level mapping, the key 'a' and the list are three nodes; each item one more.
    items = MAX_YAML_NODES - 3
    assert len(load(tmp_path, f"a: [{', '.join(['1'] * items)}]\n").data["a"]) == items

    [problem] = yaml_problem(tmp_path, f"a: [{', '.join(['1'] * (items + 1))}]\n")
    assert problem == (
        f"models.yaml:1:{4 + 3 * items + 1}: more than {MAX_YAML_NODES} keys, values and list items, "
        "the most a spec may hold: keep only the models and targets you build"
    )


def test_aliases_and_merge_keys_load_and_count_as_what_they_repeat(tmp_path):
    doc = load(tmp_path, "base: &base {x: 1, y: [1, 2]}\ncopy: *base\nmerged:\n  <<: *base\n  z: 3\n")
    assert doc.data == {"base": {"x": 1, "y": [1, 2]}, "copy": {"x": 1, "y": [1, 2]}, "merged": {"z": 3, "x": 1, "y": [1, 2]}}

    # Six nodes in the anchored list, repeated until the aliases alone pass the limit.
    repeats = MAX_YAML_NODES // 6
    [problem] = yaml_problem(tmp_path, "base: &base [1, 2, 3, 4, 5]\ncopies: [" + ", ".join(["*base"] * repeats) + "]\n")
    assert problem.startswith("models.yaml:2:")
    assert problem.endswith(
        f"aliases expand to more than {MAX_YAML_NODES} keys, values and list items, the most a spec may hold: "
        "write the repeated parts out, or use fewer aliases"
    )


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['true']", "!!binary aGk=", "!!str 1.0", "!custom x", "!!set {a}"])
def test_a_tag_is_refused_at_its_position(tmp_path, tag):
    shown = tag.split()[0].removeprefix("tag:yaml.org,2002:")
    assert yaml_problem(tmp_path, f"a: 1\nb: {tag}\n") == [
        f"models.yaml:2:4: the tag {shown} is not allowed (a spec holds plain values): remove it, or quote the value"
    ]


@pytest.mark.parametrize("character", [chr(code) for code in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0x80, 0x9F)])
def test_a_control_character_is_refused_at_its_position(tmp_path, character):
    assert yaml_problem(tmp_path, f"a: 1\nbb: x{character}\n") == [
        f"models.yaml:2:6: invalid YAML: control character U+{ord(character):04X} is not allowed: remove it"
    ]


def test_tabs_line_breaks_and_text_beyond_ascii_are_not_control_characters(tmp_path):
    text = "a: \"x\ty\"\r\nb: caf\u00e9 \u2603 \U0001f600\n"
    assert load(tmp_path, text).data == {"a": "x\ty", "b": "caf\u00e9 \u2603 \U0001f600"}


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_file_that_is_not_a_regular_file_is_refused_without_waiting(tmp_path, kind):
    path = tmp_path / "models.yaml"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    with pytest.raises(SpecError) as caught:
        load_yaml(path, "models.yaml")

    assert caught.value.problems == ["models.yaml: not a regular file (a directory, pipe or device): make it a plain YAML file"]
