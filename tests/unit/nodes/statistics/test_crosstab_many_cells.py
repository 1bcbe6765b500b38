"""A 4-way crosstab (cancer type x stage x sex x age band): 1,944 public cells, exact and DP."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.cohort import evaluate
from nodes.context import NodeContext
from nodes.data import RegistryData, bound_contributions
from nodes.pipeline import handle
from nodes.statistics import exact
from tests.conftest import make_work
from varde.query import parse_query
from varde.schema import FIELDS_BY_NAME

AXES = ["cancer_type", "stage", "sex", "age_band"]
CROSSTAB: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "statistic": {"kind": "crosstab", "fields": AXES},
    "privacy": {"mode": "dp", "epsilon": 1.0},
}
N_CELLS = 18 * 6 * 2 * 9


def pandas_counts(frame: pd.DataFrame) -> np.ndarray:
    cats = [list(FIELDS_BY_NAME[a].categories) for a in AXES]
    counts = frame.groupby(AXES, observed=False).size()
    index = pd.MultiIndex.from_tuples(list(itertools.product(*cats)))
    return counts.reindex(index, fill_value=0).to_numpy()


@pytest.mark.parametrize(
    "layout",
    [
        {"statistic": {"kind": "crosstab", "fields": AXES}},
        {"group_by": AXES[:2], "statistic": {"kind": "crosstab", "fields": AXES[2:]}},
    ],
    ids=["crosstab", "group_by+crosstab"],
)
def test_four_way_exact_counts_match_pandas(
    oslo_frame: pd.DataFrame, oslo_data: RegistryData, layout: dict[str, Any]
) -> None:
    query = parse_query({**CROSSTAB, **layout})
    assert query.cell_count() == N_CELLS
    assert [name for name, _ in query.axes()] == AXES
    ex = exact(oslo_data, evaluate(oslo_data, None), query)
    want = pandas_counts(bound_contributions(oslo_frame, 3))
    assert ex.counts.tolist() == want.tolist()
    assert ex.labels[0] == ["breast", "0", "female", "0-14"]
    assert int(ex.counts.sum()) == oslo_data.n_rows - int(
        pd.isna(bound_contributions(oslo_frame, 3)[AXES]).any(axis=1).sum()
    )


def test_four_way_dp_release(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, oslo_frame: pd.DataFrame
) -> None:
    rel = handle(node_ctx, make_work(gateway_key, CROSSTAB))
    assert rel.status == "ok", rel.message
    assert len(rel.cells) == N_CELLS
    assert [name for name, _ in rel.axes] == AXES
    assert rel.charged.epsilon == pytest.approx(1.0)
    assert len(node_ctx.ledger.charges()) == 1
    want = pandas_counts(bound_contributions(oslo_frame, 3))
    noise = np.array([c.value for c in rel.cells]) - want
    # one discrete-Laplace draw per cell at scale k/eps = 3: 1,944 draws pin down the sd
    assert rel.noise_scales == {"count": pytest.approx(3.0)}
    assert np.std(noise) == pytest.approx(rel.cells[0].std, rel=0.1)
    inside = np.mean([c.ci_low <= w <= c.ci_high for c, w in zip(rel.cells, want, strict=True)])
    assert 0.92 < inside < 0.98
    # a margin summed from the released cells is unbiased, with variance adding up
    lung = [i for i, c in enumerate(rel.cells) if c.labels[0] == "lung"]
    margin_err = noise[lung].sum()
    assert abs(margin_err) < 6 * rel.cells[0].std * np.sqrt(len(lung))
