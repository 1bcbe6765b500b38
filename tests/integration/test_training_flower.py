"""Federated training on Flower's deployment engine: one SuperLink, three SuperNodes, 127.0.0.1.

Real processes (``flower-superlink``, ``flower-supernode``, the ClientApp and ServerApp
processes they start), real ledgers, OpenDP noise. Two jobs share the federation:

* the AUC job: a generous epsilon, all three sites; the federated logistic model must
  reach an AUC within 0.03 of the same model fitted centrally on the pooled data;
* the refusal job: Trondheim does not expose ``pdl1_tps`` and refuses, Bergen's budget
  runs out after one round, and Tromso's SuperNode is killed once the job is running;
  the job still finishes with what the others paid for, and each ledger holds exactly
  the rounds the job reports (a killed site's ledger is consistent whatever it paid).

Tromso takes no part in the AUC job (``sites`` leaves it out, and it says so).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from gateway.training.deployment import LocalFederation, Processes, write_app
from gateway.training.service import TrainingService
from nodes.data import RegistryData, prepare
from nodes.ledger import Ledger
from nodes.policy import load_policy
from nodes.synth import generate_registry
from nodes.training.dp import sigmoid
from nodes.training.features import design
from varde.errors import PolicyViolation
from varde.training import TrainingPrivacy, TrainingSpec, TrainingStatus, design_columns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("flower"),
    pytest.mark.timeout(240),
]

SITES = ["oslo", "bergen", "trondheim"]
ALL_SITES = [*SITES, "tromso"]
ROWS = 20_000
MAX_ROWS = 2
FIELDS = [
    "sex",
    "age_at_diagnosis",
    "stage",
    "cancer_type",
    "pdl1_tps",
    "vital_status",
    "survival_days",
]
# Project "refusals": Bergen can pay for round 1 of the refusal job (about 2.7) but not
# round 2 (about 1.3 more); project "outcomes" has room for the AUC job everywhere.
REFUSAL_BUDGETS = {"oslo": 50.0, "bergen": 3.0, "trondheim": 50.0, "tromso": 50.0}
AUC_SPEC = TrainingSpec(
    project="outcomes",
    features=["age_at_diagnosis", "sex", "stage", "cancer_type"],
    rounds=3,
    local_steps=50,
    learning_rate=4.0,
    sites=SITES,
    min_sites=3,
    privacy=TrainingPrivacy(epsilon=10.0, delta=1e-6, clip=1.0),
)


@dataclass
class Federation:
    fed: LocalFederation
    app: Path
    root: Path
    data: dict[str, RegistryData]
    state: dict[str, Path]
    policies: dict[str, Path]
    supernodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def train(
        self,
        spec: TrainingSpec,
        job_id: str,
        *,
        round_timeout_s: float = 60,
        timeout_s: float,
        once_running: Callable[[], None] | None = None,
    ) -> TrainingStatus:
        progress = self.root / f"{job_id}.json"
        self.fed.submit(
            self.app,
            {
                "job": spec.model_dump_json(),
                "job-id": job_id,
                "researcher": "alice",
                "progress-file": str(progress),
                "min-sites": spec.min_sites,
                "round-timeout": round_timeout_s,
                "connect-timeout": 30,
            },
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if progress.exists():
                status = TrainingStatus.model_validate_json(progress.read_text())
                if status.state in ("finished", "failed"):
                    return status
                if once_running is not None:
                    once_running()
                    once_running = None
            time.sleep(0.5)
        logs = (self.fed.home / "superlink.log").read_text()[-3000:]
        pytest.fail(f"job {job_id} did not finish within {timeout_s:g} s; superlink log:\n{logs}")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("flower")
    fed = LocalFederation(home=root / "flower")
    data: dict[str, RegistryData] = {}
    state: dict[str, Path] = {}
    supernodes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        fed.start_superlink()
        for site in ALL_SITES:
            d = root / site
            d.mkdir()
            frame = generate_registry(site, ROWS if site in SITES else 4_000, seed=3)
            frame.to_parquet(d / "registry.parquet")
            data[site] = prepare(frame, site=site, max_rows_per_patient=MAX_ROWS)
            fields = [f for f in FIELDS if not (site == "trondheim" and f == "pdl1_tps")]
            policy = {
                "site": site,
                "profile": "development",  # epsilon caps above the production limit
                "privacy_unit": {"max_tumours_per_patient": MAX_ROWS},
                "fields": fields,
                "statistics": ["count"],
                "projects": {
                    "outcomes": {"epsilon_budget": 50.0, "max_epsilon_per_query": 6.0},
                    "refusals": {
                        "epsilon_budget": REFUSAL_BUDGETS[site],
                        "max_epsilon_per_query": 3.0,
                    },
                    "service": {"epsilon_budget": 5.0, "max_epsilon_per_query": 5.0},
                },
            }
            (d / "policy.yaml").write_text(yaml.safe_dump(policy))
            state[site] = d / "state"
            supernodes[site] = fed.start_supernode(
                site,
                {
                    "site": site,
                    "policy": str(d / "policy.yaml"),
                    "data": str(d / "registry.parquet"),
                    "state-dir": str(state[site]),
                },
            )
        policies = {site: root / site / "policy.yaml" for site in ALL_SITES}
        yield Federation(fed, write_app(root / "app"), root, data, state, policies, supernodes)
    finally:
        fed.stop()


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    pos = label == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def fit_central(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unpenalised logistic regression by Newton's method (a tiny ridge keeps it solvable)."""
    w = np.zeros(x.shape[1])
    for _ in range(30):
        p = sigmoid(x @ w)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, x.T @ (p - y))
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def test_federated_auc_is_close_to_central(federation: Federation) -> None:
    status = federation.train(AUC_SPEC, "auc-job", timeout_s=150)
    assert status.state == "finished", status.detail
    assert status.round == AUC_SPEC.rounds
    assert status.coefficients is not None
    assert list(status.coefficients) == design_columns(AUC_SPEC.features)
    for site in SITES:
        progress = status.sites[site]
        assert progress.refusal is None
        assert progress.rounds_completed == AUC_SPEC.rounds
        assert progress.epsilon_spent == pytest.approx(10.0, rel=1e-6)
        with Ledger.in_directory(federation.state[site]) as ledger:
            assert ledger.spent("outcomes") == pytest.approx(10.0, rel=1e-6)
            assert len(ledger.charges("outcomes")) == AUC_SPEC.rounds
    assert status.sites["tromso"].refusal == (
        "policy_violation: site 'tromso' is not among the job's sites"
    )
    with Ledger.in_directory(federation.state["tromso"]) as ledger:
        assert ledger.charges() == []

    pooled = [design(federation.data[s], AUC_SPEC) for s in SITES]
    x = np.vstack([p[0] for p in pooled])
    y = np.concatenate([p[1] for p in pooled])
    central = fit_central(x, y)
    held_out = [
        design(
            prepare(generate_registry(s, 10_000, seed=99), site=s, max_rows_per_patient=2), AUC_SPEC
        )
        for s in SITES
    ]
    xt = np.vstack([h[0] for h in held_out])
    yt = np.concatenate([h[1] for h in held_out])
    federated = np.array(list(status.coefficients.values()))
    auc_central, auc_federated = auc(xt @ central, yt), auc(xt @ federated, yt)
    print(
        f"\nAUC central {auc_central:.4f}  federated (eps=10 per site) {auc_federated:.4f}  "
        f"seconds per round {[round(s, 1) for s in status.seconds_per_round]}"
    )
    assert auc_central > 0.75  # the outcome is predictable at all
    assert abs(auc_central - auc_federated) <= 0.03


