"""Suppression in aggregate mode: no suppressed cell can be recovered from a margin or a step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nodes.cohort import evaluate
from nodes.context import NodeContext
from nodes.data import RegistryData
from nodes.pipeline import handle
from nodes.statistics import exact
from nodes.statistics.suppression import (
    complementary_suppression,
    funnel_step_suppression,
    release_aggregate,
)
from tests.conftest import make_work
from varde.budget import PureDP
from varde.query import parse_query


def aggregate(data: RegistryData, q: Any, min_cell: int, spread: int = 0) -> list[Any]:
    """The cells aggregate mode publishes for ``q`` (exact values with ``spread`` 0)."""
    rows = evaluate(data, q.cohort)
    ex = exact(data, rows, q)
    return release_aggregate(data, rows, ex, q, min_cell=min_cell, spread=spread, salt=1).cells


def lone_lines(supp: np.ndarray, axes: list[int]) -> int:
    """Lines (along ``axes``) holding exactly one suppressed cell: each is recoverable."""
    return sum(
        int((np.moveaxis(supp, ax, -1).sum(axis=-1) == 1).sum())
        for ax in axes
        if supp.shape[ax] > 1
    )


@st.composite
def tables(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    counts = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 40)))
    return counts, draw(st.integers(2, 15))


@settings(max_examples=300, deadline=None)
@given(tables())
def test_no_line_keeps_a_single_suppressed_cell(table: tuple[np.ndarray, int]) -> None:
    counts, min_cell = table
    primary = (counts > 0) & (counts < min_cell)
    axes = list(range(counts.ndim))
    supp = complementary_suppression(counts.reshape(-1), counts.shape, primary.reshape(-1), axes)
    supp = supp.reshape(counts.shape)
    assert (supp | ~primary).all()  # every primary cell stays suppressed
    assert lone_lines(supp, axes) == 0


def test_margin_cannot_recover_a_suppressed_cell(oslo_data: RegistryData) -> None:
    """The attack: subtract the released cells of a row from its (known) row total."""
    q = parse_query(
        {
            "project": "breast-outcomes",
            "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
            "statistic": {"kind": "crosstab", "fields": ["stage", "first_treatment"]},
            "privacy": {"mode": "aggregate"},
        }
    )
    ex = exact(oslo_data, evaluate(oslo_data, q.cohort), q)
    cells = aggregate(oslo_data, q, min_cell=30)
    shape = (6, 7)
    counts = ex.counts.reshape(shape)
    supp = np.array([c.status == "suppressed" for c in cells]).reshape(shape)
    assert ((counts < 30) <= supp).all()  # small and empty cells alike
    assert supp.sum() > (counts < 30).sum()  # complements were needed here
    for axis in (0, 1):
        margins = counts.sum(axis=axis)
        released = np.where(supp, 0, counts).sum(axis=axis)
        n_supp = supp.sum(axis=axis)
        # wherever something is suppressed, at least two unknowns share the margin's remainder
        assert ((n_supp == 0) | (n_supp >= 2)).all()
        assert (margins - released >= 0).all()


def test_funnel_steps_are_protected_like_cells(oslo_data: RegistryData) -> None:
    """Every published step is large, and so is every drop-out group between published steps.

    (Before, the step axis was left out of suppression: step j minus step j+1 could be a
    handful of patients.)
    """
    q = parse_query(
        {
            "project": "breast-outcomes",
            "statistic": {
                "kind": "funnel",
                "steps": [
                    {
                        "label": "lung",
                        "criterion": {"op": "eq", "field": "cancer_type", "value": "lung"},
                    },
                    {"label": "M1", "criterion": {"op": "eq", "field": "m_stage", "value": "M1"}},
                    {
                        "label": "ALK+",
                        "criterion": {"op": "eq", "field": "alk", "value": "positive"},
                    },
                ],
            },
            "group_by": ["sex"],
            "privacy": {"mode": "aggregate"},
        }
    )
    ex = exact(oslo_data, evaluate(oslo_data, None), q)
    min_cell = int(np.sort(ex.counts)[2]) + 1  # the three smallest cells are small
    cells = aggregate(oslo_data, q, min_cell=min_cell)
    supp = np.array([c.status == "suppressed" for c in cells]).reshape(2, 3)
    assert lone_lines(supp, [0]) == 0  # across sexes, within a step: protected
    assert supp.reshape(-1)[ex.counts < min_cell].all()
    counts = ex.counts.reshape(2, 3)
    for g in range(2):
        published = [int(counts[g, j]) for j in range(3) if not supp[g, j]]
        drops = np.diff([np.inf, *published])
        assert (-drops >= min_cell).all(), (published, min_cell)  # no small drop-out group


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.int64, st.tuples(st.integers(1, 3), st.integers(1, 6)), elements=st.integers(0, 80)
    ),
    st.integers(2, 15),
)
def test_funnel_step_rule_leaves_no_small_published_drop(steps: np.ndarray, min_cell: int) -> None:
    patients = -np.sort(-steps, axis=1)  # a funnel never rises
    supp = funnel_step_suppression(
        patients, np.zeros_like(patients, dtype=bool), min_cell, min_cell
    )
    for g in range(patients.shape[0]):
        published = patients[g][~supp[g]]
        assert (published >= min_cell).all()
        assert (-np.diff(published) >= min_cell).all()


def test_aggregate_statuses_are_distinct(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    """Suppressed (a cell), policy refusal, over budget and error (a site) never look alike."""
    hist: dict[str, Any] = {
        "project": "breast-outcomes",
        "cohort": {"op": "eq", "field": "cancer_type", "value": "breast"},
        "statistic": {"kind": "crosstab", "fields": ["morphology", "stage"]},
        "privacy": {"mode": "aggregate"},
    }
    ok = handle(node_ctx, make_work(gateway_key, hist, query_id="a1"))
    assert ok.status == "ok" and {c.status for c in ok.cells} == {"ok", "suppressed"}
    assert all(c.value is None for c in ok.cells if c.status == "suppressed")
    refused = handle(
        node_ctx, make_work(gateway_key, {**hist, "project": "nsclc-feasibility"}, query_id="a2")
    )
    assert refused.status == "policy_violation" and refused.cells == []
    node_ctx.ledger.charge(
        project="breast-outcomes",
        cost=PureDP(node_ctx.policy.projects["breast-outcomes"].epsilon_budget),
        total=PureDP(node_ctx.policy.projects["breast-outcomes"].epsilon_budget),
        query_id="x",
    )
    dp = {**hist, "statistic": {"kind": "count"}, "privacy": {"mode": "dp", "epsilon": 0.5}}
    broke = handle(node_ctx, make_work(gateway_key, dp, query_id="a3"))
    assert broke.status == "budget_exhausted" and broke.cells == []
    assert len({ok.status, refused.status, broke.status}) == 3
    assert pd.Series([c.status for c in ok.cells]).isin(["ok", "suppressed"]).all()


@pytest.mark.parametrize("min_cell", [5, 50])
def test_histogram_total_cannot_recover_its_one_small_cell(
    oslo_data: RegistryData, min_cell: int
) -> None:
    q = parse_query(
        {
            "project": "breast-outcomes",
            "cohort": {"op": "eq", "field": "cancer_type", "value": "breast"},
            "statistic": {"kind": "histogram", "field": "stage"},
            "privacy": {"mode": "aggregate"},
        }
    )
    cells = aggregate(oslo_data, q, min_cell=min_cell)
    n_supp = sum(c.status == "suppressed" for c in cells)
    assert n_supp != 1
