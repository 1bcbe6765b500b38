"""The node's connection to the gateway: outbound only, long-polling, signed both ways.

A hospital firewall allows outbound HTTPS only, so the node opens no port. One
loop keeps a long-poll request open (``POST /v1/nodes/poll``, signed, carrying
the node's public manifest, its version and state). Work it receives runs on a
small thread pool through :func:`nodes.pipeline.handle`; the loop waits briefly
(:attr:`Agent.inline_wait`) for the batch, and the signed releases ride back
on the *next* poll, so a query costs each site one HTTP round trip. Work still
running after that wait is not held up: its release is posted on its own
(``POST /v1/nodes/releases``) when done, and the loop polls again.

Why not re-poll while working: on a small machine the re-poll's signing and
HTTP work competes for the GIL with the query being answered; measured on
loopback it added ~5 ms to every answer.

A connection that survives: when the gateway restarts, the network is cut or
a proxy drops the long poll, the loop reconnects with capped exponential
backoff and full jitter (``tenacity``; jitter so that many nodes do not hit a
restarted gateway in the same instant). A release that could not be delivered
stays in the outbox (signed afresh at each try, so it never expires in it)
until a poll carries it; it is never refunded. A work item whose query id was
already answered is not run again: its stored release
(:class:`nodes.answered.AnsweredBook`) is sent back instead, so a gateway that
hands an item out again after a cut gets the same numbers and nothing is
charged twice.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import tenacity

from nodes.answered import AnsweredBook
from nodes.context import NodeContext
from nodes.pipeline import handle
from nodes.transport import gateway_client
from varde import __version__
from varde.envelope import SignedEnvelope, open_envelope, peek, seal
from varde.errors import EnvelopeRejected
from varde.release import SiteRelease

log = logging.getLogger("varde.node.agent")

GATEWAY_ID = "gateway"

OUTBOX_MAX = 1000
"""Releases kept for delivery while the gateway is away; beyond that the oldest are dropped."""

REFUSAL_HELP = {
    "forged": (
        "the gateway pinned another key for this site: restore keys/node_key.pem from the "
        "backup, or (after a key rotation) enroll again with a new token"
    ),
    "unknown_sender": "the gateway has no such site: enroll with a token (varde node init)",
    "revoked": "the operator revoked this site: ask them for a new enrollment token",
}
"""What to do about a refused poll (matched on the gateway's message); logged with it."""


class Agent:
    """Long-poll loop plus worker pool for one node."""

    def __init__(
        self,
        ctx: NodeContext,
        gateway_url: str,
        *,
        workers: int = 4,
        poll_wait: float = 20.0,
        inline_wait: float = 0.25,
        ca_file: Path | None = None,
        dev_network: bool = False,
        max_backoff: float = 15.0,
    ) -> None:
        self.ctx = ctx
        self.url = gateway_url.rstrip("/")
        self.poll_wait = poll_wait
        self.inline_wait = inline_wait
        self.max_backoff = max_backoff
        """Longest wait between reconnection attempts (the jittered backoff's cap), seconds."""
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"varde-{ctx.site}")
        self.client = gateway_client(
            self.url,
            ca_file=ca_file,
            dev_network=dev_network,
            timeout=httpx.Timeout(poll_wait + 15.0, connect=5.0),
        )
        self.connected = threading.Event()
        self._tried = threading.Event()  # set once the first poll has answered or failed
        self._manifest: tuple[object, dict[str, object]] | None = None
        self._outbox: list[SiteRelease] = []
        self._outbox_lock = threading.Lock()
        self.answered = AnsweredBook(ctx.store.engine, ctx.store.write_engine)
        self._inflight: dict[str, Future[SiteRelease]] = {}

    def manifest(self) -> dict[str, object]:
        """The public manifest, rebuilt only after a charge, a policy change or a new day."""
        gen = (self.ctx.generation, self.ctx.clock().date())  # a day may open a budget period
        if self._manifest is None or self._manifest[0] != gen:
            manifest = self.ctx.policy.manifest(
                self.ctx.remaining(), provided=self.ctx.data.study_kinds()
            )
            self._manifest = (gen, manifest.model_dump(mode="json"))
        return self._manifest[1]

    def state(self, manifest: dict[str, object] | None = None) -> str:
        """What the node tells the gateway it does: ``serving``, or ``deny-all`` (no project)."""
        projects = (manifest or self.manifest()).get("projects")
        return "serving" if projects else "deny-all"

    def _sealed(self, kind: str, body: dict[str, object]) -> dict[str, object]:
        env = seal(
            self.ctx.node_key,
            kind=kind,  # type: ignore[arg-type]
            sender=self.ctx.site,
            recipient=GATEWAY_ID,
            body=body,
            ttl=dt.timedelta(seconds=self.poll_wait + 60.0),
        )
        return env.model_dump()

    def link_state(self) -> bool | None:
        """Whether the gateway answered the last poll; None before the first one has returned.

        What the console shows as "Gateway connection".
        """
        return self.connected.is_set() if self._tried.is_set() else None

    def _queue(self, releases: list[SiteRelease]) -> None:
        """Keep releases for the next poll (oldest dropped beyond :data:`OUTBOX_MAX`)."""
        with self._outbox_lock:
            self._outbox.extend(releases)
            dropped = len(self._outbox) - OUTBOX_MAX
            if dropped > 0:
                log.error("outbox full: %d undelivered release(s) dropped", dropped)
                del self._outbox[:dropped]

    def _take_outbox(self) -> list[SiteRelease]:
        with self._outbox_lock:
            outbox, self._outbox = self._outbox, []
        return outbox

    def poll_once(self, wait: float | None = None) -> list[SignedEnvelope]:
        """One long-poll round trip (delivering queued releases); raises ``httpx.HTTPError``.

        ``wait``: how long the gateway may hold the poll (default :attr:`poll_wait`).
        Releases it carried are queued again if the poll fails (the gateway may not
        have read them; a release it already has is only kept again as evidence).
        """
        outbox = self._take_outbox()
        held = self.poll_wait if wait is None else wait
        manifest = self.manifest()
        body = {
            "wait": held,
            "manifest": manifest,
            "releases": [self._sealed_release(r) for r in outbox],
            "node_version": __version__,
            "node_state": self.state(manifest),
        }
        try:
            resp = self.client.post(f"{self.url}/v1/nodes/poll", json=self._sealed("poll", body))
            resp.raise_for_status()
            work = [SignedEnvelope.model_validate(w) for w in resp.json()["work"]]
        except Exception:
            self._queue(outbox)
            raise
        self.connected.set()
        self._tried.set()
        return work

    def _sealed_release(self, release: SiteRelease) -> dict[str, object]:
        return self._sealed("release", release.model_dump(mode="json"))

    def _release_of(self, env: SignedEnvelope, fut: Future[SiteRelease]) -> SiteRelease:
        """The release of one work item (kept for a repeat); an error answer if it failed.

        :func:`nodes.pipeline.handle` never raises, but keeping its release could;
        whatever one item does, the others and the poll loop go on.
        """
        try:
            release = fut.result()
            self.answered.put(release)
            return release
        except Exception:  # one bad item must not end the loop
            query_id = _query_id(env)
            log.exception("could not keep the answer to work item %s", query_id or "?")
            self.ctx.store.audit("error", query_id=query_id, message="answer could not be kept")
            return SiteRelease(
                query_id=query_id,
                site=self.ctx.site,
                status="error",
                message="internal error at the site",
            )
        finally:
            with self._outbox_lock:
                self._inflight.pop(_query_id(env), None)

    def _answered_before(self, env: SignedEnvelope) -> SiteRelease | None:
        """The stored release if ``env`` is a genuine work item whose query id was answered.

        The signature, recipient and expiry are checked (a forged item gets nothing,
        and goes on to the pipeline, which refuses it); its nonce is not: a work
        item handed out again is the same envelope, nonce and all.
        """
        query_id = _query_id(env)
        if not query_id:
            return None
        stored = self.answered.get(query_id)
        if stored is None:
            return None
        try:
            open_envelope(
                env,
                sender_key=self.ctx.gateway_key,
                recipient=self.ctx.site,
                kinds=("work",),
                seen_nonce=lambda _nonce, _expires: False,
            )
        except EnvelopeRejected:
            return None
        return stored

    def answer(self, batch: list[SignedEnvelope]) -> None:
        """Run a batch; releases ready within ``inline_wait`` go out with the next poll.

        A work item answered before is not run: its stored release goes out again.
        One already running is not started twice: its release goes out when done.
        """
        futures: dict[Future[SiteRelease], SignedEnvelope] = {}
        for env in batch:
            query_id = _query_id(env)
            stored = self._answered_before(env)
            if stored is not None:
                log.warning("work item %s came again: its release is sent again", query_id)
                self.ctx.store.audit(
                    "work_redelivered",
                    query_id=query_id,
                    project=stored.project,
                    message="answered before: the same release sent again, nothing run",
                )
                self._queue([stored])
                continue
            with self._outbox_lock:
                running = self._inflight.get(query_id) if query_id else None
            if running is not None:
                log.warning("work item %s came again while it runs", query_id)
                continue
            fut = self.pool.submit(handle, self.ctx, env)
            if query_id:
                with self._outbox_lock:
                    self._inflight[query_id] = fut
            futures[fut] = env
        done, pending = wait(futures, timeout=self.inline_wait)
        self._queue([self._release_of(futures[fut], fut) for fut in done])
        for fut in pending:
            fut.add_done_callback(functools.partial(self._send_later, futures[fut]))

    def _send_later(self, env: SignedEnvelope, fut: Future[SiteRelease]) -> None:
        self.send(self._release_of(env, fut))

    def send(self, release: SiteRelease) -> None:
        """Post one signed release on its own; if that fails, the next poll carries it."""
        try:
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(httpx.HTTPError),
                wait=tenacity.wait_random_exponential(multiplier=0.2, max=2.0),
                stop=tenacity.stop_after_attempt(3),
                reraise=True,
            ):
                with attempt:
                    resp = self.client.post(
                        f"{self.url}/v1/nodes/releases", json=self._sealed_release(release)
                    )
                    if resp.status_code >= 500:
                        resp.raise_for_status()
            if resp.status_code != 200:
                log.warning("gateway refused a release: %s", resp.text)
        except httpx.HTTPError as err:
            log.warning(
                "posting release %s failed (%s): kept for the next poll", release.query_id, err
            )
            self._queue([release])

    def _failed(self, state: tenacity.RetryCallState) -> None:
        """Log why a poll failed and what to do; the console shows "down" until one succeeds."""
        self.connected.clear()
        self._tried.set()
        err = state.outcome.exception() if state.outcome is not None else None
        pause = state.upcoming_sleep
        if isinstance(err, httpx.HTTPStatusError):
            text = err.response.text
            fix = next((f for words, f in REFUSAL_HELP.items() if words in text), "")
            log.error(
                "gateway refused poll: %s %s%s; retrying in %.1f s",
                err.response.status_code,
                text,
                f" ({fix})" if fix else "",
                pause,
            )
        elif isinstance(err, httpx.HTTPError):
            log.warning("gateway unreachable (%s); retrying in %.1f s", type(err).__name__, pause)
        else:  # a bug in one round trip must not take the node down
            log.error("unexpected error in the poll loop (%r); retrying in %.1f s", err, pause)

    def _poll_until_answered(self, stop: threading.Event) -> list[SignedEnvelope]:
        """Poll, reconnecting with capped, jittered exponential backoff; [] once stopped.

        Not connected (start, or after a failure): a poll the gateway answers at
        once, so "connected" is known within one round trip instead of after a
        20 s long poll.
        """

        def pause(seconds: float) -> None:
            stop.wait(seconds)  # a stop interrupts the pause

        try:
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(Exception),
                wait=tenacity.wait_random_exponential(multiplier=0.2, max=self.max_backoff),
                stop=lambda _state: stop.is_set(),
                sleep=pause,
                before_sleep=self._failed,
                reraise=True,
            ):
                with attempt:
                    return self.poll_once(wait=None if self.connected.is_set() else 0.0)
        except Exception:  # stopped while failing
            return []
        return []

    def run(self, stop: threading.Event) -> None:
        """Poll and answer until ``stop`` is set."""
        while not stop.is_set():
            batch = self._poll_until_answered(stop)
            if batch:
                try:
                    self.answer(batch)
                except Exception:
                    log.exception("unexpected error answering a batch; going on")

    def close(self) -> None:
        """Finish running work, deliver what is left in the outbox, stop the HTTP client."""
        self.pool.shutdown(wait=True, cancel_futures=False)
        for release in self._take_outbox():
            try:
                resp = self.client.post(
                    f"{self.url}/v1/nodes/releases", json=self._sealed_release(release)
                )
                if resp.status_code != 200:
                    log.warning("gateway refused a release at shutdown: %s", resp.text)
            except httpx.HTTPError as err:
                log.warning("release %s not delivered at shutdown (%s)", release.query_id, err)
        self.client.close()


def _query_id(env: SignedEnvelope) -> str:
    """The query id a work item claims (read without verifying: a label, never trusted)."""
    try:
        return str(peek(env).body.get("query_id", ""))
    except EnvelopeRejected:
        return ""
