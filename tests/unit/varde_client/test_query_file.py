"""Query documents for ``varde query FILE``: JSON or YAML, strict, errors with line and fix."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from varde.query import parse_query
from varde_client.query_file import QueryFileError, format_of, parse_query_text, read_query_file

QUERY = {
    "project": "nsclc-feasibility",
    "cohort": {
        "op": "and",
        "args": [
            {"op": "startswith", "field": "topography", "prefix": "C34"},
            {"op": ">=", "field": "diagnosis_date", "value": "2020-01-01"},
        ],
    },
    "statistic": {"kind": "histogram", "field": "stage"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}
YAML_QUERY = """\
project: nsclc-feasibility
cohort:
  op: and
  args:
    - {op: startswith, field: topography, prefix: C34}
    - {op: ">=", field: diagnosis_date, value: 2020-01-01}
statistic: {kind: histogram, field: stage}
privacy: {mode: dp, epsilon: 0.5}
"""


def test_yaml_and_json_give_the_same_query_and_dates_stay_strings() -> None:
    from_yaml = parse_query_text(YAML_QUERY, name="q.yaml")
    assert from_yaml == parse_query_text(json.dumps(QUERY), name="q.json") == QUERY
    assert parse_query(from_yaml).cohort is not None  # a valid query, date as the model wants


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("q.json", '{"project": "p",\n "statistic": {"kind": "count"},}', "line 2 column 33"),
        ("q.json", '{"project": "p", "project": "q"}', "key 'project' appears twice"),
        ("q.yaml", "project: p\nproject: q\n", "key 'project' appears twice"),
        ("q.yaml", "project: p\n  statistic: [\n", "not valid YAML"),
        ("q.yaml", "op: >=\n", "not valid YAML"),
        ("q.json", "  \n", "q.json is empty"),
        ("q.yaml", "- project\n- p\n", "not a list"),
        ("stdin", '["project"]', "one JSON object"),
    ],
)
def test_bad_documents_are_refused_naming_where(name: str, text: str, message: str) -> None:
    with pytest.raises(QueryFileError) as err:
        parse_query_text(text, name=name)
    assert message in str(err.value) and str(err.value).startswith(name)
    assert "\n" not in str(err.value)


def test_a_json_document_is_never_read_by_yaml_rules() -> None:
    trailing = '{"project": "p", "statistic": {"kind": "count"},}'
    assert isinstance(yaml.safe_load(trailing), dict)  # YAML would take it
    for name in ("stdin", "query.txt", "q.json"):
        with pytest.raises(QueryFileError, match="not valid JSON"):
            parse_query_text(trailing, name=name)
    assert format_of("q.YML", "{") == "yaml" and format_of("stdin", "  project: p") == "yaml"


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.text(max_size=8)))
def test_any_json_object_reads_back_unchanged(doc: dict[str, object]) -> None:
    text = json.dumps(doc)
    assert parse_query_text(text, name="q.json") == parse_query_text(text, name="stdin") == doc


def test_files_and_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(YAML_QUERY)
    assert read_query_file(str(path)) == QUERY
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(QUERY)))
    assert read_query_file("-") == QUERY
    with pytest.raises(QueryFileError, match="no such file: .*nope.json — check the path"):
        read_query_file(str(tmp_path / "nope.json"))
    with pytest.raises(QueryFileError, match="is a directory"):
        read_query_file(str(tmp_path))
    (tmp_path / "latin1.json").write_bytes('{"project": "å"}'.encode("latin-1"))
    with pytest.raises(QueryFileError, match="not UTF-8"):
        read_query_file(str(tmp_path / "latin1.json"))
