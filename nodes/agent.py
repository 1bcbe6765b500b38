"""The node's connection to the gateway: outbound only, long-polling, signed both ways.

A hospital firewall allows outbound HTTPS only, so the node opens no port: one
thread keeps a long-poll request open (``POST /v1/nodes/poll``, signed, with
the node's public manifest); work items it receives run on a small thread pool
through :func:`nodes.pipeline.handle`, and each release goes back signed
(``POST /v1/nodes/releases``). If the gateway is unreachable the node retries
with bounded exponential backoff; nothing is charged for work it never got.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from nodes.pipeline import NodeContext, handle
from varde.envelope import SignedEnvelope, seal
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
    ) -> None:
        self.ctx = ctx
        self.url = gateway_url.rstrip("/")
        self.poll_wait = poll_wait
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"varde-{ctx.site}")
        self.client = httpx.Client(timeout=httpx.Timeout(poll_wait + 15.0, connect=5.0))
        self.connected = threading.Event()

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

    def poll_once(self) -> list[SignedEnvelope]:
        """One long-poll round trip; raises ``httpx.HTTPError`` on transport failure."""
        manifest = self.ctx.policy.manifest(self.ctx.remaining())
        body = {"wait": self.poll_wait, "manifest": manifest.model_dump(mode="json")}
        resp = self.client.post(f"{self.url}/v1/nodes/poll", json=self._sealed("poll", body))
        resp.raise_for_status()
        self.connected.set()
        return [SignedEnvelope.model_validate(w) for w in resp.json()["work"]]

    def _answer(self, envelope: SignedEnvelope) -> None:
        release = handle(self.ctx, envelope)
        self.send(release)

    def send(self, release: SiteRelease) -> None:
        """Post a signed release, retrying briefly; a lost release is never refunded."""
        body = self._sealed("release", release.model_dump(mode="json"))
        for attempt in range(3):
            try:
                resp = self.client.post(f"{self.url}/v1/nodes/releases", json=body)
                if resp.status_code < 500:
                    if resp.status_code != 200:
                        log.warning("gateway refused release %s: %s", release.query_id, resp.text)
                    return
            except httpx.HTTPError as err:
                log.warning(
                    "posting release %s failed (%s), attempt %d", release.query_id, err, attempt + 1
                )
            time.sleep(0.2 * (attempt + 1))

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set."""
        backoff = 0.2
        while not stop.is_set():
            try:
                batch = self.poll_once()
                backoff = 0.2
            except httpx.HTTPStatusError as err:
                log.error(
                    "gateway refused poll: %s %s", err.response.status_code, err.response.text
                )
                self.connected.clear()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except httpx.HTTPError as err:
                log.warning(
                    "gateway unreachable (%s); retrying in %.1f s", type(err).__name__, backoff
                )
                self.connected.clear()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for env in batch:
                self.pool.submit(self._answer, env)

    def close(self) -> None:
        """Stop workers and the HTTP client."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()
