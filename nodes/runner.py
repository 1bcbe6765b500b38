"""Start a node: load policy and data, enroll if needed, then serve work until stopped."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nodes.agent import Agent
from nodes.data import load_registry
from nodes.enrollment import NodeIdentity, enroll, key_path, load_identity
from nodes.ledger import Ledger
from nodes.pipeline import NodeContext
from nodes.policy import Policy, load_policy
from nodes.reload import PolicyReloader
from nodes.store import NodeStore
from varde.crypto import load_or_create_key
from varde.flower import Processes, is_loopback, split_address, start_supernode

if TYPE_CHECKING:
    from nodes.console import ConsoleServer

log = logging.getLogger("varde.node")


def resolve_site(policy_path: Path, site: str | None) -> tuple[str, Policy]:
    """The site name and its policy; a missing policy file denies everything."""
    if policy_path.exists():
        policy = load_policy(policy_path, site=site)
        return policy.site, policy
    if site is None:
        raise FileNotFoundError(
            f"{policy_path} does not exist; pass --site to run with a deny-all policy"
        )
    log.warning(
        "no policy at %s: site %s DENIES EVERYTHING until one is provided", policy_path, site
    )
    return site, Policy.deny_all(site)


def open_identity(state_dir: Path, site: str, gateway_url: str, token: str | None) -> NodeIdentity:
    """The pinned identity, enrolling first with ``token`` if there is none."""
    ident = load_identity(state_dir)
    if ident is not None and ident.site == site and token is None:
        return ident
    if token is None:
        raise RuntimeError(
            f"node {site!r} is not enrolled: pass --enroll-token from the gateway admin"
        )
    return enroll(gateway_url, token, site, state_dir)


def build_context(
    *, site: str, policy: Policy, data_path: Path, state_dir: Path, identity: NodeIdentity
) -> NodeContext:
    """Load data (bounded per patient by the policy) and open ledger and store."""
    started = time.perf_counter()
    data = load_registry(
        data_path, site=site, max_rows_per_patient=policy.privacy_unit.max_tumours_per_patient
    )
    log.info(
        "site %s: %d rows loaded (%d beyond the per-patient bound dropped) in %.1f s",
        site,
        data.n_rows,
        data.n_dropped,
        time.perf_counter() - started,
    )
    node_key = load_or_create_key(key_path(state_dir))
    return NodeContext(
        site=site,
        data=data,
        ledger=Ledger.in_directory(state_dir),
        store=NodeStore.in_directory(state_dir, key=node_key),  # signs audit checkpoints
        node_key=node_key,
        gateway_key=identity.gateway_public_key,
        _policy=policy,
    )


def _start_console(
    ctx: NodeContext,
    agent: Agent,
    state_dir: Path,
    port: int,
    policy_path: Path,
    reloader: PolicyReloader,
    training: Callable[[], str | None] = lambda: None,
) -> ConsoleServer:
    """The staff console on 127.0.0.1 only: never reachable through the gateway."""
    from nodes.console import ConsoleServer, create_console, users_path  # web stack: on demand

    app = create_console(
        site=ctx.site,
        store=ctx.store,
        ledger=ctx.ledger,
        policy=lambda: ctx.policy,
        users=users_path(state_dir),
        connected=agent.connected.is_set,
        training=training,
        policy_file=policy_path,
        policy_saved=reloader.check_once,  # a budget saved in the console is in force at once
    )
    console = ConsoleServer(app, port=port).start()
    log.info("site console at %s (users in %s)", console.url, users_path(state_dir))
    return console


def _stop_on_sigterm() -> None:
    """Let SIGTERM unwind like Ctrl-C, so the node shuts down cleanly.

    Why: a clean stop flushes queued releases and signs a final audit checkpoint
    (see :mod:`nodes.audit`); Python's default SIGTERM exits without ``finally``.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


@dataclass
class SuperNodeSettings:
    """Where a node's Flower SuperNode connects (out) for federated training."""

    superlink: str
    """``host:port`` of the gateway's Flower SuperLink."""
    insecure: bool = False
    """Plain text: for a SuperLink on 127.0.0.1 only (refused otherwise)."""
    root_certificates: Path | None = None
    """CA certificate (PEM) that signed a TLS SuperLink's certificate."""

    def __post_init__(self) -> None:
        host, _port = split_address(self.superlink)  # ValueError: not host:port
        if self.insecure and not is_loopback(host):
            raise ValueError(
                f"refusing plain text to the Flower SuperLink at {self.superlink}: "
                "--flower-insecure is for a SuperLink on 127.0.0.1 only "
                "(use TLS: --flower-root-certificates)"
            )


