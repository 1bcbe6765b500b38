"""Benchmark: how accurate is the network count, against the best any central curator could do?

Five sites each release the trial-feasibility count through the node's own
statistics code (exact count -> OpenDP discrete Laplace at epsilon); the gateway's
``combine`` adds them. Over many independent releases this measures the RMSE of
the network count around the exact total and divides it by the central-DP optimum
on the union of the five registries, ``sqrt(2) / epsilon`` (one Laplace draw of
sensitivity 1, what a trusted curator holding all rows would release).

Federation costs ``sqrt(sites)`` here, because each site adds its own noise; a
patient bound of ``k`` tumours (sensitivity ``k``) multiplies it by ``k``, which is
the price of protecting patients, not tumours. The numbers are printed for
``k = 1`` (the like-for-like comparison) and for each site's policy ``k``.

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
    query = parse_query({**QUERY, "privacy": {"mode": "dp", "epsilon": args.epsilon}})
    exacts = []
    for i, site in enumerate(SITES):
        data = prepare(
            generate_registry(site, args.rows, seed=11 + i), site=site, max_rows_per_patient=3
        )
        exacts.append(exact(data, evaluate(data, query.cohort), query))
    optimum = math.sqrt(2.0) / args.epsilon
    print(f"network count, {len(SITES)} sites, epsilon {args.epsilon} each, {args.runs} runs")
    discrete = discrete_laplace_std(1.0 / args.epsilon)
    print(f"central-DP optimum on the union (Laplace, sensitivity 1): RMSE {optimum:.3f}")
    print(f"  (integer counts: one discrete Laplace draw has RMSE {discrete:.3f})")
    for k in (1, 3):
        rmse, sd = network_rmse(exacts, query, epsilon=args.epsilon, k=k, runs=args.runs)
        print(
            f"k={k}: RMSE {rmse:.3f}  reported sd {sd:.3f}  ratio to optimum {rmse / optimum:.2f}"
            f"  (theory sqrt({len(SITES)}) x k = {math.sqrt(len(SITES)) * k:.2f} against the"
            f" discrete optimum, {math.sqrt(len(SITES)) * k * discrete / optimum:.2f} against"
            " sqrt(2)/eps)"
        )


if __name__ == "__main__":
    main()
