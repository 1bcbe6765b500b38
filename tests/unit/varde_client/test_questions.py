"""Statistic builders and the client's statistic methods: validated queries, errors before sending.

The client tests stand in for the gateway with httpx's MockTransport for
``GET /v1/schema`` (a schema that differs from the one the client was built
with, so the test sees which one decides) and record what ``query``/``preview``
would have sent.
"""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from varde.query import Query, parse_query
from varde.schema import FIELDS
from varde_client import VardeClient, questions
from varde_client.cohort import Field, InvalidCriterion, UnknownCategory, UnknownField

PROJECT = "nsclc-feasibility"
LUNG = Field("topography").startswith("C34") & (Field("stage") == "IV")


def _wire(q: Query) -> dict[str, Any]:
    return q.model_dump(mode="json", exclude_none=True)


def test_count_builds_the_query_the_readme_writes_by_hand() -> None:
    q = questions.count(PROJECT, LUNG, by="sex", epsilon=0.5, sites=["oslo"], timeout_s=5)
    assert _wire(q) == _wire(
        parse_query(
            {
                "project": PROJECT,
                "cohort": {
                    "op": "and",
                    "args": [
                        {"op": "startswith", "field": "topography", "prefix": "C34"},
                        {"op": "eq", "field": "stage", "value": "IV"},
                    ],
                },
                "statistic": {"kind": "count"},
                "group_by": ["sex"],
                "privacy": {"mode": "dp", "epsilon": 0.5},
                "sites": ["oslo"],
                "timeout_s": 5.0,
            }
        )
    )


def test_every_statistic_has_a_builder() -> None:
    built = {
        "count": questions.count(PROJECT, epsilon=0.1),
        "survival": questions.survival(PROJECT, LUNG, months=36, interval=6, rho=0.01),
        "funnel": questions.funnel(
            PROJECT,
            [("lung", Field("cancer_type") == "lung"), ("IV", Field("stage") == "IV")],
            epsilon=0.3,
        ),
        "quantile": questions.quantile(
            PROJECT, "age_at_diagnosis", range(0, 111, 5), alphas=[0.25, 0.5], epsilon=0.2
        ),
        "crosstab": questions.crosstab(PROJECT, ["sex", "stage"], LUNG, aggregate=True),
        "mean": questions.mean(PROJECT, "age_at_diagnosis", 0, 110, by=["sex"], epsilon=0.2),
        "sum": questions.sum(PROJECT, "days_to_treatment", 0, 365, LUNG, epsilon=0.2),
        "histogram": questions.histogram(
            PROJECT, "egfr", LUNG, categories=["positive", "negative"], epsilon=0.2
        ),
    }
    for kind, q in built.items():
        assert isinstance(q, Query) and q.statistic.kind == kind
        assert parse_query(_wire(q)) == q  # what is sent is what the gateway parses
    assert built["survival"].statistic.months() == [6, 12, 18, 24, 30, 36]
    assert built["survival"].privacy.model_dump() == {"mode": "zcdp", "rho": 0.01}
    assert built["funnel"].statistic.labels() == ["lung", "IV"]
    assert built["quantile"].statistic.candidates[-1] == 110.0
    assert built["crosstab"].privacy.mode == "aggregate"
    assert built["histogram"].statistic.labels() == ["positive", "negative"]
    numeric = questions.histogram(PROJECT, "age_at_diagnosis", bins=[0, 50, 110], epsilon=0.1)
    assert numeric.statistic.labels() == ["[0, 50)", "[50, 110)"]


@pytest.mark.parametrize(
    ("privacy", "error", "message"),
    [
        ({}, ValueError, r"exactly one of epsilon=, rho=, accuracy= or aggregate=True$"),
        ({"accuracy": 5, "epsilon": 0.1}, ValueError, r"\(got epsilon= and accuracy=\)"),
        ({"accuracy": "5"}, TypeError, "accuracy is a number"),
        ({"epsilon": 0.1, "zcdp": True}, ValueError, "zcdp= and cohort_size= go with accuracy="),
        ({"accuracy": 5, "cohort_size": 2.5}, TypeError, "cohort_size is a whole number"),
        ({"epsilon": 0.1, "rho": 0.1}, ValueError, r"\(got epsilon= and rho=\)"),
        ({"epsilon": 0.1, "aggregate": True}, ValueError, "got epsilon= and aggregate=True"),
        ({"epsilon": "0.5"}, TypeError, "epsilon is a number"),
        ({"epsilon": True}, TypeError, "epsilon is a number"),
        ({"rho": 0}, ValueError, "positive finite"),
        ({"epsilon": float("inf")}, ValueError, "positive finite"),
        ({"aggregate": "yes"}, TypeError, "True or False"),
        ({"epsilon": 0.1, "timeout_s": "5"}, TypeError, "timeout_s is a number"),
        ({"epsilon": 0.1, "sites": "oslo"}, None, None),
        ({"epsilon": 0.1, "eps": 1}, TypeError, r"unknown option\(s\) \['eps'\]"),
    ],
)
def test_privacy_is_exactly_one_and_never_coerced(
    privacy: dict[str, Any], error: type[Exception] | None, message: str | None
) -> None:
    if error is None:  # one site given as a string is that site, not its letters
        assert questions.count(PROJECT, **privacy).sites == ["oslo"]
        return
    with pytest.raises(error, match=message):
        questions.count(PROJECT, **privacy)


