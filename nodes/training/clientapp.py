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

Messages it answers:

* ``query``: the pre-flight check of a whole job
  (:func:`nodes.training.preflight.preflight`); reads policy and ledger,
  charges nothing, replies ``{"site": {"site": ...}}`` or a refusal.
* ``train`` in the clear (``arrays`` + ``config``): one paid round
  (:func:`nodes.training.rounds.run_round`), replying with the noisy model.
* ``train`` under SecAgg+: the four stages of Flower's ``secaggplus_mod``
  (see :func:`secure_aggregation_mod`); in the collect-masked-vectors stage the
  round runs exactly as above but reads and answers Flower's legacy
  ``fitins``/``fitres`` layout, which is what the mod masks. Before the model
  is masked the site clips it to the SecAgg+ clipping range and caps its weight
  at ``max_weight`` (both from the mod's own setup state, i.e. what Flower will
  quantise with), and reports in the clear how many coordinates it clipped and
  whether it capped the weight: an out-of-range value is never silently
  wrapped or distorted by the quantiser.

A refusal (policy, budget, replay) is sent back as a Flower error reply whose
reason is JSON ``{"site", "error", "detail"}``, so the server can report per
site why it stopped participating; under SecAgg+ too (the mod would otherwise
turn it into an opaque exception).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitRes,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE
from numpy.typing import NDArray
from pydantic import ValidationError

from nodes.data import RegistryData
from nodes.ledger import Ledger
from nodes.mapping.availability import restrict_policy
from nodes.mapping.loader import load_mapping
from nodes.mapping.node_data import load_node_data
from nodes.policy import Policy
from nodes.policy_check import load_policy
from nodes.store import NodeStore
from nodes.training.evaluation import evaluate_model
from nodes.training.preflight import approval_gate, preflight
from nodes.training.rounds import RoundResult, run_round
from varde.budget import ZCDP
from varde.errors import InvalidQuery, PolicyViolation, VardeError
from varde.training import TrainingSpec

app = ClientApp()

REFUSAL_CODE = 4030
"""Flower error code of a reply in which the site refused the round."""
FITINS_CONFIG = "fitins.config"
"""Present in a train message in Flower's legacy layout, i.e. under SecAgg+."""


class _Refused(Exception):
    """Carries a refusal reply out of ``secaggplus_mod`` (which would hide its reason)."""

    def __init__(self, reply: Message) -> None:
        super().__init__("refused")
        self.reply = reply


def secure_aggregation_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ messages only; refusals keep their reason.

    Why a wrapper: ``secaggplus_mod`` assumes every ``train`` message is a
    SecAgg+ stage (it fails on one without ``secaggplus_configs``), so it is
    applied only to messages that carry that record, and the clear path keeps
    working. And when the round is refused in the collect stage, the mod would
    try to read a model out of the error reply; the refusal is passed back as is.
    """
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, ctxt)

    def train_or_refuse(inner: Message, context: Context) -> Message:
        reply = call_next(inner, context)
        if reply.has_error():
            raise _Refused(reply)
        return reply

    try:
        return secaggplus_mod(msg, ctxt, train_or_refuse)
    except _Refused as refused:
        return refused.reply


def _node_setting(context: Context, key: str) -> str:
    value = context.node_config.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"SuperNode is missing --node-config {key}=<...>")
    return value


def _refusal(msg: Message, site: str, err: VardeError) -> Message:
    reason = json.dumps({"site": site, "error": err.code, "detail": err.message})
    return Message(error=Error(code=REFUSAL_CODE, reason=reason), reply_to=msg)


@dataclass(frozen=True)
class _Job:
    spec: TrainingSpec
    job_id: str
    researcher: str


def _job(config: ConfigRecord | dict[str, object], site: str) -> _Job:
    """The job a message carries, if it is valid and names this site; refuse otherwise."""
    try:
        spec = TrainingSpec.model_validate_json(str(config["job"]))
    except ValidationError as err:
        raise InvalidQuery(f"invalid training job: {err.errors()[:3]}") from err
    if spec.sites is not None and site not in spec.sites:
        raise PolicyViolation(f"site {site!r} is not among the job's sites")
    return _Job(spec, str(config["job-id"]), str(config["researcher"]))


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Pre-flight: would this site run the whole job? Charges nothing."""
    site = _node_setting(context, "site")
    state_dir = Path(_node_setting(context, "state-dir"))
    try:
        job = _job(msg.content.config_records["config"], site)
        policy = load_policy(Path(_node_setting(context, "policy")), site=site)
        mapping = context.node_config.get("mapping")
        provided: dict[str, str] = {}  # a common-schema data file holds no study column
        if isinstance(mapping, str) and mapping:  # fields the site lacks: refused up front
            site_mapping = load_mapping(Path(mapping))
            policy = restrict_policy(policy, site_mapping.not_available)
            provided = {
                name: "categorical" if f.kind == "categorical" else "bounded"
                for name, f in site_mapping.study_fields.items()
                if f.kind != "date"
            }
        with Ledger.in_directory(state_dir) as ledger:
            preflight(
                policy=policy,
                ledger=ledger,
                spec=job.spec,
                job_id=job.job_id,
                researcher=job.researcher,
                state_dir=state_dir,
                provided=provided,
            )
    except VardeError as err:
        return _refusal(msg, site, err)
    return Message(content=RecordDict({"site": ConfigRecord({"site": site})}), reply_to=msg)


