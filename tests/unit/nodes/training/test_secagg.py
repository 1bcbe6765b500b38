"""SecAgg+ rounds (Flower's own workflow and client mod) through the in-process fake Grid.

What is checked against real values, not mocks:

* the global model after every round equals the plain FedAvg of the models the
  sites actually computed (captured at the site), within the quantisation bound
  the ServerApp documents, which is far below the DP noise;
* nothing that reaches the ServerApp through the grid holds a site's model:
  no arrays at all, the model's bytes appear nowhere, and each masked vector is
  far from the site's quantised model;
* a site that drops after the key exchange does not stop the round (threshold),
  while too many drops fail the job cleanly with every ledger matching the status.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import pytest
from flwr.app import Message, MessageType
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

import nodes.training.clientapp as clientapp
from gateway.training.secagg import (
    SECAGG_CLIPPING_RANGE,
    SECAGG_MAX_WEIGHT,
    SECAGG_MODULUS,
    secagg_quantization_range,
)
from nodes.training.rounds import RoundResult
from tests.unit.nodes.training.test_apps import (
    FIELDS,
    FakeGrid,
    assert_ledgers_match,
    make_grid,
    make_site,
    run,
    spend,
    task_identity,
)
from varde.training import TrainingPrivacy, TrainingSpec

__all__ = ["task_identity"]  # the autouse fixture, imported to apply here too

SPEC = TrainingSpec(
    project="p",
    features=["sex", "age_at_diagnosis", "stage"],
    rounds=2,
    local_steps=5,
    learning_rate=2.0,
    privacy=TrainingPrivacy(epsilon=5.0),
)


@pytest.fixture
def site_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[tuple[str, int], RoundResult]]:
    """Every round result a site computed (before SecAgg+ touches it), by (site, round)."""
    seen: dict[tuple[str, int], RoundResult] = {}
    real = clientapp.run_round

    def spy(**kwargs: Any) -> RoundResult:
        result = real(**kwargs)
        seen[(kwargs["policy"].site, result.round)] = result
        return result

    monkeypatch.setattr(clientapp, "run_round", spy)
    yield seen


def stage_of(message: Message) -> str | None:
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    return None if configs is None else str(configs.get(Key.STAGE))


def fedavg(results: list[RoundResult]) -> np.ndarray:
    """Plain FedAvg of what the sites computed, with the weights they put into SecAgg+."""
    weights = np.array([min(max(round(r.num_examples), 1), SECAGG_MAX_WEIGHT) for r in results])
    models = np.array(
        [np.clip(r.weights, -SECAGG_CLIPPING_RANGE, SECAGG_CLIPPING_RANGE) for r in results]
    )
    return (weights[:, None] * models).sum(axis=0) / weights.sum()


def quantisation_bound(results: list[RoundResult]) -> float:
    """The ServerApp's documented bound: 2 B n max_weight / (Q * sum of weights), plus weights."""
    n = len(results)
    q = secagg_quantization_range(n)
    total = sum(round(r.num_examples) for r in results)
    values = 2 * SECAGG_CLIPPING_RANGE * n * SECAGG_MAX_WEIGHT / (q * total)
    ratio = SECAGG_MAX_WEIGHT / (q * min(round(r.num_examples) for r in results))
    return values + 2 * SECAGG_CLIPPING_RANGE * ratio


def global_models(grid: FakeGrid, status_coefficients: dict[str, float]) -> list[np.ndarray]:
    """The model the server sent in each round's collect stage, then the final one."""
    models = []
    for delivery in grid.deliveries:
        collect = [m for m in delivery.sent if stage_of(m) == Stage.COLLECT_MASKED_VECTORS]
        if collect:
            fitins = compat.recorddict_to_fitins(collect[0].content, keep_input=True)
            models.append(parameters_to_ndarrays(fitins.parameters)[0])
    models.append(np.array(list(status_coefficients.values())))
    return models


