"""The node's connection to the gateway: outbound only, long-polling, signed both ways.

A hospital firewall allows outbound HTTPS only, so the node opens no port. One
loop keeps a long-poll request open (``POST /v1/nodes/poll``, signed, carrying
the node's public manifest). Work it receives runs on a small thread pool
through :func:`nodes.pipeline.handle`; the loop waits briefly
(:attr:`Agent.inline_wait`) for the batch, and the signed releases ride back
on the *next* poll, so a query costs each site one HTTP round trip. Work still
running after that wait is not held up: its release is posted on its own
(``POST /v1/nodes/releases``) when done, and the loop polls again.

Why not re-poll while working: on a small machine the re-poll's signing and
HTTP work competes for the GIL with the query being answered; measured on
loopback it added ~5 ms to every answer.

If the gateway is unreachable the node retries with bounded exponential
backoff; a release that cannot be delivered is never refunded.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import httpx

from nodes.context import NodeContext
from nodes.pipeline import handle
from nodes.transport import gateway_client
from varde import __version__
from varde.envelope import SignedEnvelope, peek, seal
from varde.errors import EnvelopeRejected
from varde.release import SiteRelease

log = logging.getLogger("varde.node.agent")

GATEWAY_ID = "gateway"


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
    ) -> None:
        self.ctx = ctx
        self.url = gateway_url.rstrip("/")
        self.poll_wait = poll_wait
        self.inline_wait = inline_wait
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
        self._outbox: list[dict[str, object]] = []

    def manifest(self) -> dict[str, object]:
        """The public manifest, rebuilt only after a charge, a policy change or a new day."""
        gen = (self.ctx.generation, self.ctx.clock().date())  # a day may open a budget period
        if self._manifest is None or self._manifest[0] != gen:
            manifest = self.ctx.policy.manifest(self.ctx.remaining())
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

    def poll_once(self, wait: float | None = None) -> list[SignedEnvelope]:
        """One long-poll round trip (delivering queued releases); raises ``httpx.HTTPError``.

        ``wait``: how long the gateway may hold the poll (default :attr:`poll_wait`).
        """
        outbox, self._outbox = self._outbox, []
        held = self.poll_wait if wait is None else wait
        manifest = self.manifest()
        body = {
            "wait": held,
            "manifest": manifest,
            "releases": outbox,
            "node_version": __version__,
            "node_state": self.state(manifest),
        }
        try:
            resp = self.client.post(f"{self.url}/v1/nodes/poll", json=self._sealed("poll", body))
            resp.raise_for_status()
        except httpx.HTTPError:
            for release in outbox:  # deliver them on their own once the gateway is back
                self.pool.submit(self._post, release)
            raise
        self.connected.set()
        self._tried.set()
        return [SignedEnvelope.model_validate(w) for w in resp.json()["work"]]

    def _sealed_release(self, release: SiteRelease) -> dict[str, object]:
        return self._sealed("release", release.model_dump(mode="json"))

    def _answer_of(self, env: SignedEnvelope, fut: Future[SiteRelease]) -> dict[str, object]:
        """The signed release of one work item; an error answer if anything went wrong.

        :func:`nodes.pipeline.handle` never raises, but signing or encoding its
        release could; whatever one item does, the others and the poll loop go on.
        """
        try:
            return self._sealed_release(fut.result())
        except Exception:  # one bad item must not end the loop
            try:
                query_id = str(peek(env).body.get("query_id", ""))
            except EnvelopeRejected:
                query_id = ""
            log.exception("could not send the answer to work item %s", query_id or "?")
            self.ctx.store.audit("error", query_id=query_id, message="answer could not be sent")
            return self._sealed_release(
                SiteRelease(
                    query_id=query_id,
                    site=self.ctx.site,
                    status="error",
                    message="internal error at the site",
                )
            )

    def answer(self, batch: list[SignedEnvelope]) -> None:
        """Run a batch; releases ready within ``inline_wait`` go out with the next poll."""
        futures = {self.pool.submit(handle, self.ctx, env): env for env in batch}
        done, pending = wait(futures, timeout=self.inline_wait)
        for fut in done:
            self._outbox.append(self._answer_of(futures[fut], fut))
        for fut in pending:
            fut.add_done_callback(functools.partial(self._send_later, futures[fut]))

    def _send_later(self, env: SignedEnvelope, fut: Future[SiteRelease]) -> None:
        self._post(self._answer_of(env, fut))

    def send(self, release: SiteRelease) -> None:
        """Post one signed release on its own."""
        self._post(self._sealed_release(release))

    def _post(self, body: dict[str, object]) -> None:
        for attempt in range(3):
            try:
                resp = self.client.post(f"{self.url}/v1/nodes/releases", json=body)
                if resp.status_code < 500:
                    if resp.status_code != 200:
                        log.warning("gateway refused a release: %s", resp.text)
                    return
            except httpx.HTTPError as err:
                log.warning("posting a release failed (%s), attempt %d", err, attempt + 1)
            time.sleep(0.2 * (attempt + 1))

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set."""
        backoff = 0.2
        while not stop.is_set():
            try:
                # Not connected yet (start, or after a failure): a poll the gateway answers at
                # once, so "connected" is known within one round trip. A long poll only
                # returns when work arrives or its wait runs out (20 s), and the state was
                # only set when it returned: the console showed "down" for the first 20 s.
                batch = self.poll_once(wait=None if self.connected.is_set() else 0.0)
                backoff = 0.2
            except httpx.HTTPStatusError as err:
                log.error(
                    "gateway refused poll: %s %s", err.response.status_code, err.response.text
                )
                self.connected.clear()
                self._tried.set()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except httpx.HTTPError as err:
                log.warning(
                    "gateway unreachable (%s); retrying in %.1f s", type(err).__name__, backoff
                )
                self.connected.clear()
                self._tried.set()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception:  # a bug in one round trip must not take the node down
                log.exception("unexpected error in the poll loop; going on")
                self.connected.clear()
                self._tried.set()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if batch:
                try:
                    self.answer(batch)
                except Exception:
                    log.exception("unexpected error answering a batch; going on")

    def close(self) -> None:
        """Flush releases still waiting for a poll, stop workers and the HTTP client."""
        self.pool.shutdown(wait=True, cancel_futures=False)
        for body in self._outbox:
            self._post(body)
        self._outbox = []
        self.client.close()
