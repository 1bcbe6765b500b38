"""Study fields at a node: declared in the policy, exposed where the data have the column.

Through the whole pipeline (signed work item -> release), against pandas on the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.canonical import query_key
from nodes.cohort import evaluate
from nodes.context import NodeContext
from nodes.data import RegistryData, bound_contributions, prepare
from nodes.ledger import Ledger
from nodes.pipeline import handle
from nodes.policy import Policy
from nodes.statistics import exact
from nodes.store import NodeStore
from tests.conftest import make_work
from varde.crypto import generate_key, public_key_b64
from varde.query import parse_query

ARM = {"name": "trial_arm", "kind": "categorical", "categories": ["A", "B"]}
CRP = {"name": "crp", "kind": "bounded", "lower": 0.0, "upper": 200.0, "unit": "mg/L"}
ECOG = {"name": "ecog", "kind": "categorical", "categories": ["0", "1", "2"]}  # not in the data
PROJECT = "nsclc-feasibility"


@pytest.fixture(scope="module")
def study_frame(oslo_frame: pd.DataFrame) -> pd.DataFrame:
    """Oslo's rows with two study columns: an arm (A, B and an undeclared C) and a lab value."""
    rng = np.random.default_rng(5)
    frame = oslo_frame.copy()
    arm = rng.choice(np.array(["A", "B", "C"], dtype=object), size=len(frame))
    arm[rng.random(len(frame)) < 0.05] = None
    frame["trial_arm"] = arm
    crp = rng.gamma(2.0, 20.0, size=len(frame))
    crp[rng.random(len(frame)) < 0.1] = np.nan
    frame["crp"] = crp
    return frame


@pytest.fixture(scope="module")
def study_data(study_frame: pd.DataFrame) -> RegistryData:
    return prepare(study_frame, site="oslo", max_rows_per_patient=3)


def with_study_fields(policy: Policy, fields: list[dict[str, Any]]) -> Policy:
    raw = policy.model_dump(mode="json")
    raw["projects"][PROJECT]["study_fields"] = fields
    return Policy.model_validate(raw)


@pytest.fixture
def ctx(
    tmp_path: Path,
    study_data: RegistryData,
    oslo_policy: Policy,
    gateway_key: Ed25519PrivateKey,
) -> Iterator[NodeContext]:
    out = NodeContext(
        site="oslo",
        data=study_data,
        ledger=Ledger.in_directory(tmp_path),
        store=NodeStore.in_directory(tmp_path),
        node_key=generate_key(),
        gateway_key=public_key_b64(gateway_key),
        _policy=with_study_fields(oslo_policy, [ARM, CRP, ECOG]),
    )
    yield out
    out.ledger.close()
    out.store.close()


def body(**parts: Any) -> dict[str, Any]:
    return {
        "project": PROJECT,
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": 1.0},
        "study_fields": [ARM, CRP, ECOG],
        **parts,
    }


def test_the_data_keep_study_columns_by_kind(study_data: RegistryData) -> None:
    assert study_data.study_kinds() == {"trial_arm": "categorical", "crp": "bounded"}
    assert study_data.study_levels["trial_arm"] == ("A", "B", "C")
    assert study_data.study["crp"].dtype == np.float64


def test_the_manifest_publishes_only_what_the_data_provide(ctx: NodeContext) -> None:
    terms = ctx.policy.manifest(ctx.remaining(), provided=ctx.data.study_kinds())
    assert [f.name for f in terms.projects[PROJECT].study_fields] == ["trial_arm", "crp"]
    assert terms.projects["breast-outcomes"].study_fields == []
    # a declared kind the column does not hold is not exposed either
    wrong = {"name": "crp", "kind": "categorical", "categories": ["low", "high"]}
    policy = with_study_fields(ctx.policy, [wrong])
    assert policy.terms(provided=ctx.data.study_kinds()).projects[PROJECT].study_fields == []


