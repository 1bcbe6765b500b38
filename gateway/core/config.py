"""Gateway settings, read once from the environment (``VARDE_*``) and cached.

Tests override them through ``create_app(settings)`` or FastAPI's
``dependency_overrides``, never by patching globals.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field


class Settings(BaseModel):
    """Where the gateway keeps its state and how it treats nodes."""

    state_dir: Path = Field(default=Path(".varde/gateway"))
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite in state_dir."
    )
    node_offline_after_s: float = Field(default=15.0, gt=0)
    poll_wait_max_s: float = Field(default=25.0, gt=0)
    flower_superlink: str | None = Field(
        default=None,
        description="host:port of the Flower SuperLink for training jobs; unset = training off.",
    )
    flower_insecure: bool = Field(
        default=False, description="Plain-text to the SuperLink (loopback only: tests, demo)."
    )
    flower_root_certificates: Path | None = Field(
        default=None, description="CA certificate (PEM) of a TLS SuperLink."
    )

    @property
    def db_url(self) -> str:
        """The effective database URL."""
        return self.database_url or f"sqlite:///{self.state_dir / 'gateway.sqlite'}"

    @property
    def key_path(self) -> Path:
        """The gateway's Ed25519 signing key (created on first start)."""
        return self.state_dir / "gateway_key.pem"


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment."""
    return Settings(
        state_dir=Path(os.environ.get("VARDE_STATE_DIR", ".varde/gateway")),
        database_url=os.environ.get("VARDE_DATABASE_URL") or None,
        flower_superlink=os.environ.get("VARDE_FLOWER_SUPERLINK") or None,
        flower_insecure=os.environ.get("VARDE_FLOWER_INSECURE", "") == "1",
        flower_root_certificates=(
            Path(ca) if (ca := os.environ.get("VARDE_FLOWER_ROOT_CERTIFICATES")) else None
        ),
    )
