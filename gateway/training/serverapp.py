"""The Flower ServerApp of a training job: pre-flight, then FedAvg rounds, under SecAgg+ by default.

It runs under the SuperLink beside the gateway and never sees a row: each
site's reply is already a DP release (noisy model and noisy row count, paid
for in the site's ledger). The round loop is ours rather than
``FedAvg.start`` or Flower's ``DefaultWorkflow`` because a training job must

* stop asking a site that refused (policy, budget) and record its reason,
* fail cleanly, not hang, when no site is left or too few are connected
  (``sample_nodes`` in Flower waits forever), with every wait bounded,
* report progress (round, epsilon or rho spent per site) after every round.

**Pre-flight** (before anything is charged): every site gets a Flower ``QUERY``
message with the job and answers ok or a refusal from its own policy and ledger
(:func:`nodes.training.preflight.preflight`, which charges nothing). If a
required site refuses or does not answer, the job fails before round 1 with
each site's reason, and no ledger anywhere has paid. Required sites are the
job's ``sites`` when it names them (other sites answer that they are not in the
job and are left out), otherwise every connected site.

**Secure aggregation** (``TrainingSpec.secure_aggregation``: ``auto`` = on when
at least :data:`SECAGG_MIN_SITES` sites pass the pre-flight): each round is one
run of Flower's own :class:`flwr.server.workflow.SecAggPlusWorkflow`
(setup, share keys, collect masked vectors, unmask), driven from this loop
through a one-round legacy strategy (:class:`_OneRound`) so that the loop keeps
per-round control; every stage waits at most ``round-timeout`` seconds, so a
round is bounded by four times that. What the server then holds is only the
weighted sum of the sites' models (plus, in the clear, each site's public
metadata: site name, noisy row count, rounds and epsilon or rho paid). With fewer than
three sites a sum hides nothing (each of two sites can subtract its own model
from the next global model), so ``on`` then fails the job, and a SecAgg+ job
whose participants fall below three fails rather than continue in the clear.

Why these SecAgg+ parameters (Flower quantises each coordinate to an integer in
``[0, Q]`` after multiplying the model by ``num_examples / max_weight`` and
clipping to ``[-B, B]``; sums are taken modulo ``M``):

* ``M = 2**32`` (:data:`SECAGG_MODULUS`), Flower's default and documented limit.
* ``Q = M / (2 * next_pow2(n))`` (:func:`secagg_quantization_range`): the largest
  power of two for which the sum of ``n`` quantised values (at most ``n * Q``)
  never wraps modulo ``M``, and below ``2**31`` (Flower rounds into ``int32``).
  For three sites ``Q = 2**29``.
* ``B = 32`` (:data:`SECAGG_CLIPPING_RANGE`): a bound on every coefficient
  (features are in ``[-1, 1]``; a logistic coefficient of 32 is an odds ratio,
  a Cox one a hazard ratio, of ``e**32``, so only a diverged model reaches it). Each site clips its
  model to ``[-B, B]`` *before* SecAgg+ and reports how many coordinates it
  clipped, so nothing is silently wrapped or distorted by Flower.
* ``max_weight = 2**22`` (:data:`SECAGG_MAX_WEIGHT`, about 4.2 million rows, more
  than any one registry here): a site caps its weight (noisy row count) at it
  and says so, so ``num_examples / max_weight <= 1`` and the scaled model stays
  in ``[-B, B]``.
* Threshold ``n // 2 + 1`` shares of ``n`` (a strict majority; every site
  neighbours every other): the server colluding with fewer than half of the
  sites reconstructs no one's masks, and up to ``n - threshold`` sites may drop
  after the setup stage (one of three or four) without losing the round.

Quantisation error: stochastic rounding is unbiased and off by less than one
step ``2B/Q`` per site and coordinate, so the aggregate coefficient is off by
at most ``2 B n max_weight / (Q * sum of row counts)``: ``3.8e-5`` for three
sites of 13,000 rows, against a DP noise standard deviation of order ``1e-2``
on the same coefficients at epsilon 10 (it shrinks with the row count exactly
as the noise does). The weights themselves are quantised to ``1/Q`` of
``max_weight`` (relative error below ``1e-6`` for such sites).

Caveat from Flower's implementation (1.41, ``secaggplus_utils.pseudo_rand_gen``):
masks are expanded from 32-bit seeds with numpy's ``RandomState``, weaker than
the protocol's design. Every site's model is already a DP release, so SecAgg+
here is defence in depth, not what the privacy guarantee rests on.

Run config (``flwr run --run-config``): ``job`` (the :class:`TrainingSpec` as
JSON), ``job-id``, ``researcher``, ``min-sites``, ``expected-sites`` (SuperNodes
to wait for, at most ``connect-timeout`` seconds, before the pre-flight),
``round-timeout``, ``connect-timeout`` (seconds) and ``progress-file``: where
the :class:`TrainingStatus` JSON is rewritten (atomically) after each step,
for the gateway to serve.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common import (
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.typing import EvaluateIns, EvaluateRes
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.run import Run

from varde.training import (
    EvaluationMetrics,
    SiteProgress,
    TrainingMetrics,
    TrainingSpec,
    TrainingStatus,
    privacy_guarantee,
)
from varde.training_metrics import (
    count_noise_variance,
    metric_std_errors,
    pooled_metrics,
    table_shape,
)

app = ServerApp()

SECAGG_MIN_SITES = 3
"""Fewest sites for which a sum hides anyone's model (see the module docstring)."""
SECAGG_MODULUS = 2**32
SECAGG_CLIPPING_RANGE = 32.0
SECAGG_MAX_WEIGHT = float(2**22)
FITRES_METRICS = "fitres.metrics"
"""Where a site's public metadata travels in the clear in Flower's legacy fit layout."""


