"""The work queue gateway replicas share on PostgreSQL: rows, row locks and LISTEN/NOTIFY.

Running replicas
----------------
Every replica is one ``varde gateway serve`` process, all pointed at the same
PostgreSQL database and all signing with the same gateway key (nodes pin it at
enrollment, so copy ``gateway_key.pem`` of the first replica's ``--state-dir``
to the others, or share the directory)::

    pip install 'varde[postgres]'          # the driver: psycopg 3 and its pool
    export VARDE_DATABASE_URL=postgresql+psycopg://varde@db:5432/varde
    varde gateway serve --host 0.0.0.0 --port 8701 --state-dir /srv/varde/gateway
    varde gateway serve --host 0.0.0.0 --port 8702 --state-dir /srv/varde/gateway

(``--database-url URL`` is the same as the environment variable.) Put any
HTTP load balancer in front, without sticky sessions: a node's long poll may
land on one replica and the researcher's query on another. Its idle timeout
must exceed the poll wait (25 s). SQLite URLs (the default) keep the
single-process in-memory queue of :mod:`gateway.dispatch`; one replica only.

How it works
------------
A query inserts one ``work_items`` row per site and ``NOTIFY varde_work``; every
replica ``LISTEN``s on one connection and wakes its pollers of that site, which
claim rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` (so two replicas never
hand out the same row) and lease them to the site for :attr:`lease_s`. A row
is handed out again only once its lease has expired with no release, with the
same query id. A release, on whichever replica it arrives, is written into
its row (``state = 'done'``) and ``NOTIFY varde_release`` wakes the replica
whose query waits for it. A replica that dies mid-query leaves its rows
behind; once their deadline plus :attr:`grace_s` has passed, a surviving
replica adopts the query (one at a time, under an advisory lock) and records
it with the releases that came, so no release a node charged for is lost.
Which sites are connected (``site_presence``) is shared the same way, and so
are the nonces of node envelopes (``seen_nonces``): a signed poll or release
replayed to another replica is refused there too.

Durability
----------
The queue's own writes commit with ``synchronous_commit = off``: a replica
that dies loses nothing (its commits are in the server), but a crash of the
PostgreSQL *server* may forget its last fraction of a second of queue steps.
At worst a lease is forgotten (the item is handed out again with the same
query id, which a node's ledger never charges twice) or an in-flight release
is (the node's own ledger and audit keep it). The record of a finished
query (:func:`gateway.queries._record`, through SQLAlchemy) commits
synchronously, which also flushes every queue step before it. Waiting for the
disk at every step cost 15-30 ms a query on this machine; without, ~4 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from gateway.core.db import QueryRecord
from gateway.dispatch import Answer, Gone, Orphan, with_budget
from varde.budget import Budget
from varde.envelope import SignedEnvelope, peek
from varde.errors import EnvelopeRejected
from varde.release import Manifest, SiteRelease, WorkItem

log = logging.getLogger("varde.gateway")

WORK, RELEASE, PRESENCE = "varde_work", "varde_release", "varde_presence"
SWEEP_LOCK = 0x76717565  # advisory lock key ("vque"; migrations hold "vard"): one adopter at a time

_CLAIM = """
UPDATE work_items w
   SET state = 'leased', lease_until = now() + make_interval(secs => %(lease)s),
       handed_out = w.handed_out + 1
  FROM (SELECT query_id, site FROM work_items
         WHERE site = %(site)s AND deadline > now()
           AND (state = 'queued' OR (state = 'leased' AND lease_until < now()))
         ORDER BY created_at
         FOR UPDATE SKIP LOCKED) c
 WHERE w.query_id = c.query_id AND w.site = c.site
RETURNING w.envelope, w.handed_out
"""

_SUBMIT = f"""
WITH added AS (
  INSERT INTO work_items (query_id, site, state, envelope, created_at, deadline, handed_out)
  VALUES (%(query_id)s, %(site)s, 'queued', %(envelope)s, now(),
          now() + make_interval(secs => %(timeout)s), 0)
  RETURNING site)
SELECT pg_notify('{WORK}', site) FROM added
"""

_DELIVER = f"""
WITH done AS (
  UPDATE work_items SET state = 'done', release = %(release)s, evidence = %(evidence)s
   WHERE query_id = %(query_id)s AND site = %(site)s AND state = 'leased'
  RETURNING query_id, site)
SELECT pg_notify('{RELEASE}', query_id || ' ' || site) FROM done
"""

_TAKE = """
UPDATE work_items SET state = 'answered'
 WHERE query_id = %s AND site = %s AND state = 'done'
RETURNING release, evidence
"""

_TAKE_OR_TIME_OUT = """
UPDATE work_items
   SET state = CASE WHEN state = 'done' THEN 'answered' ELSE 'timed_out' END
 WHERE query_id = %s AND site = %s AND state IN ('queued', 'leased', 'done')