class SuperNode:
    """The node's ``flower-supernode`` child: started with the node, stopped with it.

    Its ``--node-config`` is the node's own settings (site, policy file, data
    file, state directory), so each training round's ClientApp reads the same
    policy and pays from the same ledger the queries use. It only connects out
    (Flower retries while the SuperLink is away). If it exits, it is not
    restarted: the node logs it (queries go on) and :attr:`state` says so.

    Training rounds are charged by the ClientApp processes, not by this
    process, so the node would keep publishing stale budgets: while the
    SuperNode runs, a change of the ledger file calls ``on_ledger_change``
    (the node's :meth:`~nodes.pipeline.NodeContext.charged`), checked every
    :attr:`LEDGER_CHECK_S` seconds.
    """

    LEDGER_CHECK_S = 2.0

    def __init__(
        self,
        settings: SuperNodeSettings,
        *,
        site: str,
        policy: Path,
        data: Path,
        state_dir: Path,
        on_ledger_change: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.on_ledger_change = on_ledger_change
        self.home = state_dir / "flower"
        self.node_config = {
            "site": site,
            "policy": str(policy.resolve()),
            "data": str(data.resolve()),
            "state-dir": str(state_dir.resolve()),
        }
        self.processes = Processes()
        self.state = "not started"
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None

    @property
    def log_path(self) -> Path:
        """The SuperNode's own log."""
        return self.home / "supernode.log"

    def start(self) -> SuperNode:
        """Start the SuperNode (ValueError: plain text to a non-loopback SuperLink)."""
        proc = start_supernode(
            self.processes,
            self.home,
            superlink=self.settings.superlink,
            node_config=self.node_config,
            insecure=self.settings.insecure,
            root_certificates=self.settings.root_certificates,
            log=self.log_path,
        )
        self.state = f"running (pid {proc.pid}), connecting out to {self.settings.superlink}"
        log.info(
            "site %s: Flower SuperNode for training connects out to %s (log %s)",
            self.node_config["site"],
            self.settings.superlink,
            self.log_path,
        )
        self._watch = threading.Thread(
            target=self._wait, args=(proc,), name="supernode-watch", daemon=True
        )
        self._watch.start()
        return self

    def _ledger_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for name in ("ledger.sqlite", "ledger.sqlite-wal"):
            try:
                st = (self.state_dir / name).stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0))
        return tuple(stamps)

    def _wait(self, proc: subprocess.Popen[bytes]) -> None:
        stamp = self._ledger_stamp()
        while True:
            try:
                code = proc.wait(timeout=self.LEDGER_CHECK_S)
                break
            except subprocess.TimeoutExpired:
                now = self._ledger_stamp()
                if now != stamp and self.on_ledger_change is not None:
                    self.on_ledger_change()  # republish the budgets the rounds spent
                stamp = now
        if self._stopping.is_set():
            return
        self.state = f"exited with code {code}: no training at this site until the node restarts"
        log.error(
            "site %s: the Flower SuperNode %s (see %s); queries are not affected",
            self.node_config["site"],
            self.state,
            self.log_path,
        )

    def stop(self) -> None:
        """Stop the SuperNode and what it started."""
        self._stopping.set()
        self.processes.stop()
        if self._watch is not None:
            self._watch.join(timeout=5)
        self.state = "stopped"


def run_node(
    *,
    policy_path: Path,
    gateway_url: str,
    data_path: Path,
    state_dir: Path,
    enroll_token: str | None = None,
    site: str | None = None,
    workers: int = 4,
    stop: threading.Event | None = None,
    console_port: int | None = None,
    supernode: SuperNodeSettings | None = None,
) -> None:
    """Run until ``stop`` is set (or forever).

    ``console_port``: also serve the staff console on 127.0.0.1 at this port.
    ``supernode``: also run a Flower SuperNode (federated training) beside the node.
    """
    site_name, policy = resolve_site(policy_path, site)
    identity = open_identity(state_dir, site_name, gateway_url, enroll_token)
    ctx = build_context(
        site=site_name, policy=policy, data_path=data_path, state_dir=state_dir, identity=identity
    )
    agent = Agent(ctx, gateway_url, workers=workers)
    reloader = PolicyReloader(ctx, policy_path).start()  # edits apply without a restart
    flower: SuperNode | None = None

    def training_state() -> str | None:
        return flower.state if flower is not None else None

    console = (
        _start_console(ctx, agent, state_dir, console_port, policy_path, reloader, training_state)
        if console_port
        else None
    )
    stop = stop or threading.Event()
    _stop_on_sigterm()
    try:
        if supernode is not None:
            flower = SuperNode(
                supernode,
                site=site_name,
                policy=policy_path,
                data=data_path,
                state_dir=state_dir,
                on_ledger_change=ctx.charged,
            ).start()
        agent.run(stop)
    finally:
        if flower is not None:
            flower.stop()
        if console is not None:
            console.stop()
        reloader.stop()
        agent.close()
        ctx.ledger.close()
        ctx.store.close()
