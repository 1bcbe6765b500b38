"""The Flower ClientApp a site's SuperNode runs for every training message.

Why the site's own code and not code from the server: the Flower App Bundle
(FAB) the gateway submits names this module (``nodes.training.clientapp:app``)
and carries no Python of its own, so what runs next to the rows is the code the
hospital installed, not code the server shipped. (Pinning that with Flower's
FAB signatures, ``flower-supernode --trusted-entities``, is still to do.)

Where the site's state comes from: the SuperNode's ``--node-config``, set by
the hospital when it starts the SuperNode (never by the server):

* ``site``: the site name; ``policy``: its ``policies/<site>.yaml``;
* ``data``: its registry file (Parquet or CSV);
* ``state-dir``: the node's state directory, whose ``ledger.sqlite`` is the
  same ledger the query node pays from.

A refusal (policy, budget, replay) is sent back as a Flower error reply whose
reason is JSON ``{"site", "error", "detail"}``, so the server can report per
site why it stopped participating.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from pydantic import ValidationError

from nodes.data import load_registry
from nodes.ledger import Ledger
from nodes.policy import load_policy
from nodes.training.rounds import run_round
from varde.errors import InvalidQuery, PolicyViolation, VardeError
from varde.training import TrainingSpec

app = ClientApp()

REFUSAL_CODE = 4030
"""Flower error code of a reply in which the site refused the round."""


def _node_setting(context: Context, key: str) -> str:
    value = context.node_config.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"SuperNode is missing --node-config {key}=<...>")
    return value


def _refusal(msg: Message, site: str, err: VardeError) -> Message:
    reason = json.dumps({"site": site, "error": err.code, "detail": err.message})
    return Message(error=Error(code=REFUSAL_CODE, reason=reason), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Pay for and run one round at this site; reply with the noisy model or a refusal."""
    site = _node_setting(context, "site")
    config = msg.content.config_records["config"]
    try:
        spec = TrainingSpec.model_validate_json(str(config["job"]))
    except ValidationError as err:
        return _refusal(msg, site, InvalidQuery(f"invalid training job: {err.errors()[:3]}"))
    job_id = str(config["job-id"])
    researcher = str(config["researcher"])
    weights = msg.content.array_records["arrays"].to_numpy_ndarrays()[0].astype(np.float64)
    if spec.sites is not None and site not in spec.sites:
        return _refusal(msg, site, PolicyViolation(f"site {site!r} is not among the job's sites"))
    policy = load_policy(Path(_node_setting(context, "policy")), site=site)
    data = load_registry(
        Path(_node_setting(context, "data")),
        site=site,
        max_rows_per_patient=policy.privacy_unit.max_tumours_per_patient,
    )
    with Ledger.in_directory(Path(_node_setting(context, "state-dir"))) as ledger:
        try:
            result = run_round(
                data=data,
                policy=policy,
                ledger=ledger,
                spec=spec,
                job_id=job_id,
                researcher=researcher,
                weights=weights,
            )
        except VardeError as err:
            return _refusal(msg, site, err)
    content = RecordDict(
        {
            "arrays": ArrayRecord([result.weights]),
            "metrics": MetricRecord(
                {
                    "num-examples": result.num_examples,
                    "epsilon-charged": result.epsilon_charged,
                    "epsilon-job": result.epsilon_job,
                    "epsilon-remaining": result.epsilon_remaining,
                    "site-round": result.round,
                }
            ),
            "site": ConfigRecord({"site": site}),
        }
    )
    return Message(content=content, reply_to=msg)
