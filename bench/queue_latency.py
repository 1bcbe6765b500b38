"""Benchmark: a feasibility count through the PostgreSQL work queue vs the in-process one.

Starts a real network (``varde gateway serve`` + node processes on 127.0.0.1)
three times on the same data and asks the same kind of question ~50 times each:

* **sqlite**: the embedded default, the in-process dispatcher (one process);
* **postgres, 1 replica**: the shared queue of :mod:`gateway.dispatch_pg`
  (rows, ``FOR UPDATE SKIP LOCKED``, ``LISTEN/NOTIFY``) with one replica;
* **postgres, 2 replicas**: node i polls replica i mod 2 and the researcher
  asks the second replica, so a site's work and release cross replicas.

Prints p50/p90 end to end as the researcher's client sees it. Not a test:
nothing here is asserted in the suite. Needs a PostgreSQL where a fresh
database can be created (dropped afterwards)::

    python bench/queue_latency.py                     # 2 sites x 20,000 tumours, 50 queries
    python bench/queue_latency.py   # PostgreSQL from VARDE_SCRATCH_POSTGRES (launcher.scratch_db)

:func:`queue_latency` is the reusable part (one configuration, its figures).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from feasibility import bench_policy, query_for

from launcher.network import LocalNetwork
from launcher.scratch_db import scratch_database

SITES = ["oslo", "bergen", "trondheim", "stockholm", "copenhagen"]


def percentile(xs: list[float], q: int) -> float:
    """The q-th percentile (1..99) of ``xs``."""
    return statistics.quantiles(xs, n=100)[q - 1]


def queue_latency(
    workdir: Path,
    *,
    database_url: str | None = None,
    replicas: int = 1,
    sites: int = 2,
    rows: int = 20_000,
    queries: int = 50,
) -> dict[str, float]:
    """p50/p90 (ms) of a feasibility count end to end, every site answering ``ok``.

    ``database_url`` None: SQLite and the in-process dispatcher. With replicas,
    node i polls replica i mod ``replicas`` and queries go to the last replica.
    Each query asks a different age bound, so no node answers from its cache.
    """
    names = SITES[:sites]
    (workdir / "policies").mkdir(parents=True, exist_ok=True)
    policies = {s: bench_policy(s, workdir / "policies" / f"{s}.yaml") for s in names}
    net = LocalNetwork(
        workdir=workdir,
        sites=names,
        rows=rows,
        seed=11,
        policies=policies,
        database_url=database_url,
        gateway_replicas=replicas,
    )
    net.start()
    times: list[float] = []
    try:
        url = net.replica_urls[-1]
        headers = {"Authorization": f"Bearer {net.token}"}
        with httpx.Client(headers=headers, timeout=60) as client:
            for i in range(queries + 3):
                t0 = time.perf_counter()
                resp = client.post(f"{url}/v1/queries", json=query_for(200 - i))
                elapsed = (time.perf_counter() - t0) * 1000
                resp.raise_for_status()
                statuses = [s["status"] for s in resp.json()["sites"]]
                assert statuses == ["ok"] * len(names), statuses
                if i >= 3:  # the first three warm up connections and caches
                    times.append(elapsed)
    finally:
        net.stop()
    return {"p50": percentile(times, 50), "p90": percentile(times, 90), "n": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20_000, help="tumours per site")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    shape = {"sites": args.sites, "rows": args.rows, "queries": args.queries}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="varde-bench-") as tmp:
        results["sqlite (in-process)"] = queue_latency(Path(tmp) / "sqlite", **shape)
        for replicas in (1, 2):
            with scratch_database("varde_bench") as url:
                results[f"postgres, {replicas} replica(s)"] = queue_latency(
                    Path(tmp) / f"pg{replicas}", database_url=url, replicas=replicas, **shape
                )
    base = results["sqlite (in-process)"]["p50"]
    print(f"feasibility count, {args.sites} sites x {args.rows:,} tumours, {args.queries} queries")
    for name, r in results.items():
        print(
            f"  {name:24} p50 {r['p50']:7.1f} ms   p90 {r['p90']:7.1f} ms"
            f"   p50 vs sqlite {r['p50'] / base:.2f}x"
        )


if __name__ == "__main__":
    main()
