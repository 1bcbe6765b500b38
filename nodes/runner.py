"""Start a node: load policy and data, enroll if needed, then serve work until stopped."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nodes.accounts import reconcile
from nodes.agent import Agent
from nodes.context import NodeContext
from nodes.data import RegistryData
from nodes.enrollment import NodeIdentity, confirm_key, enroll, key_path, load_identity
from nodes.ledger import Ledger
from nodes.mapping.node_data import load_node_data
from nodes.policy import Policy
from nodes.policy_check import load_policy
from nodes.reload import PolicyReloader
from nodes.store import NodeStore
from nodes.training.supernode import SuperNode, SuperNodeSettings
from nodes.transport import check_gateway_url
from varde.crypto import load_or_create_key

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


def open_identity(
    state_dir: Path,
    site: str,
    gateway_url: str,
    token: str | None,
    *,
    ca_file: Path | None = None,
    dev_network: bool = False,
) -> NodeIdentity:
    """The pinned identity, enrolling first with ``token`` if there is none."""
    ident = load_identity(state_dir)
    if ident is not None and ident.site == site and token is None:
        return ident
    if token is None:
        raise RuntimeError(
            f"node {site!r} is not enrolled: pass --enroll-token from the gateway admin "
            "(or make a node directory with varde node init)"
        )
    return enroll(gateway_url, token, site, state_dir, ca_file=ca_file, dev_network=dev_network)


def load_data(
    site: str, policy: Policy, data_path: Path | None, mapping_path: Path | None
) -> RegistryData:
    """The site's registry, bounded per patient by the policy (refused on hard check failures)."""
    started = time.perf_counter()
    data = load_node_data(
        site=site,
        max_rows_per_patient=policy.privacy_unit.max_tumours_per_patient,
        data_path=data_path,
        mapping_path=mapping_path,
    )
    log.info(
        "site %s: %d rows loaded (%d beyond the per-patient bound dropped) in %.1f s",
        site,
        data.n_rows,
        data.n_dropped,
        time.perf_counter() - started,
    )
    return data


def build_context(
    *,
    site: str,
    policy: Policy,
    data_path: Path | None,
    state_dir: Path,
    identity: NodeIdentity,
    mapping_path: Path | None = None,
    data: RegistryData | None = None,
) -> NodeContext:
    """Load data (bounded per patient by the policy) and open ledger and store.

    With ``mapping_path`` the rows come through the site's mapping
    (:mod:`nodes.mapping`); data failing a hard check stop the start here.
    ``data``: already loaded (:func:`load_data`), so nothing is read twice.
    """
    if data is None:
        data = load_data(site, policy, data_path, mapping_path)
    node_key = load_or_create_key(key_path(state_dir))
    ledger = Ledger.in_directory(state_dir)
    store = NodeStore.in_directory(state_dir, key=node_key)  # signs audit checkpoints
    recovered = reconcile(ledger, store)
    if recovered:
        log.warning("site %s: %d ledger charge(s) had no audit entry; audited now", site, recovered)
    return NodeContext(
        site=site,
        data=data,
        ledger=ledger,
        store=store,
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
        connected=agent.link_state,
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


def run_node(
    *,
    policy_path: Path,
    gateway_url: str,
    data_path: Path | None,
    state_dir: Path,
    enroll_token: str | None = None,
    site: str | None = None,
    workers: int = 4,
    stop: threading.Event | None = None,
    console_port: int | None = None,
    supernode: SuperNodeSettings | None = None,
    ca_file: Path | None = None,
    dev_network: bool = False,
    mapping_path: Path | None = None,
) -> None:
    """Run until ``stop`` is set (or forever).

    ``mapping_path``: read the data through this site mapping (``data_path``, if
    given, then replaces the mapping's source).

    ``console_port``: also serve the staff console on 127.0.0.1 at this port.
    ``supernode``: also run a Flower SuperNode (federated training) beside the node.
    ``ca_file`` / ``dev_network``: see :mod:`nodes.transport`.
    """
    check_gateway_url(gateway_url, dev_network)  # before anything is loaded or written
    site_name, policy = resolve_site(policy_path, site)
    # data first: data that fail a check never spend the one-time enrollment token
    data = load_data(site_name, policy, data_path, mapping_path)
    identity = open_identity(
        state_dir, site_name, gateway_url, enroll_token, ca_file=ca_file, dev_network=dev_network
    )
    if enroll_token is None:  # enrolled earlier: is this still the key the gateway pinned?
        confirm_key(
            gateway_url,
            site_name,
            load_or_create_key(key_path(state_dir)),
            ca_file=ca_file,
            dev_network=dev_network,
        )
    ctx = build_context(
        site=site_name,
        policy=policy,
        data_path=data_path,
        state_dir=state_dir,
        identity=identity,
        mapping_path=mapping_path,
        data=data,
    )
    agent = Agent(ctx, gateway_url, workers=workers, ca_file=ca_file, dev_network=dev_network)
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
                mapping=mapping_path,
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
