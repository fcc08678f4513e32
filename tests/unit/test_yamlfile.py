"""The YAML loader: plain data out, 1-based positions of keys and values kept, syntax errors as one line each."""
from __future__ import annotations

import textwrap

import pytest

from modelmake.errors import SpecError
from modelmake.spec import schema_problems
from modelmake.yamlfile import Position, load_yaml

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
        "models.yaml:3:1: extra: unknown key 'extra'; allowed keys: bundle, format, models, publish",
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
        "models.yaml: cannot read the file ('utf-8' codec can't decode byte 0xff in position 6: invalid start byte)",
    ]


def test_the_display_name_is_what_errors_show(tmp_path):
    (tmp_path / "targets").mkdir()
    path = tmp_path / "targets" / "pixel-8.yaml"
    path.write_text("a: [\n", encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_yaml(path, "targets/pixel-8.yaml")

    assert caught.value.problems[0].startswith("targets/pixel-8.yaml:2:1: invalid YAML: ")
    assert str(tmp_path) not in caught.value.problems[0]
