"""docs/JOINING.md followed literally on loopback: every ```sh block of the guide, in order,
with its placeholders filled in, against a real gateway serving HTTPS with a throw-away CA.

What the test supplies is what the guide says the network's operator supplies (the gateway
URL, an enrollment token, the CA file ``network-ca.pem``, a researcher token) and the
hospital's own export at ``/srv/registry/tumours.csv`` (a synthetic registry written in the
column layout of the starter mapping). The one change to a command: ``varde node run``, which
stays in the foreground, is started in the background (its output to a log file), and the
next block runs once the gateway sees the node connected. ```bash blocks (installing the wheel,
leaving) are not run here; their commands are covered by the tests of each command. The key
rotation's block is run line by line by its own test, after the others.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
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


def hospital_export(path: Path, rows: int = 3_000, seed: int = 21) -> None:
    """A synthetic registry in the starter mapping's local layout (codes as a hospital has them)."""
    from nodes.synth import generate_registry

    reg = generate_registry(SITE, rows, seed=seed)
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


def charges(state: Path) -> list[tuple[object, ...]]:
    """Every charge in a node's ledger (read directly: cheaper than a varde process)."""
    import sqlite3

    with sqlite3.connect(state / "ledger.sqlite") as conn:
        return sorted(conn.execute("SELECT * FROM budget_charges").fetchall(), key=repr)


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


def bash_block_after(text: str, heading: str) -> str:
    """The first ```bash block after ``heading``."""
    rest = text[text.index(heading) :]
    found = re.search(r"^```bash\n(.*?)^```$", rest, flags=re.MULTILINE | re.DOTALL)
    assert found is not None, heading
    return found.group(1)


