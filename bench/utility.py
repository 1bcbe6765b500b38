"""Benchmark: how accurate is the network count, against the best any central curator could do?

Five sites each release the trial-feasibility count through the node's own
statistics code (exact count -> OpenDP discrete Laplace at epsilon); the gateway's
``combine`` adds them. Over many independent releases this measures the RMSE of
the network count around the exact total and divides it by the central-DP optimum
on the union of the five registries, ``sqrt(2) / epsilon`` (one Laplace draw of
sensitivity 1, what a trusted curator holding all rows would release).

Federation costs ``sqrt(sites)`` here, because each site adds its own noise; a
patient bound of ``k`` tumours (sensitivity ``k``) multiplies a *tumour* count's
noise by ``k``, which is the price of protecting patients while counting tumours.
A *patient* count (``"unit": "patients"``: each patient once, by their first
matching tumour) has sensitivity 1 whatever ``k``. The numbers are printed for a
tumour count at ``k = 1`` (the like-for-like comparison with the optimum), and
side by side, from the same registries in the same run, for a tumour count and a
patient count at the demo policies' ``k = 3``: their RMSE ratio is the accuracy
counting patients gains (theory: the ratio of one discrete Laplace's sd at scale
``k / eps`` to one at ``1 / eps``, about 2.8 at ``eps = 1``).

Releases are drawn from the built plan directly: through the pipeline a repeat
would be answered from the node's release cache (the repeat-query defence), which
is exactly what makes averaging useless, and would measure nothing.

    python bench/utility.py                 # 5 sites x 20,000 rows, 4,000 runs
    python bench/utility.py --runs 20000
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from gateway.combine import combine
from nodes.cohort import evaluate
from nodes.data import prepare
from nodes.mechanisms import discrete_laplace_std
from nodes.statistics import exact, plan
from nodes.synth import generate_registry
from varde.budget import PureDP
from varde.query import parse_query
from varde.release import SiteRelease

K = 3
"""Tumours kept per patient, as in the demo policies (``privacy_unit.max_tumours_per_patient``)."""
SITES = ["oslo", "bergen", "trondheim", "stockholm", "copenhagen"]
QUERY: dict[str, Any] = {
    "project": "bench",
    "cohort": {
        "op": "and",
        "args": [
            {"op": "startswith", "field": "topography", "prefix": "C34"},
            {"op": "eq", "field": "stage", "value": "IV"},
            {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
        ],
    },
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 1.0},
}


def network_rmse(
    exacts: list[Any], query: Any, *, epsilon: float, k: int, runs: int
) -> tuple[float, float]:
    """RMSE of the combined network count around the exact total, and the mean reported sd."""
    plans = [plan(ex, query, PureDP(epsilon), max_rows=k) for ex in exacts]
    truth = float(sum(int(ex.counts[0]) for ex in exacts))
    errors, stds = [], []
    for _ in range(runs):
        rels = [
            SiteRelease(query_id="b", site=s, status="ok", cells=p.release())
            for s, p in zip(SITES, plans, strict=True)
        ]
        net = combine(query, rels)
        assert net is not None
        cell = net.cells[0]
        errors.append((cell.value or 0.0) - truth)
        stds.append(cell.std or 0.0)
    return float(np.sqrt(np.mean(np.square(errors)))), float(np.mean(stds))


def main() -> None:
    """Build five registries, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=4_000)
    parser.add_argument("--epsilon", type=float, default=1.0)
    args = parser.parse_args()
    tumours = parse_query({**QUERY, "privacy": {"mode": "dp", "epsilon": args.epsilon}})
    patients = tumours.model_copy(update={"unit": "patients"})
    exact_tumours, exact_patients = [], []
    for i, site in enumerate(SITES):
        data = prepare(
            generate_registry(site, args.rows, seed=11 + i), site=site, max_rows_per_patient=K
        )
        cohort = evaluate(data, tumours.cohort)
        exact_tumours.append(exact(data, cohort, tumours))
        exact_patients.append(exact(data, cohort, patients))
    optimum = math.sqrt(2.0) / args.epsilon
    print(f"network count, {len(SITES)} sites, epsilon {args.epsilon} each, {args.runs} runs")
    discrete = discrete_laplace_std(1.0 / args.epsilon)
    print(f"central-DP optimum on the union (Laplace, sensitivity 1): RMSE {optimum:.3f}")
    print(f"  (integer counts: one discrete Laplace draw has RMSE {discrete:.3f})")
    by_tumour = math.nan
    for k in (1, K):
        rmse, sd = network_rmse(exact_tumours, tumours, epsilon=args.epsilon, k=k, runs=args.runs)
        by_tumour = rmse  # the last: k = K
        print(
            f"tumours, k={k}: RMSE {rmse:.3f}  reported sd {sd:.3f}  ratio to optimum "
            f"{rmse / optimum:.2f}  (theory sqrt({len(SITES)}) x k = "
            f"{math.sqrt(len(SITES)) * k:.2f} against the discrete optimum, "
            f"{math.sqrt(len(SITES)) * k * discrete / optimum:.2f}"
            " against sqrt(2)/eps)"
        )
    by_patient, sd = network_rmse(
        exact_patients, patients, epsilon=args.epsilon, k=K, runs=args.runs
    )
    theory = discrete_laplace_std(K / args.epsilon) / discrete
    n_tumours = sum(int(ex.counts[0]) for ex in exact_tumours)
    n_patients = sum(int(ex.counts[0]) for ex in exact_patients)
    print(
        f"patients, k={K}: RMSE {by_patient:.3f}  reported sd {sd:.3f}  ratio to optimum "
        f"{by_patient / optimum:.2f}  (exact: {n_patients} patients, {n_tumours} tumours)"
    )
    print(
        f"accuracy gain counting patients at k={K}: RMSE tumours / patients = "
        f"{by_tumour / by_patient:.2f} (theory {theory:.2f})"
    )


if __name__ == "__main__":
    main()
