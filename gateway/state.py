"""Everything a running gateway holds: settings, database, signing key, dispatcher."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from gateway.core.config import Settings
from gateway.core.db import make_engine, make_sessionmaker
from gateway.dispatch import Dispatcher
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
    dispatcher: Dispatcher
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def public_key(self) -> str:
        """The key nodes pin at enrollment."""
        return public_key_b64(self.key)

    @classmethod
    def open(cls, settings: Settings) -> GatewayState:
        """Create the state directory, database and key on first use."""
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            key=load_or_create_key(settings.key_path),
            dispatcher=Dispatcher(settings.node_offline_after_s),
        )