def test_an_accuracy_target_replaces_the_budget() -> None:
    """``accuracy=`` asks each site for its least epsilon (or rho) meeting +-x at 95%."""
    assert questions.count(PROJECT, LUNG, accuracy=10).model_dump(mode="json")["privacy"] == {
        "mode": "dp",
        "accuracy": {"pm95": 10.0, "cohort_size": None},
    }
    zcdp = questions.count(PROJECT, accuracy=10, zcdp=True).model_dump(mode="json")["privacy"]
    assert zcdp["mode"] == "zcdp"
    curve = questions.survival(PROJECT, LUNG, accuracy=0.1, cohort_size=200)
    assert curve.model_dump(mode="json")["privacy"]["accuracy"]["cohort_size"] == 200


def test_names_are_checked_with_suggestions() -> None:
    with pytest.raises(UnknownField, match="did you mean 'stage'"):
        questions.count(PROJECT, by="stge", epsilon=0.1)
    with pytest.raises(InvalidCriterion, match="group_by needs a categorical field"):
        questions.count(PROJECT, by="age_at_diagnosis", epsilon=0.1)
    with pytest.raises(UnknownField, match="did you mean 'stage'"):
        questions.count(PROJECT, Field("stge") == "IV", epsilon=0.1)
    with pytest.raises(UnknownCategory, match="did you mean 'IV'"):
        questions.funnel(PROJECT, [("iv", Field("stage") == "iv")], epsilon=0.1)
    with pytest.raises(InvalidCriterion, match="mean needs a integer field; 'stage' is"):
        questions.mean(PROJECT, "stage", 0, 1, epsilon=0.1)
    with pytest.raises(UnknownField, match="did you mean 'age_at_diagnosis'"):
        questions.quantile(PROJECT, "age_at_diagnsis", [0, 50, 110], epsilon=0.1)
    with pytest.raises(UnknownField, match="did you mean 'grade'"):
        questions.crosstab(PROJECT, ["sex", "grdae"], epsilon=0.1)
    with pytest.raises(UnknownCategory, match="did you mean 'positive'"):
        questions.histogram(PROJECT, "egfr", categories=["positve"], epsilon=0.1)
    with pytest.raises(InvalidCriterion, match="give bins=, not categories="):
        questions.histogram(PROJECT, "age_at_diagnosis", categories=["1"], epsilon=0.1)


def test_the_query_models_check_the_rest() -> None:
    """Bounds, grids and modes are varde.query's to check; the builders do not copy its rules."""
    with pytest.raises(pydantic.ValidationError, match="bounds inverted"):
        questions.mean(PROJECT, "age_at_diagnosis", 80, 18, epsilon=0.1)
    with pytest.raises(pydantic.ValidationError, match="quantiles are DP only"):
        questions.quantile(PROJECT, "age_at_diagnosis", [0, 50, 110], aggregate=True)
    with pytest.raises(pydantic.ValidationError, match="must be a multiple"):
        questions.survival(PROJECT, months=50, interval=12, epsilon=0.1)
    with pytest.raises(pydantic.ValidationError, match="labels must not repeat"):
        questions.funnel(PROJECT, [("a", LUNG), ("a", LUNG)], epsilon=0.1)
    with pytest.raises(pydantic.ValidationError, match="project"):
        questions.count("Not A Project", epsilon=0.1)
    with pytest.raises(TypeError, match="is not a number"):
        questions.quantile(PROJECT, "age_at_diagnosis", [0, "50", 110], epsilon=0.1)
    with pytest.raises(TypeError, match=r"\(label, criterion\) pair"):
        questions.funnel(PROJECT, [("lung", {"op": "eq"})], epsilon=0.1)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="cohort is a Criterion"):
        questions.count(PROJECT, {"op": "eq"}, epsilon=0.1)  # type: ignore[arg-type]


@given(
    by=st.lists(
        st.sampled_from(["sex", "stage", "egfr", "grade", "vital_status"]), unique=True, max_size=3
    ),
    epsilon=st.floats(1e-3, 10),
)
@settings(max_examples=60, deadline=None)
def test_group_by_and_epsilon_reach_the_query_unchanged(by: list[str], epsilon: float) -> None:
    q = questions.mean(PROJECT, "age_at_diagnosis", 0, 110, LUNG, by, epsilon=epsilon)
    assert q.group_by == by and q.privacy.model_dump() == {"mode": "dp", "epsilon": epsilon}
    assert q.cohort is not None and q.fields_read() >= set(by) | {"topography", "stage"}


# --- the client's methods ------------------------------------------------------------------------


