"""Start a whole network on this machine: a gateway and N nodes as real processes on 127.0.0.1.

Used by ``varde demo``, the integration tests and the benchmark, so all three
exercise exactly what a deployment runs (``varde gateway serve``, ``varde node
run``), with enrollment tokens, signed long-polls and SQLite ledgers.

With ``training=True`` the gateway also runs a Flower SuperLink
(``--with-superlink``) and every node a Flower SuperNode connecting out to it
(``--flower-superlink``), all plain text on 127.0.0.1: ``POST /v1/trainings``
then works as in a deployment.

With ``gateway_replicas=N`` (and a PostgreSQL ``database_url``) N gateway
processes share the database and its work queue (:mod:`gateway.dispatch_pg`);
node i polls replica i mod N unless :attr:`LocalNetwork.node_gateway` says
otherwise (a load balancer's URL, say), and :attr:`LocalNetwork.url` is the first.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from varde.processes import free_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POLICIES = REPO / "policies"


def with_project_like(policy_text: str, new: str, like: str) -> str:
    r"""``policy_text`` with project ``new`` added under ``projects:``, terms copied from ``like``.

    Text, not a YAML round trip, so the copy keeps every comment staff read.

    >>> text = "projects:\n  a:\n    epsilon_budget: 2.0\n    training: [cox]\naggregate: {}\n"
    >>> print(with_project_like(text, "b", "a"))
    projects:
      b:                           # added by varde demo: its example queries spend this project
        epsilon_budget: 2.0
        training: [cox]
      a:
        epsilon_budget: 2.0
        training: [cox]
    aggregate: {}
    <BLANKLINE>
    """
    terms = (yaml.safe_load(policy_text) or {}).get("projects", {}).get(like)
    if not isinstance(terms, dict):
        raise ValueError(f"policy has no project {like!r} to copy")
    lines = [
        f"  {new}:".ljust(31) + "# added by varde demo: its example queries spend this project"
    ]
    for key, value in terms.items():
        shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"    {key}: {shown}")
    found = re.search(r"^projects:[^\n]*\n", policy_text, flags=re.MULTILINE)
    if found is None:
        raise ValueError("policy has no top-level 'projects:' line")
    at = found.end()
    return policy_text[:at] + "\n".join(lines) + "\n" + policy_text[at:]


def _varde(*args: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", *args]


@dataclass
class LocalNetwork:
    """Gateway + nodes as subprocesses; ``start()`` returns when every node is connected."""

    workdir: Path
    sites: list[str]
    rows: int = 50_000
    seed: int = 0
    policies: dict[str, Path] = field(default_factory=dict)
    researcher: str = "demo"
    port: int = 0
    data_files: dict[str, Path] = field(default_factory=dict)
    """Each site's registry file. One given here is the caller's own: used as it is, never
    overwritten (with a mapping it replaces the mapping's source); only missing ones are
    synthesised, into ``workdir/data``."""
    mappings: dict[str, Path] = field(default_factory=dict)
    """Site -> its mapping file (docs/MAPPING.md): that node reads its data through it."""
    token: str = ""
    inprocess_gateway: bool = False
    database_url: str | None = None
    app_state: Any = None
    training: bool = False
    """Also run a Flower SuperLink beside the gateway and a SuperNode beside each node."""
    extra_projects: dict[str, str] = field(default_factory=dict)
    """New project -> existing project whose terms it copies, in every site's copied policy."""
    consoles: bool = False
    """Also serve each node's staff console on 127.0.0.1 (URLs in :attr:`console_urls`)."""
    console_user: str = "staff"
    console_password: str = ""
    console_urls: dict[str, str] = field(default_factory=dict)
    superlink_port: int = 0
    gateway_replicas: int = 1
    """How many ``varde gateway serve`` processes share the database (over 1: PostgreSQL)."""
    replica_ports: list[int] = field(default_factory=list)
    """The port of each replica; the first is :attr:`port`."""
    node_gateway: dict[str, str] = field(default_factory=dict)
    """The URL a site's node polls (default: node i polls replica i mod the replica count)."""
    _federation: Any = None
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the gateway."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def replica_urls(self) -> list[str]:
        """Base URL of every gateway replica (one unless :attr:`gateway_replicas`)."""
        return [f"http://127.0.0.1:{p}" for p in self.replica_ports] or [self.url]

    @staticmethod
    def replica_name(index: int) -> str:
        """The process name of replica ``index`` (0: ``gateway``, as with one replica)."""
        return "gateway" if index == 0 else f"gateway-{index + 1}"

    @property
    def gateway_state(self) -> Path:
        """The gateway's state directory."""
        return self.workdir / "state" / "gateway"

    def node_state(self, site: str) -> Path:
        """A node's state directory (key, ledger, audit)."""
        return self.workdir / "state" / site

    def policy_path(self, site: str) -> Path:
        """The policy file a site runs with (after :meth:`ensure_policies`: a copy in workdir)."""
        return self.policies.get(site, DEFAULT_POLICIES / f"{site}.yaml")

    def ensure_policies(self) -> None:
        """Copy every site's default policy into ``workdir/policies`` and run the nodes on it.

        Why: a node writes its policy file when staff edit a budget in the console, and
        the demo and the tests must never rewrite the repository's tracked
        ``policies/*.yaml``. A policy passed in :attr:`policies` is the caller's own
        file and is used as it is. :attr:`extra_projects` are added to each copy.
        """
        copies = self.workdir / "policies"
        copies.mkdir(parents=True, exist_ok=True)
        for site in self.sites:
            if site in self.policies:
                continue
            text = (DEFAULT_POLICIES / f"{site}.yaml").read_text()
            for new, like in self.extra_projects.items():
                text = with_project_like(text, new, like)
            copy = copies / f"{site}.yaml"
            copy.write_text(text)
            self.policies[site] = copy

    def log_path(self, name: str) -> Path:
        """Where a process's output goes."""
        return self.workdir / "logs" / f"{name}.log"

    def _settings(self) -> Any:
        from gateway.core.config import Settings

        return Settings(
            state_dir=self.gateway_state,
            database_url=self.database_url,
            flower_superlink=f"127.0.0.1:{self.superlink_port}" if self.training else None,
            flower_insecure=self.training,
        )

    @property
    def superlink(self) -> str:
        """``host:port`` of the SuperLink (with ``training``)."""
        return f"127.0.0.1:{self.superlink_port}"

    def ensure_data(self) -> None:
        """Generate each missing site registry once per (rows, seed); reuse it afterwards.

        A site with a file in :attr:`data_files` or a mapping in :attr:`mappings` brings
        its own data: nothing is generated for it and its files are never touched.
        """
        from nodes.synth import generate_registry, write_registry

        data_dir = self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        for site in self.sites:
            if site in self.data_files or site in self.mappings:
                continue
            path = data_dir / f"{site}-{self.rows}-{self.seed}.parquet"
            if not path.exists():
                tmp = path.with_suffix(".tmp.parquet")
                write_registry(generate_registry(site, self.rows, seed=self.seed), tmp, "parquet")
                tmp.replace(path)
            self.data_files[site] = path

    def _projects(self) -> list[str]:
        names: set[str] = set()
        for site in self.sites:
            path = self.policy_path(site)
            if path.exists():
                names |= set((yaml.safe_load(path.read_text()) or {}).get("projects", {}) or {})
        return sorted(names)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                args, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True
            )
        self._procs[name] = proc
        return proc

    def _tail(self, name: str, lines: int = 20) -> str:
        path = self.log_path(name)
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def start_gateway(self, timeout: float = 60.0) -> None:
        """Start ``varde gateway serve`` on a free port and wait for /healthz."""
        from gateway.admin import add_project, add_researcher
        from gateway.core.db import make_engine, make_sessionmaker

        if self.gateway_replicas > 1 and not (self.database_url or "").startswith("postgresql"):
            raise ValueError("gateway replicas share a PostgreSQL database: set database_url")
        if self.gateway_replicas > 1 and (self.inprocess_gateway or self.training):
            raise ValueError("gateway replicas run as processes, without training")
        if self.gateway_state.exists():
            shutil.rmtree(self.gateway_state)
        self.gateway_state.mkdir(parents=True)
        engine = make_engine(self._settings().db_url)
        sessions = make_sessionmaker(engine)
        projects = self._projects()
        for p in projects:
            add_project(sessions, p)
        self.token = add_researcher(sessions, self.researcher, projects)
        engine.dispose()
        self.port = self.port or free_port()
        if self.training:
            self.superlink_port = self.superlink_port or free_port()
        if self.inprocess_gateway:
            self._serve_inprocess(timeout)
            return
        # replicas one after another: the first creates the signing key all of them share
        self.replica_ports = [self.port] + [free_port() for _ in range(self.gateway_replicas - 1)]
        for index, port in enumerate(self.replica_ports):
            self._start_replica(index, port, timeout)

    def _start_replica(self, index: int, port: int, timeout: float) -> None:
        name = self.replica_name(index)
        self._spawn(
            name,
            _varde(
                "gateway",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--state-dir",
                str(self.gateway_state),
                *(["--database-url", self.database_url] if self.database_url else []),
                *(
                    ["--with-superlink", "--superlink-port", str(self.superlink_port)]
                    if self.training
                    else []
                ),
            ),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self._tail(name)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} not healthy after {timeout} s:\n{self._tail(name)}")

    def _serve_inprocess(self, timeout: float) -> None:
        """Run the gateway in a thread of this process (tests reach its dispatcher)."""
        import uvicorn

        from gateway.app import create_app

        if self.training:
            from gateway.training.deployment import LocalFederation

            self._federation = LocalFederation(
                home=self.gateway_state / "superlink", port=self.superlink_port
            )
            self._federation.start_superlink()
        app = create_app(self._settings())
        self.app_state = app.state.varde
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("in-process gateway did not start")
            time.sleep(0.05)

    def enrollment_token(self, site: str) -> str:
        """A fresh one-time token for ``site`` (written straight into the gateway DB)."""
        import datetime as dt

        from gateway.admin import enrollment_token
        from gateway.core.db import make_engine, make_sessionmaker

        engine = make_engine(self._settings().db_url)
        try:
            return enrollment_token(make_sessionmaker(engine), site, dt.timedelta(hours=1))
        finally:
            engine.dispose()

    def _node_args(self, site: str, *extra: str) -> list[str]:
        return _varde(
            "node",
            "run",
            "--policy",
            str(self.policy_path(site)),
            "--gateway",
            self.node_gateway.get(site)
            or self.replica_urls[self.sites.index(site) % len(self.replica_urls)],
            *(["--data", str(self.data_files[site])] if site in self.data_files else []),
            *(["--mapping", str(self.mappings[site])] if site in self.mappings else []),
            "--state-dir",
            str(self.node_state(site)),
            *(["--flower-superlink", self.superlink, "--flower-insecure"] if self.training else []),
            *extra,
        )

    def start_node(self, site: str) -> None:
        """Enroll (fresh state) and start one node process."""
        state = self.node_state(site)
        if state.exists():
            shutil.rmtree(state)
        console: list[str] = []
        if self.consoles:
            from nodes.console.auth import add_user, users_path

            self.console_password = self.console_password or secrets.token_urlsafe(12)
            state.mkdir(parents=True)
            add_user(users_path(state), self.console_user, self.console_password)
            port = free_port()
            self.console_urls[site] = f"http://127.0.0.1:{port}"
            console = ["--console-port", str(port)]
        self._spawn(
            site,
            self._node_args(
                site, "--enroll-token", self.enrollment_token(site), "--site", site, *console
            ),
        )

    def restart_node(self, site: str) -> None:
        """Start a stopped node again with its existing state (ledger, keys)."""
        self._spawn(site, self._node_args(site, "--site", site))

    def wait_connected(self, sites: list[str] | None = None, timeout: float = 120.0) -> None:
        """Block until the gateway sees every site in ``sites`` connected."""
        wanted = set(sites or self.sites)
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            for site in wanted:
                proc = self._procs.get(site)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"node {site} exited:\n{self._tail(site)}")
            try:
                resp = httpx.get(f"{self.url}/v1/sites", headers=headers, timeout=2.0)
                connected = {s["site"] for s in resp.json() if s["connected"]}
                if wanted <= connected:
                    return
            except (httpx.HTTPError, ValueError, TypeError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"nodes {sorted(wanted)} not all connected after {timeout} s")

    def start(self) -> LocalNetwork:
        """Data, gateway, enrollment, nodes; returns when all are connected."""
        self.ensure_data()
        self.ensure_policies()
        self.start_gateway()
        for site in self.sites:
            self.start_node(site)
        self.wait_connected()
        return self

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop one process (node or gateway) and wait for it."""
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def process_groups(self) -> list[int]:
        """The process group of every process started (each runs in a session of its own)."""
        return [p.pid for p in self._procs.values() if p.poll() is None]

    def terminate(self, timeout: float = 10.0) -> None:
        """Signal every process at once, then wait for them (SIGKILL after ``timeout``).

        :meth:`stop` stops them one at a time. This is for when time is short: a
        Jupyter kernel being shut down is killed a few seconds later, and every
        process that has had its SIGTERM unwinds on its own (a node stops its
        SuperNode) even if the caller dies while waiting.
        """
        procs = [p for p in self._procs.values() if p.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        self._procs.clear()
        self.stop()  # an in-process gateway and its federation, if any

    def stop(self) -> None:
        """Stop nodes first, then the gateway."""
        gateways = [n for n in self._procs if n.startswith("gateway")]
        for name in [n for n in self._procs if n not in gateways] + gateways:
            self.stop_process(name)
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
            self._server = None
        if self._federation is not None:
            self._federation.stop()
            self._federation = None

    def __enter__(self) -> LocalNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