def secagg_quantization_range(n_sites: int) -> int:
    """Largest power of two ``Q`` with ``n_sites * Q < 2**32`` by a factor of two or more."""
    if n_sites < 1:
        raise ValueError("at least one site")
    return SECAGG_MODULUS // (2 * (1 << (n_sites - 1).bit_length()))


def secagg_threshold(n_sites: int) -> int:
    """Shares needed to reconstruct a site's mask secrets: a strict majority."""
    return n_sites // 2 + 1


def secagg_workflow(n_sites: int, timeout_s: float) -> SecAggPlusWorkflow:
    """Flower's SecAgg+ workflow with Varde's parameters for ``n_sites`` sites."""
    return SecAggPlusWorkflow(
        num_shares=n_sites,
        reconstruction_threshold=secagg_threshold(n_sites),
        max_weight=SECAGG_MAX_WEIGHT,
        clipping_range=SECAGG_CLIPPING_RANGE,
        quantization_range=secagg_quantization_range(n_sites),
        modulus_range=SECAGG_MODULUS,
        timeout=timeout_s,
    )


def write_status(path: Path, status: TrainingStatus) -> None:
    """Replace ``path`` atomically so a reader never sees half a document."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(status.model_dump_json(indent=2))
    os.replace(tmp, path)


def _parse_refusal(reason: str | None) -> tuple[str | None, str]:
    """``(site, "code: detail")`` from a ClientApp refusal; raw text for other errors."""
    try:
        body = json.loads(reason or "")
        return str(body["site"]), f"{body['error']}: {body['detail']}"
    except (ValueError, KeyError, TypeError):
        return None, (reason or "unknown error")[:500]


def _wait_for_nodes(grid: Grid, expected: int, minimum: int, timeout_s: float) -> list[int]:
    """Wait (bounded) for ``expected`` SuperNodes; settle for ``minimum`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= max(expected, minimum):
            return nodes
        if time.monotonic() > deadline:
            if len(nodes) >= minimum:
                return nodes
            raise TimeoutError(f"only {len(nodes)} of {minimum} site(s) connected")
        time.sleep(0.5)


@dataclass(frozen=True)
class SiteReport:
    """What one node said in one exchange: its public progress, or why it stopped."""

    site: str | None = None
    rounds_completed: int | None = None
    epsilon_spent: float | None = None
    refusal: str | None = None
    rho_spent: float | None = None
    zcdp: bool = False
    """The site's project accounts in rho: ``rho_spent`` is what it charged."""


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


class _OneRound(Strategy):
    """The legacy Strategy one SecAgg+ round needs: our targets in, the unmasked aggregate out.

    ``configure_fit`` hands Flower's workflow the nodes and the fit instructions
    of this round; ``aggregate_fit`` receives results whose parameters Flower has
    already replaced by the unmasked weighted average, and only keeps it.
    """

    def __init__(self, grid: Grid, targets: list[int], fitins: FitIns) -> None:
        self.grid = grid
        self.targets = targets
        self.fitins = fitins
        self.aggregate: NDArrays | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """Not used: the job's loop owns the model."""
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Every target of this round gets the same fit instructions."""
        return [(GridClientProxy(node, self.grid, 0), self.fitins) for node in self.targets]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Keep the (already aggregated) parameters Flower put in every result."""
        if not results:
            return None, {}
        parameters = results[0][1].parameters
        self.aggregate = parameters_to_ndarrays(parameters)
        return parameters, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """No federated evaluation inside a SecAgg+ round."""
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """No federated evaluation inside a SecAgg+ round."""
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """No central evaluation: the server has no data."""
        return None


def _report_from_metrics(metrics: Mapping[str, object]) -> SiteReport:
    return SiteReport(
        site=str(metrics["site"]),
        rounds_completed=int(str(metrics["site-round"])),
        epsilon_spent=float(str(metrics["epsilon-job"])),
        rho_spent=float(str(metrics.get("rho-job", 0.0))),
        zcdp=bool(int(str(metrics.get("zcdp", 0)))),
    )


def _error_report(reply: Message) -> SiteReport:
    site, why = _parse_refusal(reply.error.reason)
    return SiteReport(site=site, refusal=why)


def plain_round(
    grid: Grid,
    targets: list[int],
    arrays: ArrayRecord,
    config: ConfigRecord,
    server_round: int,
    timeout_s: float,
) -> RoundOutcome:
    """One FedAvg round in the clear: every site's noisy model reaches the server."""
    config["server-round"] = server_round
    messages = [
        Message(
            content=RecordDict({"arrays": arrays, "config": config}),
            message_type=MessageType.TRAIN,
            dst_node_id=node,
        )
        for node in targets
    ]
    exchange = Exchange(None, messages, list(grid.send_and_receive(messages, timeout=timeout_s)))
    outcome = RoundOutcome(arrays=None)
    ok: list[Message] = []
    for reply in exchange.replies:
        node = exchange.node_of(reply)
        if reply.has_error():
            outcome.reports[node] = _error_report(reply)
            continue
        metrics: dict[str, object] = dict(reply.content.metric_records["metrics"])
        metrics["site"] = str(reply.content.config_records["site"]["site"])
        outcome.reports[node] = _report_from_metrics(metrics)
        ok.append(reply)
    for node in targets:
        outcome.reports.setdefault(node, SiteReport(refusal=f"no reply within {timeout_s:g} s"))
    if ok:
        outcome.arrays, _ = FedAvg(fraction_evaluate=0.0).aggregate_train(server_round, ok)
    if outcome.arrays is None:
        outcome.detail = f"round {server_round}: no site sent a model"
    return outcome


def secagg_round(
    grid: Grid,
    targets: list[int],
    arrays: ArrayRecord,
    config: ConfigRecord,
    server_round: int,
    timeout_s: float,
) -> RoundOutcome:
    """One FedAvg round through Flower's SecAgg+: the server only ever unmasks the sum.

    The fit instructions use Flower's legacy layout (``fitins.parameters``,
    ``fitins.config``), which the workflow forwards to each site in the
    collect-masked-vectors stage; each site answers in the legacy ``fitres``
    layout with its public metadata in ``fitres.metrics`` (see
    :mod:`nodes.training.clientapp`).
    """
    weights = arrays.to_numpy_ndarrays()
    fit_config: dict[str, Scalar] = {k: cast(Scalar, v) for k, v in config.items()}
    fit_config["server-round"] = server_round
    fitins = FitIns(ndarrays_to_parameters(weights), fit_config)
    recorder = RecordingGrid(grid)
    strategy = _OneRound(recorder, targets, fitins)
    base = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    context = LegacyContext(base, strategy=strategy, client_manager=SimpleClientManager())
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: server_round}
    )
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        fitins.parameters, keep_input=True
    )
    outcome = RoundOutcome(arrays=None)
    try:
        secagg_workflow(len(targets), timeout_s)(recorder, context)
    except Exception as err:  # noqa: BLE001 - Flower's protocol code: fail the job, not hang
        outcome.detail = f"round {server_round}: secure aggregation failed: {err!r}"[:500]

    for exchange in recorder.exchanges:
        answered: set[int] = set()
        for reply in exchange.replies:
            node = exchange.node_of(reply)
            answered.add(node)
            if reply.has_error():
                outcome.reports.setdefault(node, _error_report(reply))
            elif exchange.stage == Stage.COLLECT_MASKED_VECTORS:
                metrics = reply.content.config_records[FITRES_METRICS]
                outcome.reports.setdefault(node, _report_from_metrics(metrics))
        for message in exchange.sent:
            node = message.metadata.dst_node_id
            if node not in answered:
                outcome.reports.setdefault(
                    node,
                    SiteReport(
                        refusal=f"no reply within {timeout_s:g} s "
                        f"(secure aggregation stage {exchange.stage})"
                    ),
                )
    if strategy.aggregate is not None:
        outcome.arrays = ArrayRecord(strategy.aggregate)
    elif outcome.detail is None:
        last = recorder.exchanges[-1] if recorder.exchanges else None
        still_in = sum(1 for r in last.replies if not r.has_error()) if last else 0
        outcome.detail = (
            f"round {server_round}: secure aggregation could not complete: only {still_in} of "
            f"the round's {len(targets)} site(s) got through its "
            f"{last.stage if last else 'setup'} stage, {secagg_threshold(len(targets))} needed"
        )
    return outcome


@dataclass
class Participants:
    """Who passed the pre-flight, and the failure that stops the job before round 1."""

    nodes: list[int]
    node_site: dict[int, str]
    sites: dict[str, SiteProgress]
    failure: str | None = None


def preflight_round(
    grid: Grid, nodes: list[int], config: ConfigRecord, spec: TrainingSpec, timeout_s: float
) -> Participants:
    """Ask every node (Flower ``QUERY``) whether it would run the whole job; charge nothing."""
    messages = [
        Message(
            content=RecordDict({"config": config}),
            message_type=MessageType.QUERY,
            dst_node_id=node,
        )
        for node in nodes
    ]
    exchange = Exchange(None, messages, list(grid.send_and_receive(messages, timeout=timeout_s)))
    ok: list[int] = []
    node_site: dict[int, str] = {}
    sites: dict[str, SiteProgress] = {}
    blocking: list[str] = []
    answered: set[int] = set()
    for reply in exchange.replies:
        node = exchange.node_of(reply)
        answered.add(node)
        if reply.has_error():
            site, why = _parse_refusal(reply.error.reason)
            name = site or f"node-{node}"
            sites[name] = SiteProgress(refusal=why)
            if spec.sites is None or name in spec.sites:
                blocking.append(f"{name}: {why}")
            continue
        name = str(reply.content.config_records["site"]["site"])
        node_site[node] = name
        sites[name] = SiteProgress()
        ok.append(node)
    for node in nodes:
        if node not in answered:
            name = f"node-{node}"
            sites[name] = SiteProgress(refusal=f"no reply to the pre-flight within {timeout_s:g} s")
            if spec.sites is None:
                blocking.append(f"{name}: no reply")
    missing = sorted(set(spec.sites or []) - set(node_site.values()) - set(sites))
    blocking.extend(f"{name}: not connected" for name in missing)
    failure = None
    if blocking:
        failure = "pre-flight refused, nothing was charged: " + "; ".join(blocking)
    return Participants(sorted(ok), node_site, sites, failure)


def evaluate_final(
    grid: Grid,
    nodes: list[int],
    arrays: ArrayRecord,
    spec: TrainingSpec,
    status: TrainingStatus,
    *,
    config: ConfigRecord,
    timeout_s: float = 120.0,
) -> TrainingStatus:
    """Send the final model to every site still in (Flower ``EVALUATE``); pool their DP counts.

    Each site pays its evaluation epsilon from its ledger and releases one noisy
    count table of its held-out patients (:mod:`nodes.training.evaluation`);
    the metrics are post-processing here (:mod:`varde.training_metrics`): per
    site from its own table, and for the network from all of them. The tables
    travel in the clear even under SecAgg+: they are DP releases, like the
    per-site metrics derived from them. A site that refuses (or does not
    answer) is listed in ``metrics.refusals`` and does not fail the job, whose
    model is already trained. A site's ``epsilon_spent`` (or ``rho_spent``) stays
    what its rounds paid; what the evaluation cost it is
    ``metrics.sites[site].epsilon`` (or ``.rho``, where the project accounts in rho).
    """
    if spec.privacy.evaluation_budget() <= 0 or not nodes:
        return status
    messages = [
        Message(
            content=RecordDict({"arrays": arrays, "config": config}),
            message_type=MessageType.EVALUATE,
            dst_node_id=node,
        )
        for node in nodes
    ]
    exchange = Exchange(None, messages, list(grid.send_and_receive(messages, timeout=timeout_s)))
    per_site: dict[str, EvaluationMetrics] = {}
    refusals: dict[str, str] = {}
    tables: list[np.ndarray] = []
    variances: list[float] = []
    paid = paid_rho = 0.0
    answered: set[int] = set()
    for reply in exchange.replies:
        node = exchange.node_of(reply)
        answered.add(node)
        if reply.has_error():
            site, why = _parse_refusal(reply.error.reason)
            refusals[site or f"node-{node}"] = why
            continue
        name = str(reply.content.config_records["site"]["site"])
        replied = reply.content.metric_records["metrics"]
        charged = float(str(replied["epsilon-charged"]))
        charged_rho = float(str(replied.get("rho-charged", 0.0)))
        table = np.asarray(reply.content.array_records["arrays"].to_numpy_ndarrays()[0])
        if table.shape != table_shape(spec.model):
            refusals[name] = f"sent a table of shape {table.shape}"
            continue
        mechanism = str(reply.content.config_records["site"].get("mechanism", ""))
        variance = count_noise_variance(mechanism, float(str(replied.get("noise-scale", 0.0))))
        tables.append(table)
        variances.append(variance)
        paid = max(paid, charged)
        paid_rho = max(paid_rho, charged_rho)
        per_site[name] = EvaluationMetrics(
            values=pooled_metrics(spec.model, [table]),
            epsilon=charged,
            rho=charged_rho,
            sites=[name],
            std_errors=metric_std_errors(spec.model, [table], [variance]),
        )
    for node in nodes:
        if node not in answered:
            refusals[f"node-{node}"] = f"no reply to the evaluation within {timeout_s:g} s"
    network = None
    if tables:
        network = EvaluationMetrics(
            values=pooled_metrics(spec.model, tables),
            epsilon=paid,
            rho=paid_rho,
            sites=sorted(per_site),
            std_errors=metric_std_errors(spec.model, tables, variances),
        )
    metrics = TrainingMetrics(network=network, sites=per_site, refusals=refusals)
    return status.model_copy(update={"metrics": metrics})


def run_job(grid: Grid, run_config: dict[str, object]) -> TrainingStatus:
    """Run the pre-flight and every round of the job; return the final status (also on disk)."""
    spec = TrainingSpec.model_validate_json(str(run_config["job"]))
    job_id = str(run_config["job-id"])
    progress = Path(str(run_config["progress-file"]))
    round_timeout = float(str(run_config.get("round-timeout", 120)))
    connect_timeout = float(str(run_config.get("connect-timeout", 60)))
    min_sites = int(str(run_config.get("min-sites", 1)))
    expected_sites = int(str(run_config.get("expected-sites", 0)))
    columns = spec.columns()
    status = TrainingStatus(id=job_id, state="running", rounds=spec.rounds)
    write_status(progress, status)

    def fail(detail: str, **update: object) -> TrainingStatus:
        failed = status.model_copy(update={"state": "failed", "detail": detail, **update})
        write_status(progress, failed)
        return failed

    try:
        nodes = _wait_for_nodes(grid, expected_sites, min_sites, connect_timeout)
    except TimeoutError as err:
        return fail(str(err))
    config = ConfigRecord(
        {
            "job": spec.model_dump_json(),
            "job-id": job_id,
            "researcher": str(run_config["researcher"]),
        }
    )
    pre = preflight_round(grid, nodes, config, spec, round_timeout)
    sites = dict(pre.sites)
    if pre.failure is not None:
        return fail(pre.failure, sites=sites)
    secure = spec.secure_aggregation == "on" or (
        spec.secure_aggregation == "auto" and len(pre.nodes) >= SECAGG_MIN_SITES
    )
    status = status.model_copy(update={"sites": dict(sites), "secure_aggregation": secure})
    write_status(progress, status)
    if secure and len(pre.nodes) < SECAGG_MIN_SITES:
        return fail(
            f"secure aggregation needs at least {SECAGG_MIN_SITES} sites, "
            f"{len(pre.nodes)} passed the pre-flight"
        )
    node_site = dict(pre.node_site)
    stopped: set[int] = set()
    arrays = ArrayRecord([np.zeros(len(columns))])
    durations: list[float] = []
    for server_round in range(1, spec.rounds + 1):
        started = time.monotonic()
        targets = [n for n in pre.nodes if n not in stopped]
        if len(targets) < min_sites:
            return fail(f"only {len(targets)} site(s) still participating, {min_sites} needed")
        if secure and len(targets) < SECAGG_MIN_SITES:
            return fail(
                f"only {len(targets)} site(s) still participating, secure aggregation "
                f"needs {SECAGG_MIN_SITES}"
            )
        run_round = secagg_round if secure else plain_round
        outcome = run_round(grid, targets, arrays, config, server_round, round_timeout)
        contributed = 0
        for node, report in outcome.reports.items():
            name = report.site or node_site.get(node, f"node-{node}")
            if report.site is not None:
                node_site[node] = report.site
            previous = sites.get(name, SiteProgress())
            if report.refusal is not None:
                stopped.add(node)
                sites[name] = previous.model_copy(update={"refusal": report.refusal})
            else:
                contributed += 1
                sites[name] = SiteProgress(
                    rounds_completed=report.rounds_completed or 0,
                    epsilon_spent=report.epsilon_spent or 0.0,
                    measure="rho" if report.zcdp else "epsilon",
                    rho_spent=report.rho_spent or 0.0,
                )
        status = status.model_copy(update={"sites": dict(sites)})
        if outcome.arrays is None:
            return fail(outcome.detail or f"round {server_round} failed")
        if contributed < min_sites:
            return fail(f"round {server_round}: {contributed} site(s) answered, {min_sites} needed")
        arrays = outcome.arrays
        durations.append(time.monotonic() - started)
        weights = arrays.to_numpy_ndarrays()[0]
        status = status.model_copy(
            update={
                "round": server_round,
                "seconds_per_round": list(durations),
                "coefficients": dict(zip(columns, map(float, weights), strict=True)),
                "guarantee": privacy_guarantee(spec, status.sites),
            }
        )
        write_status(progress, status)
    # Steps after training (e.g. a final evaluation) take the sites still in:
    # ``[n for n in pre.nodes if n not in stopped]``, the final ``arrays`` and ``status``.
    still_in = [n for n in pre.nodes if n not in stopped]
    status = evaluate_final(
        grid, still_in, arrays, spec, status, config=config, timeout_s=round_timeout
    )
    status = status.model_copy(update={"state": "finished"})
    write_status(progress, status)
    return status


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point: run the job described by the run config.

    An unexpected error still ends the job as ``failed`` on disk, so the
    gateway never reports a dead job as running.
    """
    run_config: dict[str, object] = dict(context.run_config)
    try:
        run_job(grid, run_config)
    except Exception as err:
        spec = TrainingSpec.model_validate_json(str(run_config["job"]))
        write_status(
            Path(str(run_config["progress-file"])),
            TrainingStatus(
                id=str(run_config["job-id"]),
                state="failed",
                rounds=spec.rounds,
                detail=f"the ServerApp failed: {err!r}"[:500],
            ),
        )
        raise
