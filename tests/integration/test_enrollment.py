"""Enrollment and the gateway's checks on node messages (on the small in-process network)."""

from __future__ import annotations

import httpx
import pytest

from launcher.network import LocalNetwork

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]


FEAS = {
    "project": "nsclc-feasibility",
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.1},
}


def test_enrollment_token_is_one_time(small_network: LocalNetwork) -> None:
    from varde.crypto import generate_key, public_key_b64

    token = small_network.enrollment_token("stavanger")
    pub = public_key_b64(generate_key())
    wrong_site = httpx.post(
        f"{small_network.url}/v1/nodes/enroll",
        json={"token": token, "site": "tromso", "public_key": pub},
    )
    assert wrong_site.status_code == 401 and "enrolls site 'stavanger'" in wrong_site.text
    ok = httpx.post(
        f"{small_network.url}/v1/nodes/enroll",
        json={"token": token, "site": "stavanger", "public_key": pub},
    )
    assert ok.status_code == 200 and ok.json()["gateway_public_key"]
    again = httpx.post(
        f"{small_network.url}/v1/nodes/enroll",
        json={"token": token, "site": "stavanger", "public_key": pub},
    )
    assert again.status_code == 401 and "already used" in again.text
    # stavanger is enrolled but never connects: named explicitly, it is reported unavailable
    res = httpx.post(
        f"{small_network.url}/v1/queries",
        json={**FEAS, "sites": ["stavanger", "bergen"]},
        headers={"Authorization": f"Bearer {small_network.token}"},
    ).json()
    rows = {r["site"]: r for r in res["sites"]}
    assert rows["stavanger"]["status"] == "unavailable" and rows["bergen"]["status"] == "ok"


def test_gateway_refuses_replayed_expired_misaddressed_node_messages(
    small_network: LocalNetwork,
) -> None:
    """Messages signed with an enrolled key, but replayed, expired or for another recipient."""
    import datetime as dt

    from varde.crypto import generate_key, public_key_b64
    from varde.envelope import seal, utcnow

    key = generate_key()
    token = small_network.enrollment_token("mallory")
    resp = httpx.post(
        f"{small_network.url}/v1/nodes/enroll",
        json={"token": token, "site": "mallory", "public_key": public_key_b64(key)},
    )
    assert resp.status_code == 200
    manifest = {"site": "mallory", "fields": [], "statistics": []}

    def poll(**kw: object) -> httpx.Response:
        args: dict[str, object] = {
            "kind": "poll",
            "sender": "mallory",
            "recipient": "gateway",
            "body": {"wait": 0, "manifest": manifest},
            "ttl": dt.timedelta(seconds=30),
        }
        args.update(kw)
        env = seal(key, **args)  # type: ignore[arg-type]
        return httpx.post(f"{small_network.url}/v1/nodes/poll", json=env.model_dump(), timeout=10)

    env = seal(
        key,
        kind="poll",
        sender="mallory",
        recipient="gateway",
        body={"wait": 0, "manifest": manifest},
        ttl=dt.timedelta(seconds=30),
    )
    first = httpx.post(f"{small_network.url}/v1/nodes/poll", json=env.model_dump(), timeout=10)
    assert first.status_code == 200
    again = httpx.post(f"{small_network.url}/v1/nodes/poll", json=env.model_dump(), timeout=10)
    assert again.status_code == 400 and "replayed" in again.json()["detail"]
    old = poll(now=utcnow() - dt.timedelta(minutes=10))
    assert old.status_code == 400 and "expired" in old.json()["detail"]
    other = poll(recipient="another-gateway")
    assert other.status_code == 400 and "misaddressed" in other.json()["detail"]
    wrong_kind = poll(kind="release")
    assert wrong_kind.status_code == 400 and "wrong_kind" in wrong_kind.json()["detail"]
