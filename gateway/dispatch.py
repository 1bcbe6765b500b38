"""Hand work to nodes that long-poll for it, and wait for their signed answers.

Nodes sit behind hospital firewalls and open no port, so the gateway cannot
call them: each node keeps one long-poll request open (``POST /v1/nodes/poll``)
and the gateway answers it the moment work for that node arrives. On loopback
this adds a few milliseconds to a query, not a polling interval.

State lives in this process (asyncio, one event loop): the per-site queue of
signed work items, the futures of queries waiting for releases, and when each
node was last heard from. Work that a node has not picked up when the query
times out is withdrawn, so a node that comes back later never sees it; work
picked up but answered late is refused by the node itself (the item's expiry
is checked before charging).

This is the SQLite (embedded, one process) queue. With PostgreSQL, replicas
share the queue through tables instead (:mod:`gateway.dispatch_pg`); both
answer to :class:`WorkQueue`, and :meth:`gateway.state.GatewayState.open`
picks one by the database URL, so no caller knows which it has.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from varde.budget import Budget
from varde.envelope import SignedEnvelope, utcnow
from varde.release import Manifest, SiteRelease, WorkItem

Answer = tuple[SiteRelease, SignedEnvelope]
"""A verified release and the signed envelope it came in (kept as evidence)."""

Gone = Callable[[], Awaitable[bool]]
"""Whether the polling node hung up (``Request.is_disconnected``)."""

Orphan = Callable[[WorkItem, list[str], list[Answer]], Awaitable[None]]
"""Records a query whose replica died: its work item, the sites asked, the answers that came."""


def with_budget(
    manifest: Manifest | None, project: str, remaining: Budget | None
) -> Manifest | None:
    """``manifest`` with ``project``'s remaining budget set from a release; None if unchanged."""
    if manifest is None or remaining is None:
        return None
    terms = manifest.projects.get(project)
    if terms is None or terms.budget.measure != remaining.measure:
        return None
    projects = dict(manifest.projects)
    projects[project] = terms.model_copy(update={"remaining": remaining})
    return manifest.model_copy(update={"projects": projects})


class WorkQueue(Protocol):
    """What queries and node routes need of the work queue, whatever keeps it."""

    def connected(self, site: str) -> bool:
        """Whether ``site`` polls now or polled within the offline window."""
        ...

    def manifest(self, site: str) -> Manifest | None:
        """The last manifest ``site`` sent."""
        ...

    def note_budget(self, site: str, project: str, remaining: Budget | None) -> None:
        """Update the view of ``site``'s remaining budget from a release."""
        ...

    def sites(self) -> list[str]:
        """Sites heard from."""
        ...

    async def depth(self) -> int:
        """Work items queued and not yet handed to their site (the ``/metrics`` queue depth)."""
        ...

    async def submit(
        self, site: str, query_id: str, envelope: SignedEnvelope, timeout: float
    ) -> Answer | None:
        """Queue work for ``site``; its release, or None if none came within ``timeout``."""
        ...

    async def next_batch(
        self, site: str, wait: float, manifest: Manifest | None = None, gone: Gone | None = None
    ) -> list[SignedEnvelope]:
        """Work for ``site``, waiting up to ``wait`` s for the first item."""
        ...

    async def deliver(self, release: SiteRelease, evidence: SignedEnvelope) -> bool:
        """Hand a verified release to its query; False if no query waits for it."""
        ...

    def seen_nonce(self, nonce: str, expires_at: dt.datetime) -> bool:
        """Record a verified node envelope's nonce; True if it was seen before (a replay).

        Called from a worker thread (envelopes are opened off the event loop).
        """
        ...

    async def start(self, on_orphan: Orphan | None = None) -> None:
        """Begin background work (in the server's event loop)."""
        ...

    async def close(self) -> None:
        """Stop background work and release connections."""
        ...


class NonceCache:
    """Nonces of node envelopes seen by this gateway process, kept until they expire."""

    def __init__(self) -> None:
        self._seen: dict[str, dt.datetime] = {}
        self._last_sweep = time.monotonic()
        self._lock = threading.Lock()  # envelopes are opened on several worker threads

    def __call__(self, nonce: str, expires_at: dt.datetime) -> bool:
        """Record ``nonce``; True if it was seen before and has not expired."""
        with self._lock:
            if time.monotonic() - self._last_sweep > 30:
                now = utcnow()
                self._seen = {n: e for n, e in self._seen.items() if e > now}
                self._last_sweep = time.monotonic()
            if nonce in self._seen:
                return True
            self._seen[nonce] = expires_at
            return False


