"""The page's pure scripts run in Node: the queries they build are valid Varde queries.

``criteria.js`` turns the form into query documents and ``results.js`` makes funnels
non-increasing the way the SDK does; both run here under Node (skipped, saying why,
where it is missing) and their output is checked with the Python side's own code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from varde.query import Query, parse_query
from varde_client.consistency import nonincreasing

NODE = shutil.which("node")
STATIC = Path(__file__).resolve().parents[4] / "gateway" / "web" / "static"
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

SCHEMA = {
    name: {"name": name, "kind": kind}
    for name, kind in [
        ("topography", "categorical"),
        ("stage", "categorical"),
        ("egfr", "categorical"),
        ("pdl1_tps", "categorical"),
        ("age_at_diagnosis", "integer"),
        ("diagnosis_year", "integer"),
        ("diagnosis_date", "date"),
        ("region", "categorical"),
        ("days_to_treatment", "integer"),
    ]
}


def run_js(body: str, data: Any) -> Any:
    """Run ``body`` (an async function body given ``data``) as an ES module; its JSON result."""
    script = (
        f'import * as criteria from "{(STATIC / "criteria.js").as_uri()}";\n'
        f'import * as results from "{(STATIC / "results.js").as_uri()}";\n'
        f"const data = {json.dumps(data)};\n"
        f"const out = await (async () => {{ {body} }})();\n"
        "process.stdout.write(JSON.stringify(out));\n"
    )
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def readme_state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "project": "nsclc-feasibility",
        "title": "",
        "topography": ["C34"],
        "morphology": [],
        "stage": ["IV"],
        "biomarkers": {"egfr": "positive"},
        "age": {"min": "18", "max": "75"},
        "year": {"from": "2020", "to": ""},
        "sex": "",
        "treatment": [],
        "extra": [],
        "exclude": [],
        "epsilon": "0.5",
        "funnel": True,
        "survival": True,
    }
    state.update(changes)
    return state


BUILD = "return criteria.buildQueries(data.state, data.fields, data.units);"


def test_the_readme_question_builds_valid_queries() -> None:
    out = run_js(BUILD, {"state": readme_state(), "fields": SCHEMA, "units": []})
    count = parse_query(out["count"])
    assert count.statistic.kind == "count" and count.budget is not None
    assert out["count"]["cohort"]["args"] == [
        {"op": "startswith", "field": "topography", "prefix": "C34"},
        {"op": "eq", "field": "stage", "value": "IV"},
        {"op": "eq", "field": "egfr", "value": "positive"},
        {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
        {"op": ">=", "field": "diagnosis_year", "value": 2020},
    ]
    funnel = parse_query(out["funnel"])
    assert [s.label for s in funnel.statistic.steps][:2] == ["Tumour site C34", "Stage IV"]  # type: ignore[union-attr]
    assert parse_query(out["survival"]).statistic.kind == "survival"


def test_patients_are_counted_where_the_query_language_offers_it() -> None:
    units = ["tumours", "patients"]
    out = run_js(BUILD, {"state": readme_state(), "fields": SCHEMA, "units": units})
    for kind in ("count", "funnel", "survival"):
        assert out[kind]["unit"] == "patients"
        if "unit" in Query.model_fields:  # issue 11's option: the documents validate with it
            assert parse_query(out[kind]).unit == "patients"  # type: ignore[attr-defined]
    assert (
        "unit"
        not in run_js(BUILD, {"state": readme_state(), "fields": SCHEMA, "units": []})["count"]
    )


def test_exclusions_and_other_fields_become_valid_criteria() -> None:
    state = readme_state(
        topography=["C34", "C34.1"],
        extra=[{"field": "diagnosis_date", "min": "2020-01-01", "max": "", "value": ""}],
        exclude=[
            {"field": "region", "value": "NO02", "min": "", "max": ""},
            {"field": "days_to_treatment", "value": "", "min": "", "max": "30"},
        ],
    )
    out = run_js(BUILD, {"state": state, "fields": SCHEMA, "units": []})
    args = out["count"]["cohort"]["args"]
    assert args[0]["op"] == "or" and len(args[0]["args"]) == 2
    assert args[-1]["op"] == "not" and args[-1]["arg"]["op"] == "or"
    parse_query(out["count"])
    parse_query(out["funnel"])


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"topography": [], "stage": [], "biomarkers": {}, "age": {"min": "", "max": ""},
          "year": {"from": "", "to": ""}}, "Add at least one inclusion criterion"),
        ({"age": {"min": "80", "max": "18"}}, "lower bound 80 is above the upper bound 18"),
        ({"year": {"from": "2024", "to": "2020"}}, "bound 2024 is above the upper bound 2020"),
        ({"age": {"min": "18.5", "max": ""}}, '"18.5" is not a whole number'),
        ({"epsilon": "0"}, "is not a positive number"),
        ({"epsilon": "true"}, "is not a positive number"),
        ({"project": ""}, "Choose a project"),
        ({"extra": [{"field": "diagnosis_date", "min": "2024-01-01", "max": "2020-01-01"}]},
         "the start 2024-01-01 is after the end 2020-01-01"),
        ({"extra": [{"field": "region", "value": ""}]}, "region: choose a value"),
        ({"extra": [{"field": "", "value": ""}]}, "choose a field"),
        ({"extra": [{"field": "region", "value": "NO02"}] * 9}, "at most 12 criteria"),
    ],
)  # fmt: skip
def test_bad_input_is_named_in_plain_words(changes: dict[str, Any], problem: str) -> None:
    out = run_js(BUILD, {"state": readme_state(**changes), "fields": SCHEMA, "units": []})
    assert any(problem in p for p in out["problems"]), out


def test_repeated_criteria_get_distinct_funnel_labels() -> None:
    row = {"field": "region", "value": "NO02", "min": "", "max": ""}
    out = run_js(BUILD, {"state": readme_state(extra=[row, row]), "fields": SCHEMA, "units": []})
    labels = [s["label"] for s in out["funnel"]["statistic"]["steps"]]
    assert labels[-2:] == ["region = NO02", "region = NO02 (2)"]
    parse_query(out["funnel"])


def test_funnels_are_made_non_increasing_as_the_sdk_makes_them() -> None:
    rng = np.random.default_rng(14)
    cases = [
        (rng.normal(50, 30, size=n).round(2).tolist(), rng.uniform(0.5, 9, size=n).tolist())
        for n in rng.integers(1, 12, size=60)
    ]
    got = run_js(
        "return data.map(([v, s]) => results.nonIncreasing(v, s, 0));", [list(c) for c in cases]
    )
    for (values, stds), fitted in zip(cases, got, strict=True):
        want = nonincreasing(values, stds, lower=0.0)
        assert np.allclose(fitted, want, atol=1e-9), (values, fitted, want.tolist())


def test_csv_quotes_and_disarms_formulas() -> None:
    out = run_js(
        'return results.toCsv(["a", "b"], [["=HYPERLINK(1)", 3], ["x,\\"y\\"", -2.5]]);', None
    )
    assert out == 'a,b\r\n\'=HYPERLINK(1),3\r\n"x,""y""",-2.5\r\n'


def test_refusals_are_put_in_plain_words() -> None:
    rows = [
        {"status": "field_not_available", "message": "site 'x' does not expose field(s) pdl1_tps"},
        {"status": "budget_exhausted", "message": ""},
        {"status": "awaiting_approval", "message": ""},
        {"status": "unavailable", "message": "timeout"},
    ]  # fmt: skip
    words = run_js("return data.map(results.plainRefusal);", rows)
    assert "does not share pdl1_tps" in words[0]
    assert "budget at this site is used up" in words[1]
    assert "approve" in words[2]
    assert "offline" in words[3]
