"""Join a network: register this node's key with a one-time token and pin the gateway's key.

After enrollment the node trusts exactly one gateway key, stored in
``state_dir/identity.json``; every work item must be signed by it. The node's
own private key never leaves its key file: ``state_dir/node_key.pem``, or, in a
node directory made by ``varde node init``, ``keys/node_key.pem`` beside
``state/`` (a directory of its own, so a deployment can mount it read-only).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict

from nodes.transport import explain, gateway_client
from varde.crypto import key_fingerprint, load_or_create_key, load_public_key, public_key_b64
from varde.envelope import seal
from varde.errors import AuthenticationFailed

log = logging.getLogger("varde.node")

ENROLL_HELP = {
    "unknown or already used enrollment token": (
        "a token works once: ask the gateway operator for a new one "
        "(varde admin enroll-token SITE --expires 48h)"
    ),
    "enrollment token expired": (
        "ask the gateway operator for a new token (varde admin enroll-token SITE --expires 48h)"
    ),
    "this token enrolls site": (
        "use the site name the token was made for (--site), or ask for a token for this site"
    ),
    "revoked": "ask the gateway operator to re-admit the site with a new enrollment token",
}
"""What to do about each refusal the gateway gives at enrollment (matched on its wording)."""


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
    """Where the node's private key lives: ``state_dir/node_key.pem``, or ``../keys/`` (init)."""
    own = state_dir / "node_key.pem"
    beside = state_dir.parent / "keys" / "node_key.pem"
    return beside if not own.exists() and beside.exists() else own


def load_identity(state_dir: Path) -> NodeIdentity | None:
    """The pinned identity, or None before enrollment."""
    path = identity_path(state_dir)
    return NodeIdentity.model_validate_json(path.read_text()) if path.exists() else None


def refusal_help(detail: str) -> str:
    """The gateway's reason for refusing an enrollment, with what to do about it."""
    for words, fix in ENROLL_HELP.items():
        if words in detail:
            return f"{detail}: {fix}"
    return detail


def register_key(
    gateway_url: str,
    token: str,
    site: str,
    public_key: str,
    *,
    ca_file: Path | None = None,
    dev_network: bool = False,
    timeout: float = 10.0,
) -> str:
    """Spend ``token`` to register ``public_key`` for ``site``; return the gateway's key.

    Raises :class:`AuthenticationFailed` with the gateway's reason and the fix,
    ``ConnectionError`` when the gateway cannot be reached.
    """
    with gateway_client(
        gateway_url, ca_file=ca_file, dev_network=dev_network, timeout=timeout
    ) as client:
        try:
            resp = client.post(
                f"{gateway_url.rstrip('/')}/v1/nodes/enroll",
                json={"token": token, "site": site, "public_key": public_key},
            )
        except httpx.HTTPError as err:
            raise ConnectionError(explain(err, gateway_url, ca_file)) from err
    if resp.status_code != 200:
        try:
            detail = str(resp.json().get("detail", resp.text))
        except ValueError:
            detail = resp.text
        raise AuthenticationFailed(
            f"enrollment refused ({resp.status_code}): {refusal_help(detail)}"
        )
    gateway_key = str(resp.json()["gateway_public_key"])
    load_public_key(gateway_key)  # a malformed key is refused before it is pinned
    return gateway_key


def enroll(
    gateway_url: str,
    token: str,
    site: str,
    state_dir: Path,
    *,
    ca_file: Path | None = None,
    dev_network: bool = False,
    timeout: float = 10.0,
) -> NodeIdentity:
    """Register with the gateway and pin its key; raises with the gateway's reason on refusal."""
    state_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(key_path(state_dir))
    gateway_key = register_key(
        gateway_url,
        token,
        site,
        public_key_b64(key),
        ca_file=ca_file,
        dev_network=dev_network,
        timeout=timeout,
    )
    ident = NodeIdentity(site=site, gateway_url=gateway_url, gateway_public_key=gateway_key)
    identity_path(state_dir).write_text(ident.model_dump_json(indent=2))
    return ident


def confirm_key(
    gateway_url: str,
    site: str,
    key: Ed25519PrivateKey,
    *,
    ca_file: Path | None = None,
    dev_network: bool = False,
    timeout: float = 10.0,
) -> None:
    """Ask the gateway whether it still pins this key for ``site`` (``POST /v1/nodes/whoami``).

    Why at start: a node started with a restored or rotated key, or after the
    operator revoked it, would otherwise poll forever and be refused each time.
    Raises :class:`AuthenticationFailed` with what to do; a gateway that cannot
    be reached now is not an error (the node keeps trying to connect).
    """
    envelope = seal(
        key, kind="hello", sender=site, recipient="gateway", body={}, ttl=dt.timedelta(minutes=1)
    )
    url = gateway_url.rstrip("/")
    try:
        with gateway_client(url, ca_file=ca_file, dev_network=dev_network, timeout=timeout) as c:
            resp = c.post(f"{url}/v1/nodes/whoami", json=envelope.model_dump(mode="json"))
    except httpx.HTTPError as err:
        log.warning("could not check this node's key now: %s", explain(err, url, ca_file))
        return
    if resp.status_code == 200:
        return
    try:
        detail = str(resp.json().get("detail", resp.text))
    except ValueError:
        detail = resp.text
    mine = key_fingerprint(public_key_b64(key))
    if resp.status_code == 403:
        raise AuthenticationFailed(detail)
    if "forged" in detail:
        raise AuthenticationFailed(
            f"the gateway pinned another key for site {site!r} (this node's is {mine}): restore "
            "the node's key file from the backup, or rotate the key with a new token "
            f"(varde admin enroll-token {site}; varde node rotate-key --token ...)"
        )
    if "unknown_sender" in detail:
        raise AuthenticationFailed(
            f"the gateway has no enrolled site {site!r}: enroll with a token from its operator "
            "(varde node init, or varde node run --enroll-token)"
        )
    if resp.status_code == 404:  # a gateway from before whoami: nothing to check against
        return
    log.warning("the gateway did not confirm this node's key: %s %s", resp.status_code, detail)