def _schema_records() -> list[dict[str, Any]]:
    """A gateway whose schema lacks ``region`` and knows only stages I-IV."""
    out = []
    for f in FIELDS:
        if not f.queryable or f.name == "region":
            continue
        cats = ["I", "II", "III", "IV"] if f.name == "stage" else list(f.categories) or None
        out.append(
            {
                "name": f.name,
                "kind": f.kind.value,
                "description": f.description,
                "categories": cats,
                "lower": f.lower,
                "upper": f.upper,
                "sites": ["oslo", "bergen"],
            }
        )
    return out


class Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.path == "/v1/schema", request.url
        return httpx.Response(200, json=_schema_records())


@pytest.fixture
def fake() -> tuple[VardeClient, Recorder]:
    rec = Recorder()
    client = VardeClient("https://gateway.test", "token")
    client._http.close()
    client._http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(rec))

    def query(spec: Any) -> Any:
        rec.sent.append(("query", _wire(spec)))
        return "answer"

    def preview(spec: Any) -> Any:
        rec.sent.append(("preview", _wire(spec)))
        return pd.DataFrame({"site": ["network"]})

    client.query = query  # type: ignore[method-assign]
    client.preview = preview  # type: ignore[method-assign]
    return client, rec


def test_client_methods_send_the_built_query(fake: tuple[VardeClient, Recorder]) -> None:
    client, rec = fake
    assert client.count(LUNG, by="sex", project=PROJECT, epsilon=0.5) == "answer"
    frame = client.survival(LUNG, project=PROJECT, months=24, interval=6, epsilon=0.2, preview=True)
    assert isinstance(frame, pd.DataFrame)
    client.funnel([("lung", Field("cancer_type") == "lung")], project=PROJECT, epsilon=0.1)
    client.quantile("age_at_diagnosis", [0, 50, 110], project=PROJECT, epsilon=0.1)
    client.crosstab(["sex", "stage"], project=PROJECT, epsilon=0.1)
    client.mean("age_at_diagnosis", 0, 110, LUNG, project=PROJECT, epsilon=0.1)
    client.sum("survival_days", 0, 3650, project=PROJECT, epsilon=0.1, sites=["oslo"])
    client.histogram("stage", project=PROJECT, epsilon=0.1, preview=True)
    assert [(where, body["statistic"]["kind"]) for where, body in rec.sent] == [
        ("query", "count"),
        ("preview", "survival"),
        ("query", "funnel"),
        ("query", "quantile"),
        ("query", "crosstab"),
        ("query", "mean"),
        ("query", "sum"),
        ("preview", "histogram"),
    ]
    assert rec.sent[0][1] == _wire(questions.count(PROJECT, LUNG, by="sex", epsilon=0.5))
    assert rec.sent[6][1]["sites"] == ["oslo"]
    assert len(rec.requests) == 1  # the gateway's schema, fetched once for all eight


def test_client_checks_against_the_gateways_schema_before_sending(
    fake: tuple[VardeClient, Recorder],
) -> None:
    client, rec = fake
    with pytest.raises(UnknownCategory, match=r"unknown category '0'.*\(valid: I, II, III, IV\)"):
        client.count(Field("stage") == "0", project=PROJECT, epsilon=0.1)  # offline knows '0'
    with pytest.raises(UnknownField, match="unknown field 'region'"):
        client.crosstab(["sex", "region"], project=PROJECT, epsilon=0.1)
    with pytest.raises(UnknownField, match="did you mean 'stage'"):
        client.histogram("stge", project=PROJECT, epsilon=0.1, preview=True)
    with pytest.raises(ValueError, match="exactly one of"):
        client.count(project=PROJECT)
    with pytest.raises(TypeError, match="preview is True or False"):
        client.count(project=PROJECT, epsilon=0.1, preview="yes")  # type: ignore[arg-type]
    assert rec.sent == []
    assert [(r.method, r.url.path) for r in rec.requests] == [("GET", "/v1/schema")]


def test_builders_take_a_unit() -> None:
    """``unit=`` reaches the wire for every statistic; absent, the query counts tumours."""
    assert questions.count(PROJECT, LUNG, epsilon=0.5).unit == "tumours"
    assert "unit" not in _wire(questions.count(PROJECT, LUNG, epsilon=0.5))
    built = [
        questions.count(PROJECT, LUNG, by="sex", unit="patients", epsilon=0.5),
        questions.funnel(PROJECT, [("IV", Field("stage") == "IV")], unit="patients", epsilon=0.5),
        questions.histogram(PROJECT, "stage", unit="patients", epsilon=0.5),
        questions.crosstab(PROJECT, ["sex", "stage"], unit="patients", epsilon=0.5),
    ]
    assert [_wire(q)["unit"] for q in built] == ["patients"] * 4
    with pytest.raises(ValueError, match="unit is 'patients' or 'tumours'"):
        questions.count(PROJECT, unit="people", epsilon=0.5)  # type: ignore[typeddict-item]
