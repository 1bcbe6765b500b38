"""Aggregate mode against the differencing attacks, on a registry where the target is known.

The attacker is a researcher of a project the site serves in aggregate mode. They
know one patient's diagnosis date and age (enough to single her out) and want her
stage, age, survival or existence. Each classic pattern is tried through the
node's own pipeline; each must fail to reveal the attribute: the second release
is refused by overlap control, or what is published cannot be subtracted to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.context import NodeContext
from nodes.data import RegistryData, bound_contributions
from nodes.ledger import Ledger
from nodes.pipeline import handle
from nodes.policy import Policy
from nodes.store import NodeStore
from tests.conftest import make_work
from varde.crypto import generate_key, public_key_b64
from varde.release import SiteRelease

P = "breast-outcomes"
BREAST = {"op": "eq", "field": "cancer_type", "value": "breast"}
MIN_CELL = 10


@pytest.fixture
def site(
    tmp_path: Path, oslo_data: RegistryData, oslo_policy: Policy
) -> Iterator[tuple[NodeContext, Ed25519PrivateKey]]:
    """Oslo's policy, with sums and means allowed in aggregate mode (their own threshold)."""
    aggregate = oslo_policy.aggregate.model_copy(update={"sums": True, "sum_min_cell": 20})
    key = generate_key()
    ctx = NodeContext(
        site="oslo",
        data=oslo_data,
        ledger=Ledger.in_directory(tmp_path),
        store=NodeStore.in_directory(tmp_path),
        node_key=generate_key(),
        gateway_key=public_key_b64(key),
        _policy=oslo_policy.model_copy(update={"aggregate": aggregate}),
    )
    yield ctx, key
    ctx.ledger.close()
    ctx.store.close()


@pytest.fixture(scope="module")
def target(oslo_frame: pd.DataFrame) -> pd.Series:
    """A breast-cancer patient singled out by her diagnosis date and age, one tumour only."""
    rows = bound_contributions(oslo_frame, 3)
    breast = rows[rows.cancer_type == "breast"]
    key = breast.diagnosis_date.astype(str) + "/" + breast.age_at_diagnosis.astype(str)
    unique = breast[~key.duplicated(keep=False)]
    single = unique[~unique.patient_id.isin(rows.patient_id[rows.duplicated("patient_id")])]
    return single.sort_values("tumour_id").iloc[0]


def not_her(p: pd.Series) -> dict[str, Any]:
    """The cohort predicate "not the target" (what the attacker can write)."""
    return {
        "op": "not",
        "arg": {
            "op": "and",
            "args": [
                {"op": "eq", "field": "diagnosis_date", "value": str(p.diagnosis_date)[:10]},
                {"op": "eq", "field": "age_at_diagnosis", "value": int(p.age_at_diagnosis)},
            ],
        },
    }


def ask(site: tuple[NodeContext, Ed25519PrivateKey], query_id: str, **q: Any) -> SiteRelease:
    ctx, key = site
    body = {"project": P, "privacy": {"mode": "aggregate"}, **q}
    return handle(ctx, make_work(key, body, query_id=query_id))


def refused_as_differencing(rel: SiteRelease) -> bool:
    return rel.status == "policy_violation" and "differs from a cell released earlier" in (
        rel.message
    )


STATISTICS = {
    "count": {"kind": "count"},
    "stage histogram": {"kind": "histogram", "field": "stage"},
    "sum of survival days": {"kind": "sum", "field": "survival_days", "lower": 0, "upper": 9000},
    "mean age (its parts)": {"kind": "mean", "field": "age_at_diagnosis", "lower": 0, "upper": 110},
}


@pytest.mark.parametrize("statistic", list(STATISTICS))
def test_cohort_minus_one_patient_is_refused(
    site: tuple[NodeContext, Ed25519PrivateKey], target: pd.Series, statistic: str
) -> None:
    stat = STATISTICS[statistic]
    first = ask(site, "a", cohort=BREAST, statistic=stat)
    assert first.status == "ok", first.message
    second = ask(site, "b", cohort={"op": "and", "args": [BREAST, not_her(target)]}, statistic=stat)
    assert refused_as_differencing(second), second.message
    assert second.cells == []


