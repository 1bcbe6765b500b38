"""Helpers shared by the training unit tests (not a test module)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from nodes.data import RegistryData
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.store import NodeStore
from nodes.training.rounds import run_round
from varde.training import TrainingSpec


def federate(
    spec: TrainingSpec,
    datas: Mapping[str, RegistryData],
    ledgers: Mapping[str, Ledger],
    stores: Mapping[str, NodeStore],
    policy: Callable[[str], Policy],
    *,
    job_id: str,
) -> np.ndarray:
    """Run every round of ``spec`` at every site and FedAvg the replies, as the ServerApp does.

    Each site's reply is weighted by its noisy row count; returns the final model.
    """
    weights = np.zeros(spec.n_coefficients())
    for _ in range(spec.rounds):
        results = [
            run_round(
                data=datas[site],
                policy=policy(site),
                ledger=ledgers[site],
                store=stores[site],
                spec=spec,
                job_id=job_id,
                researcher="alice",
                weights=weights,
            )
            for site in datas
        ]
        n = np.array([r.num_examples for r in results])
        weights = sum(w * r.weights for w, r in zip(n, results, strict=True)) / n.sum()
    return weights
