"""The canonical form behind the repeat-query defence: trivial rewrites collide, others never do."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from nodes.canonical import canonical_predicate, query_key
from nodes.cohort import evaluate
from nodes.data import RegistryData, prepare
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
    elif p["field"] in NUMERIC and op in ("between", ">=", "<=", "eq"):
        out = rewrite_whole_numbers(draw, p)
    else:
        out = dict(p)
    roll = draw(st.integers(0, 5))
    if roll == 0:
        return {"op": "not", "arg": {"op": "not", "arg": out}}
    if roll == 1:
        return {"op": draw(st.sampled_from(["and", "or"])), "args": [out]}
    return out


def rewrite_whole_numbers(draw: st.DrawFn, p: Json) -> Json:
    """Rewrites that hold because integer fields hold whole numbers."""
    f, op = p["field"], p["op"]
    if op == ">=":
        return {"op": ">=", "field": f, "value": p["value"] - draw(st.sampled_from([0.5, 0.9]))}
    if op == "<=":
        return {"op": "<=", "field": f, "value": p["value"] + 0.5}
    if op == "eq":
        return {"op": "between", "field": f, "low": p["value"], "high": p["value"]}
    lo, hi = p["low"], p["high"]
    how = draw(st.sampled_from(["in", "split", "overlap", "redundant", "halves"]))
    if how == "in" and hi - lo <= 4:
        return {"op": "in", "field": f, "values": draw(st.permutations(range(lo, hi + 1)))}
    mid = draw(st.integers(lo, hi))
    if how == "split" and mid < hi:  # adjacent runs unite
        return {
            "op": "or",
            "args": [
                {"op": "between", "field": f, "low": mid + 1, "high": hi},
                {"op": "between", "field": f, "low": lo, "high": mid},
            ],
        }
    if how == "overlap":  # overlapping runs unite
        return {
            "op": "or",
            "args": [
                {"op": "between", "field": f, "low": lo, "high": mid},
                {"op": "between", "field": f, "low": max(lo, mid - 2), "high": hi},
            ],
        }
    if how == "redundant":  # a looser range in the same and
        return {
            "op": "and",
            "args": [
                {"op": ">=", "field": f, "value": lo - 3},
                {"op": "between", "field": f, "low": lo, "high": hi},
            ],
        }
    return {  # overlapping ranges intersect
        "op": "and",
        "args": [
            {"op": "between", "field": f, "low": lo - 0.5, "high": hi + 5},
            {"op": "<=", "field": f, "value": hi},
        ],
    }


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


def permuted(draw: st.DrawFn, p: Json) -> Json:
    """``p`` with the operands of every ``and``/``or`` (and ``in`` values) reordered."""
    if p["op"] in ("and", "or"):
        return {
            "op": p["op"],
            "args": draw(st.permutations([permuted(draw, a) for a in p["args"]])),
        }
    if p["op"] == "not":
        return {"op": "not", "arg": permuted(draw, p["arg"])}
    if p["op"] == "in":
        return {**p, "values": draw(st.permutations(p["values"]))}
    return p


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=predicates())
def test_canonicalisation_is_idempotent(p: Json) -> None:
    once = canonical_predicate(PRED.validate_python(p))
    twice = canonical_predicate(PRED.validate_python(once.model_dump(mode="json")))
    assert twice == once, json.dumps(p)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), p=predicates())
def test_operand_order_does_not_matter(data: st.DataObject, p: Json) -> None:
    q = permuted(data.draw, p)
    assert canonical_predicate(PRED.validate_python(p)) == canonical_predicate(
        PRED.validate_python(q)
    )


@st.composite
def small_leaves(draw: st.DrawFn) -> Json:
    """Leaves over a tiny domain (one integer field, ages 50-54), so equal forms are common."""
    op = draw(st.sampled_from(["eq", "in", "between", ">=", "<="]))
    f = "age_at_diagnosis"
    if op == "in":
        return {"op": "in", "field": f, "values": draw(st.lists(st.integers(50, 54), min_size=1))}
    if op == "between":
        lo = draw(st.integers(49, 55))
        return {"op": "between", "field": f, "low": lo, "high": draw(st.integers(lo, 56))}
    value = draw(st.sampled_from([49, 50, 51.5, 52, 53, 54, 55]))
    return {"op": op, "field": f, "value": value}


def small_predicates() -> st.SearchStrategy[Json]:
    return st.recursive(
        small_leaves(),
        lambda inner: st.one_of(
            st.builds(lambda a: {"op": "and", "args": a}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda a: {"op": "or", "args": a}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda a: {"op": "not", "arg": a}, inner),
        ),
        max_leaves=4,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=small_predicates(), q=small_predicates())
def test_equal_canonical_forms_select_the_same_rows(
    oslo_data: RegistryData, p: Json, q: Json
) -> None:
    cp, cq = (canonical_predicate(PRED.validate_python(x)) for x in (p, q))
    if cp == cq:
        assert np.array_equal(mask(oslo_data, p), mask(oslo_data, q)), (p, q)
    assert np.array_equal(evaluate(oslo_data, cp), mask(oslo_data, p))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
            {
                "op": "or",
                "args": [
                    {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 40},
                    {"op": "between", "field": "age_at_diagnosis", "low": 41, "high": 75},
                ],
            },
        ),
        (
            {"op": "in", "field": "age_at_diagnosis", "values": [52, 50, 51, 50]},
            {"op": "between", "field": "age_at_diagnosis", "low": 49.5, "high": 52.9},
        ),
        (
            {"op": "eq", "field": "age_at_diagnosis", "value": 60},
            {
                "op": "and",
                "args": [
                    {"op": ">=", "field": "age_at_diagnosis", "value": 59.2},
                    {"op": "between", "field": "age_at_diagnosis", "low": 40, "high": 60},
                ],
            },
        ),
        (
            {"op": "<=", "field": "diagnosis_date", "value": "2019-12-31"},
            {
                "op": "not",
                "arg": {
                    "op": "not",
                    "arg": {
                        "op": "or",
                        "args": [
                            {"op": "<=", "field": "diagnosis_date", "value": "2018-05-01"},
                            {
                                "op": "between",
                                "field": "diagnosis_date",
                                "low": "2018-05-02",
                                "high": "2019-12-31",
                            },
                        ],
                    },
                },
            },
        ),
    ],
)
def test_whole_number_rewrites_share_one_key(oslo_data: RegistryData, a: Json, b: Json) -> None:
    assert query_key(query(a)) == query_key(query(b))
    assert np.array_equal(mask(oslo_data, a), mask(oslo_data, b))


def test_integer_columns_must_hold_whole_numbers(oslo_frame: pd.DataFrame) -> None:
    frame = oslo_frame.head(50).copy()
    frame["age_at_diagnosis"] = frame["age_at_diagnosis"].astype(float)
    frame.loc[frame.index[3], "age_at_diagnosis"] = 61.5
    with pytest.raises(ValueError, match=r"integer column 'age_at_diagnosis' has non-whole"):
        prepare(frame, site="oslo", max_rows_per_patient=3)
