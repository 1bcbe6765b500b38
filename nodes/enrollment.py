"""Join a network: register this node's key with a one-time token and pin the gateway's key.

After enrollment the node trusts exactly one gateway key, stored in
``state_dir/identity.json``; every work item must be signed by it. The node's
own private key never leaves ``state_dir/node_key.pem``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict

from varde.crypto import load_or_create_key, load_public_key, public_key_b64
from varde.errors import AuthenticationFailed


class NodeIdentity(BaseModel):
    """Who this node is and which gateway (key) it trusts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    gateway_url: str
    gateway_public_key: str


def identity_path(state_dir: Path) -> Path:
    """Where the pinned identity lives."""
    return state_dir / "identity.json"


def key_path(state_dir: Path) -> Path:
    """Where the node's private key lives."""
    return state_dir / "node_key.pem"


def load_identity(state_dir: Path) -> NodeIdentity | None:
    """The pinned identity, or None before enrollment."""
    path = identity_path(state_dir)
    return NodeIdentity.model_validate_json(path.read_text()) if path.exists() else None


def enroll(
    gateway_url: str, token: str, site: str, state_dir: Path, *, timeout: float = 10.0
) -> NodeIdentity:
    """Register with the gateway and pin its key; raises with the gateway's reason on refusal."""
    state_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(key_path(state_dir))
    resp = httpx.post(
        f"{gateway_url.rstrip('/')}/v1/nodes/enroll",
        json={"token": token, "site": site, "public_key": public_key_b64(key)},
        timeout=timeout,
    )
    if resp.status_code != 200:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        raise AuthenticationFailed(f"enrollment refused ({resp.status_code}): {detail}")
    data = resp.json()
    load_public_key(data["gateway_public_key"])
    ident = NodeIdentity(
        site=site, gateway_url=gateway_url, gateway_public_key=data["gateway_public_key"]
    )
    identity_path(state_dir).write_text(ident.model_dump_json(indent=2))
    return ident