RETURNING release, evidence
"""

_ADOPT = f"""
UPDATE work_items SET state = 'adopting', lease_until = now() + make_interval(secs => %(hold)s)
 WHERE query_id IN (
         SELECT w.query_id FROM work_items w
          WHERE w.deadline < now() - make_interval(secs => %(grace)s)
            AND (w.state <> 'adopting' OR w.lease_until < now())
            AND NOT EXISTS (SELECT 1 FROM {QueryRecord.__tablename__} q WHERE q.id = w.query_id)
          LIMIT 50)
RETURNING query_id, site, envelope, release, evidence
"""

_FORGET = f"""
DELETE FROM work_items w
 WHERE w.deadline < now() - make_interval(secs => %(grace)s)
   AND EXISTS (SELECT 1 FROM {QueryRecord.__tablename__} q WHERE q.id = w.query_id)
"""


def conninfo(url: str) -> str:
    """The libpq connection string of a SQLAlchemy URL (``postgresql+psycopg://`` -> ``postgresql://``).

    >>> conninfo("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    'postgresql://postgres@127.0.0.1:5432/test'
    """
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class _Seen:
    manifest: Manifest | None
    text: str
    at: float  # time.monotonic() of the last poll at any replica


def _answer(release: str | None, evidence: str | None) -> Answer | None:
    if release is None or evidence is None:
        return None
    return SiteRelease.model_validate_json(release), SignedEnvelope.model_validate_json(evidence)


class PgDispatcher:
    """The :class:`gateway.dispatch.WorkQueue` of replicas sharing one PostgreSQL database."""

    def __init__(
        self,
        url: str,
        offline_after_s: float = 15.0,
        *,
        lease_s: float = 10.0,
        grace_s: float = 10.0,
        pool_size: int = 10,
    ) -> None:
        self.offline_after_s = offline_after_s
        self.lease_s = lease_s
        """How long a handed-out item is the site's before it may be handed out again."""
        self.grace_s = grace_s
        """How long after a query's deadline its replica counts as gone (then it is adopted)."""
        self._conninfo = conninfo(url)
        # autocommit: each step is one statement, one round trip (NOTIFY rides in its CTE).
        # synchronous_commit off: see "Durability" above (4 ms a query instead of 15-30 here).
        self._pool = AsyncConnectionPool(
            self._conninfo,
            min_size=2,
            max_size=pool_size,
            open=False,
            name="varde-queue",
            kwargs={"autocommit": True, "options": "-c synchronous_commit=off"},
        )
        self._written: dict[str, float] = {}  # site -> when this replica last wrote its presence
        self._presence: dict[str, _Seen] = {}
        self._polling: defaultdict[str, int] = defaultdict(int)
        self._work: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._waiting: dict[tuple[str, str], asyncio.Event] = {}
        self._listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_orphan: Orphan | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- node state, shared through site_presence ------------------------------------------

    def connected(self, site: str) -> bool:
        """Polling this replica now, or any replica within ``offline_after_s``."""
        seen = self._presence.get(site)
        recent = seen is not None and time.monotonic() - seen.at < self.offline_after_s
        return self._polling[site] > 0 or recent

    def manifest(self, site: str) -> Manifest | None:
        """The manifest ``site`` last sent to any replica."""
        seen = self._presence.get(site)
        return seen.manifest if seen else None

    def note_budget(self, site: str, project: str, remaining: Budget | None) -> None:
        """This replica's view only; the site's next poll brings its manifest to all."""
        seen = self._presence.get(site)
        if seen is not None and (updated := with_budget(seen.manifest, project, remaining)):
            seen.manifest = updated

    def sites(self) -> list[str]:
        """Sites any replica has heard from."""
        return sorted(self._presence)

    async def depth(self) -> int:
        """Work items queued by any replica and not yet handed out (shared: one number)."""
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute("SELECT count(*) FROM work_items WHERE state = 'queued'")
            ).fetchone()
        return int(row[0]) if row else 0

    def _remember(self, site: str, text: str, age: float) -> None:
        old = self._presence.get(site)
        at = time.monotonic() - age
        if old is not None and old.text == text:
            old.at = at
            return
        try:
            manifest: Manifest | None = Manifest.model_validate_json(text)
        except ValueError:  # written by another version: still connected, no manifest
            manifest = None
        self._presence[site] = _Seen(manifest, text, at)

    async def _refresh(self, site: str | None = None) -> None:
        sql = "SELECT site, manifest, extract(epoch FROM now() - last_seen) FROM site_presence"
        async with self._pool.connection() as conn:
            if site is None:
                rows = await (await conn.execute(sql)).fetchall()
            else:
                rows = await (await conn.execute(sql + " WHERE site = %s", (site,))).fetchall()
        for name, text, age in rows:
            self._remember(name, text, float(age))

    async def _arrived(self, site: str, manifest: Manifest | None) -> None:
        """Record the poll: at once for a new manifest, else at most once a second per site."""
        seen = self._presence.get(site)
        text = manifest.model_dump_json() if manifest is not None else (seen.text if seen else "")
        changed = seen is None or seen.text != text
        if changed or time.monotonic() - self._written.get(site, -math.inf) > 1.0:
            upsert = (
                "INSERT INTO site_presence (site, manifest, last_seen) VALUES (%s, %s, now())"
                " ON CONFLICT (site) DO UPDATE SET manifest = EXCLUDED.manifest, last_seen = now()"
            )
            if changed:  # the others learn it now, not at their next refresh
                upsert = (
                    f"WITH seen AS ({upsert} RETURNING site) SELECT pg_notify(%s, site) FROM seen"
                )
            async with self._pool.connection() as conn:
                await conn.execute(upsert, (site, text, PRESENCE) if changed else (site, text))
            self._written[site] = time.monotonic()
        self._remember(site, text, 0.0)

    async def _vanished(self, site: str) -> None:
        """A node that hung up mid-poll is offline now, not for another ``offline_after_s``."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "WITH gone AS (UPDATE site_presence SET last_seen = 'epoch'::timestamptz"
                " WHERE site = %s RETURNING site) SELECT pg_notify(%s, site) FROM gone",
                (site, PRESENCE),
            )
        seen = self._presence.get(site)
        if seen is not None:
            seen.at = -math.inf

    # -- work ----------------------------------------------------------------------------

    async def submit(
        self, site: str, query_id: str, envelope: SignedEnvelope, timeout: float
    ) -> Answer | None:
        """Insert the item and wait for its release, woken by NOTIFY (checked every 2 s too)."""
        key = (query_id, site)
        woken = self._waiting[key] = asyncio.Event()
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    _SUBMIT,
                    {
                        "query_id": query_id,
                        "site": site,
                        "envelope": envelope.model_dump_json(),
                        "timeout": timeout,
                    },
                )
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(left, 2.0))
                woken.clear()
                if (answer := await self._take(_TAKE, query_id, site)) is not None:
                    return answer
            # its release, if it came in the last instant; else withdrawn: never handed out now
            return await self._take(_TAKE_OR_TIME_OUT, query_id, site)
        finally:
            self._waiting.pop(key, None)

    async def _take(self, sql: str, query_id: str, site: str) -> Answer | None:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(sql, (query_id, site))).fetchone()
        return _answer(row[0], row[1]) if row else None

    async def next_batch(
        self, site: str, wait: float, manifest: Manifest | None = None, gone: Gone | None = None
    ) -> list[SignedEnvelope]:
        """Claim the site's queued (or lease-expired) items, waiting up to ``wait`` s for one."""
        self._polling[site] += 1
        vanished = False
        try:
            await self._arrived(site, manifest)
            deadline = time.monotonic() + wait
            woken = self._work[site]
            claimed_at = 0.0
            while True:
                if woken.is_set() or time.monotonic() - claimed_at > 5.0:
                    # woken by NOTIFY; every 5 s anyway (expired leases notify nobody)
                    woken.clear()
                    claimed_at = time.monotonic()
                    if batch := await self._claim(site):
                        return batch
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                try:
                    await asyncio.wait_for(woken.wait(), min(left, 1.0))
                except TimeoutError:
                    if gone is not None and await gone():
                        vanished = True
                        return []
        finally:
            self._polling[site] -= 1
            if vanished:  # (a poll that ends normally is followed by the node's next one)
                with contextlib.suppress(psycopg.Error, OSError):
                    await self._vanished(site)
            elif (seen := self._presence.get(site)) is not None:
                seen.at = time.monotonic()

    async def _claim(self, site: str) -> list[SignedEnvelope]:
        async with self._pool.connection() as conn:
            rows = await (
                await conn.execute(_CLAIM, {"site": site, "lease": self.lease_s})
            ).fetchall()
        for _, times in rows:
            if times > 1:
                log.warning("a work item for %s is handed out again (its lease expired)", site)
        return [SignedEnvelope.model_validate_json(env) for env, _ in rows]

    async def deliver(self, release: SiteRelease, evidence: SignedEnvelope) -> bool:
        """Write the release into its leased item and wake the replica waiting for it.

        The same release arriving again (a node re-sends one whose poll broke,
        signed afresh) counts as delivered once, so it is not kept twice as evidence.
        """
        released = release.model_dump_json()
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(
                    _DELIVER,
                    {
                        "release": released,
                        "evidence": evidence.model_dump_json(),
                        "query_id": release.query_id,
                        "site": release.site,
                    },
                )
            ).fetchone()
            if row is not None:
                return True
            kept = await (
                await conn.execute(
                    "SELECT release FROM work_items WHERE query_id = %s AND site = %s",
                    (release.query_id, release.site),
                )
            ).fetchone()
        return kept is not None and kept[0] == released

    def seen_nonce(self, nonce: str, expires_at: dt.datetime) -> bool:
        """Record a verified envelope's nonce for every replica; True if one had it already.

        Called from a worker thread; the insert runs on the event loop's pool.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("the work queue was not started")
        done = asyncio.run_coroutine_threadsafe(self._seen_nonce(nonce, expires_at), loop)
        return done.result(timeout=30)

    async def _seen_nonce(self, nonce: str, expires_at: dt.datetime) -> bool:
        digest = hashlib.sha256(nonce.encode()).hexdigest()  # any nonce fits the column
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO seen_nonces (nonce, expires_at) VALUES (%s, %s)"
                " ON CONFLICT (nonce) DO NOTHING",
                (digest, expires_at),
            )
        return cur.rowcount == 0

    # -- background: listening, presence refresh, orphans ------------------------------------

    async def start(self, on_orphan: Orphan | None = None) -> None:
        """Open the pool, LISTEN, and start refreshing presence and adopting orphans."""
        self._on_orphan = on_orphan
        self._loop = asyncio.get_running_loop()
        await self._pool.open(wait=True, timeout=30.0)
        self._tasks = [
            asyncio.create_task(self._listen(), name="varde-listen"),
            asyncio.create_task(self._housekeeping(), name="varde-housekeeping"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 10.0)

    async def close(self) -> None:
        """Stop the background tasks and close every connection."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._pool.close()

    def _notified(self, channel: str, payload: str) -> None:
        if channel == WORK:
            self._work[payload].set()
        elif channel == RELEASE:
            query_id, _, site = payload.partition(" ")
            if (woken := self._waiting.get((query_id, site))) is not None:
                woken.set()
        elif channel == PRESENCE:
            task = asyncio.create_task(self._refresh(payload))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    for channel in (WORK, RELEASE, PRESENCE):
                        await conn.execute(f"LISTEN {channel}")
                    self._listening.set()
                    backoff = 0.2
                    await self._refresh()
                    for woken in [*self._work.values(), *self._waiting.values()]:
                        woken.set()  # whatever was notified while nobody listened
                    async for note in conn.notifies():
                        self._notified(note.channel, note.payload)
            except (psycopg.Error, OSError) as err:
                self._listening.clear()
                log.warning("LISTEN connection lost (%s); again in %.1f s", err, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _housekeeping(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            try:
                if ticks % 2 == 0:
                    await self._refresh()
                    await self._adopt_orphans()
                if ticks % 5 == 0:
                    await self._touch()
                if ticks % 30 == 0:
                    async with self._pool.connection() as conn:
                        await conn.execute("DELETE FROM seen_nonces WHERE expires_at < now()")
            except (psycopg.Error, OSError) as err:
                log.warning("queue housekeeping failed (%s); retrying", err)
            except Exception:  # a bug here must not stop presence or adoption for good
                log.exception("queue housekeeping failed")

    async def _touch(self) -> None:
        """Keep the sites this replica holds polls of connected in the others' eyes."""
        held = [site for site, n in self._polling.items() if n > 0]
        if held:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE site_presence SET last_seen = now() WHERE site = ANY(%s)", (held,)
                )

    async def _adopt_orphans(self) -> None:
        """Record queries whose replica died, and forget the rows of recorded ones."""
        async with self._pool.connection() as conn, conn.transaction():
            locked = await (
                await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK,))
            ).fetchone()
            if not locked or not locked[0]:
                return
            await conn.execute(_FORGET, {"grace": self.grace_s})
            rows = await (
                await conn.execute(_ADOPT, {"grace": self.grace_s, "hold": 60.0})
            ).fetchall()
        orphans: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for row in rows:
            orphans[row[0]].append(row)
        for query_id, items in orphans.items():
            await self._adopt(query_id, items)

    async def _adopt(self, query_id: str, items: list[tuple[Any, ...]]) -> None:
        try:
            work = WorkItem.model_validate(
                peek(SignedEnvelope.model_validate_json(items[0][2])).body
            )
        except (ValueError, EnvelopeRejected):
            log.exception("orphaned query %s has an unreadable work item; dropped", query_id)
            work = None
        answers = [a for *_, rel, ev in items if (a := _answer(rel, ev)) is not None]
        if work is not None and not work.preview and self._on_orphan is not None:
            log.warning(
                "query %s lost its replica; recorded here with %d release(s)",
                query_id,
                len(answers),
            )
            await self._on_orphan(work, sorted(row[1] for row in items), answers)
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM work_items WHERE query_id = %s", (query_id,))
