"""``varde demo``: a gateway and three Norwegian registry nodes on 127.0.0.1, asked real questions.

Each node has its own synthetic registry (different case mix), its own policy
from ``policies/`` and its own SQLite ledger; the queries go through the same
signed long-poll path as in production.

With ``--train`` the gateway also runs a Flower SuperLink and each node a
SuperNode, and after the queries the demo trains one small federated model
(:data:`TRAINING`) through the researcher SDK, with its progress bar.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import typer

from launcher.network import LocalNetwork
from varde_client import VardeClient, VardeHTTPError
from varde_client.report import print_training, render

SITES = ["oslo", "bergen", "trondheim"]

DEMO_PROJECT = "demo-tour"
"""The project the demo's own examples spend: a copy of nsclc-feasibility's terms added to the
demo's copies of the policies, so nsclc-feasibility keeps its whole budget for the user's
questions once the demo has printed its examples."""
USER_PROJECT = "nsclc-feasibility"

FEASIBILITY: dict[str, Any] = {
    "project": DEMO_PROJECT,
    "cohort": {
        "op": "and",
        "args": [
            {"op": "startswith", "field": "topography", "prefix": "C34"},
            {"op": "eq", "field": "stage", "value": "IV"},
            {"op": "eq", "field": "egfr", "value": "positive"},
            {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
            {"op": ">=", "field": "diagnosis_year", "value": 2020},
        ],
    },
    "statistic": {"kind": "count"},
    "unit": "patients",  # each patient once (first matching tumour): noise at sensitivity 1
    "privacy": {"mode": "dp", "epsilon": 0.5},
}

EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    (
        "Trial feasibility: patients with stage IV NSCLC (C34), EGFR+, age 18-75, diagnosed "
        "2020 or later",
        FEASIBILITY,
    ),
    (
        "Patients with lung cancer (C34) by stage (of their first lung tumour)",
        {
            "project": DEMO_PROJECT,
            "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
            "statistic": {"kind": "histogram", "field": "stage"},
            "unit": "patients",
            "privacy": {"mode": "dp", "epsilon": 0.5},
        },
    ),
    (
        "Mean age at diagnosis of lung cancer, by sex (declared bounds 18-100)",
        {
            "project": DEMO_PROJECT,
            "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
            "statistic": {"kind": "mean", "field": "age_at_diagnosis", "lower": 18, "upper": 100},
            "group_by": ["sex"],
            "privacy": {"mode": "dp", "epsilon": 0.5},
        },
    ),
    (
        "PD-L1 bands in stage IV NSCLC (Trondheim's policy does not expose PD-L1)",
        {
            "project": DEMO_PROJECT,
            "cohort": {
                "op": "and",
                "args": [
                    {"op": "startswith", "field": "topography", "prefix": "C34"},
                    {"op": "eq", "field": "stage", "value": "IV"},
                ],
            },
            "statistic": {"kind": "histogram", "field": "pdl1_tps"},
            "privacy": {"mode": "dp", "epsilon": 0.25},
        },
    ),
]

FUNNEL: dict[str, Any] = {
    "project": DEMO_PROJECT,
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {
        "kind": "funnel",
        "steps": [
            {"label": "stage IV", "criterion": {"op": "eq", "field": "stage", "value": "IV"}},
            {
                "label": "ALK or ROS1 positive",
                "criterion": {
                    "op": "or",
                    "args": [
                        {"op": "eq", "field": "alk", "value": "positive"},
                        {"op": "eq", "field": "ros1", "value": "positive"},
                    ],
                },
            },
            {
                "label": "age 18-75",
                "criterion": {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
            },
        ],
    },
    "unit": "patients",  # patients left after each step, each by their first matching tumour
    "privacy": {"mode": "dp", "epsilon": 0.6},
}
"""Trial-feasibility attrition; its cost and error are previewed before it runs."""

STATISTICS: list[tuple[str, dict[str, Any]]] = [
    (
        "Feasibility funnel, patients: lung cancer -> stage IV -> ALK/ROS1+ -> age 18-75 "
        "(epsilon split over the steps by OpenDP's composition)",
        FUNNEL,
    ),
    (
        "Overall survival of stage IV lung cancer, yearly to 5 years (Kaplan-Meier from each "
        "site's DP event and censoring counts; median in months)",
        {
            "project": DEMO_PROJECT,
            "cohort": {
                "op": "and",
                "args": [
                    {"op": "startswith", "field": "topography", "prefix": "C34"},
                    {"op": "eq", "field": "stage", "value": "IV"},
                ],
            },
            "statistic": {"kind": "survival", "interval_months": 12, "horizon_months": 60},
            "privacy": {"mode": "dp", "epsilon": 0.5},
        },
    ),
    (
        "Median age at diagnosis of lung cancer, pooled across sites (from DP counts, not an "
        "average of site medians)",
        {
            "project": DEMO_PROJECT,
            "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
            "statistic": {
                "kind": "quantile",
                "field": "age_at_diagnosis",
                "candidates": list(range(18, 101)),
                "alphas": [0.25, 0.5, 0.75],
            },
            "privacy": {"mode": "dp", "epsilon": 0.3},
        },
    ),
]
"""Shown after :data:`EXAMPLES` (issue 3's statistics); the funnel is previewed first."""

TRAINING: dict[str, Any] = {
    "project": DEMO_PROJECT,
    "model": "logistic",  # 2-year mortality
    "features": ["age_at_diagnosis", "sex", "stage"],
    "rounds": 2,  # SecAgg+ (on with 3 sites) costs ~25 s per round on a small machine
    "epsilon": 1.5,  # per site for the whole job; round 1 costs 0.93 (each site's cap is 1)
}


def run_training(client: VardeClient) -> None:
    """Train :data:`TRAINING` across the sites and print the model, spending and metrics."""
    from rich.console import Console

    typer.echo("=" * 100)
    typer.echo(
        f"Federated training: {TRAINING['model']} model of 2-year mortality on "
        f"{', '.join(TRAINING['features'])}; {TRAINING['rounds']} rounds, epsilon "
        f"{TRAINING['epsilon']} per site, SecAgg+ across the {len(SITES)} sites"
    )
    typer.echo("-" * 100)
    t0 = time.perf_counter()
    try:
        result = client.train(TRAINING, wait=True, timeout_s=600)
    except VardeHTTPError as err:
        typer.echo(f"refused: {err}")
        return
    print_training(result, Console())
    if not result.ok:
        typer.echo(f"training failed: {result.status.detail}")
    typer.echo(f"({time.perf_counter() - t0:.0f} s end to end)\n")


def _stop_on_signals() -> None:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so ``finally`` stops every process we started.

    Why: Python's default SIGTERM ends the demo at once, and the gateway and the
    nodes, each in its own session, would run on as orphans.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


def _print_consoles(net: LocalNetwork) -> None:
    typer.echo("Site consoles (registry staff; bound to 127.0.0.1):")
    for site, url in net.console_urls.items():
        typer.echo(f"  {site:<10} {url}")
    typer.echo(f"  login: {net.console_user} / {net.console_password}\n")


def run_demo(
    *,
    workdir: Path,
    rows: int,
    seed: int,
    once: bool,
    train: bool = False,
    consoles: bool = False,
    data: dict[str, Path] | None = None,
    mappings: dict[str, Path] | None = None,
) -> None:
    """Start the network, print the example queries' results, then exit or keep serving.

    The nodes run on copies of ``policies/*.yaml`` in ``workdir`` (a console edit never
    rewrites the repository's files), with :data:`DEMO_PROJECT` added for the examples.
    ``data`` / ``mappings``: a site's own registry file or mapping (``--data site=FILE``,
    ``--mapping site=FILE``), used as given and never overwritten; the other sites get
    synthetic registries.
    """
    data, mappings = dict(data or {}), dict(mappings or {})
    unknown = sorted((set(data) | set(mappings)) - set(SITES))
    if unknown:
        raise RuntimeError(f"the demo's sites are {', '.join(SITES)}; not {', '.join(unknown)}")
    absent = [str(p) for p in (*data.values(), *mappings.values()) if not p.is_file()]
    if absent:
        raise RuntimeError(f"no such file: {', '.join(absent)}")
    _stop_on_signals()
    synthetic = [s for s in SITES if s not in data and s not in mappings]
    if synthetic:
        typer.echo(
            f"Generating {len(synthetic)} synthetic registries of {rows:,} tumours "
            f"(cached in {workdir})..."
        )
    for site in sorted(set(data) | set(mappings)):
        how = f"mapping {mappings[site]}" if site in mappings else ""
        typer.echo(f"{site}: your data ({', '.join(filter(None, (str(data.get(site, '')), how)))})")
    net = LocalNetwork(
        workdir=workdir.resolve(),
        sites=SITES,
        rows=rows,
        seed=seed,
        training=train,
        extra_projects={DEMO_PROJECT: USER_PROJECT},
        consoles=consoles,
        data_files={site: path.resolve() for site, path in data.items()},
        mappings={site: path.resolve() for site, path in mappings.items()},
    )
    started = time.perf_counter()
    try:
        net.start()
        typer.echo(
            f"Gateway on {net.url} with nodes {', '.join(SITES)} connected "
            f"({time.perf_counter() - started:.1f} s).\n"
            f"The examples below spend project {DEMO_PROJECT!r}; {USER_PROJECT!r} keeps its "
            "budget for your questions.\n"
        )
        if consoles:
            _print_consoles(net)
        with VardeClient(net.url, net.token) as client:
            for title, spec in EXAMPLES + STATISTICS:
                typer.echo("=" * 100)
                typer.echo(title)
                typer.echo("-" * 100)
                if spec is FUNNEL:
                    typer.echo("Preview (nothing charged): epsilon and 95% error per number")
                    preview = client.preview(spec)
                    cols = [c for c in preview.columns if c in ("site", "status", "epsilon")]
                    cols += [c for c in preview.columns if c.startswith("pm95_")]
                    typer.echo(preview[cols].round(2).to_string(index=False) + "\n")
                t0 = time.perf_counter()
                try:
                    res = client.query(spec)
                except VardeHTTPError as err:
                    typer.echo(f"refused: {err}")
                    continue
                typer.echo(render(res))
                typer.echo(f"({(time.perf_counter() - t0) * 1000:.0f} ms end to end)\n")
            typer.echo("=" * 100)
            typer.echo("Budgets per project and site, in the measure each accounts in:")
            typer.echo(client.budgets().to_string(index=False))
            if train:
                run_training(client)
        if once:
            return
        typer.echo(
            f"\nThe network keeps running. API docs: {net.url}/docs\n"
            f"Researcher token: {net.token}\n"
            f"Try: curl -H 'Authorization: Bearer {net.token}' {net.url}/v1/budgets\n"
            + (
                f"Train: varde train --gateway {net.url} --token {net.token} --project "
                "nsclc-feasibility --model cox --features age_at_diagnosis,sex,stage "
                "--rounds 2 --epsilon 1.5 --wait\n"
                if train
                else ""
            )
            + (
                f"Site consoles: {', '.join(net.console_urls.values())} (login "
                f"{net.console_user} / {net.console_password})\n"
                if consoles
                else ""
            )
            + "Press Ctrl-C to stop (or send SIGTERM): every process the demo started stops."
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        net.stop()
