"""The PostgreSQL work queue, two "replicas" (two queues) in one event loop on a fresh database.

Needs the PostgreSQL at 127.0.0.1:5432 (skipped, saying so, when it is not there).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from gateway.core.db import make_engine
from gateway.dispatch import Answer
from gateway.dispatch_pg import PgDispatcher, conninfo
from tests.conftest import scratch_postgres
from varde.crypto import generate_key
from varde.envelope import SignedEnvelope, seal
from varde.release import Manifest, SiteRelease, WorkItem

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("postgres")]

KEY = generate_key()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh database with the gateway schema, dropped afterwards."""
    with scratch_postgres("varde_q") as url:
        make_engine(url).dispose()  # creates the tables
        yield url


def work(site: str, query_id: str | None = None, *, preview: bool = False) -> SignedEnvelope:
    item = WorkItem(
        query_id=query_id or uuid.uuid4().hex,
        project="p",
        researcher="r",
        query={"project": "p", "statistic": {"kind": "count"}, "privacy": {"mode": "dp"}},
        preview=preview,
    )
    return seal(
        KEY,
        kind="work",
        sender="gateway",
        recipient=site,
        body=item.model_dump(mode="json"),
        ttl=dt.timedelta(seconds=30),
    )


def query_id_of(env: SignedEnvelope) -> str:
    from varde.envelope import peek

    return str(peek(env).body["query_id"])


def release(query_id: str, site: str) -> tuple[SiteRelease, SignedEnvelope]:
    rel = SiteRelease(query_id=query_id, site=site, status="ok", project="p")
    env = seal(
        KEY,
        kind="release",
        sender=site,
        recipient="gateway",
        body=rel.model_dump(mode="json"),
        ttl=dt.timedelta(seconds=30),
    )
    return rel, env


def replicas(url: str, n: int = 2, **kw: Any) -> Callable[[Callable[..., Awaitable[None]]], None]:
    """Run ``body(*queues)`` with ``n`` started queues on ``url``, closed afterwards."""

    def run(body: Callable[..., Awaitable[None]]) -> None:
        async def main() -> None:
            queues = [PgDispatcher(url, **kw) for _ in range(n)]
            for q in queues:
                await q.start()
            try:
                await asyncio.wait_for(body(*queues), 30)
            finally:
                for q in queues:
                    await q.close()

        asyncio.run(main())

    return run


def test_conninfo_drops_the_driver_name() -> None:
    assert conninfo("postgresql+psycopg://u:pw@h:5/db") == "postgresql://u:pw@h:5/db"


def test_query_on_one_replica_is_answered_through_another(pg_url: str) -> None:
    @replicas(pg_url)
    async def _(a: PgDispatcher, b: PgDispatcher) -> None:
        poll = asyncio.create_task(b.next_batch("oslo", wait=10))
        await asyncio.sleep(0.2)  # the poll is waiting on b before the query arrives on a
        env = work("oslo")
        started = time.monotonic()
        waiting = asyncio.create_task(a.submit("oslo", query_id_of(env), env, timeout=10))
        batch = await poll
        assert [query_id_of(e) for e in batch] == [query_id_of(env)]
        handed = time.monotonic() - started
        assert await b.deliver(*release(query_id_of(env), "oslo"))
        answer = await waiting
        assert answer is not None and answer[0].query_id == query_id_of(env)
        # woken by NOTIFY, not by the 5 s / 2 s backstops
        assert handed < 1.0 and time.monotonic() - started < 1.5


def test_an_item_is_handed_out_once_to_concurrent_pollers(pg_url: str) -> None:
    @replicas(pg_url, n=3)
    async def _(a: PgDispatcher, b: PgDispatcher, c: PgDispatcher) -> None:
        polls = [asyncio.create_task(q.next_batch("bergen", wait=1.5)) for q in (a, b, c, a)]
        await asyncio.sleep(0.2)
        envs = [work("bergen") for _ in range(20)]
        subs = [asyncio.create_task(c.submit("bergen", query_id_of(e), e, timeout=3)) for e in envs]
        got: list[str] = []
        for batch in await asyncio.gather(*polls):
            got += [query_id_of(e) for e in batch]
        # pollers that came back early poll again, as nodes do, until all is handed out
        for _round in range(10):
            if len(got) >= len(envs):
                break
            got += [query_id_of(e) for e in await b.next_batch("bergen", wait=0.5)]
        assert sorted(got) == sorted(query_id_of(e) for e in envs)  # each exactly once
        assert await asyncio.gather(*subs) == [None] * len(envs)  # none answered: timed out


def test_a_lease_is_handed_out_again_only_after_it_expired(pg_url: str) -> None:
    @replicas(pg_url, lease_s=1.0)
    async def _(a: PgDispatcher, b: PgDispatcher) -> None:
        env = work("tromso")
        qid = query_id_of(env)
        waiting = asyncio.create_task(a.submit("tromso", qid, env, timeout=8))
        await asyncio.sleep(0.1)
        assert [query_id_of(e) for e in await a.next_batch("tromso", wait=1)] == [qid]
        assert await b.next_batch("tromso", wait=0.5) == []  # leased: not again
        await asyncio.sleep(0.6)
        again = await b.next_batch("tromso", wait=6)  # found by the 5 s backstop claim
        assert [query_id_of(e) for e in again] == [qid]  # the same query id
        assert await a.deliver(*release(qid, "tromso"))
        answer = await waiting
        assert answer is not None and answer[0].query_id == qid


