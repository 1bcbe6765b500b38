"""``varde node rotate-key`` without a gateway: the enrollment call is replaced by a stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from launcher.cli import app
from nodes.config import NodeConfig
from nodes.enrollment import NodeIdentity, identity_path, load_identity
from nodes.store import NodeStore
from varde.crypto import (
    generate_key,
    key_fingerprint,
    load_private_key,
    public_key_b64,
    save_private_key,
)
from varde.errors import AuthenticationFailed
from varde.processes import free_port

TOKEN = "ve_" + "a" * 43
GATEWAY_KEY = public_key_b64(generate_key())


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A node directory as ``varde node init`` lays it out, whose node has signed a trail."""
    root = tmp_path / "node"
    (root / "keys").mkdir(parents=True, mode=0o700)
    key = generate_key()
    save_private_key(key, root / "keys" / "node_key.pem")
    (root / "state").mkdir()
    config = NodeConfig(
        site="tromso", gateway_url=f"https://127.0.0.1:{free_port()}", policy=Path("p.yaml")
    )
    (root / "config.yaml").write_text(config.to_yaml())
    ident = NodeIdentity(
        site="tromso", gateway_url=config.gateway_url, gateway_public_key=GATEWAY_KEY
    )
    identity_path(root / "state").write_text(ident.model_dump_json())
    store = NodeStore.in_directory(root / "state", key=key, checkpoint_every=3)
    for i in range(7):
        store.audit("released", query_id=f"q{i}", project="p")
    store.close()
    return root


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stand-ins for the gateway: /healthz answers, /v1/nodes/enroll records what it got."""
    calls: list[dict[str, Any]] = []

    def register(url: str, token: str, site: str, public_key: str, **kw: Any) -> str:
        calls.append({"token": token, "site": site, "public_key": public_key})
        if token != TOKEN:
            raise AuthenticationFailed("enrollment refused (401): unknown or already used token")
        return GATEWAY_KEY

    monkeypatch.setattr("nodes.key_rotation.check_gateway_health", lambda *a, **kw: None)
    monkeypatch.setattr("nodes.key_rotation.register_key", register)
    return calls


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _rotate(root: Path, token: str = TOKEN) -> Any:
    return CliRunner().invoke(
        app, ["node", "rotate-key", "--config", str(root / "config.yaml"), "--token", token]
    )


def test_rotation_retires_the_old_key_and_the_trail_still_verifies(
    node_dir: Path, gateway: list[dict[str, Any]]
) -> None:
    old = load_private_key(node_dir / "keys" / "node_key.pem")
    done = _rotate(node_dir)
    assert done.exit_code == 0, done.output
    new = load_private_key(node_dir / "keys" / "node_key.pem")
    assert public_key_b64(new) != public_key_b64(old)
    assert gateway == [{"token": TOKEN, "site": "tromso", "public_key": public_key_b64(new)}]
    old_fp = key_fingerprint(public_key_b64(old))
    retired = node_dir / "keys" / "retired" / f"{old_fp}.pem"
    assert public_key_b64(load_private_key(retired)) == public_key_b64(old)
    assert retired.stat().st_mode & 0o777 == 0o600
    assert (node_dir / "keys" / "node_key.pem").stat().st_mode & 0o777 == 0o600
    assert not (node_dir / "keys" / "node_key.pem.new").exists()
    assert old_fp in done.output and key_fingerprint(public_key_b64(new)) in done.output
    verify = CliRunner().invoke(app, ["audit", "verify", "--state-dir", str(node_dir / "state")])
    assert verify.exit_code == 0 and "audit trail OK" in verify.output, verify.output
    assert load_identity(node_dir / "state") is not None


def test_a_refused_token_changes_nothing(node_dir: Path, gateway: list[dict[str, Any]]) -> None:
    before = _files(node_dir)
    done = _rotate(node_dir, token="ve_" + "b" * 43)
    assert done.exit_code == 2
    assert "unknown or already used" in done.output and "nothing changed" in done.output
    assert _files(node_dir) == before


def test_a_malformed_token_is_refused_before_the_gateway_is_asked(
    node_dir: Path, gateway: list[dict[str, Any]]
) -> None:
    before = _files(node_dir)
    done = _rotate(node_dir, token="not-a-token")
    assert done.exit_code == 2 and "is not an enrollment token" in done.output, done.output
    assert gateway == [] and _files(node_dir) == before


def test_an_unreachable_gateway_changes_nothing(node_dir: Path) -> None:
    """No stand-in: nothing listens on the config's port, so /healthz fails first."""
    before = _files(node_dir)
    done = _rotate(node_dir)
    assert done.exit_code == 2 and "the token was not used" in done.output, done.output
    assert _files(node_dir) == before


def test_a_node_that_never_ran_is_refused(tmp_path: Path, gateway: list[dict[str, Any]]) -> None:
    root = tmp_path / "fresh"
    (root / "state").mkdir(parents=True)
    config = NodeConfig(site="tromso", gateway_url="https://g.example.org", policy=Path("p.yaml"))
    (root / "config.yaml").write_text(config.to_yaml())
    done = _rotate(root)
    assert done.exit_code == 2 and "no node state" in done.output, done.output
    assert gateway == []
