"""compose.yaml's services started for real outside containers, on 127.0.0.1.

Each service's command and environment are taken from compose.yaml as they are; what a
container would see at a mount target is found at the mount's source in a project directory
of the test's own (bind mounts as written, named volumes as directories). Only what differs
outside a compose network is substituted: the service host names (``postgres``,
``gateway``, ``superlink``) become 127.0.0.1/localhost, the fixed ports free ones, ``0.0.0.0``
the loopback address, and the database user and name a fresh database of the local
PostgreSQL. Then the operator's steps of docs/OPERATIONS.md ("Compose") run against them:
an enrollment token from the gateway's environment, the documented ``node-init`` command,
the node service with the demo policy in place, and a query the node answers.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, make_url, text

from launcher.network import REPO
from tests.conftest import scratch_postgres
from tests.tls_ca import TestCA
from varde.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("compose")]

PASSWORD = "compose-test-password"
SITE = "oslo"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with scratch_postgres("varde_compose") as url:
        yield make_url(url).database or ""


class Project:
    """compose.yaml's project directory, outside containers."""

    def __init__(self, root: Path, compose: dict[str, Any], database: str) -> None:
        self.root = root
        self.compose = compose
        self.database = database
        self.ports = {"gateway": free_port(), "superlink": free_port()}
        self.procs: list[subprocess.Popen[bytes]] = []

    def mounts(self, service: str) -> list[tuple[str, Path]]:
        """(container target, host path), longest target first (nested mounts win)."""
        found = []
        for vol in self.compose["services"][service].get("volumes", []):
            if isinstance(vol, str):
                source, target = vol.split(":")[:2]
            else:
                source, target = vol["source"], vol["target"]
            host = self.root / source if source.startswith(".") else self.root / "volumes" / source
            found.append((target, host))
        return sorted(found, key=lambda m: -len(m[0]))

    def host_path(self, service: str, path: str) -> str:
        for target, host in self.mounts(service):
            if path == target or path.startswith(target + "/"):
                return str(host) + path[len(target) :]
        return path

    def localise(self, service: str, arg: str) -> str:
        """One argument as it must read outside the compose network."""
        arg = re.sub(
            r"(?<![\w/])/(etc|var|data)/[^\s=]*", lambda m: self.host_path(service, m.group(0)), arg
        )
        arg = arg.replace("0.0.0.0", "127.0.0.1")
        arg = arg.replace("https://gateway:8700", f"https://localhost:{self.ports['gateway']}")
        arg = arg.replace("--port=8700", f"--port={self.ports['gateway']}")
        arg = arg.replace("superlink:9092", f"localhost:{self.ports['superlink']}")
        return arg.replace("--port=9092", f"--port={self.ports['superlink']}")

    def environment(self, service: str) -> dict[str, str]:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        for key, value in (self.compose["services"][service].get("environment") or {}).items():
            value = re.sub(r"\$\{VARDE_POSTGRES_PASSWORD:\?[^}]*\}", PASSWORD, str(value))
            value = value.replace("varde:", "postgres:").replace("@postgres:", "@127.0.0.1:")
            env[key] = re.sub(r"/varde$", f"/{self.database}", value)
        if service == "superlink":
            env["FLWR_HOME"] = str(self.root / "flwr-home")
        return env

    def argv(self, service: str) -> list[str]:
        svc = self.compose["services"][service]
        entry = svc.get("entrypoint", [str(BIN / "varde")])
        entry = [str(BIN / entry[0]), *entry[1:]]
        return entry + [self.localise(service, a) for a in svc["command"]]

    def start(self, service: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{service}.log").open("ab")
        proc = subprocess.Popen(
            self.argv(service), cwd=self.root, env=self.environment(service), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, service: str) -> str:
        path = self.root / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def exec(self, service: str, line: str) -> subprocess.CompletedProcess[str]:
        """``docker compose exec SERVICE LINE`` / ``run --rm``: the line with this service's env."""
        args = [self.localise(service, a) for a in shlex.split(line)]
        assert args[0] == "varde"
        return subprocess.run(
            [str(BIN / "varde"), *args[1:]], cwd=self.root, env=self.environment(service),
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def operations_compose_block() -> str:
    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    section = text[text.index("## The whole network with Docker Compose") :]
    found = re.search(r"^```sh\n(.*?)^```$", section, flags=re.M | re.S)
    assert found is not None
    return re.sub(r"\\\n\s*", " ", found.group(1))


def compose_line(block: str, start: str) -> str:
    """The varde command of the documented line holding ``start`` (``exec gateway``,
    ``run --rm node-init``: what follows is the command; the image's entry point is varde)."""
    for line in block.splitlines():
        if start in line:
            rest = line.split(start, 1)[1].strip()
            return rest if rest.startswith("varde ") else f"varde {rest}"
    raise AssertionError(f"no line with {start!r} in OPERATIONS.md")


def wait_https(url: str, ca: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"{what} exited"
        try:
            httpx.get(url, verify=ctx, timeout=2)
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"{what} not up"
            time.sleep(0.3)


def test_compose_services_run_and_a_node_answers(
    compose: dict[str, Any], database: str, tmp_path: Path
) -> None:
    project = Project(tmp_path, compose, database)
    tls = tmp_path / "deploy" / "tls"
    ca = TestCA(tls)
    shutil.move(ca.cert_path, tls / "ca.pem")
    ca_file = tls / "ca.pem"
    for name in ("gateway", "superlink"):
        files = ca.issue_server(name, hosts=("localhost", "127.0.0.1", name))
        files.cert.rename(tls / f"{name}.crt.pem")
        files.key.rename(tls / f"{name}.key.pem")
    (tmp_path / "volumes" / "gateway-state").mkdir(parents=True)
    (tmp_path / "deploy" / "nodes").mkdir(parents=True)
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    block = operations_compose_block()
    try:
        superlink = project.start("superlink")
        gateway = project.start("gateway")
        url = f"https://localhost:{project.ports['gateway']}"
        wait_https(f"{url}/healthz", ca_file, gateway, "gateway:\n" + project.log("gateway"))
        assert superlink.poll() is None, project.log("superlink")

        # the operator's steps, as OPERATIONS.md writes them, in the services' environments
        synth = project.exec("node-init", compose_line(block, "&& varde "))
        assert synth.returncode == 0, synth.stderr
        for cmd in (
            "project add nsclc-feasibility",
            "researcher add alice --project nsclc-feasibility",
        ):
            out = project.exec("gateway", f"varde admin {cmd} --state-dir=/var/lib/varde/gateway")
            assert out.returncode == 0, out.stderr
        researcher = out.stdout.strip()
        token = project.exec("gateway", compose_line(block, "exec gateway"))
        assert token.returncode == 0, token.stderr
        init_line = compose_line(block, "run --rm node-init").replace(
            "<token>", token.stdout.strip()
        )
        init = project.exec("node-init", init_line)
        assert init.returncode == 0 and f"node {SITE} enrolled" in init.stdout, (
            init.stdout + init.stderr
        )
        # the gateway keeps its state in the PostgreSQL database VARDE_DATABASE_URL names
        engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}")
        with engine.connect() as conn:
            enrolled = conn.execute(text("SELECT count(*) FROM nodes")).scalar_one()
        engine.dispose()
        assert enrolled == 1
        # the node service's policy mount: the demo policy over the starter one
        node_dir = tmp_path / "deploy" / "nodes" / SITE
        shutil.copy(tmp_path / "policies" / f"{SITE}.yaml", node_dir / "policies" / f"{SITE}.yaml")

        node = project.start(f"node-{SITE}")
        ctx = ssl.create_default_context(cafile=str(ca_file))
        headers = {"Authorization": f"Bearer {researcher}"}
        deadline = time.monotonic() + 90
        while True:
            assert node.poll() is None, project.log(f"node-{SITE}")
            sites = httpx.get(f"{url}/v1/sites", headers=headers, verify=ctx, timeout=5).json()
            assert isinstance(sites, list), sites
            if any(s["site"] == SITE and s["connected"] for s in sites):
                break
            assert time.monotonic() < deadline, project.log(f"node-{SITE}")
            time.sleep(0.5)
        res = httpx.post(
            f"{url}/v1/queries",
            json={
                "project": "nsclc-feasibility",
                "statistic": {"kind": "count"},
                "privacy": {"mode": "dp", "epsilon": 0.1},
                "sites": [SITE],
            },
            headers=headers, verify=ctx, timeout=60,
        )  # fmt: skip
        assert res.status_code == 200, res.text
        (row,) = res.json()["sites"]
        assert row["status"] == "ok", row
        # the node service started its Flower SuperNode towards the SuperLink service (TLS)
        slport = project.ports["superlink"]
        assert f"SuperNode for training connects out to localhost:{slport}" in project.log(
            f"node-{SITE}"
        )
        supernode_log = (node_dir / "state" / "flower" / "supernode.log").read_text()
        assert "Starting Flower SuperNode" in supernode_log
    finally:
        project.stop()
