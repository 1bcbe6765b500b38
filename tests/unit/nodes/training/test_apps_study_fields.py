"""A whole job with a cohort, a named outcome and a study feature, ServerApp to ClientApp.

Through the fake Flower Grid of ``test_apps.py``: Oslo's data come through a mapping that
provides the study column, Bergen's plain registry file has none. Bergen's pre-flight
refuses the job by name before anything is charged; Oslo alone trains it to the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from flwr.supercore.task_identity import TaskIdentity

from nodes.ledger import Ledger
from nodes.synth import generate_registry
from tests.unit.nodes.training.test_apps import run
from varde.schema import FIELDS as SCHEMA
from varde.training import TrainingSpec

FIELDS = ["sex", "age_at_diagnosis", "cancer_type", "clinical_trial", "vital_status",
          "survival_days"]  # fmt: skip
CRP = {"name": "crp", "kind": "bounded", "lower": 17.0, "upper": 44.0, "unit": "mg/L"}
JOB = TrainingSpec.model_validate(
    {
        "project": "p",
        "features": ["sex", "crp"],
        "cohort": {"op": "in", "field": "cancer_type", "values": ["lung", "breast", "colorectal"]},
        "outcome": {"kind": "binary", "field": "clinical_trial", "positive": "yes"},
        "rounds": 2,
        "local_steps": 3,
        "privacy": {"epsilon": 3.0},
        "study_fields": [CRP],
    }
)


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def make_site(root: Path, site: str, *, with_crp: bool) -> dict[str, str]:
    d = root / site
    d.mkdir(parents=True)
    policy = {
        "site": site,
        "profile": "development",
        "privacy_unit": {"max_tumours_per_patient": 2},
        "fields": FIELDS,
        "statistics": ["count"],
        "projects": {
            "p": {
                "epsilon_budget": 10.0,
                "max_epsilon_per_query": 10.0,
                "training": ["logistic"],
                "study_fields": [CRP],
            }
        },
    }
    (d / "policy.yaml").write_text(yaml.safe_dump(policy))
    frame = generate_registry(site, 4_000, seed=5)
    config = {"site": site, "policy": str(d / "policy.yaml"), "state-dir": str(d / "state")}
    if not with_crp:
        frame.to_parquet(d / "registry.parquet")
        return {**config, "data": str(d / "registry.parquet")}
    frame["crp"] = np.random.default_rng(3).uniform(17, 44, size=len(frame)).round(1)
    frame.to_csv(d / "registry.csv", index=False)
    mapping = {
        "site": site,
        "source": {"kind": "csv", "path": "registry.csv"},
        "fields": {f.name: {"column": f.name} for f in SCHEMA},
        "study_fields": {"crp": {"column": "crp", "kind": "number"}},
    }
    (d / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    return {**config, "mapping": str(d / "mapping.yaml")}


def charges(cfg: dict[str, str]) -> int:
    with Ledger.in_directory(Path(cfg["state-dir"])) as ledger:
        return len(ledger.charges())


def test_a_site_without_the_study_column_refuses_at_the_preflight(tmp_path: Path) -> None:
    sites = {
        "oslo": make_site(tmp_path, "oslo", with_crp=True),
        "bergen": make_site(tmp_path, "bergen", with_crp=False),
    }
    status = run(tmp_path, sites, JOB, min_sites=1)
    assert status.state == "failed" and status.round == 0
    assert status.sites["bergen"].refusal == (
        "field_not_available: site 'bergen' does not expose field(s) crp"
    )
    assert status.sites["oslo"].refusal is None
    assert [charges(c) for c in sites.values()] == [0, 0]


def test_the_site_with_it_trains_the_job_to_the_end(tmp_path: Path) -> None:
    sites = {"oslo": make_site(tmp_path, "oslo", with_crp=True)}
    status = run(tmp_path, sites, JOB, min_sites=1)
    assert status.state == "finished", status.detail
    assert status.coefficients is not None
    assert list(status.coefficients) == ["intercept", "sex=female", "sex=male", "crp"]
    assert status.sites["oslo"].rounds_completed == 2
    assert charges(sites["oslo"]) == 3  # two rounds and the evaluation
    assert status.metrics is not None and "oslo" in status.metrics.sites
