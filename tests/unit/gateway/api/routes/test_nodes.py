"""The node-facing routes: one-time enrollment, presence from polls, whoami, revocation.

A real gateway app in process (SQLite in a temp dir), driven by signed
envelopes as a node makes them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from gateway.admin import add_project, add_researcher, enrollment_token, list_nodes, revoke_node
from gateway.app import create_app
from gateway.core.config import Settings
from gateway.core.db import GatewayAudit
from gateway.state import GatewayState
from varde.crypto import generate_key, key_fingerprint, public_key_b64
from varde.envelope import seal, utcnow


class AppClient:
    """Synchronous calls into the app (in process, no server)."""

    def __init__(self, state: GatewayState) -> None:
        self.app = create_app(state=state)

    def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.request(method, url, **kw)

        return asyncio.run(go())

    def post(self, url: str, json: Any) -> httpx.Response:
        return self._call("POST", url, json=json)

    def get(self, url: str, headers: dict[str, str]) -> httpx.Response:
        return self._call("GET", url, headers=headers)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[AppClient, GatewayState]]:
    state = GatewayState.open(Settings(state_dir=tmp_path / "gw"))
    yield AppClient(state), state
    state.engine.dispose()


def _enroll(client: AppClient, token: str, site: str, key: Ed25519PrivateKey) -> Any:
    return client.post(
        "/v1/nodes/enroll", json={"token": token, "site": site, "public_key": public_key_b64(key)}
    )


def _signed(key: Ed25519PrivateKey, site: str, kind: str, body: dict[str, Any]) -> Any:
    return seal(
        key,
        kind=kind,
        sender=site,
        recipient="gateway",
        body=body,
        ttl=dt.timedelta(minutes=1),  # type: ignore[arg-type]
    ).model_dump(mode="json")


def _poll(client: AppClient, key: Ed25519PrivateKey, site: str, **extra: str) -> Any:
    manifest = {"site": site, "fields": [], "statistics": []}
    body = {"wait": 0, "manifest": manifest, **extra}
    return client.post("/v1/nodes/poll", json=_signed(key, site, "poll", body))


def test_a_token_works_once_for_its_site_until_it_expires(
    gateway: tuple[AppClient, GatewayState],
) -> None:
    client, state = gateway
    key = generate_key()
    token = enrollment_token(state.sessions, "voss", dt.timedelta(hours=1))
    wrong_site = _enroll(client, token, "bodo", key)
    assert wrong_site.status_code == 401 and "enrolls site 'voss'" in wrong_site.json()["detail"]
    assert _enroll(client, token, "voss", key).status_code == 200
    again = _enroll(client, token, "voss", key)
    assert again.status_code == 401 and "already used" in again.json()["detail"]
    old = enrollment_token(state.sessions, "voss", dt.timedelta(minutes=1))
    with state.sessions() as s:
        from gateway.core.db import EnrollmentToken

        for tok in s.scalars(select(EnrollmentToken).where(EnrollmentToken.used_at.is_(None))):
            tok.expires_at = utcnow() - dt.timedelta(seconds=1)
        s.commit()
    expired = _enroll(client, old, "voss", key)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_polls_record_presence_shown_by_sites_and_admin(
    gateway: tuple[AppClient, GatewayState],
) -> None:
    client, state = gateway
    key = generate_key()
    assert (
        _enroll(
            client, enrollment_token(state.sessions, "voss", dt.timedelta(hours=1)), "voss", key
        ).status_code
        == 200
    )
    [before] = list_nodes(state.sessions)
    assert (before.state, before.last_seen, before.version) == ("never seen", None, None)
    resp = _poll(client, key, "voss", node_version="9.9.9", node_state="deny-all")
    assert resp.status_code == 200, resp.text
    [node] = list_nodes(state.sessions)
    assert node.version == "9.9.9" and node.state == "deny-all"
    assert node.last_seen is not None and abs(node.last_seen - utcnow()) < dt.timedelta(seconds=30)
    assert node.key_fingerprint == key_fingerprint(public_key_b64(key))
    add_project(state.sessions, "p1")
    researcher = add_researcher(state.sessions, "ann", ["p1"])
    [site] = client.get("/v1/sites", headers={"Authorization": f"Bearer {researcher}"}).json()
    assert site["site"] == "voss" and site["connected"] is True
    assert (site["version"], site["state"]) == ("9.9.9", "deny-all")
    assert site["key_fingerprint"] == node.key_fingerprint and site["last_seen"]
    # a state change is written at once, not after the throttle
    assert _poll(client, key, "voss", node_version="9.9.9", node_state="serving").status_code == 200
    assert list_nodes(state.sessions)[0].state == "serving"


def test_whoami_answers_with_the_pinned_key_and_the_gateway_clock(
    gateway: tuple[AppClient, GatewayState],
) -> None:
    client, state = gateway
    key = generate_key()
    _enroll(client, enrollment_token(state.sessions, "voss", dt.timedelta(hours=1)), "voss", key)
    resp = client.post("/v1/nodes/whoami", json=_signed(key, "voss", "hello", {}))
    assert resp.status_code == 200, resp.text
    me = resp.json()
    assert me["site"] == "voss" and me["key_fingerprint"] == key_fingerprint(public_key_b64(key))
    skew = dt.datetime.fromisoformat(me["server_time"]) - utcnow()
    assert abs(skew) < dt.timedelta(seconds=5)
    forged = client.post("/v1/nodes/whoami", json=_signed(generate_key(), "voss", "hello", {}))
    assert forged.status_code == 400 and "forged" in forged.json()["detail"]
    # a whoami is no poll: it never hands out work nor marks the node as seen
    assert list_nodes(state.sessions)[0].last_seen is None


def test_a_revoked_node_is_refused_and_audited_until_re_enrolled(
    gateway: tuple[AppClient, GatewayState],
) -> None:
    client, state = gateway
    key = generate_key()
    _enroll(client, enrollment_token(state.sessions, "voss", dt.timedelta(hours=1)), "voss", key)
    spare = enrollment_token(state.sessions, "voss", dt.timedelta(hours=1))
    assert _poll(client, key, "voss").status_code == 200
    revoke_node(state.sessions, "voss", "left the network")
    refused = _poll(client, key, "voss")
    assert refused.status_code == 403
    assert (
        "revoked" in refused.json()["detail"] and "new enrollment token" in refused.json()["detail"]
    )
    assert (
        client.post("/v1/nodes/whoami", json=_signed(key, "voss", "hello", {})).status_code == 403
    )
    with state.sessions() as s:
        kinds = [a.kind for a in s.scalars(select(GatewayAudit).where(GatewayAudit.site == "voss"))]
    assert kinds.count("revoked") == 1 and kinds.count("revoked_refused") == 2
    assert list_nodes(state.sessions)[0].state == "revoked"
    # the token made before the revocation was spent by it; a new one re-admits the site
    assert _enroll(client, spare, "voss", key).status_code == 401
    new_key = generate_key()
    fresh = enrollment_token(state.sessions, "voss", dt.timedelta(hours=1))
    assert _enroll(client, fresh, "voss", new_key).status_code == 200
    assert _poll(client, new_key, "voss").status_code == 200
    assert _poll(client, key, "voss").status_code == 400  # the old key is no longer pinned
