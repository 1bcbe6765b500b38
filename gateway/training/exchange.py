"""What the ServerApp heard from the sites in one exchange, kept per node.

Why a module: both round kinds (plain and SecAgg+) and the pre-flight and the
evaluation need the same three things: which node a reply answers for (the
SuperLink's own errors come from its id, not the node's), a site's public
report (rounds, epsilon or rho paid, or why it refused: JSON from
:mod:`nodes.training.clientapp`), and a record of every message that reached
the ServerApp (:class:`RecordingGrid`; Flower's SecAgg+ workflow keeps
refusals as bare exceptions, and tests inspect what the server saw).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from varde.budget import Budget, budget


def parse_refusal(reason: str | None) -> tuple[str | None, str]:
    """``(site, "code: detail")`` from a ClientApp refusal; raw text for other errors."""
    try:
        body = json.loads(reason or "")
        return str(body["site"]), f"{body['error']}: {body['detail']}"
    except (ValueError, KeyError, TypeError):
        return None, (reason or "unknown error")[:500]


@dataclass(frozen=True)
class SiteReport:
    """What one node said in one exchange: its public progress, or why it stopped."""

    site: str | None = None
    rounds_completed: int | None = None
    spent: Budget | None = None
    """What all the job's rounds at the site have charged, in its project's measure."""
    refusal: str | None = None


@dataclass
class RoundOutcome:
    """A round's new global model (``None``: none this round, see ``detail``) and reports."""

    arrays: ArrayRecord | None
    reports: dict[int, SiteReport] = field(default_factory=dict)
    detail: str | None = None


@dataclass
class Exchange:
    """One ``send_and_receive`` seen through :class:`RecordingGrid`."""

    stage: str | None
    sent: list[Message]
    replies: list[Message]

    def node_of(self, reply: Message) -> int:
        """The node a reply answers for (SuperLink errors come from the SuperLink's id)."""
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in self.sent}
        return sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


class RecordingGrid(Grid):
    """A Grid that passes everything through and keeps every exchange of the round.

    Why: Flower's SecAgg+ workflow keeps refusals as bare exceptions without
    their node, and the job must say per site why it stopped. The record is
    also exactly what reached the ServerApp, which the tests inspect.
    """

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.exchanges: list[Exchange] = []

    def set_run(self, run: Run) -> None:  # noqa: D102 - delegation
        self.inner.set_run(run)

    @property
    def run(self) -> Run:  # noqa: D102 - delegation
        return self.inner.run

    def create_message(  # noqa: D102 - delegation
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102 - delegation
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send, wait (bounded by ``timeout``), and record what came back."""
        sent = list(messages)
        stage: str | None = None
        if sent and RECORD_KEY_CONFIGS in sent[0].content.config_records:
            stage = str(sent[0].content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, ""))
        replies = list(self.inner.send_and_receive(sent, timeout=timeout))
        self.exchanges.append(Exchange(stage, sent, replies))
        return replies


def report_from_metrics(metrics: Mapping[str, object]) -> SiteReport:
    """A site's public progress from the metrics it sent in the clear."""
    zcdp = bool(int(str(metrics.get("zcdp", 0))))
    return SiteReport(
        site=str(metrics["site"]),
        rounds_completed=int(str(metrics["site-round"])),
        spent=budget("rho" if zcdp else "epsilon", float(str(metrics["job-total"]))),
    )


def error_report(reply: Message) -> SiteReport:
    """A site's refusal (or the SuperLink's error) from an error reply."""
    site, why = parse_refusal(reply.error.reason)
    return SiteReport(site=site, refusal=why)
