"""docs/JOINING.md followed literally on loopback: every ```sh block of the guide, in order,
with its placeholders filled in, against a real gateway serving HTTPS with a throw-away CA.

What the test supplies is what the guide says the network's operator supplies (the gateway
URL, an enrollment token, the CA file ``network-ca.pem``, a researcher token) and the
hospital's own export at ``/srv/registry/tumours.csv`` (a synthetic registry written in the
column layout of the starter mapping). The one change to a command: ``varde node run``, which
stays in the foreground, is started in the background (its output to a log file), and the
next block runs once the gateway sees the node connected. ```bash blocks (installing the wheel,
key rotation, leaving) are not run here; their commands are covered by the tests of each
command.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from launcher.network import REPO
from tests.tls_ca import TestCA
from varde.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("joining")]

GUIDE = REPO / "docs" / "JOINING.md"
SITE = "tromso"
EXPORT = "/srv/registry/tumours.csv"
BIN = Path(sys.executable).parent


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def varde(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def hospital_export(path: Path) -> None:
    """A synthetic registry in the starter mapping's local layout (codes as a hospital has them)."""
    from nodes.synth import generate_registry

    reg = generate_registry(SITE, 3_000, seed=21)
    dead = reg["vital_status"].astype(str) == "dead"
    stage = reg["stage"].astype(str).map({"I": "1", "II": "2", "III": "3", "IV": "4"})
    local = pd.DataFrame(
        {
            "patient_id": reg["patient_id"].astype(str),
            "sex": reg["sex"].astype(str).map({"female": "F", "male": "M"}),
            # born on 1 January: age at diagnosis is then whole years, as in the synthetic data
            "birth_date": reg["birth_year"].astype(str) + "-01-01",
            "diagnosis_date": reg["diagnosis_date"].dt.strftime("%Y-%m-%d"),
            "icdo3_topography": reg["topography"].astype(str),
            "icdo3_morphology": reg["morphology"].astype(str).str.replace("/", ""),
            "stage": stage.fillna(""),
            "t": reg["t_stage"].astype(str),
            "n": reg["n_stage"].astype(str),
            "m": reg["m_stage"].astype(str),
            "grade": reg["grade"].astype(str),
            "first_treatment": reg["first_treatment"].astype(str),
            "days_to_treatment": reg["days_to_treatment"].astype("string").fillna(""),
            "trial": reg["clinical_trial"].astype(str).map({"yes": "1", "no": "0"}),
            "death_date": reg["last_contact_date"].dt.strftime("%Y-%m-%d").where(dead, ""),
            "last_followup_date": reg["last_contact_date"].dt.strftime("%Y-%m-%d"),
            "region": reg["region"].astype(str),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    local.to_csv(path, index=False)


@dataclass
class Operator:
    """What the network's operator has: a gateway over HTTPS, its CA, a researcher token."""

    url: str
    state: Path
    ca: Path
    researcher_token: str


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    work = tmp_path_factory.mktemp("operator")
    ca = TestCA(work / "pki")
    # valid for months, as a real one (doctor warns about a certificate near its end)
    import datetime as dt

    server = ca.issue_server("gateway", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=90))
    state = work / "gateway"
    assert (
        varde("admin", "project", "add", "network-check", "--state-dir", str(state)).returncode == 0
    )
    researcher = varde(
        "admin", "researcher", "add", "operator", "--project", "network-check",
        "--state-dir", str(state),
    )  # fmt: skip
    assert researcher.returncode == 0, researcher.stderr
    port = free_port()
    log = (work / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "gateway", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--state-dir", str(state), "--tls-cert", str(server.cert),
         "--tls-key", str(server.key)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"https://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (work / "gateway.log").read_text()
            try:
                httpx.get(f"{url}/healthz", verify=False, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.2)
        yield Operator(url, state, ca.cert_path, researcher.stdout.strip())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        log.close()


def connected(op: Operator, site: str) -> bool:
    import ssl

    resp = httpx.get(
        f"{op.url}/v1/sites",
        headers={"Authorization": f"Bearer {op.researcher_token}"},
        verify=ssl.create_default_context(cafile=str(op.ca)),
        timeout=5,
    )
    return any(s["site"] == site and s["connected"] for s in resp.json())


def test_the_guide_has_the_steps_in_order() -> None:
    text = GUIDE.read_text()
    joined = "\n".join(sh_blocks(text))
    order = [
        "varde node init",
        "varde node doctor",
        "varde node check-data",
        "varde policy check",
        "varde node run",
        "varde query",
    ]
    positions = [joined.find(cmd) for cmd in order]
    assert -1 not in positions and positions == sorted(positions), dict(
        zip(order, positions, strict=True)
    )
    assert "JOINING.md" in (REPO / "README.md").read_text(), "the README links the guide"


def test_following_the_guide_answers_a_first_query(operator: Operator, tmp_path: Path) -> None:
    export = tmp_path / "srv" / "registry" / "tumours.csv"
    hospital_export(export)
    shutil.copy(operator.ca, tmp_path / "network-ca.pem")  # "saved here as network-ca.pem"
    token = varde(
        "admin", "enroll-token", SITE, "--expires", "48h", "--state-dir", str(operator.state)
    )
    assert token.returncode == 0, token.stderr
    values = {
        "<gateway URL>": operator.url,
        "<enrollment token>": token.stdout.strip(),
        "<site>": SITE,
        "<researcher token>": operator.researcher_token,
        EXPORT: str(export),
    }
    blocks = sh_blocks(GUIDE.read_text())
    assert len(blocks) == 6, "a new sh block: check that this test still runs it as intended"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "VARDE_TOKEN"):
        env.pop(var, None)
    pid_file = tmp_path / "node.pid"
    outputs: list[str] = []
    try:
        for i, block in enumerate(blocks):
            for placeholder, value in values.items():
                block = block.replace(placeholder, value)
            assert not re.search(r"<[a-z][a-z ]*>", block), f"unfilled placeholder in {block}"
            starts_node = "varde node run" in block
            if starts_node:
                block = re.sub(
                    r"^(varde node run .*)$", r"\1 > node.log 2>&1 & echo $! > node.pid",
                    block, flags=re.MULTILINE,
                )  # fmt: skip
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            outputs.append(done.stdout + done.stderr)
            # the guide says the first doctor, right after init, fails on data alone
            expected = 1 if i == 1 else 0
            assert done.returncode == expected, f"block {i}:\n{block}\n{outputs[-1]}"
            if starts_node:
                deadline = time.monotonic() + 60
                while not connected(operator, SITE):
                    log = (tmp_path / "node.log").read_text(errors="replace")
                    assert time.monotonic() < deadline, f"node never connected:\n{log}"
                    time.sleep(0.3)
        init, doctor, check_data, policy, started, query = outputs
        assert f"node {SITE} enrolled" in init, init
        assert "DENIES EVERYTHING" in doctor and "1 check(s) failed: data" in doctor, doctor
        assert "3,000 rows" in check_data, check_data
        assert "OK" in policy or "ok" in policy, policy
        assert "all checks passed" in started and "DENIES EVERYTHING" not in started, started
        # the first query, answered by this site: a noisy count with its interval
        row = next(line for line in query.splitlines() if line.strip().startswith(SITE))
        assert re.search(rf"{SITE}\s+\d+\*?\s+\[", row), query
        audit = varde(
            "audit",
            "report",
            "--by",
            "project",
            "--state-dir",
            str(tmp_path / "varde-node" / "state"),
        )
        assert audit.returncode == 0 and "network-check" in audit.stdout, (
            audit.stdout + audit.stderr
        )
    finally:
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