def test_exact_study_statistics_match_pandas(
    study_data: RegistryData, study_frame: pd.DataFrame
) -> None:
    rows = bound_contributions(study_frame, 3)
    by_arm = parse_query(
        body(group_by=["trial_arm"], cohort={"op": "eq", "field": "sex", "value": "female"})
    )
    got = exact(study_data, evaluate(study_data, by_arm.cohort), by_arm).counts.tolist()
    female = rows[rows.sex == "female"]
    assert got == [int((female.trial_arm == "A").sum()), int((female.trial_arm == "B").sum())]

    high = parse_query(body(cohort={"op": ">=", "field": "crp", "value": 37.5}))
    assert int(exact(study_data, evaluate(study_data, high.cohort), high).counts[0]) == int(
        (rows.crp >= 37.5).sum()
    )
    arm_b = parse_query(body(cohort={"op": "in", "field": "trial_arm", "values": ["B"]}))
    assert int(exact(study_data, evaluate(study_data, arm_b.cohort), arm_b).counts[0]) == int(
        (rows.trial_arm == "B").sum()
    )
    hist = parse_query(
        body(statistic={"kind": "histogram", "field": "crp", "bins": [0, 10, 50, 200]})
    )
    want = pd.cut(rows.crp, [0, 10, 50, 200], right=False).value_counts(sort=False).tolist()
    assert exact(study_data, evaluate(study_data, None), hist).counts.tolist() == want

    total = parse_query(body(statistic={"kind": "sum", "field": "crp", "lower": 0, "upper": 100}))
    ex = exact(study_data, evaluate(study_data, None), total)
    assert ex.sums is not None
    assert float(ex.sums[0]) == pytest.approx(float(rows.crp.clip(0, 100).sum()), rel=1e-9)


def test_a_dp_release_through_the_pipeline(
    ctx: NodeContext, gateway_key: Ed25519PrivateKey, study_frame: pd.DataFrame
) -> None:
    q = body(
        cohort={"op": "eq", "field": "trial_arm", "value": "A"},
        statistic={"kind": "mean", "field": "crp", "lower": 0, "upper": 200},
        group_by=["sex"],
    )
    rel = handle(ctx, make_work(gateway_key, q))
    assert rel.status == "ok", rel.message
    assert [c.labels for c in rel.cells] == [["female"], ["male"]]
    rows = bound_contributions(study_frame, 3)
    want = rows[rows.trial_arm == "A"].groupby("sex", observed=True).crp.mean()
    for cell in rel.cells:
        assert cell.value == pytest.approx(want[cell.labels[0]], abs=5.0)
    assert len(ctx.ledger.charges()) == 1


def test_a_field_the_site_lacks_is_refused_by_name_uncharged(
    ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    rel = handle(ctx, make_work(gateway_key, body(group_by=["ecog"])))
    assert rel.status == "field_not_available"
    assert "ecog" in rel.message
    assert ctx.ledger.charges() == []


def test_a_declaration_unlike_the_sites_is_refused(
    ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    other = {**ARM, "categories": ["A", "B", "C"]}
    rel = handle(ctx, make_work(gateway_key, body(study_fields=[other], group_by=["trial_arm"])))
    assert rel.status == "policy_violation"
    assert "declares study field 'trial_arm' differently" in rel.message
    assert ctx.ledger.charges() == []


def test_an_undeclared_name_is_an_invalid_query(
    ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    rel = handle(ctx, make_work(gateway_key, body(study_fields=[], group_by=["trial_arm"])))
    assert rel.status == "invalid_query"
    assert "unknown field 'trial_arm'" in rel.message


def test_another_project_does_not_see_the_study_fields(
    ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    rel = handle(
        ctx, make_work(gateway_key, body(project="breast-outcomes", group_by=["trial_arm"]))
    )
    assert rel.status == "field_not_available"


def test_a_new_declaration_is_a_new_question() -> None:
    a = parse_query(body(group_by=["trial_arm"]))
    b = parse_query(body(group_by=["trial_arm"], study_fields=[{**ARM, "description": "arm"}]))
    assert query_key(a) != query_key(b)
    range_query = parse_query(body(cohort={"op": ">=", "field": "crp", "value": 17.5}))
    other = parse_query(body(cohort={"op": ">=", "field": "crp", "value": 18}))
    assert query_key(range_query) != query_key(other)  # real numbers are never rounded