def test_a_funnel_step_minus_one_patient_is_refused(
    site: tuple[NodeContext, Ed25519PrivateKey], target: pd.Series
) -> None:
    steps = [
        {"label": "breast", "criterion": BREAST},
        {"label": "stage II", "criterion": {"op": "eq", "field": "stage", "value": "II"}},
    ]
    first = ask(site, "f1", statistic={"kind": "funnel", "steps": steps})
    assert first.status == "ok", first.message
    minus = [{**steps[0], "criterion": {"op": "and", "args": [BREAST, not_her(target)]}}, steps[1]]
    second = ask(site, "f2", statistic={"kind": "funnel", "steps": minus})
    assert refused_as_differencing(second), second.message


def test_overlapping_ranges_cannot_isolate_a_small_group(
    site: tuple[NodeContext, Ed25519PrivateKey], oslo_frame: pd.DataFrame
) -> None:
    rows = bound_contributions(oslo_frame, 3)
    breast = rows[rows.cancer_type == "breast"]
    per_age = breast.groupby("age_at_diagnosis").patient_id.nunique()
    small = [int(a) for a, n in per_age.items() if 0 < n < MIN_CELL and a > 30]
    age = small[0]  # an age with a few breast-cancer patients: the group to isolate
    wide = {"op": "between", "field": "age_at_diagnosis", "low": 20, "high": age}
    narrow = {"op": "between", "field": "age_at_diagnosis", "low": 20, "high": age - 1}
    first = ask(
        site, "r1", cohort={"op": "and", "args": [BREAST, wide]}, statistic={"kind": "count"}
    )
    assert first.status == "ok", first.message
    second = ask(
        site, "r2", cohort={"op": "and", "args": [BREAST, narrow]}, statistic={"kind": "count"}
    )
    assert refused_as_differencing(second), second.message


def test_empty_and_small_cells_look_alike(
    site: tuple[NodeContext, Ed25519PrivateKey], oslo_data: RegistryData, oslo_frame: pd.DataFrame
) -> None:
    """The suppressed/zero pattern must not tell which stages some patient has."""
    rows = bound_contributions(oslo_frame, 3)
    cohort = {"op": "and", "args": [BREAST, {"op": ">=", "field": "age_at_diagnosis", "value": 85}]}
    stat = {"kind": "crosstab", "fields": ["stage", "sex"]}
    rel = ask(site, "z", cohort=cohort, statistic=stat)
    assert rel.status == "ok", rel.message
    old = rows[(rows.cancer_type == "breast") & (rows.age_at_diagnosis >= 85)]
    per_cell = old.groupby(["stage", "sex"], observed=False).patient_id.nunique()
    sizes = {(str(a), str(b)): int(n) for (a, b), n in per_cell.items()}
    for cell in rel.cells:
        n = sizes.get((cell.labels[0], cell.labels[1]), 0)
        if n < MIN_CELL:  # none or a few: the same answer
            assert cell.status == "suppressed" and cell.value is None, (cell.labels, n)
    empty = [c for c in rel.cells if sizes.get((c.labels[0], c.labels[1]), 0) == 0]
    small = [c for c in rel.cells if 0 < sizes.get((c.labels[0], c.labels[1]), 0) < MIN_CELL]
    assert empty and small  # the registry has both kinds here
    assert {c.status for c in empty} == {c.status for c in small} == {"suppressed"}
    assert not any(c.value == 0 for c in rel.cells)  # no zero is ever published


def test_the_same_patients_get_the_same_perturbed_answer(
    site: tuple[NodeContext, Ed25519PrivateKey],
) -> None:
    """Asking again (or rewording) averages nothing away: identical sets, identical numbers."""
    stat = {"kind": "histogram", "field": "stage"}
    first = ask(site, "s1", cohort=BREAST, statistic=stat)
    reworded = {"op": "in", "field": "cancer_type", "values": ["breast"]}
    again = ask(site, "s2", cohort=reworded, statistic=stat)
    assert first.status == again.status == "ok"
    assert [c.value for c in first.cells] == [c.value for c in again.cells]
    ctx, _ = site
    exact = np.array([c.value for c in first.cells if c.status == "ok"])
    assert exact.size and (np.abs(exact - np.round(exact)) == 0).all()
    assert ctx.store.released_sets.count(P) == 2 * int(exact.size)
