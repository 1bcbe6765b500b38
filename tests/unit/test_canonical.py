"""The canonical form behind the repeat-query defence: trivial rewrites collide, others never do."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from nodes.cohort import evaluate
from nodes.data import RegistryData
from varde.canonical import canonical_predicate, query_key
from varde.query import Predicate, parse_query

PRED = TypeAdapter(Predicate)
Json = dict[str, Any]

CATEGORICAL = {
    "stage": ["0", "I", "II", "III", "IV", "unknown"],
    "sex": ["female", "male"],
    "cancer_type": ["breast", "lung", "colorectal", "prostate"],
    "egfr": ["positive", "negative", "not_tested"],
}
NUMERIC = {"age_at_diagnosis": (0, 110), "diagnosis_year": (1990, 2026)}
DATES = ["2015-01-01", "2018-06-30", "2020-01-01", "2022-12-31"]


@st.composite
def leaves(draw: st.DrawFn) -> Json:
    kind = draw(st.sampled_from(["cat", "num", "date", "prefix"]))
    if kind == "cat":
        field = draw(st.sampled_from(sorted(CATEGORICAL)))
        values = draw(st.lists(st.sampled_from(CATEGORICAL[field]), min_size=1, max_size=3))
        if len(values) == 1 and draw(st.booleans()):
            return {"op": "eq", "field": field, "value": values[0]}
        return {"op": "in", "field": field, "values": values}
    if kind == "prefix":
        return {
            "op": "startswith",
            "field": "topography",
            "prefix": draw(st.sampled_from(["C3", "C34", "C50"])),
        }
    if kind == "date":
        op = draw(st.sampled_from([">=", "<=", "between"]))
        a, b = sorted(draw(st.lists(st.sampled_from(DATES), min_size=2, max_size=2)))
        if op == "between":
            return {"op": "between", "field": "diagnosis_date", "low": a, "high": b}
        return {"op": op, "field": "diagnosis_date", "value": a}
    field = draw(st.sampled_from(sorted(NUMERIC)))
    lo, hi = NUMERIC[field]
    a, b = sorted(draw(st.lists(st.integers(lo, hi), min_size=2, max_size=2)))
    op = draw(st.sampled_from([">=", "<=", "between", "eq"]))
    if op == "between":
        return {"op": "between", "field": field, "low": a, "high": b}
    return {"op": op, "field": field, "value": a}


def predicates() -> st.SearchStrategy[Json]:
    return st.recursive(
        leaves(),
        lambda inner: st.one_of(
            st.builds(lambda a: {"op": "and", "args": a}, st.lists(inner, min_size=1, max_size=4)),
            st.builds(lambda a: {"op": "or", "args": a}, st.lists(inner, min_size=1, max_size=4)),
            st.builds(lambda a: {"op": "not", "arg": a}, inner),
        ),
        max_leaves=8,
    )


def rewrite(draw: st.DrawFn, p: Json) -> Json:
    """A random trivial rewrite of ``p``: same rows on every registry."""
    op = p["op"]
    if op in ("and", "or"):
        args = [rewrite(draw, a) for a in p["args"]]
        args = draw(st.permutations(args))
        if len(args) > 2 and draw(st.booleans()):  # nest a run of the arguments
            args = [{"op": op, "args": args[:2]}, *args[2:]]
        if draw(st.booleans()):  # repeat an argument
            args = [*args, args[0]]
        out: Json = {"op": op, "args": list(args)}
    elif op == "not":
        out = {"op": "not", "arg": rewrite(draw, p["arg"])}
    elif op == "between" and draw(st.booleans()):
        out = {
            "op": "and",
            "args": [
                {"op": "<=", "field": p["field"], "value": p["high"]},
                {"op": ">=", "field": p["field"], "value": p["low"]},
            ],
        }
    elif op == "in":
        out = {**p, "values": draw(st.permutations(p["values"])) + p["values"][:1]}
    elif op == "eq" and draw(st.booleans()):
        out = {"op": "in", "field": p["field"], "values": [p["value"]]}
    elif op in (">=", "<=", "eq") and isinstance(p["value"], int) and draw(st.booleans()):
        out = {**p, "value": float(p["value"])}
    else:
        out = dict(p)
    roll = draw(st.integers(0, 5))
    if roll == 0:
        return {"op": "not", "arg": {"op": "not", "arg": out}}
    if roll == 1:
        return {"op": draw(st.sampled_from(["and", "or"])), "args": [out]}
    return out


@st.composite
def rewritten(draw: st.DrawFn) -> tuple[Json, Json]:
    p = draw(predicates())
    return p, rewrite(draw, p)


def query(cohort: Json, **extra: Any) -> Any:
    return parse_query(
        {
            "project": "p",
            "cohort": cohort,
            "statistic": {"kind": "count"},
            "privacy": {"mode": "dp", "epsilon": 0.5},
            **extra,
        }
    )


def mask(data: RegistryData, p: Json) -> np.ndarray:
    return evaluate(data, PRED.validate_python(p))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rewritten())
def test_trivial_rewrites_share_one_key(pair: tuple[Json, Json]) -> None:
    p, q = pair
    assert query_key(query(p)) == query_key(query(q)), (json.dumps(p), json.dumps(q))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=predicates())
def test_canonical_form_selects_the_same_rows(oslo_data: RegistryData, p: Json) -> None:
    canon = canonical_predicate(PRED.validate_python(p))
    assert np.array_equal(evaluate(oslo_data, canon), mask(oslo_data, p))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=predicates(), q=predicates())
def test_predicates_that_select_different_rows_have_different_keys(
    oslo_data: RegistryData, p: Json, q: Json
) -> None:
    if not np.array_equal(mask(oslo_data, p), mask(oslo_data, q)):
        assert query_key(query(p)) != query_key(query(q))


def test_near_misses_differ() -> None:
    base = {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75}
    key = query_key(query(base))
    assert key != query_key(query({**base, "high": 76}))
    assert key != query_key(query({"op": "not", "arg": base}))
    assert key != query_key(query({"op": ">=", "field": "age_at_diagnosis", "value": 18}))
    assert key != query_key(query(base, privacy={"mode": "dp", "epsilon": 0.25}))
    assert key != query_key(query(base, group_by=["sex"]))
    assert key != query_key(query(base, project="q"))
    # where and how long to ask is not part of the question
    assert key == query_key(query(base, sites=["oslo"], timeout_s=30))


def test_or_of_equalities_is_an_in() -> None:
    a = {
        "op": "or",
        "args": [
            {"op": "eq", "field": "stage", "value": "IV"},
            {"op": "eq", "field": "stage", "value": "III"},
        ],
    }
    b = {"op": "in", "field": "stage", "values": ["III", "IV"]}
    assert query_key(query(a)) == query_key(query(b))


def test_contradictory_range_stays_a_valid_predicate(oslo_data: RegistryData) -> None:
    p = {
        "op": "and",
        "args": [
            {"op": ">=", "field": "age_at_diagnosis", "value": 80},
            {"op": "<=", "field": "age_at_diagnosis", "value": 20},
        ],
    }
    canon = canonical_predicate(PRED.validate_python(p))
    assert not evaluate(oslo_data, canon).any()
