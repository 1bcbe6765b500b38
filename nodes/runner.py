"""Start a node: load policy and data, enroll if needed, then serve work until stopped."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from nodes.agent import Agent
from nodes.data import load_registry
from nodes.enrollment import NodeIdentity, enroll, key_path, load_identity
from nodes.ledger import Ledger
from nodes.pipeline import NodeContext
from nodes.policy import Policy, load_policy
from nodes.store import NodeStore
from varde.crypto import load_or_create_key

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
    return NodeContext(
        site=site,
        data=data,
        ledger=Ledger.in_directory(state_dir),
        store=NodeStore.in_directory(state_dir),
        node_key=load_or_create_key(key_path(state_dir)),
        gateway_key=identity.gateway_public_key,
        _policy=policy,
    )


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
) -> None:
    """Run until ``stop`` is set (or forever)."""
    site_name, policy = resolve_site(policy_path, site)
    identity = open_identity(state_dir, site_name, gateway_url, enroll_token)
    ctx = build_context(
        site=site_name, policy=policy, data_path=data_path, state_dir=state_dir, identity=identity
    )
    agent = Agent(ctx, gateway_url, workers=workers)
    stop = stop or threading.Event()
    try:
        agent.run(stop)
    finally:
        agent.close()
        ctx.ledger.close()
        ctx.store.close()
