"""The Flower ServerApp of a training job: FedAvg over the sites' noisy models.

It runs under the SuperLink beside the gateway and never sees a row: each
site's reply is already a DP release (noisy model and noisy row count, paid
for in the site's ledger). Aggregation is Flower's own
:class:`flwr.serverapp.strategy.FedAvg` (weighted by each site's *noisy* row
count, ``num-examples``); the round loop is ours rather than
``FedAvg.start`` because a training job must

* stop asking a site that refused (policy, budget) and record its reason,
* fail cleanly, not hang, when no site is left or too few are connected
  (``sample_nodes`` in Flower waits forever),
* report progress after every round.

Run config (``flwr run --run-config``): ``job`` (the :class:`TrainingSpec` as
JSON), ``job-id``, ``researcher``, ``min-sites``, ``expected-sites`` (SuperNodes
to wait for, at most ``connect-timeout`` seconds, before round 1), ``round-timeout``,
``connect-timeout`` (seconds) and ``progress-file``: where the :class:`TrainingStatus`
JSON is rewritten (atomically) after each round, for the gateway to serve.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from varde.training import SiteProgress, TrainingSpec, TrainingStatus, design_columns

app = ServerApp()


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


def run_job(grid: Grid, run_config: dict[str, object]) -> TrainingStatus:
    """Run every round of the job and return the final status (also written to disk)."""
    spec = TrainingSpec.model_validate_json(str(run_config["job"]))
    job_id = str(run_config["job-id"])
    progress = Path(str(run_config["progress-file"]))
    round_timeout = float(str(run_config.get("round-timeout", 120)))
    connect_timeout = float(str(run_config.get("connect-timeout", 60)))
    min_sites = int(str(run_config.get("min-sites", 1)))
    expected_sites = int(str(run_config.get("expected-sites", 0)))
    columns = design_columns(spec.features)
    status = TrainingStatus(id=job_id, state="running", rounds=spec.rounds)
    write_status(progress, status)
    sites: dict[str, SiteProgress] = {}
    refused_nodes: set[int] = set()
    node_site: dict[int, str] = {}
    strategy = FedAvg(fraction_evaluate=0.0)
    arrays = ArrayRecord([np.zeros(len(columns))])
    durations: list[float] = []
    try:
        nodes = _wait_for_nodes(grid, expected_sites, min_sites, connect_timeout)
    except TimeoutError as err:
        status = status.model_copy(update={"state": "failed", "detail": str(err)})
        write_status(progress, status)
        return status
    config = ConfigRecord(
        {
            "job": spec.model_dump_json(),
            "job-id": job_id,
            "researcher": str(run_config["researcher"]),
        }
    )
    for server_round in range(1, spec.rounds + 1):
        started = time.monotonic()
        targets = [n for n in nodes if n not in refused_nodes]
        if len(targets) < min_sites:
            detail = f"only {len(targets)} site(s) still participating, {min_sites} needed"
            status = status.model_copy(
                update={"state": "failed", "detail": detail, "sites": dict(sites)}
            )
            write_status(progress, status)
            return status
        config["server-round"] = server_round
        messages = [
            Message(
                content=RecordDict({"arrays": arrays, "config": config}),
                message_type=MessageType.TRAIN,
                dst_node_id=node,
            )
            for node in targets
        ]
        replies = list(grid.send_and_receive(messages, timeout=round_timeout))
        # Errors the SuperLink makes itself (e.g. "Node Unavailable") come from the
        # SuperLink's id, so a reply is matched to its node through the message it answers.
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        ok: list[Message] = []
        answered: set[int] = set()
        for reply in replies:
            node = sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            answered.add(node)
            if reply.has_error():
                site, why = _parse_refusal(reply.error.reason)
                name = site or node_site.get(node, f"node-{node}")
                refused_nodes.add(node)
                previous = sites.get(name, SiteProgress())
                sites[name] = previous.model_copy(update={"refusal": why})
                continue
            name = str(reply.content.config_records["site"]["site"])
            node_site[node] = name
            metrics = reply.content.metric_records["metrics"]
            sites[name] = SiteProgress(
                rounds_completed=int(str(metrics["site-round"])),
                epsilon_spent=float(str(metrics["epsilon-job"])),
            )
            ok.append(reply)
        for node in targets:
            if node not in answered:
                refused_nodes.add(node)
                name = node_site.get(node, f"node-{node}")
                previous = sites.get(name, SiteProgress())
                sites[name] = previous.model_copy(
                    update={"refusal": f"no reply within {round_timeout:g} s"}
                )
        if len(ok) < min_sites:
            detail = f"round {server_round}: {len(ok)} site(s) answered, {min_sites} needed"
            status = status.model_copy(
                update={"state": "failed", "detail": detail, "sites": dict(sites)}
            )
            write_status(progress, status)
            return status
        aggregated, _ = strategy.aggregate_train(server_round, ok)
        if aggregated is not None:
            arrays = aggregated
        durations.append(time.monotonic() - started)
        weights = arrays.to_numpy_ndarrays()[0]
        status = status.model_copy(
            update={
                "round": server_round,
                "sites": dict(sites),
                "seconds_per_round": list(durations),
                "coefficients": dict(zip(columns, map(float, weights), strict=True)),
            }
        )
        write_status(progress, status)
    status = status.model_copy(update={"state": "finished"})
    write_status(progress, status)
    return status


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point: run the job described by the run config."""
    run_job(grid, dict(context.run_config))