def test_secagg_aggregate_is_fedavg_and_the_server_never_sees_a_model(
    tmp_path: Path, site_models: dict[tuple[str, int], RoundResult]
) -> None:
    names = ["oslo", "bergen", "trondheim"]
    sites = {
        n: make_site(tmp_path, n, fields=FIELDS, budget=10.0, rows=3_000 + 1_000 * i)
        for i, n in enumerate(names)
    }
    grid = make_grid(sites)
    status = run(tmp_path, sites, SPEC, min_sites=3, grid=grid)
    assert status.state == "finished", status.detail
    assert status.secure_aggregation is True
    assert status.round == SPEC.rounds and status.coefficients is not None
    for name in names:
        assert status.sites[name].rounds_completed == SPEC.rounds
        assert status.sites[name].spent.amount == pytest.approx(
            SPEC.privacy.training_epsilon(), rel=1e-6
        )
    assert_ledgers_match(sites, status)

    # 1. Every round's aggregate is the FedAvg of the sites' models, within quantisation.
    models = global_models(grid, status.coefficients)
    assert len(models) == SPEC.rounds + 1
    assert np.all(models[0] == 0.0)
    for rnd in range(1, SPEC.rounds + 1):
        results = [site_models[(name, rnd)] for name in names]
        expected = fedavg(results)
        bound = quantisation_bound(results)
        assert bound < 1e-3  # far below the DP noise on these coefficients (order 1e-2)
        error = np.abs(models[rnd] - expected).max()
        print(f"round {rnd}: max error {error:.2e}, bound {bound:.2e}")
        assert error <= bound
        # ...and it is not any single site's model.
        for r in results:
            assert np.abs(models[rnd] - r.weights).max() > 10 * bound

    # 2. Nothing that reached the ServerApp holds a site's model.
    site_bytes = [r.weights.tobytes() for r in site_models.values()]
    q = secagg_quantization_range(len(names))
    masked_seen = 0
    for delivery in grid.deliveries:
        stage_by_id = {m.metadata.message_id: stage_of(m) for m in delivery.sent}
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in delivery.sent}
        for reply in delivery.replies:
            assert not reply.has_error()
            content = reply.content
            if delivery.sent[0].metadata.message_type == MessageType.TRAIN:
                # The final evaluation's DP count tables travel as arrays; models never do.
                assert all(len(record) == 0 for record in content.array_records.values())
            blob = repr(content).encode()
            for config in content.config_records.values():
                for value in config.values():
                    items = value if isinstance(value, list) else [value]
                    blob += b"".join(v for v in items if isinstance(v, bytes))
            assert not any(b in blob for b in site_bytes)
            if stage_by_id[reply.metadata.reply_to_message_id] != Stage.COLLECT_MASKED_VECTORS:
                continue
            masked = [
                bytes_to_ndarray(b)
                for b in content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
            ]
            vector = masked[1]  # masked[0] is the masked weight factor
            site = str(content.config_records["fitres.metrics"]["site"])
            rnd = int(str(content.config_records["fitres.metrics"]["site-round"]))
            result = site_models[(site, rnd)]
            ratio = round(result.num_examples) / SECAGG_MAX_WEIGHT
            quantised = (
                (result.weights * ratio + SECAGG_CLIPPING_RANGE) * q / (2 * SECAGG_CLIPPING_RANGE)
            )
            assert np.all((vector >= 0) & (vector < SECAGG_MODULUS))
            assert np.abs(vector - quantised).min() > 1_000, (site, node_of)
            masked_seen += 1
    assert masked_seen == len(names) * SPEC.rounds


def test_secagg_round_survives_a_site_dropping_after_the_key_exchange(
    tmp_path: Path, site_models: dict[tuple[str, int], RoundResult]
) -> None:
    names = ["oslo", "bergen", "trondheim", "tromso"]
    sites = {n: make_site(tmp_path, n, fields=FIELDS, budget=10.0) for n in names}
    grid = make_grid(sites)
    tromso = 103

    def kill_tromso(batch: list[Message]) -> None:
        if batch and stage_of(batch[0]) == Stage.COLLECT_MASKED_VECTORS:
            grid.dead.add(tromso)  # it has shared its key shares, then dies

    grid.on_send = kill_tromso
    status = run(tmp_path, sites, SPEC.model_copy(update={"rounds": 1}), min_sites=3, grid=grid)
    assert status.state == "finished", status.detail
    assert status.secure_aggregation is True
    assert status.sites["tromso"].rounds_completed == 0
    assert status.sites["tromso"].refusal is not None
    assert "no reply" in status.sites["tromso"].refusal
    assert "collect_masked_vectors" in status.sites["tromso"].refusal
    results = [site_models[(name, 1)] for name in names[:3]]
    assert ("tromso", 1) not in site_models
    final = np.array(list(status.coefficients.values()))  # type: ignore[union-attr]
    assert np.abs(final - fedavg(results)).max() <= quantisation_bound(results)
    assert_ledgers_match(sites, status)


def test_secagg_fails_cleanly_when_too_many_sites_drop(
    tmp_path: Path, site_models: dict[tuple[str, int], RoundResult]
) -> None:
    names = ["oslo", "bergen", "trondheim", "tromso"]
    sites = {n: make_site(tmp_path, n, fields=FIELDS, budget=10.0) for n in names}
    grid = make_grid(sites)
    tromso = 103

    def drop_two(batch: list[Message]) -> None:
        if batch and stage_of(batch[0]) == Stage.SHARE_KEYS:
            grid.dead.add(tromso)
            spend(sites["bergen"]["state-dir"], 9.0, 10.0)  # a query takes Bergen's budget

    grid.on_send = drop_two
    status = run(tmp_path, sites, SPEC, min_sites=2, grid=grid)
    assert status.state == "failed"
    assert status.round == 0 and status.coefficients is None
    assert status.detail is not None
    assert status.detail == (
        "round 1: secure aggregation could not complete: only 2 of the round's 4 site(s) "
        "got through its collect_masked_vectors stage, 3 needed"
    )
    bergen = status.sites["bergen"]
    assert bergen.rounds_completed == 0
    assert bergen.refusal is not None and bergen.refusal.startswith("budget_exhausted:")
    # Oslo and Trondheim paid for round 1 before masking it: lost, never refunded, but reported.
    for name in ("oslo", "trondheim"):
        assert status.sites[name].rounds_completed == 1
    assert_ledgers_match(sites, status)