def command_lines(block: str) -> list[str]:
    """A block's commands, one a line (continuations joined, comments and blanks dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


class Node:
    """``varde node run`` started from a guide's line, in the background, in its own session."""

    def __init__(self, line: str, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.mark = log.stat().st_size if log.exists() else 0
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(
                ["bash", "-c", f"exec {line}"], cwd=cwd, env=env, stdout=fh,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def new_output(self) -> str:
        with self.log.open("rb") as fh:
            fh.seek(self.mark)
            return fh.read().decode(errors="replace")

    def wait_polling(self, timeout: float = 60) -> None:
        """Until this process has polled the gateway successfully (enrolled if it had to)."""
        deadline = time.monotonic() + timeout
        while '/v1/nodes/poll "HTTP/1.1 200' not in self.new_output():
            assert self.proc.poll() is None, self.new_output()
            assert time.monotonic() < deadline, f"node did not poll:\n{self.new_output()}"
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@dataclass
class Joined:
    """A hospital's working directory after following sections 4 to 8 of the guide."""

    cwd: Path
    env: dict[str, str]
    values: dict[str, str]
    outputs: list[str]
    blocks: list[str]
    nodes: list[Node]

    def fill(self, block: str) -> str:
        for placeholder, value in self.values.items():
            block = block.replace(placeholder, value)
        assert not re.search(r"<[a-z][a-z ]*>", block), f"unfilled placeholder in {block}"
        return block

    def sh(self, script: str, expected: int = 0) -> str:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        out = done.stdout + done.stderr
        assert done.returncode == expected, f"{script}\nexit {done.returncode}:\n{out}"
        return out

    def start_node(self, line: str) -> Node:
        self.nodes.append(Node(line, self.cwd, self.env, self.cwd / "node.log"))
        self.nodes[-1].wait_polling()
        return self.nodes[-1]


ANSWERED = re.compile(rf"^\s*{SITE}\s+\d+\*?\s+\[", flags=re.M)
"""A table row of ``varde query``: this site, a count (``*`` when noisy) and its interval."""


@pytest.fixture(scope="module")
def joined(operator: Operator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Joined]:
    """Every sh block of the guide, in order, in one working directory."""
    cwd = tmp_path_factory.mktemp("hospital")
    export = cwd / "srv" / "registry" / "tumours.csv"
    hospital_export(export)
    shutil.copy(operator.ca, cwd / "network-ca.pem")  # "saved here as network-ca.pem"
    token = varde(
        "admin", "enroll-token", SITE, "--expires", "48h", "--state-dir", str(operator.state)
    )
    assert token.returncode == 0, token.stderr
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "VARDE_TOKEN"):
        env.pop(var, None)
    blocks = sh_blocks(GUIDE.read_text())
    assert len(blocks) == 6, "a new sh block: check that this test still runs it as intended"
    values = {
        "<gateway URL>": operator.url,
        "<enrollment token>": token.stdout.strip(),
        "<site>": SITE,
        "<researcher token>": operator.researcher_token,
        EXPORT: str(export),
    }
    ctx = Joined(cwd, env, values, [], blocks, [])
    try:
        for i, block in enumerate(blocks):
            block = ctx.fill(block)
            before, run_line, after = block, "", ""
            if "varde node run" in block:
                before, run_line, after = re.split(r"^(varde node run .*)$", block, flags=re.M)
            # the guide says the first doctor, right after init, fails on data alone
            ctx.outputs.append(ctx.sh(before, expected=1 if i == 1 else 0))
            if run_line:
                ctx.start_node(run_line)
                assert not after.strip()
        yield ctx
    finally:
        for node in ctx.nodes:
            node.stop()


def test_following_the_guide_answers_a_first_query(joined: Joined) -> None:
    init, doctor, check_data, policy, started, query = joined.outputs
    assert f"node {SITE} enrolled" in init, init
    assert "DENIES EVERYTHING" in doctor and "1 check(s) failed: data" in doctor, doctor
    assert "3,000 rows" in check_data, check_data
    assert "OK" in policy or "ok" in policy, policy
    assert "all checks passed" in started and "DENIES EVERYTHING" not in started, started
    # the first query, answered by this site: a noisy count with its interval
    assert ANSWERED.search(query), query
    state = str(joined.cwd / "varde-node" / "state")
    audit = varde("audit", "report", "--by", "project", "--state-dir", state)
    assert audit.returncode == 0 and "network-check" in audit.stdout, audit.stdout


def test_backup_and_restore_as_operations_md_says(joined: Joined, tmp_path: Path) -> None:
    """OPERATIONS.md's online backup of the running node, then a restore into a new
    directory: the trail verifies, the ledger holds the same charges, doctor passes."""
    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    section = text[text.index("## Backups") :]
    found = re.search(r"^```sh\n(.*?)^```$", section, flags=re.M | re.S)
    assert found is not None
    node_dir = joined.cwd / "varde-node"
    backup = tmp_path / "backup"
    script = (
        found.group(1)
        .replace("/var/lib/varde-node", str(node_dir))
        .replace("/opt/varde/bin/python", sys.executable)
        .replace("/backup/varde-node", str(backup))
    )
    assert joined.nodes and joined.nodes[-1].proc.poll() is None, "backed up while it runs"
    joined.sh(script)
    (taken,) = backup.iterdir()
    # restore: the same layout in a new place (keys 0700/0600), the export linked again
    restored = tmp_path / "restored"
    (restored / "state").mkdir(parents=True)
    for name in ("config.yaml", "mapping.yaml"):
        shutil.copy2(taken / name, restored / name)
    for name in ("ledger.sqlite", "node.sqlite", "identity.json"):
        shutil.copy2(taken / name, restored / "state" / name)
    shutil.copytree(taken / "keys", restored / "keys")
    shutil.copytree(taken / "policies", restored / "policies")
    assert (restored / "keys").stat().st_mode & 0o777 == 0o700
    assert (restored / "keys" / "node_key.pem").stat().st_mode & 0o777 == 0o600
    (restored / "registry.csv").symlink_to((node_dir / "registry.csv").resolve())
    verify = varde("audit", "verify", "--state-dir", str(restored / "state"))
    assert verify.returncode == 0 and "audit trail OK" in verify.stdout, verify.stdout
    assert charges(restored / "state") == charges(node_dir / "state") != []
    doctor = joined.sh(f"varde node doctor --config {restored / 'config.yaml'}")
    assert "all checks passed" in doctor and "key recognised" in doctor, doctor


def test_refreshing_the_data_file_keeps_the_ledger(joined: Joined) -> None:
    """OPERATIONS.md's refresh: check the new export, swap it in, restart; same ledger."""
    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    section = text[text.index("## Refreshing a site's data file") :]
    found = re.search(r"^```sh\n(.*?)^```$", section, flags=re.M | re.S)
    assert found is not None
    registry = joined.cwd / "srv" / "registry"
    hospital_export(registry / "tumours-new.csv", rows=3_500, seed=22)
    script = (
        found.group(1)
        .replace("/var/lib/varde-node", str(joined.cwd / "varde-node"))
        .replace("/srv/registry", str(registry))
    )
    before, restart, after = re.split(r"^(systemctl restart varde-node)$", script, flags=re.M)
    state = str(joined.cwd / "varde-node" / "state")
    spent = charges(Path(state))
    checked = joined.sh(before)
    assert "3,500 rows" in checked, checked
    joined.nodes[-1].stop()  # systemctl restart: stop, then start what the unit runs
    node = joined.start_node("varde node run --config varde-node/config.yaml")
    assert re.search(r"3,?500 rows", node.new_output()), node.new_output()
    assert "all checks passed" in joined.sh(after)
    assert (registry / "tumours-previous.csv").exists() and not (
        registry / "tumours-new.csv"
    ).exists()
    assert charges(Path(state)) == spent != []
    # and it answers on the new data
    assert ANSWERED.search(joined.sh(joined.fill(joined.blocks[5])))


def test_rotating_the_key_as_the_guide_says(joined: Joined, operator: Operator) -> None:
    """Section 9 line by line: the operator's commands on its gateway (its --state-dir added),
    systemctl stop/start as stopping/starting the node process of this test. Afterwards the
    whole trail verifies, the old key's polls are refused, the node answers with the new key
    and the ledger is as it was."""
    import ssl

    from nodes.enrollment import key_path
    from varde.crypto import key_fingerprint, load_private_key, public_key_b64
    from varde.envelope import seal

    state = joined.cwd / "varde-node" / "state"
    old_key = load_private_key(key_path(state))
    old_fp = key_fingerprint(public_key_b64(old_key))
    rotation = command_lines(bash_block_after(GUIDE.read_text(), "## 9. Rotating"))
    assert len(rotation) == 6, rotation
    assert not any("revoke" in line for line in rotation), "a rotation needs no revocation"
    seen: set[str] = set()
    for line in rotation:
        if line.startswith("varde admin"):
            out = varde(*shlex.split(joined.fill(line))[1:], "--state-dir", str(operator.state))
            assert out.returncode == 0, out.stderr
            if " enroll-token " in line:
                joined.values["<new token>"] = out.stdout.strip()
        elif line == "systemctl stop varde-node":
            joined.nodes[-1].stop()
            spent = charges(state)  # the ledger as the stopped node left it
        elif line == "systemctl start varde-node":
            joined.start_node("varde node run --config varde-node/config.yaml")  # polls: 200
        else:
            out = joined.sh(joined.fill(line))
            if "node rotate-key" in line:
                assert "key rotated" in out and old_fp in out, out
                assert (state.parent / "keys" / "retired" / f"{old_fp}.pem").exists()
                assert charges(state) == spent != [], "rotating leaves the ledger as it was"
                seen.add("rotate")
            if "node doctor" in line:
                assert "all checks passed" in out and old_fp not in out, out
                assert "key recognised" in out
                seen.add("doctor")
            if "audit verify" in line:  # the whole trail, checkpoints of the old key included
                assert "audit trail OK" in out, out
                seen.add("verify")
    assert seen == {"rotate", "doctor", "verify"}
    assert public_key_b64(load_private_key(key_path(state))) != public_key_b64(old_key)
    # the retired key is refused by the gateway
    poll = seal(
        old_key, kind="poll", sender=SITE, recipient="gateway", body={},
        ttl=dt.timedelta(minutes=1),
    )  # fmt: skip
    refused = httpx.post(
        f"{operator.url}/v1/nodes/poll",
        json=poll.model_dump(mode="json"),
        verify=ssl.create_default_context(cafile=str(operator.ca)),
        timeout=10,
    )
    assert 400 <= refused.status_code < 500, (refused.status_code, refused.text)
    # the rotated node answers the query again; the ledger kept the earlier charges
    kept = charges(state)
    assert ANSWERED.search(joined.sh(joined.fill(joined.blocks[5])))
    assert kept == spent and set(kept) <= set(charges(state))  # (a repeat may be free)
    after = varde("audit", "verify", "--state-dir", str(state))
    assert after.returncode == 0 and "audit trail OK" in after.stdout, after.stdout
