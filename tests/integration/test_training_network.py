"""Federated training as a user runs it: ``LocalNetwork(training=True)``, the SDK, HTTP only.

What runs: ``varde gateway serve --with-superlink`` (the gateway starts a real
``flower-superlink`` beside itself) and three ``varde node run --flower-superlink
... --flower-insecure`` processes (each starts a real ``flower-supernode`` with its
own site, policy, data and state dir), all on 127.0.0.1, registries of 5,000
tumours. A researcher submits with ``VardeClient.train`` over HTTP:

* a logistic job, 2 rounds, three sites, so SecAgg+ is on (``auto``): it finishes,
  the coefficients are there, what each site reports spent is what its own ledger
  charged (read from the node's ledger file), ``GET /v1/trainings`` lists it, and
  the gateway's budget view catches up with what the rounds charged;
* a job reading ``pdl1_tps``, which Trondheim's policy does not expose: 403 naming
  Trondheim, and no ledger anywhere is charged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.network import LocalNetwork
from nodes.ledger import Ledger
from varde_client import VardeClient, VardeHTTPError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("training-network"),
    pytest.mark.timeout(300),
]

SITES = ["oslo", "bergen", "trondheim"]
PROJECT = "nsclc-feasibility"
JOB = {
    "project": PROJECT,
    "model": "logistic",
    "features": ["age_at_diagnosis", "sex", "stage"],
    "rounds": 2,
    "epsilon": 1.5,  # round 1 costs 0.93, under every site's per-query cap of 1
}


def _flower_pids(root: Path) -> list[int]:
    """Flower processes whose command line names this network's directory."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [
        int(line.split(None, 1)[0])
        for line in out.stdout.splitlines()
        if str(root) in line and ("flower-" in line or "flwr" in line)
    ]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    root = tmp_path_factory.mktemp("training-net")
    net = LocalNetwork(workdir=root, sites=SITES, rows=5_000, seed=11, training=True)
    try:
        net.start()
        yield net
    finally:
        net.stop()
    # Gateway and nodes stopped their SuperLink and SuperNodes (and those their helpers).
    deadline = time.monotonic() + 15
    while _flower_pids(root) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _flower_pids(root)
    for pid in left:  # never leave any behind, even when the check fails
        os.kill(pid, 9)
    assert not left, f"Flower processes outlived the network: {left}"


@pytest.fixture(scope="module")
def client(network: LocalNetwork) -> Iterator[VardeClient]:
    with VardeClient(network.url, network.token, timeout=60) as c:
        yield c


def ledger_charges(network: LocalNetwork, site: str) -> dict[str, float]:
    """query id -> amount, from the node's own ledger file."""
    with Ledger.in_directory(network.node_state(site)) as ledger:
        return {c.query_id: c.amount for c in ledger.charges(PROJECT)}


def test_refused_job_names_the_site_and_charges_nothing(
    network: LocalNetwork, client: VardeClient
) -> None:
    before = {site: ledger_charges(network, site) for site in SITES}
    with pytest.raises(VardeHTTPError) as err:
        client.train({**JOB, "features": ["age_at_diagnosis", "pdl1_tps"]}, wait=False)
    assert err.value.status == 403
    assert "trondheim" in str(err.value) and "pdl1_tps" in str(err.value)
    assert "oslo" not in str(err.value)  # Oslo and Bergen expose PD-L1
    assert {site: ledger_charges(network, site) for site in SITES} == before
    assert client.trainings().empty


def test_training_job_through_the_gateway(network: LocalNetwork, client: VardeClient) -> None:
    result = client.train(JOB, wait=True, progress=False, poll_s=1.0, timeout_s=150)
    status = result.status
    assert result.ok, status.detail
    assert status.secure_aggregation is True  # three sites: SecAgg+ by default
    assert status.round == 2
    assert set(result.coefficients.index) >= {"age_at_diagnosis"}
    assert result.coefficients.notna().all()
    for site in SITES:
        progress = status.sites[site]
        assert progress.refusal is None and progress.rounds_completed == 2
        paid = ledger_charges(network, site)
        rounds = sum(v for k, v in paid.items() if k.startswith("training:"))
        assert rounds == pytest.approx(progress.spent.epsilon, abs=1e-8)
        assert rounds == pytest.approx(1.5 - 0.15, rel=1e-6)  # the job less its evaluation
        assert paid[f"evaluation:{status.id}"] == pytest.approx(0.15)
        assert len(paid) == 3  # two rounds and the evaluation, nothing else
    assert status.metrics is not None
    listed = client.trainings()
    assert list(listed["id"]) == [status.id]
    assert listed.loc[0, "state"] == "finished"
    # The rounds were charged by the ClientApps, yet each node republishes its budgets.
    budgets = {"oslo": 10.0, "bergen": 8.0, "trondheim": 6.0}
    deadline = time.monotonic() + 20
    while True:
        view = client.budgets().set_index(["project", "site"])["remaining"]
        left = {site: float(view[(PROJECT, site)]) for site in SITES}
        if all(left[s] == pytest.approx(budgets[s] - 1.5) for s in SITES):
            break
        assert time.monotonic() < deadline, f"gateway still shows {left}"
        time.sleep(0.5)


def test_every_training_charge_is_in_the_sites_audit_trail(
    network: LocalNetwork, client: VardeClient
) -> None:
    """What a data-protection officer reads: ``varde audit verify`` and ``varde audit export``.

    After the job of the test above, each node's trail verifies, lists a ``charged`` entry
    for each round (job id, round, amount) and the evaluation, and its audited total
    equals what the ledger holds for the project.
    """
    jobs = client.trainings()
    if jobs.empty or "finished" not in set(jobs["state"]):
        client.train(JOB, wait=True, progress=False, poll_s=1.0, timeout_s=150)
        jobs = client.trainings()
    job = str(jobs[jobs["state"] == "finished"].iloc[0]["id"])
    varde = [sys.executable, "-m", "launcher.cli"]
    for site in SITES:
        state = str(network.node_state(site))
        verified = subprocess.run(
            [*varde, "audit", "verify", "--state-dir", state],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "audit trail OK" in verified.stdout
        exported = subprocess.run(
            [*varde, "audit", "export", "--state-dir", state, "--kind", "charged"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        charged = [e for e in json.loads(exported.stdout) if e["project"] == PROJECT]
        details = [e["detail"] for e in charged]
        rounds = sorted(
            d["round"] for d in details if d["what"] == "training round" and d["job"] == job
        )
        assert rounds == [1, 2], details
        assert any(d["what"] == "evaluation" and d["job"] == job for d in details)
        paid = ledger_charges(network, site)
        assert {e["query_id"] for e in charged} == set(paid)
        assert sum(d["amount"] for d in details) == pytest.approx(sum(paid.values()), abs=1e-9)
