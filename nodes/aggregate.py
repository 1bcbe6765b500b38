"""Aggregate (non-DP) mode at a node: the release and its overlap check, in one place.

The cells come from :func:`nodes.statistics.suppression.release_aggregate`
(suppression on patients, funnel steps, the cell-key method); before any of
them leaves, :class:`nodes.overlap.OverlapBook` checks their patient sets
against everything released earlier for the project and records them.
"""

from __future__ import annotations

import numpy as np

from nodes.cohort import evaluate
from nodes.context import NodeContext
from nodes.overlap import patient_set
from nodes.policy import Policy
from nodes.statistics import exact
from nodes.statistics.suppression import release_aggregate
from varde.query import Query
from varde.release import Cell


def aggregate_mechanism(policy: Policy, query: Query) -> str:
    """How an aggregate release is made, in words (its threshold and perturbation)."""
    rules = policy.aggregate
    if query.statistic.kind in ("sum", "mean"):
        return f"exact, cells of < {rules.sum_min_cell} patients suppressed, overlap-controlled"
    return (
        f"cell-key perturbed (+-{rules.cell_key_spread}), cells of < {rules.min_cell} patients "
        "suppressed, overlap-controlled"
    )


def aggregate_cells(ctx: NodeContext, query: Query, policy: Policy, query_id: str) -> list[Cell]:
    """The suppressed, perturbed cells; refused if they are too close to an earlier release.

    Raises:
        PolicyViolation: A cell's patients differ from an earlier release's by fewer
            than ``min_cell`` (:meth:`nodes.overlap.OverlapBook.admit`); nothing is
            released or recorded.
    """
    rules = policy.aggregate
    rows = np.asarray(evaluate(ctx.data, query.cohort), dtype=bool)
    ex = exact(ctx.data, rows, query)
    sums = query.statistic.kind in ("sum", "mean")
    min_cell = (rules.sum_min_cell or rules.min_cell) if sums else rules.min_cell
    out = release_aggregate(
        ctx.data,
        rows,
        ex,
        query,
        min_cell=min_cell,
        spread=rules.cell_key_spread,
        salt=ctx.cell_key_salt,
    )
    ctx.store.released_sets.admit(
        project=query.project,
        data_version=ctx.data_version,
        sets=[patient_set(m) for m in out.released],
        min_cell=rules.min_cell,
        query_id=query_id,
        site=ctx.site,
    )
    return out.cells
