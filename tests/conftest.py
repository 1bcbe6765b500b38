"""Shared fixtures: synthetic registries (once per session), keys, node contexts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.network import DEFAULT_POLICIES
from launcher.scratch_db import PostgresUnavailable, scratch_database
from nodes.context import NodeContext
from nodes.data import RegistryData, prepare
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.policy_check import load_policy
from nodes.store import NodeStore
from nodes.synth import generate_registry
from varde.crypto import generate_key, public_key_b64
from varde.envelope import SignedEnvelope, seal
from varde.release import WorkItem

ROWS = 40_000


@pytest.fixture(scope="session")
def oslo_frame() -> pd.DataFrame:
    """A seeded synthetic Oslo registry, generated once per test session."""
    return generate_registry("oslo", ROWS, seed=7)


@pytest.fixture(scope="session")
def oslo_policy() -> Policy:
    return load_policy(DEFAULT_POLICIES / "oslo.yaml")


@pytest.fixture(scope="session")
def oslo_data(oslo_frame: pd.DataFrame, oslo_policy: Policy) -> RegistryData:
    return prepare(
        oslo_frame,
        site="oslo",
        max_rows_per_patient=oslo_policy.privacy_unit.max_tumours_per_patient,
    )


@pytest.fixture(scope="session")
def gateway_key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture
def node_ctx(
    tmp_path: Path, oslo_data: RegistryData, oslo_policy: Policy, gateway_key: Ed25519PrivateKey
) -> Iterator[NodeContext]:
    """A node context with a fresh ledger and store, trusting ``gateway_key``."""
    ctx = NodeContext(
        site="oslo",
        data=oslo_data,
        ledger=Ledger.in_directory(tmp_path),
        store=NodeStore.in_directory(tmp_path),
        node_key=generate_key(),
        gateway_key=public_key_b64(gateway_key),
        _policy=oslo_policy,
    )
    yield ctx
    ctx.ledger.close()
    ctx.store.close()


def make_work(
    key: Ed25519PrivateKey,
    query: dict[str, object],
    *,
    site: str = "oslo",
    researcher: str = "alice",
    query_id: str = "q1",
    ttl: float = 30.0,
) -> SignedEnvelope:
    """A work envelope signed by ``key`` as the gateway would sign it."""
    work = WorkItem(
        query_id=query_id, project=str(query["project"]), researcher=researcher, query=query
    )
    return seal(
        key,
        kind="work",
        sender="gateway",
        recipient=site,
        body=work.model_dump(mode="json"),
        ttl=dt.timedelta(seconds=ttl),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    """A node's audit trail (and approvals) in ``tmp_path``, where ledgers of a test live too."""
    opened = NodeStore.in_directory(tmp_path)
    yield opened
    opened.close()


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """A throw-away PostgreSQL database's URL (launcher.scratch_db), or skip saying why."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_database(prefix))
        except PostgresUnavailable as err:
            pytest.skip(str(err))
        yield url