def test_timed_out_work_is_withdrawn_and_a_late_release_is_not_delivered(pg_url: str) -> None:
    @replicas(pg_url)
    async def _(a: PgDispatcher, b: PgDispatcher) -> None:
        env = work("alta")
        qid = query_id_of(env)
        assert await a.submit("alta", qid, env, timeout=0.5) is None
        assert await b.next_batch("alta", wait=0.3) == []
        assert not await b.deliver(*release(qid, "alta"))


def test_the_same_release_twice_is_delivered_once(pg_url: str) -> None:
    @replicas(pg_url)
    async def _(a: PgDispatcher, b: PgDispatcher) -> None:
        env = work("bodo")
        qid = query_id_of(env)
        waiting = asyncio.create_task(a.submit("bodo", qid, env, timeout=5))
        await asyncio.sleep(0.1)
        await b.next_batch("bodo", wait=2)
        rel, signed = release(qid, "bodo")
        assert await b.deliver(rel, signed)
        assert await a.deliver(rel, signed)  # a re-post of the very same signed release
        assert await a.deliver(*release(qid, "bodo"))  # the same release signed afresh
        other = SiteRelease(query_id=qid, site="bodo", status="error", message="another")
        assert not await a.deliver(other, signed)  # another release for a done item
        assert (await waiting) is not None


def test_presence_and_manifest_are_shared(pg_url: str) -> None:
    @replicas(pg_url, offline_after_s=1.0)
    async def _(a: PgDispatcher, b: PgDispatcher) -> None:
        manifest = Manifest(site="molde", fields=["stage"], statistics=["count"])
        assert not b.connected("molde")
        await a.next_batch("molde", wait=0.0, manifest=manifest)
        for _i in range(50):
            if b.connected("molde"):
                break
            await asyncio.sleep(0.05)
        assert b.connected("molde") and b.manifest("molde") == manifest
        assert "molde" in b.sites()
        await asyncio.sleep(2.5)  # refreshed every 2 s: the last poll is older than 1 s now
        assert not b.connected("molde")

        async def hung_up() -> bool:
            return True

        held = asyncio.create_task(a.next_batch("molde", wait=5, gone=hung_up))
        await asyncio.sleep(0.1)
        assert a.connected("molde")
        assert await held == []  # noticed within a second, offline at once
        assert not a.connected("molde")


def test_a_query_whose_replica_died_is_adopted_with_its_releases(pg_url: str) -> None:
    adopted: list[tuple[WorkItem, list[str], list[Answer]]] = []

    async def record(item: WorkItem, sites: list[str], answers: list[Answer]) -> None:
        adopted.append((item, sites, answers))

    async def body() -> None:
        dead, alive = PgDispatcher(pg_url, grace_s=0.5), PgDispatcher(pg_url, grace_s=0.5)
        await dead.start()
        await alive.start(record)
        try:
            answered = work("oslo")
            lost = work("bergen", query_id_of(answered))
            qid = query_id_of(answered)
            tasks = [
                asyncio.create_task(dead.submit("oslo", qid, answered, timeout=1.0)),
                asyncio.create_task(dead.submit("bergen", qid, lost, timeout=1.0)),
            ]
            await asyncio.sleep(0.2)
            for t in tasks:  # the replica dies: its waits end without a word
                t.cancel()
            await dead.close()
            assert [query_id_of(e) for e in await alive.next_batch("oslo", wait=1)] == [qid]
            assert await alive.deliver(*release(qid, "oslo"))  # the node's charge comes in
            for _i in range(60):
                if any(item.query_id == qid for item, *_ in adopted):
                    break
                await asyncio.sleep(0.1)
        finally:
            await alive.close()

    asyncio.run(asyncio.wait_for(body(), 30))
    # (the earlier tests' queries, never recorded here, are adopted too: filter them out)
    ours = [a for a in adopted if a[1] == ["bergen", "oslo"]]
    assert len(ours) == 1
    item, sites, answers = ours[0]
    assert sites == ["bergen", "oslo"]
    assert [a[0].site for a in answers] == ["oslo"]
    engine = create_engine(pg_url)
    with engine.connect() as conn:  # adopted rows are forgotten
        left = conn.execute(
            text("SELECT count(*) FROM work_items WHERE query_id = :q"), {"q": item.query_id}
        ).scalar()
    engine.dispose()
    assert left == 0


def test_a_nonce_seen_by_one_replica_is_a_replay_at_another(pg_url: str) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)

    @replicas(pg_url)
    async def _(a: PgDispatcher, b: PgDispatcher) -> None:
        nonce = uuid.uuid4().hex
        assert not await asyncio.to_thread(a.seen_nonce, nonce, expires)
        assert await asyncio.to_thread(b.seen_nonce, nonce, expires)  # replayed elsewhere
        assert await asyncio.to_thread(a.seen_nonce, nonce, expires)
        long = "n" * 500  # whatever a node signs fits (stored as its digest)
        assert not await asyncio.to_thread(b.seen_nonce, long, expires)
        assert await asyncio.to_thread(a.seen_nonce, long, expires)