def test_refusing_exhausted_and_killed_sites(federation: Federation) -> None:
    spec = TrainingSpec(
        project="refusals",
        features=["age_at_diagnosis", "pdl1_tps"],
        rounds=2,
        local_steps=5,
        privacy=TrainingPrivacy(epsilon=4.0),
    )
    before = {}
    for site in ALL_SITES:
        with Ledger.in_directory(federation.state[site]) as ledger:
            before[site] = (ledger.spent("refusals"), len(ledger.charges("refusals")))
    status = federation.train(
        spec,
        "refusal-job",
        round_timeout_s=30,
        timeout_s=120,
        once_running=lambda: Processes.kill(federation.supernodes["tromso"]),
    )
    assert status.state == "finished", status.detail
    oslo, bergen, trondheim = (status.sites[s] for s in SITES)
    assert oslo.rounds_completed == 2 and oslo.refusal is None
    assert trondheim.rounds_completed == 0
    assert trondheim.refusal == (
        "policy_violation: site 'trondheim' does not expose field(s) pdl1_tps"
    )
    assert bergen.rounds_completed == 1
    assert bergen.refusal is not None and bergen.refusal.startswith("budget_exhausted:")
    # A site that never answered in this job is known to the server only by its Flower node id.
    silent_names = [name for name in status.sites if name not in SITES]
    assert len(silent_names) == 1, status.sites
    assert silent_names[0].startswith("node-")
    silent = status.sites[silent_names[0]]
    assert silent.rounds_completed == 0
    # The SuperLink notices the node is gone ("Node Unavailable"), or the round times out.
    assert silent.refusal is not None
    assert "Node Unavailable" in silent.refusal or silent.refusal == "no reply within 30 s"
    for site in ALL_SITES:
        with Ledger.in_directory(federation.state[site]) as ledger:
            spent, count = before[site]
            assert ledger.spent("refusals") == pytest.approx(
                sum(c.amount for c in ledger.charges("refusals")), abs=1e-8
            )
            charges = ledger.charges("refusals")
            if site == "tromso":  # killed: it may or may not have paid before it died
                assert len(charges) - count in (0, 1)
                continue
            assert len(charges) - count == status.sites[site].rounds_completed
            assert ledger.spent("refusals") <= REFUSAL_BUDGETS[site]
            if status.sites[site].rounds_completed:
                assert ledger.spent("refusals") - spent == pytest.approx(
                    status.sites[site].epsilon_spent, abs=1e-8
                )
                assert json.loads(charges[-1].note)["job"] == "refusal-job"