@dataclass(frozen=True)
class _Site:
    """What a training or evaluation message needs at this site, from its own node-config."""

    policy: Policy
    data: RegistryData
    state_dir: Path
    approved: Callable[[], bool]


def _site(context: Context, site: str, job: _Job) -> _Site:
    """Load the site's policy and registry, and its staff-approval check of ``job``."""
    policy = load_policy(Path(_node_setting(context, "policy")), site=site)
    mapping, data_file = context.node_config.get("mapping"), context.node_config.get("data")
    data = load_node_data(  # the very rows, checks and mapping the node itself answers from
        site=site,
        max_rows_per_patient=policy.privacy_unit.max_tumours_per_patient,
        data_path=Path(data_file) if isinstance(data_file, str) and data_file else None,
        mapping_path=Path(mapping) if isinstance(mapping, str) and mapping else None,
    )
    policy = restrict_policy(policy, data.not_available)
    state_dir = Path(_node_setting(context, "state-dir"))
    gate = approval_gate(
        policy=policy,
        spec=job.spec,
        job_id=job.job_id,
        researcher=job.researcher,
        state_dir=state_dir,
    )
    return _Site(policy, data, state_dir, gate)


@contextmanager
def _books(state_dir: Path) -> Iterator[tuple[Ledger, NodeStore]]:
    """The node's ledger and audit trail: every charge this process makes is audited there.

    The ClientApp holds no node key: its entries are signed by the node's next
    checkpoint, like those of the staff's CLI commands.
    """
    store = NodeStore.in_directory(state_dir)
    try:
        with Ledger.in_directory(state_dir) as ledger:
            yield ledger, store
    finally:
        store.close()


def _train(context: Context, site: str, job: _Job, weights: NDArray[Any]) -> RoundResult:
    here = _site(context, site, job)
    with _books(here.state_dir) as (ledger, store):
        return run_round(
            data=here.data,
            policy=here.policy,
            ledger=ledger,
            store=store,
            spec=job.spec,
            job_id=job.job_id,
            researcher=job.researcher,
            weights=weights.astype(np.float64),
            approved=here.approved,
        )


def _public_metrics(result: RoundResult) -> dict[str, float | int]:
    """What a site tells the server in the clear about a round: its cost and progress.

    Every amount is in the measure of the site's project: ``zcdp`` is 1 when that
    is rho, 0 when it is epsilon (Flower's metric records carry only numbers).
    """
    return {
        "num-examples": result.num_examples,
        "charged": result.charged.amount,
        "job-total": result.job_total.amount,
        "remaining": result.remaining.amount,
        "zcdp": int(isinstance(result.charged, ZCDP)),
        "site-round": result.round,
    }


