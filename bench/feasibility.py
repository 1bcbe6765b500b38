"""Benchmark: the trial-feasibility count through the whole federation vs plain pandas.

Builds 5 sites x N tumours (default 1,000,000), starts the gateway and five node
processes on 127.0.0.1 (exactly what ``varde demo`` runs), and times, side by side
in one run:

* **federation**: ``POST /v1/queries`` end to end (auth, signing, long-poll
  delivery, each node's filter + count + ledger charge + OpenDP release +
  signature, combination) as the researcher's client sees it;
* **local pandas**: the same filter and count in plain pandas on the union of the
  five frames in this process (categorical dtypes as read from Parquet).

Prints both medians over repeated runs and their ratio. Not a test: no timing is
asserted anywhere in the test suite.

    python bench/feasibility.py                 # 5 x 1,000,000
    python bench/feasibility.py --rows 200000   # quicker
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pandas as pd
import yaml

from launcher.network import LocalNetwork
from nodes.registry_io import read_registry
from varde_client import VardeClient

SITES = ["oslo", "bergen", "trondheim", "stockholm", "copenhagen"]
QUERY = {
    "project": "bench",
    "cohort": {
        "op": "and",
        "args": [
            {"op": "startswith", "field": "topography", "prefix": "C34"},
            {"op": "eq", "field": "stage", "value": "IV"},
            {"op": "eq", "field": "egfr", "value": "positive"},
            {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
            {"op": ">=", "field": "diagnosis_date", "value": "2020-01-01"},
        ],
    },
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.1},
}


def bench_policy(site: str, path: Path) -> Path:
    """A policy serving the 'bench' project with room for many queries."""
    path.write_text(
        yaml.safe_dump(
            {
                "site": site,
                "privacy_unit": {"max_tumours_per_patient": 3},
                "fields": ["topography", "stage", "egfr", "age_at_diagnosis", "diagnosis_date"],
                "statistics": ["count"],
                "projects": {"bench": {"epsilon_budget": 1000.0, "max_epsilon_per_query": 1.0}},
            }
        )
    )
    return path


def query_for(max_age: int) -> dict[str, object]:
    """The feasibility query with upper age ``max_age``.

    Every timed run asks a *different* question: a node answers a repeated
    question from its release cache (the repeat-query defence), which would
    time a cache hit instead of the filter and count.
    """
    spec = json.loads(json.dumps(QUERY))
    spec["cohort"]["args"][3]["high"] = max_age
    return dict(spec)


def local_count(df: pd.DataFrame, max_age: int = 75) -> int:
    """What a researcher with all the rows in one place would write."""
    mask = (
        df["topography"].str.startswith("C34")
        & (df["stage"] == "IV")
        & (df["egfr"] == "positive")
        & df["age_at_diagnosis"].between(18, max_age)
        & (df["diagnosis_date"] >= "2020-01-01")
    )
    return int(mask.sum())


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="tumours per site")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    (workdir / "policies").mkdir(parents=True, exist_ok=True)
    policies = {s: bench_policy(s, workdir / "policies" / f"{s}.yaml") for s in SITES}
    net = LocalNetwork(
        workdir=workdir, sites=list(SITES), rows=args.rows, seed=11, policies=policies
    )
    t0 = time.perf_counter()
    net.ensure_data()
    print(f"data: {len(SITES)} x {args.rows:,} tumours ready in {time.perf_counter() - t0:.1f} s")

    union = pd.concat([read_registry(net.data_files[s]) for s in SITES], ignore_index=True)
    print(f"local union frame: {len(union):,} rows")

    try:
        t0 = time.perf_counter()
        net.start_gateway()
        for s in SITES:
            net.start_node(s)
        net.wait_connected(timeout=600)
        print(
            f"network: gateway + {len(SITES)} nodes connected in {time.perf_counter() - t0:.1f} s"
        )
        with VardeClient(net.url, net.token) as client:
            ages = iter(range(100, 100 - args.repeat - 4, -1))  # a fresh question each time
            for _ in range(3):  # warm up both paths
                age = next(ages)
                client.query(query_for(age))
                local_count(union, age)
            node_ms: list[float] = []

            def federated(age: int) -> None:
                res = client.query(query_for(age))
                statuses = [s["status"] for s in res.raw["sites"]]
                assert statuses == ["ok"] * len(SITES), statuses
                assert not any(s.get("cached") for s in res.raw["sites"])
                node_ms.append(max(s["elapsed_ms"] for s in res.raw["sites"]))

            fed: list[float] = []
            loc: list[float] = []
            for _ in range(args.repeat):  # interleave so both see the same machine state
                age = next(ages)
                fed += timed(lambda a=age: federated(a), 1)
                loc += timed(lambda a=age: local_count(union, a), 1)
            age = next(ages)
            exact = local_count(union, age)
            last = client.query(query_for(age)).raw["network"]["cells"][0]["value"]
    finally:
        net.stop()

    def p(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100)[int(q) - 1]

    fed_med, loc_med = statistics.median(fed), statistics.median(loc)
    print()
    print(f"feasibility count, {len(SITES)} sites x {args.rows:,} tumours, {args.repeat} runs each")
    print(f"  federation (end to end)   median {fed_med:8.1f} ms   p90 {p(fed, 90):8.1f} ms")
    print(f"  slowest node's own work   median {statistics.median(node_ms):8.1f} ms")
    print(f"  local pandas on union     median {loc_med:8.1f} ms   p90 {p(loc, 90):8.1f} ms")
    print(
        f"  ratio federation / local  {fed_med / loc_med:.2f}x"
        "   (target <= 1.5x; p50 target < 300 ms)"
    )
    print(f"  exact count {exact:,}; last DP network count {last:,.0f}")


if __name__ == "__main__":
    main()
