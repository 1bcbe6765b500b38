"""Federated training on Flower's deployment engine: one SuperLink, four SuperNodes, 127.0.0.1.

Real processes (``flower-superlink``, ``flower-supernode``, the ClientApp and ServerApp
processes they start), real ledgers, OpenDP noise, Flower's SecAgg+. Jobs share the
federation:

* the AUC job: a generous epsilon, three sites, so SecAgg+ is on (``auto``); the
  federated logistic model must reach an AUC within 0.03 of the same model fitted
  centrally on the pooled data;
* the pre-flight job: Trondheim does not expose ``pdl1_tps``, so the job stops before
  round 1 with Trondheim's reason, and no ledger anywhere is charged;
* the dropout job (SecAgg+, four sites): after round 1, Tromso's SuperNode is killed and
  a query spends Bergen's budget; round 2 then has two sites left, below the SecAgg+
  threshold of three, so the job fails cleanly (bounded by the round timeout), and each
  ledger holds exactly the rounds the job reports (lost rounds are paid, never refunded);
* the gateway service job: two sites, so the rounds run in the clear (``auto``).

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

from gateway.training.deployment import LocalFederation, write_app
from gateway.training.service import TrainingService
from launcher.flower import start_local_supernode
from nodes.data import RegistryData, prepare
from nodes.ledger import Ledger
from nodes.policy_check import load_policy
from nodes.synth import generate_registry
from nodes.training.dp import sigmoid
from nodes.training.features import design
from varde.budget import PureDP
from varde.errors import PolicyViolation
from varde.processes import Processes
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
# Project "refusals" has room for every job at every site (Bergen's runs out mid-job only
# because a query spends it); project "outcomes" has room for the AUC job everywhere.
REFUSAL_BUDGETS = {"oslo": 50.0, "bergen": 50.0, "trondheim": 50.0, "tromso": 50.0}
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
        after_round_1: Callable[[], None] | None = None,
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
                if after_round_1 is not None and status.round >= 1:
                    after_round_1()
                    after_round_1 = None
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
                    "outcomes": {
                        "epsilon_budget": 50.0,
                        "max_epsilon_per_query": 6.0,
                        "training": ["logistic", "cox"],
                    },
                    "refusals": {
                        "epsilon_budget": REFUSAL_BUDGETS[site],
                        "max_epsilon_per_query": 3.0,
                        "training": ["logistic", "cox"],
                    },
                    "service": {
                        "epsilon_budget": 5.0,
                        "max_epsilon_per_query": 5.0,
                        "training": ["logistic", "cox"],
                    },
                },
            }
            (d / "policy.yaml").write_text(yaml.safe_dump(policy))
            state[site] = d / "state"
            supernodes[site] = start_local_supernode(
                fed,
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
    status = federation.train(AUC_SPEC, "auc-job", timeout_s=420)  # SecAgg+ is slow on 2 busy cores
    assert status.state == "finished", status.detail
    assert status.secure_aggregation is True  # three sites: on by default
    assert status.round == AUC_SPEC.rounds
    assert status.coefficients is not None
    assert list(status.coefficients) == design_columns(AUC_SPEC.features)
    for site in SITES:
        progress = status.sites[site]
        assert progress.refusal is None
        assert progress.rounds_completed == AUC_SPEC.rounds
        # Every round's charge, as the site reported it in the clear under SecAgg+.
        assert progress.spent.epsilon == pytest.approx(
            AUC_SPEC.privacy.training_epsilon(), rel=1e-6
        )
        with Ledger.in_directory(federation.state[site]) as ledger:
            paid = {c.query_id: c.amount for c in ledger.charges("outcomes")}
            assert len(paid) == AUC_SPEC.rounds + 1  # the rounds, then the DP evaluation
            evaluation = paid["evaluation:auc-job"]
            assert evaluation == pytest.approx(AUC_SPEC.privacy.evaluation_budget())
            assert ledger.spent("outcomes") == pytest.approx(
                progress.spent.epsilon + evaluation, abs=1e-8
            )
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
        f"\nAUC central {auc_central:.4f}  federated with SecAgg+ (eps=10 per site) "
        f"{auc_federated:.4f}  "
        f"seconds per round {[round(s, 1) for s in status.seconds_per_round]}"
    )
    assert auc_central > 0.75  # the outcome is predictable at all
    assert abs(auc_central - auc_federated) <= 0.03
    # The DP evaluation on the sites' held-out patients (epsilon 1 of the 10, 20 public bins).
    assert status.metrics is not None and status.metrics.network is not None
    dp_auc = status.metrics.network.values["auc"]
    print(f"DP held-out AUC {dp_auc:.4f} (sites: {sorted(status.metrics.sites)})")
    assert abs(dp_auc - auc_federated) <= 0.05


def ledger_counts(federation: Federation, project: str) -> dict[str, tuple[float, int]]:
    counts = {}
    for site in ALL_SITES:
        with Ledger.in_directory(federation.state[site]) as ledger:
            counts[site] = (ledger.spent(project), len(ledger.charges(project)))
    return counts


def test_preflight_refusal_stops_the_job_before_any_charge(federation: Federation) -> None:
    spec = TrainingSpec(
        project="refusals",
        features=["age_at_diagnosis", "pdl1_tps"],
        rounds=2,
        local_steps=5,
        privacy=TrainingPrivacy(epsilon=4.0),
    )
    before = ledger_counts(federation, "refusals")
    status = federation.train(spec, "preflight-job", round_timeout_s=30, timeout_s=60)
    assert status.state == "failed"
    assert status.round == 0 and status.coefficients is None
    assert status.detail is not None and status.detail.startswith("pre-flight refused")
    assert status.sites["trondheim"].refusal == (
        "field_not_available: site 'trondheim' does not expose field(s) pdl1_tps"
    )
    for site in ("oslo", "bergen", "tromso"):
        assert status.sites[site].refusal is None
    assert ledger_counts(federation, "refusals") == before  # nothing charged anywhere


def test_killed_and_exhausted_sites_under_secagg(federation: Federation) -> None:
    spec = TrainingSpec(
        project="refusals",
        features=["age_at_diagnosis", "stage"],
        rounds=2,
        local_steps=5,
        privacy=TrainingPrivacy(epsilon=4.0),
    )
    before = ledger_counts(federation, "refusals")

    def kill_and_spend() -> None:
        Processes.kill(federation.supernodes["tromso"])
        with Ledger.in_directory(federation.state["bergen"]) as ledger:
            left = ledger.remaining("refusals", PureDP(REFUSAL_BUDGETS["bergen"])).amount
            ledger.charge(
                project="refusals", cost=PureDP(left - 1e-3), total=PureDP(50.0), query_id="a-query"
            )

    started = time.monotonic()
    status = federation.train(
        spec, "dropout-job", round_timeout_s=30, timeout_s=200, after_round_1=kill_and_spend
    )
    elapsed = time.monotonic() - started
    print(f"\ndropout job: {status.detail} after {elapsed:.0f} s; {status.sites}")
    assert status.secure_aggregation is True
    assert status.state == "failed"
    assert status.round == 1
    assert status.detail is not None
    assert status.detail.startswith("round 2: secure aggregation could not complete")
    bergen = status.sites["bergen"]
    assert bergen.rounds_completed == 1
    assert bergen.refusal is not None and bergen.refusal.startswith("budget_exhausted:")
    tromso = status.sites["tromso"]
    assert tromso.rounds_completed == 1
    assert tromso.refusal is not None
    # The SuperLink notices the node is gone ("Node Unavailable"), or the stage times out.
    assert "Node Unavailable" in tromso.refusal or "no reply within 30 s" in tromso.refusal
    # Oslo and Trondheim paid for round 2 before masking it; the round was lost.
    for site in ("oslo", "trondheim"):
        assert status.sites[site].rounds_completed == 2 and status.sites[site].refusal is None
    for site in ALL_SITES:
        spent, count = before[site]
        with Ledger.in_directory(federation.state[site]) as ledger:
            charges = [c for c in ledger.charges("refusals") if c.query_id.startswith("training:")]
            job = [c for c in charges if json.loads(c.note)["job"] == "dropout-job"]
            assert len(job) == status.sites[site].rounds_completed
            assert sum(c.amount for c in job) == pytest.approx(
                status.sites[site].spent.epsilon, abs=1e-8
            )
            assert ledger.spent("refusals") <= REFUSAL_BUDGETS[site]


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
                p: ledger.remaining(p, PureDP(t.epsilon_budget)) for p, t in policy.projects.items()
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
    assert status.secure_aggregation is False  # two sites: the sum would hide nothing
    print(f"\nseconds per round without SecAgg+ (2 sites): {status.seconds_per_round}")
    assert {s: p.rounds_completed for s, p in status.sites.items() if p.refusal is None} == {
        "oslo": 1,
        "bergen": 1,
    }
    for site in ALL_SITES:
        with Ledger.in_directory(federation.state[site]) as ledger:
            if site in ("oslo", "bergen"):
                spent = status.sites[site].spent.epsilon
                assert spec.privacy.training_epsilon() - 1e-6 <= spent <= 1.0 + 1e-6
                evaluation = spec.privacy.evaluation_budget()  # the final DP evaluation
                assert ledger.spent("service") == pytest.approx(spent + evaluation, abs=1e-8)
            else:
                assert ledger.spent("service") == 0.0
