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
at least :data:`~gateway.training.secagg.SECAGG_MIN_SITES` sites pass the
pre-flight): each round is one run of Flower's SecAgg+ workflow, driven from
this loop (:mod:`gateway.training.secagg`, which also says why its parameters
are what they are); otherwise a plain round (:func:`plain_round`). What the
sites said in each exchange is kept by :mod:`gateway.training.exchange`.

Run config (``flwr run --run-config``): ``job`` (the :class:`TrainingSpec` as
JSON), ``job-id``, ``researcher``, ``min-sites``, ``expected-sites`` (SuperNodes
to wait for, at most ``connect-timeout`` seconds, before the pre-flight),
``round-timeout``, ``connect-timeout`` (seconds) and ``progress-file``: where
the :class:`TrainingStatus` JSON is rewritten (atomically) after each step,
for the gateway to serve.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from gateway.training.exchange import (
    Exchange,
    RoundOutcome,
    SiteReport,
    error_report,
    parse_refusal,
    report_from_metrics,
)
from gateway.training.secagg import SECAGG_MIN_SITES, secagg_round
from varde.budget import Budget, budget
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

__all__ = ["app", "evaluate_final", "run_job", "write_status"]

app = ServerApp()


def write_status(path: Path, status: TrainingStatus) -> None:
    """Replace ``path`` atomically so a reader never sees half a document."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(status.model_dump_json(indent=2))
    os.replace(tmp, path)


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
            outcome.reports[node] = error_report(reply)
            continue
        metrics: dict[str, object] = dict(reply.content.metric_records["metrics"])
        metrics["site"] = str(reply.content.config_records["site"]["site"])
        outcome.reports[node] = report_from_metrics(metrics)
        ok.append(reply)
    for node in targets:
        outcome.reports.setdefault(node, SiteReport(refusal=f"no reply within {timeout_s:g} s"))
    if ok:
        outcome.arrays, _ = FedAvg(fraction_evaluate=0.0).aggregate_train(server_round, ok)
    if outcome.arrays is None:
        outcome.detail = f"round {server_round}: no site sent a model"
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
            site, why = parse_refusal(reply.error.reason)
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
    model is already trained. A site's ``spent`` stays what its rounds paid; what
    the evaluation cost it is ``metrics.sites[site].charged`` (in its measure).
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
    paid: dict[str, Budget] = {}
    answered: set[int] = set()
    for reply in exchange.replies:
        node = exchange.node_of(reply)
        answered.add(node)
        if reply.has_error():
            site, why = parse_refusal(reply.error.reason)
            refusals[site or f"node-{node}"] = why
            continue
        name = str(reply.content.config_records["site"]["site"])
        replied = reply.content.metric_records["metrics"]
        zcdp = bool(int(str(replied.get("zcdp", 0))))
        charged = budget("rho" if zcdp else "epsilon", float(str(replied["charged"])))
        table = np.asarray(reply.content.array_records["arrays"].to_numpy_ndarrays()[0])
        if table.shape != table_shape(spec.model):
            refusals[name] = f"sent a table of shape {table.shape}"
            continue
        mechanism = str(reply.content.config_records["site"].get("mechanism", ""))
        variance = count_noise_variance(mechanism, float(str(replied.get("noise-scale", 0.0))))
        tables.append(table)
        variances.append(variance)
        paid[name] = charged
        per_site[name] = EvaluationMetrics(
            values=pooled_metrics(spec.model, [table]),
            charged={name: charged},
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
            charged=paid,
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
                    rounds_completed=report.rounds_completed or 0, spent=report.spent
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