@app.train(mods=[secure_aggregation_mod])
def train(msg: Message, context: Context) -> Message:
    """Pay for and run one round at this site; reply with the noisy model or a refusal."""
    site = _node_setting(context, "site")
    secure = FITINS_CONFIG in msg.content.config_records
    if secure:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        config: ConfigRecord | dict[str, object] = dict(fitins.config)
        weights = parameters_to_ndarrays(fitins.parameters)[0]
    else:
        config = msg.content.config_records["config"]
        weights = msg.content.array_records["arrays"].to_numpy_ndarrays()[0]
    try:
        job = _job(config, site)
        result = _train(context, site, job, weights)
    except VardeError as err:
        return _refusal(msg, site, err)
    if secure:
        return Message(content=_secagg_fitres(context, site, result), reply_to=msg)
    content = RecordDict(
        {
            "arrays": ArrayRecord([result.weights]),
            "metrics": MetricRecord(dict(_public_metrics(result))),
            "site": ConfigRecord({"site": site}),
        }
    )
    return Message(content=content, reply_to=msg)


def _secagg_fitres(context: Context, site: str, result: RoundResult) -> RecordDict:
    """The round's reply in Flower's legacy ``fitres`` layout, fitted to SecAgg+'s ranges.

    ``secaggplus_mod`` multiplies the model by ``num_examples / max_weight``,
    clips it to ``[-clipping_range, clipping_range]`` and quantises it. Clipping
    here first (and capping the weight so the factor is at most 1) makes that
    clip a no-op and lets the site report what it changed. The model and the
    noisy row count are both DP releases already paid for; the metrics travel
    in the clear, the model only masked.
    """
    state = context.state.config_records[RECORD_KEY_STATE]
    bound = float(str(state["clipping_range"]))
    max_weight = float(str(state["max_weight"]))
    clipped = int(np.count_nonzero(np.abs(result.weights) > bound))
    weights = np.clip(result.weights, -bound, bound)
    weight = int(min(max(round(result.num_examples), 1), max_weight))
    metrics: dict[str, Scalar] = {
        **_public_metrics(result),
        "site": site,
        "clipped-coordinates": clipped,
        "weight-capped": int(result.num_examples > max_weight),
    }
    fitres = FitRes(
        status=Status(code=Code.OK, message="ok"),
        parameters=ndarrays_to_parameters([weights]),
        num_examples=weight,
        metrics=metrics,
    )
    return compat.fitres_to_recorddict(fitres, keep_input=True)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The final DP evaluation of the job's model on this site's held-out patients.

    Paid from the ledger before the held-out rows are read, once per job
    (:func:`nodes.training.evaluation.evaluate_model`); replies with the noisy
    count table (``arrays``) and its cost, or a refusal.
    """
    site = _node_setting(context, "site")
    weights = msg.content.array_records["arrays"].to_numpy_ndarrays()[0]
    try:
        job = _job(msg.content.config_records["config"], site)
        here = _site(context, site, job)
        with _books(here.state_dir) as (ledger, store):
            result = evaluate_model(
                data=here.data,
                policy=here.policy,
                ledger=ledger,
                store=store,
                spec=job.spec,
                job_id=job.job_id,
                researcher=job.researcher,
                weights=np.asarray(weights, dtype=np.float64),
                approved=here.approved,
            )
    except VardeError as err:
        return _refusal(msg, site, err)
    content = RecordDict(
        {
            "arrays": ArrayRecord([result.table]),
            "metrics": MetricRecord(
                {
                    "charged": result.charged.amount,
                    "remaining": result.remaining.amount,
                    "zcdp": int(isinstance(result.charged, ZCDP)),
                    "noise-scale": result.noise_scale,
                }
            ),
            "site": ConfigRecord({"site": site, "mechanism": result.mechanism}),
        }
    )
    return Message(content=content, reply_to=msg)
