"""``varde node rotate-key``: a new node key, enrolled with a one-time token, the old one retired.

Why this order: the token works once and the gateway replaces the site's pinned
key as soon as it accepts a new one, so everything that can be checked without
spending the token is checked first (the config, the key and identity files, the
token's shape, that the gateway answers over verified TLS). The new key is
written next to the old one (``keys/node_key.pem.new``, 0600) *before* it is
enrolled, so it is never only in memory once the gateway pins it. Only after
the gateway accepted it does anything change for good:

1. with the OLD key, a ``key_rotated`` audit entry (old and new keys and
   fingerprints, and the new key's signature over the trail up to it, see
   :mod:`nodes.audit_keys`) and a checkpoint over it, signed by the old key;
2. the old key moves to ``keys/retired/<fingerprint>.pem`` (0600), the record
   of which key signed the trail before the rotation;
3. the new key replaces ``keys/node_key.pem`` (an atomic rename);
4. ``state/identity.json`` is rewritten if the gateway's key changed.

A refusal or an unreachable gateway before step 1 leaves every file as it was
(the pending key file is removed). The node must be stopped meanwhile: a
running node keeps signing with the old key, and its polls are refused once the
gateway pins the new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from nodes.audit import GENESIS, audit_head
from nodes.audit_keys import KEY_ROTATED, handover_detail, handover_message
from nodes.config import NodeConfig, NodeConfigError, load_config
from nodes.enrollment import NodeIdentity, identity_path, key_path, load_identity, register_key
from nodes.node_init import InitError, check_gateway_health, check_token
from nodes.store import NodeStore
from nodes.transport import GatewayURLError, check_gateway_url, tls_context
from varde.crypto import (
    generate_key,
    key_fingerprint,
    load_private_key,
    public_key_b64,
    save_private_key,
    sign,
)
from varde.errors import AuthenticationFailed

__all__ = ["RotationError", "RotationResult", "record_handover", "rotate_key"]


class RotationError(ValueError):
    """The key cannot be rotated now; the message says what happened and what to do."""


@dataclass(frozen=True)
class RotationResult:
    """What changed: the keys' fingerprints, where the old key went, the handover entry."""

    site: str
    old_fingerprint: str
    new_fingerprint: str
    key_path: Path
    retired_key: Path
    handover_entry: int
    gateway_key_changed: bool


def record_handover(store: NodeStore, old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> int:
    """Append the ``key_rotated`` entry and sign a checkpoint over it with the old key.

    ``store`` must hold the old key (it signs the checkpoint). Returns the
    handover entry's id. The new key signs the hash of the entry before the
    handover, read in the same write transaction as the append.
    """
    old_b64, new_b64 = public_key_b64(old), public_key_b64(new)
    log = store.log
    with log.write_engine.begin() as conn:
        prev = conn.execute(select(audit_head.c.last_hash)).scalar_one_or_none() or GENESIS
        signature = sign(new, handover_message(str(prev), old_b64, new_b64))
        entry = log.append(conn, KEY_ROTATED, detail=handover_detail(old_b64, new_b64, signature))
    log.checkpoint()  # None if append already signed one (every CHECKPOINT_EVERY entries)
    return entry.id


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prepare(
    config: NodeConfig, token: str, ca_file: Path | None, dev_network: bool
) -> tuple[Path, Ed25519PrivateKey, NodeIdentity]:
    """Every check that spends nothing; returns the key path, the old key and the identity."""
    try:
        check_token(token)
    except InitError as err:
        raise RotationError(str(err)) from err
    state = config.state_dir
    if not (state / "node.sqlite").exists():
        raise RotationError(
            f"no node state at {state} (expected {state / 'node.sqlite'}): rotate the key of "
            "a node that has run; a new node is enrolled with 'varde node init'"
        )
    path = key_path(state)
    try:
        old = load_private_key(path)
    except (OSError, ValueError) as err:
        raise RotationError(
            f"cannot read the node's key {path} ({err}): restore it from the backup first "
            "(the rotation signs the audit trail's handover with it)"
        ) from err
    ident = load_identity(state)
    if ident is None or ident.site != config.site:
        raise RotationError(
            f"{identity_path(state)} is missing or names another site than {config.site!r}: "
            "restore it from the backup"
        )
    try:
        check_gateway_url(config.gateway_url, dev_network)
        tls_context(ca_file)
        check_gateway_health(config.gateway_url, ca_file=ca_file, dev_network=dev_network)
    except (GatewayURLError, InitError) as err:
        raise RotationError(f"{err} (nothing changed; the token was not used)") from err
    return path, old, ident


def rotate_key(
    config_path: Path,
    token: str,
    *,
    ca_file: Path | None = None,
    dev_network: bool | None = None,
) -> RotationResult:
    """Rotate the node key of the node directory of ``config_path``; see the module docstring.

    ``ca_file`` / ``dev_network`` override the config's. Raises
    :class:`RotationError` with what to do.
    """
    try:
        config = load_config(config_path)
    except NodeConfigError as err:
        raise RotationError(str(err)) from err
    dev = config.dev_network if dev_network is None else dev_network
    ca = ca_file if ca_file is not None else config.ca_file
    path, old, ident = _prepare(config, token, ca, dev)
    new = generate_key()
    pending = path.with_name(f"{path.name}.new")
    pending.unlink(missing_ok=True)
    save_private_key(new, pending)  # 0600, before the gateway knows it
    try:
        gateway_key = register_key(
            config.gateway_url,
            token.strip(),
            config.site,
            public_key_b64(new),
            ca_file=ca,
            dev_network=dev,
        )
    except ConnectionError as err:
        pending.unlink(missing_ok=True)
        raise RotationError(
            f"{err} (nothing changed; the token may not have been used: run rotate-key again)"
        ) from err
    except AuthenticationFailed as err:
        pending.unlink(missing_ok=True)
        raise RotationError(
            f"{err.message} (nothing changed: the old key is still in use)"
        ) from err
    except Exception as err:  # e.g. a malformed gateway key in an answer of 200
        raise RotationError(
            f"the gateway's answer to the enrollment cannot be used ({err}); it may already pin "
            f"the new key, kept in {pending}: ask the operator (varde admin nodes) before "
            "running rotate-key again"
        ) from err
    # the gateway pins the new key from here on: finish, or say where the new key is
    try:
        store = NodeStore.in_directory(config.state_dir, key=old)
        try:
            handover = record_handover(store, old, new)
        finally:
            store.log.key = None  # close() must not sign again (nothing new anyway)
            store.close()
        old_fp = key_fingerprint(public_key_b64(old))
        retired = path.parent / "retired" / f"{old_fp}.pem"
        retired.parent.mkdir(mode=0o700, exist_ok=True)
        save_private_key(old, retired)
        retired.chmod(0o600)
        os.replace(pending, path)
        changed = gateway_key != ident.gateway_public_key
        if changed:
            updated = ident.model_copy(update={"gateway_public_key": gateway_key})
            _write_atomically(identity_path(config.state_dir), updated.model_dump_json(indent=2))
    except Exception as err:
        raise RotationError(
            f"the gateway now pins the new key, but finishing the rotation failed ({err}): the "
            f"new key is in {pending if pending.exists() else path}; move it to {path} "
            "(keep the old key as keys/retired/<fingerprint>.pem) before starting the node"
        ) from err
    return RotationResult(
        site=config.site,
        old_fingerprint=old_fp,
        new_fingerprint=key_fingerprint(public_key_b64(new)),
        key_path=path,
        retired_key=retired,
        handover_entry=handover,
        gateway_key_changed=changed,
    )
