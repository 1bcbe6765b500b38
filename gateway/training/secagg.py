"""Flower SecAgg+ for one training round, driven from the job's own round loop.

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
"""

from __future__ import annotations

from typing import cast

import flwr.compat.common.recorddict_compat as compat
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.common import (
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import Stage
from flwr.common.typing import EvaluateIns, EvaluateRes
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from gateway.training.exchange import (
    RecordingGrid,
    RoundOutcome,
    SiteReport,
    error_report,
    report_from_metrics,
)

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
                outcome.reports.setdefault(node, error_report(reply))
            elif exchange.stage == Stage.COLLECT_MASKED_VECTORS:
                metrics = reply.content.config_records[FITRES_METRICS]
                outcome.reports.setdefault(node, report_from_metrics(metrics))
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