def test_gateway_service_validates_then_runs_a_job(federation: Federation) -> None:
    """TrainingService (what POST /v1/trainings calls) against the real SuperLink."""
    service = TrainingService(
        federation.fed.submitter(),
        federation.root / "service",
        round_timeout_s=60,
        connect_timeout_s=30,
    )
    manifests = {}
    for site in SITES:  # what each node reports to the gateway
        with Ledger.in_directory(federation.state[site]) as ledger:
            policy = load_policy(federation.policies[site], site=site)
            remaining = {
                p: ledger.remaining(p, t.epsilon_budget) for p, t in policy.projects.items()
            }
            manifests[site] = policy.manifest(remaining)
    job = {
        "project": "service",
        "features": ["age_at_diagnosis", "stage"],
        "rounds": 1,
        "local_steps": 5,
        "privacy": {"epsilon": 1.0},
    }
    with pytest.raises(PolicyViolation, match="'trondheim' does not expose field\\(s\\) pdl1_tps"):
        service.start(
            TrainingSpec.model_validate({**job, "features": ["pdl1_tps"]}),
            researcher="alice",
            manifests=manifests,
        )
    spec = TrainingSpec.model_validate({**job, "sites": ["oslo", "bergen"], "min_sites": 2})
    status = service.start(spec, researcher="alice", manifests=manifests)
    assert status.state in ("pending", "running"), status.detail
    deadline = time.monotonic() + 90
    while status.state not in ("finished", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
        status = service.status(status.id, researcher="alice")
    assert status.state == "finished", status.detail
    assert {s: p.rounds_completed for s, p in status.sites.items() if p.refusal is None} == {
        "oslo": 1,
        "bergen": 1,
    }
    for site in ALL_SITES:
        with Ledger.in_directory(federation.state[site]) as ledger:
            expected = 1.0 if site in ("oslo", "bergen") else 0.0
            assert ledger.spent("service") == pytest.approx(expected, rel=1e-6)