@dataclass
class _SiteState:
    queue: deque[tuple[str, SignedEnvelope]] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    polling: int = 0
    last_seen: float = 0.0
    manifest: Manifest | None = None


class Dispatcher:
    """Per-site work queues with long-poll delivery and per-query futures."""

    def __init__(self, offline_after_s: float = 15.0) -> None:
        self.offline_after_s = offline_after_s
        self._sites: dict[str, _SiteState] = {}
        self._waiting: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self.seen_nonce = NonceCache()
        """Replays are refused per process: one process is the whole gateway."""

    def _site(self, site: str) -> _SiteState:
        return self._sites.setdefault(site, _SiteState())

    def connected(self, site: str) -> bool:
        """A node is connected while it polls, or polled within ``offline_after_s``."""
        st = self._sites.get(site)
        if st is None:
            return False
        return st.polling > 0 or time.monotonic() - st.last_seen < self.offline_after_s

    def manifest(self, site: str) -> Manifest | None:
        """The last manifest the node sent (its public policy facts and budgets)."""
        st = self._sites.get(site)
        return st.manifest if st else None

    def note_budget(self, site: str, project: str, remaining: Budget | None) -> None:
        """Update the gateway's view of a site's remaining budget from a release."""
        st = self._sites.get(site)
        if st is not None and (updated := with_budget(st.manifest, project, remaining)):
            st.manifest = updated

    async def submit(
        self, site: str, query_id: str, envelope: SignedEnvelope, timeout: float
    ) -> Answer | None:
        """Queue ``envelope`` for ``site``; its signed release, or None if none came in time."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Answer] = loop.create_future()
        key = (query_id, site)
        self._waiting[key] = fut
        st = self._site(site)
        st.queue.append((query_id, envelope))
        st.wakeup.set()
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._withdraw(st, query_id)
            return None
        finally:
            self._waiting.pop(key, None)

    @staticmethod
    def _withdraw(st: _SiteState, query_id: str) -> None:
        kept = [(q, e) for q, e in st.queue if q != query_id]
        st.queue.clear()
        st.queue.extend(kept)

    async def next_batch(
        self,
        site: str,
        wait: float,
        manifest: Manifest | None = None,
        gone: Gone | None = None,
    ) -> list[SignedEnvelope]:
        """Everything queued for ``site``, waiting up to ``wait`` s for the first item.

        ``gone()`` is checked every second: a node that died mid-poll stops
        counting as connected within a second, instead of at the end of its poll.
        """
        st = self._site(site)
        if manifest is not None:
            st.manifest = manifest
        st.polling += 1
        st.last_seen = time.monotonic()
        vanished = False
        try:
            deadline = time.monotonic() + wait
            while not st.queue:
                st.wakeup.clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                try:
                    await asyncio.wait_for(st.wakeup.wait(), min(left, 1.0))
                except TimeoutError:
                    if gone is not None and await gone():
                        vanished = True
                        return []
            batch = [env for _, env in st.queue]
            st.queue.clear()
            return batch
        finally:
            st.polling -= 1
            # a node that hung up mid-poll is offline now, not for another offline_after_s
            st.last_seen = 0.0 if vanished else time.monotonic()

    async def deliver(self, release: SiteRelease, evidence: SignedEnvelope) -> bool:
        """Hand a verified release to the query waiting for it; False if none waits."""
        fut = self._waiting.get((release.query_id, release.site))
        if fut is None or fut.done():
            return False
        fut.set_result((release, evidence))
        return True

    def sites(self) -> list[str]:
        """Sites this process has heard from."""
        return sorted(self._sites)

    async def depth(self) -> int:
        """Work items queued in this process and not yet handed out."""
        return sum(len(st.queue) for st in self._sites.values())

    async def start(self, on_orphan: Orphan | None = None) -> None:
        """Nothing to start: one process holds every query, none can be orphaned."""

    async def close(self) -> None:
        """Nothing to release: the queue dies with the process, as its queries do."""
