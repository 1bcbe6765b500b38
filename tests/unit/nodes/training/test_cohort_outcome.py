"""A training job's cohort, named outcome and study features at a site (the ClientApp's calls).

Designs are checked against pandas on the same rows; rounds and the evaluation go through
:func:`nodes.training.rounds.run_round` / :func:`nodes.training.evaluation.evaluate_model`,
what the ClientApp calls for each Flower message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nodes.data import RegistryData, bound_contributions, prepare
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.store import NodeStore
from nodes.synth import generate_registry
from nodes.training.evaluation import evaluate_model
from nodes.training.features import design, encode_features, holdout_mask, survival_design
from nodes.training.preflight import preflight
from nodes.training.rounds import run_round
from varde.errors import FieldNotAvailable
from varde.training import TrainingSpec

ARM = {"name": "trial_arm", "kind": "categorical", "categories": ["A", "B"]}
CRP = {"name": "crp", "kind": "bounded", "lower": 17.0, "upper": 44.0, "unit": "mg/L"}
PFS = {"name": "pfs_months", "kind": "bounded", "lower": 0.0, "upper": 120.0}
PROGRESSED = {"name": "progressed", "kind": "categorical", "categories": ["yes", "no"]}
STUDY = [ARM, CRP, PFS, PROGRESSED]
FIELDS = ["sex", "age_at_diagnosis", "stage", "cancer_type", "clinical_trial", "vital_status",
          "survival_days"]  # fmt: skip


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    out = generate_registry("oslo", 6_000, seed=11)
    rng = np.random.default_rng(2)
    out["trial_arm"] = rng.choice(np.array(["A", "B", "C"], dtype=object), size=len(out))
    out["crp"] = rng.uniform(17, 44, size=len(out)).round(1)
    out["pfs_months"] = rng.exponential(20, size=len(out)).round(1)
    out["progressed"] = rng.choice(np.array(["yes", "no"], dtype=object), size=len(out))
    return out


@pytest.fixture(scope="module")
def data(frame: pd.DataFrame) -> RegistryData:
    return prepare(frame, site="oslo", max_rows_per_patient=2)


@pytest.fixture(scope="module")
def rows(frame: pd.DataFrame) -> pd.DataFrame:
    return bound_contributions(frame, 2).reset_index(drop=True)


def policy(study: list[dict[str, Any]] = STUDY) -> Policy:
    return Policy.model_validate(
        {
            "site": "oslo",
            "profile": "development",
            "privacy_unit": {"max_tumours_per_patient": 2},
            "fields": FIELDS,
            "statistics": ["count"],
            "projects": {
                "p": {
                    "epsilon_budget": 20.0,
                    "max_epsilon_per_query": 10.0,
                    "training": ["logistic", "cox"],
                    "study_fields": study,
                }
            },
        }
    )


def job(**parts: Any) -> TrainingSpec:
    base: dict[str, Any] = {
        "project": "p",
        "features": ["sex", "crp", "trial_arm"],
        "rounds": 2,
        "local_steps": 3,
        "privacy": {"epsilon": 3.0},
        "study_fields": STUDY,
    }
    return TrainingSpec.model_validate({**base, **parts})


@pytest.fixture
def books(tmp_path: Path) -> Iterator[tuple[Ledger, NodeStore]]:
    store = NodeStore.in_directory(tmp_path)
    with Ledger.in_directory(tmp_path) as ledger:
        yield ledger, store
    store.close()


def test_study_features_are_scaled_over_their_declared_bounds(
    data: RegistryData, rows: pd.DataFrame
) -> None:
    spec = job()
    x = encode_features(data, spec.features, study_fields=spec.study_fields)
    assert spec.columns() == ["intercept", "sex=female", "sex=male", "crp", "trial_arm=A",
                              "trial_arm=B"]  # fmt: skip
    want = (rows.crp.to_numpy() - 30.5) / 13.5  # the declared 17..44, not the data's range
    np.testing.assert_allclose(x[:, 3], want)
    assert x[:, 3].min() < -0.95 and x[:, 3].max() > 0.95  # the covariate spans [-1, 1]
    np.testing.assert_array_equal(x[:, 4], (rows.trial_arm == "A").to_numpy(float))
    np.testing.assert_array_equal(x[:, 5], (rows.trial_arm == "B").to_numpy(float))
    # "C" is not a declared category: no indicator set
    assert (x[(rows.trial_arm == "C").to_numpy(), 4:6] == 0).all()


def test_a_cohort_and_a_binary_outcome_choose_the_rows_and_labels(
    data: RegistryData, rows: pd.DataFrame
) -> None:
    spec = job(
        cohort={"op": "in", "field": "cancer_type", "values": ["lung", "breast"]},
        outcome={"kind": "binary", "field": "clinical_trial", "positive": "yes"},
    )
    x, y = design(data, spec, "train")
    train = ~holdout_mask(data, spec.holdout)
    keep = (
        rows.cancer_type.isin(["lung", "breast"]).to_numpy()
        & rows.clinical_trial.notna().to_numpy()
    )
    keep &= train
    assert x.shape[0] == int(keep.sum()) > 100
    np.testing.assert_array_equal(y, (rows.clinical_trial[keep] == "yes").to_numpy(float))
    held_x, _ = design(data, spec, "holdout")
    assert held_x.shape[0] == int((rows.cancer_type.isin(["lung", "breast"]) & ~train).sum())


def test_a_time_to_event_outcome_on_study_fields(data: RegistryData, rows: pd.DataFrame) -> None:
    spec = job(
        model="cox",
        features=["sex", "trial_arm"],
        cohort={"op": ">=", "field": "crp", "value": 30},
        outcome={
            "kind": "time_to_event",
            "time": "pfs_months",
            "event": "progressed",
            "event_value": "yes",
        },  # fmt: skip
    )
    d = survival_design(data, spec, "all")
    keep = (rows.crp >= 30).to_numpy()
    assert d.n_rows == int(keep.sum())
    np.testing.assert_allclose(d.time, rows.pfs_months[keep].to_numpy())
    np.testing.assert_array_equal(d.event, (rows.progressed[keep] == "yes").to_numpy(float))


def test_rounds_and_evaluation_run_and_pay_for_a_named_outcome(
    data: RegistryData, books: tuple[Ledger, NodeStore]
) -> None:
    ledger, store = books
    spec = job(
        cohort={"op": "eq", "field": "trial_arm", "value": "A"},
        outcome={"kind": "binary", "field": "clinical_trial", "positive": "yes"},
    )
    weights = np.zeros(spec.n_coefficients())
    for _ in range(spec.rounds):
        result = run_round(
            data=data,
            policy=policy(),
            ledger=ledger,
            store=store,
            spec=spec,
            job_id="j",
            researcher="alice",
            weights=weights,
        )
        weights = result.weights
        assert np.isfinite(weights).all() and weights.shape == (6,)
    evaluated = evaluate_model(
        data=data,
        policy=policy(),
        ledger=ledger,
        store=store,
        spec=spec,
        job_id="j",
        researcher="alice",
        weights=weights,
    )
    assert evaluated is not None
    assert len(ledger.charges()) == spec.rounds + 1


def test_a_site_whose_data_lack_a_study_field_refuses_the_job_by_name_uncharged(
    frame: pd.DataFrame, books: tuple[Ledger, NodeStore], tmp_path: Path
) -> None:
    ledger, store = books
    without = prepare(frame.drop(columns=["crp"]), site="oslo", max_rows_per_patient=2)
    spec = job()
    with pytest.raises(FieldNotAvailable, match="crp"):
        run_round(
            data=without,
            policy=policy(),
            ledger=ledger,
            store=store,
            spec=spec,
            job_id="j",
            researcher="alice",
            weights=np.zeros(spec.n_coefficients()),
        )
    assert ledger.charges() == []
    with pytest.raises(FieldNotAvailable, match="crp"):  # the pre-flight, from the mapping
        preflight(
            policy=policy(),
            ledger=ledger,
            spec=spec,
            job_id="j",
            researcher="alice",
            state_dir=tmp_path,
            provided={"trial_arm": "categorical"},
        )
