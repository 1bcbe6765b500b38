"""Everything a running gateway holds: settings, database, signing key, dispatcher."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from gateway.core.config import Settings
from gateway.core.db import make_engine, make_sessionmaker
from gateway.dispatch import Dispatcher, WorkQueue
from varde.crypto import load_or_create_key, public_key_b64

GATEWAY_ID = "gateway"
"""The gateway's name in envelope headers."""


@dataclass
class GatewayState:
    """Process-wide gateway state, built once at startup."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Any]
    key: Ed25519PrivateKey
    dispatcher: WorkQueue
    loop: asyncio.AbstractEventLoop | None = None
    _node_keys: dict[str, str] = field(default_factory=dict)

    def node_key(self, site: str) -> str | None:
        """The pinned public key of an enrolled site (cached; enrollment refreshes it)."""
        key = self._node_keys.get(site)
        if key is None:
            from gateway.core.db import Node

            with self.sessions() as s:
                node = s.get(Node, site)
                key = node.public_key if node else None
            if key is not None:
                self._node_keys[site] = key
        return key

    def pin_node_key(self, site: str, key: str) -> None:
        """Remember a site's key after (re-)enrollment."""
        self._node_keys[site] = key

    @property
    def public_key(self) -> str:
        """The key nodes pin at enrollment."""
        return public_key_b64(self.key)

    @classmethod
    def open(cls, settings: Settings) -> GatewayState:
        """Create the state directory, database and key on first use.

        The work queue follows the database: on PostgreSQL the one replicas share
        (:mod:`gateway.dispatch_pg`), on SQLite this process's own.
        """
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        dispatcher = work_queue(settings)
        engine = make_engine(settings.db_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            key=load_or_create_key(settings.key_path),
            dispatcher=dispatcher,
        )


def work_queue(settings: Settings) -> WorkQueue:
    """The PostgreSQL queue for a ``postgresql`` URL, else the in-process one."""
    if not settings.db_url.startswith("postgresql"):
        return Dispatcher(settings.node_offline_after_s)
    try:
        from gateway.dispatch_pg import PgDispatcher
    except ImportError as err:  # the driver is an extra: nodes and SQLite gateways do without
        raise RuntimeError(
            f"a PostgreSQL database needs the postgres extra ({err}): pip install 'varde[postgres]'"
        ) from err
    return PgDispatcher(settings.db_url, settings.node_offline_after_s)
