"""The researcher's Python client: send a query, get pandas DataFrames back.

>>> # client = VardeClient("http://127.0.0.1:8700", token)
>>> # res = client.query({"project": "nsclc", "statistic": {"kind": "count"},
>>> #                     "privacy": {"mode": "dp", "epsilon": 0.5}})
>>> # res.frame()          # one row per site and cell, plus the network rows
>>> # model = client.train(project="outcomes", features=["age_at_diagnosis", "stage"],
>>> #                      rounds=5, epsilon=2.0)   # progress bar until it ends (or rho=0.5)
>>> # model.coefficients   # pandas Series, one entry per public design column

Training progress is drawn with ``rich.progress`` (already installed with
typer): a live bar in a terminal, and in Jupyter through rich's notebook
support (which uses ``ipywidgets`` when installed, and otherwise shows the bar
once the job ends). ``tqdm`` is not a dependency, so it is not used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import httpx
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from varde.query import Query
from varde.training import TrainingSpec, TrainingStatus

FINAL_STATES = ("finished", "failed")


class VardeHTTPError(Exception):
    """The gateway said no: ``status``, machine ``code``, human ``detail``, per-site ``sites``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.code = str(body.get("error", "http_error"))
        raw = body.get("detail", body)
        self.detail = raw if isinstance(raw, str) else str(raw)
        self.sites: list[dict[str, Any]] = list(body.get("sites", []))
        super().__init__(f"{status} {self.code}: {self.detail}")


class QueryResponse:
    """A query's result with DataFrame views."""

    def __init__(self, raw: dict[str, Any], status: int = 200) -> None:
        self.raw = raw
        self.status = status
        """200, or 202 when no site released yet because some await their staff's approval."""

    @property
    def axes(self) -> list[str]:
        """Names of the result's axes (group_by keys, then bins/categories)."""
        return [a[0] for a in self.raw["axes"]]

    def _rows(
        self, site: str, cells: list[dict[str, Any]], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        out = []
        for cell in cells:
            row: dict[str, Any] = {"site": site}
            row.update(dict(zip(self.axes, cell.get("labels", []), strict=False)))
            row.update(
                value=cell.get("value"),
                ci_low=cell.get("ci_low"),
                ci_high=cell.get("ci_high"),
                cell_status=cell.get("status", "ok"),
            )
            row.update(extra)
            out.append(row)
        return out

    def sites_frame(self) -> pd.DataFrame:
        """One row per site (and cell): value, 95% interval, status, epsilon, budget left."""
        rows: list[dict[str, Any]] = []
        for s in self.raw["sites"]:
            extra = {
                "status": s["status"],
                "epsilon": s.get("epsilon_charged", 0.0),
                "mechanism": s.get("mechanism", ""),
                "budget_left": s.get("budget_remaining"),
                "message": s.get("message", ""),
            }
            if s["status"] == "ok":
                rows.extend(self._rows(s["site"], s["cells"], extra))
            else:
                rows.append({"site": s["site"], **extra})
        return pd.DataFrame(rows)

    def network_frame(self) -> pd.DataFrame:
        """The combined network row(s) with their 95% intervals."""
        net = self.raw.get("network")
        if not net:
            return pd.DataFrame()
        extra = {
            "status": "ok",
            "epsilon": sum(net["epsilon_spent"].values()),
            "sites": len(net["sites"]),
        }
        return pd.DataFrame(self._rows("network", net["cells"], extra))

    def frame(self) -> pd.DataFrame:
        """Sites and network in one long frame."""
        return pd.concat([self.sites_frame(), self.network_frame()], ignore_index=True)


class TrainingResult:
    """A training job's outcome (or its state so far) with pandas views."""

    def __init__(self, status: TrainingStatus) -> None:
        self.status = status

    @property
    def id(self) -> str:
        """The job id (``GET /v1/trainings/{id}``)."""
        return self.status.id

    @property
    def state(self) -> str:
        """``pending``, ``running``, ``finished`` or ``failed``."""
        return self.status.state

    @property
    def ok(self) -> bool:
        """True when the job finished all its rounds."""
        return self.status.state == "finished"

    @property
    def guarantee(self) -> str | None:
        """The coefficients' privacy guarantee per site, in words (None before round 1)."""
        return self.status.guarantee

    @property
    def coefficients(self) -> pd.Series:
        """The released model, by public design column (empty before round 1 ends)."""
        return pd.Series(self.status.coefficients or {}, name="coefficient", dtype=float)

    @property
    def sites(self) -> pd.DataFrame:
        """Per site: rounds it paid for, what they cost, why it stopped (if it did).

        ``spent`` is in ``measure``: ``epsilon``, or ``rho`` where the site's project
        accounts in zCDP; ``epsilon_spent`` and ``rho_spent`` split it by measure.
        """
        rows = [
            {
                "site": name,
                "rounds_completed": p.rounds_completed,
                "epsilon_spent": p.epsilon_spent,
                "refusal": p.refusal or "",
                "measure": p.measure,
                "spent": p.spent,
                "rho_spent": p.rho_spent,
            }
            for name, p in sorted(self.status.sites.items())
        ]
        columns = [
            "site",
            "rounds_completed",
            "epsilon_spent",
            "refusal",
            "measure",
            "spent",
            "rho_spent",
        ]
        return pd.DataFrame(rows, columns=columns).set_index("site")

    @property
    def summary(self) -> pd.Series:
        """Job-level figures: rounds done, mean s/round, most epsilon (and rho) any site spent."""
        st = self.status
        per_round = st.seconds_per_round
        return pd.Series(
            {
                "rounds_completed": float(st.round),
                "rounds": float(st.rounds),
                "seconds_per_round": sum(per_round) / len(per_round) if per_round else math.nan,
                "epsilon_spent_max": max((p.epsilon_spent for p in st.sites.values()), default=0.0),
                "rho_spent_max": max((p.rho_spent for p in st.sites.values()), default=0.0),
            },
            name="value",
            dtype=float,
        )

    @property
    def metrics(self) -> pd.DataFrame:
        """DP evaluation of the final model on held-out patients: ``network`` and each site.

        One row per scope (the pooled ``network`` row first), one column per
        metric (``auc``, ``accuracy``, ... or ``concordance``) and its 95% noise
        half-width ``<metric>_pm95`` (from the DP noise alone), plus the
        ``epsilon`` the evaluation cost (and ``rho``, when a site's project accounts
        in zCDP) and, for a site that refused to evaluate, its ``refusal``. Empty
        until the job has evaluated.
        """
        found = self.status.metrics
        if found is None:
            return pd.DataFrame()
        scopes = ([("network", found.network)] if found.network is not None else []) + sorted(
            found.sites.items()
        )
        with_rho = any(m.rho > 0 for _, m in scopes)
        rows: dict[str, dict[str, Any]] = {}
        for scope, m in scopes:
            pm95 = {f"{k}_pm95": 1.96 * se for k, se in m.std_errors.items() if k in m.values}
            rows[scope] = {**m.values, **pm95, "epsilon": m.epsilon} | (
                {"rho": m.rho} if with_rho else {}
            )
        for site, why in sorted(found.refusals.items()):
            rows.setdefault(site, {})["refusal"] = why
        return pd.DataFrame.from_dict(rows, orient="index")

    def __repr__(self) -> str:
        return f"TrainingResult(id={self.id!r}, state={self.state!r}, round={self.status.round})"


class TrainingTimeout(TimeoutError):
    """The job was still going when the client stopped waiting; ``status`` is the last seen."""

    def __init__(self, status: TrainingStatus, waited_s: float) -> None:
        self.status = status
        super().__init__(
            f"training job {status.id} is still {status.state} (round {status.round} of "
            f"{status.rounds}) after {waited_s:.0f} s; ask again with "
            f"client.training({status.id!r})"
        )


def _site_line(status: TrainingStatus) -> str:
    """Spent per site, epsilon or rho as charged (a refusing site marked with its stop)."""
    parts = []
    for name, p in sorted(status.sites.items()):
        mark = " stopped" if p.refusal else ""
        unit = " rho" if p.measure == "rho" else ""
        parts.append(f"{name} {p.spent:.3g}{unit}{mark}")
    return "eps " + ", ".join(parts) if parts else ""


class TrainingProgress:
    """A ``rich.progress`` bar for a training job: rounds, s/round, epsilon spent per site.

    Use as a context manager and call :meth:`update` with each status. Pass a
    ``console`` to draw elsewhere (the CLI draws on stderr; tests on a buffer).
    """

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds"),
            TextColumn("{task.fields[pace]}"),
            TextColumn("{task.fields[epsilon]}"),
            console=console,
        )
        self._task = self.progress.add_task("training", total=None, pace="", epsilon="")
        self.completed = 0
        self.total: int | None = None

    def update(self, status: TrainingStatus) -> None:
        """Show this status."""
        per_round = status.seconds_per_round
        pace = f"{sum(per_round) / len(per_round):.1f} s/round" if per_round else ""
        self.completed, self.total = status.round, status.rounds
        self.progress.update(
            self._task,
            description=f"{status.id[:8]} {status.state}",
            completed=status.round,
            total=status.rounds,
            pace=pace,
            epsilon=_site_line(status),
        )

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()


def training_spec(
    spec: TrainingSpec | Mapping[str, Any] | None, fields: Mapping[str, Any]
) -> TrainingSpec:
    """A validated job from a spec, a dict, keyword fields, or a mix (keywords win).

    ``epsilon``, ``rho``, ``delta``, ``clip``, ``evaluation_epsilon`` and
    ``evaluation_rho`` may be given flat (in the dict or as keywords); they go
    into ``privacy``. A flat ``rho`` replaces an ``epsilon`` the spec carried (and
    its ``evaluation_epsilon``), and the other way round; both flat is an error.

    >>> training_spec(None, {"project": "p", "features": ["sex"], "rounds": 2,
    ...                      "epsilon": 1.5}).privacy.epsilon
    1.5
    >>> job = training_spec(None, {"project": "p", "features": ["sex"], "rounds": 2,
    ...                            "epsilon": 1.5})
    >>> training_spec(job, {"rho": 0.2}).privacy.budget_text()
    'rho 0.2'
    """
    if isinstance(spec, TrainingSpec):
        body: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True)
    else:
        body = dict(spec or {})
    body.update(fields)
    privacy = dict(body.get("privacy") or {})
    flat = ("epsilon", "rho", "delta", "clip", "evaluation_epsilon", "evaluation_rho")
    for given, other in (("epsilon", "rho"), ("rho", "epsilon")):
        if given in body and other not in body:
            privacy.pop(other, None)
            privacy.pop(f"evaluation_{other}", None)
    for key in flat:
        if key in body:
            privacy[key] = body.pop(key)
    if privacy:
        body["privacy"] = privacy
    return TrainingSpec.model_validate(body)


class VardeClient:
    """Talks to one gateway as one researcher."""

    def __init__(self, url: str, token: str, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def _check(self, resp: httpx.Response) -> Any:
        """The JSON body, or :class:`VardeHTTPError` for a 4xx/5xx."""
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"detail": resp.text}
            raise VardeHTTPError(
                resp.status_code, body if isinstance(body, dict) else {"detail": body}
            )
        return resp.json()

    def query(self, spec: dict[str, Any] | Query) -> QueryResponse:
        """Run a query (a dict in the JSON query language, or a :class:`Query`)."""
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, Query) else spec
        resp = self._http.post("/v1/queries", json=body)
        return QueryResponse(self._check(resp), resp.status_code)

    def preview(self, spec: dict[str, Any] | Query) -> pd.DataFrame:
        """What a query would cost at each site and how accurate it would be; nothing is charged.

        One row per site and a ``network`` row: ``status`` (a site that would
        refuse says why in ``message``), ``epsilon`` (or ``rho`` in zCDP mode)
        it would charge, and per released part (``count``, ``sum``) the noise
        standard deviation ``std_<part>`` and the 95% half-width ``pm95_<part>``
        of every number. Ask this before a funnel or a many-cell table.
        """
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, Query) else spec
        data = self._check(self._http.post("/v1/queries/preview", json=body))
        rows: list[dict[str, Any]] = []
        for site in data["sites"]:
            row: dict[str, Any] = {
                "site": site["site"],
                "status": site["status"],
                "epsilon": site.get("epsilon_planned", 0.0),
                "rho": site.get("rho_planned", 0.0),
            }
            row.update({f"std_{k}": v for k, v in site.get("noise_std", {}).items()})
            row.update({f"pm95_{k}": v for k, v in site.get("accuracy", {}).items()})
            row["message"] = site.get("message", "")
            rows.append(row)
        network: dict[str, Any] = {
            "site": "network",
            "status": "ok" if data["network_noise_std"] else "refused",
            "epsilon": sum(data["epsilon_planned"].values()),
            "rho": sum(data.get("rho_planned", {}).values()),
            "message": f"{data['cells']} number(s) per site",
        }
        network.update({f"std_{k}": v for k, v in data["network_noise_std"].items()})
        network.update({f"pm95_{k}": v for k, v in data["network_accuracy"].items()})
        rows.append(network)
        return pd.DataFrame(rows)

    def budgets(self) -> pd.DataFrame:
        """Budget, cap and remainder per project and site (``accounting`` says in what).

        A site that does not serve a project has ``accounting`` ``"not served"``.
        """
        data = self._check(self._http.get("/v1/budgets"))["projects"]
        rows = [
            {"project": p, "site": s, **(terms or {"accounting": "not served"})}
            for p, sites in data.items()
            for s, terms in sites.items()
        ]
        return pd.DataFrame(rows)

    def sites(self) -> pd.DataFrame:
        """Enrolled sites and whether they are connected."""
        return pd.DataFrame(self._check(self._http.get("/v1/sites")))

    def schema(self) -> pd.DataFrame:
        """Queryable fields and the sites exposing them."""
        return pd.DataFrame(self._check(self._http.get("/v1/schema")))

    # --- federated training ---------------------------------------------------------------

    def start_training(self, spec: TrainingSpec | Mapping[str, Any]) -> TrainingStatus:
        """Submit a training job (``POST /v1/trainings``); the gateway refuses it saying why."""
        job = training_spec(spec, {})
        resp = self._http.post("/v1/trainings", json=job.model_dump(mode="json", exclude_none=True))
        return TrainingStatus.model_validate(self._check(resp))

    def training(self, job_id: str) -> TrainingStatus:
        """One of your jobs as it stands (``GET /v1/trainings/{id}``)."""
        return TrainingStatus.model_validate(self._check(self._http.get(f"/v1/trainings/{job_id}")))

    def trainings(self, limit: int = 50) -> pd.DataFrame:
        """Your training jobs, newest first."""
        rows = self._check(self._http.get("/v1/trainings", params={"limit": limit}))
        return pd.DataFrame(rows)

    def wait_training(
        self,
        job_id: str,
        *,
        progress: bool | TrainingProgress = True,
        poll_s: float = 2.0,
        timeout_s: float = 3600.0,
        on_status: Callable[[TrainingStatus], None] | None = None,
    ) -> TrainingResult:
        """Poll the job until it finishes or fails (at most ``timeout_s``), drawing a bar.

        Raises :class:`TrainingTimeout` (with the last status) when the job is
        still going at the deadline; the job itself goes on at the gateway.
        """
        if poll_s <= 0 or timeout_s <= 0:
            raise ValueError("poll_s and timeout_s must be positive")
        bar = progress if isinstance(progress, TrainingProgress) else None
        if progress is True:
            bar = TrainingProgress()
        started = time.monotonic()
        status = self.training(job_id)
        with bar if bar is not None else _NoBar():
            for _ in range(math.ceil(timeout_s / poll_s) + 1):  # bounded, whatever the clock does
                if bar is not None:
                    bar.update(status)
                if on_status is not None:
                    on_status(status)
                if status.state in FINAL_STATES:
                    return TrainingResult(status)
                if time.monotonic() - started >= timeout_s:
                    break
                time.sleep(poll_s)
                status = self.training(job_id)
        raise TrainingTimeout(status, time.monotonic() - started)

    def train(
        self,
        spec: TrainingSpec | Mapping[str, Any] | None = None,
        /,
        *,
        wait: bool = True,
        progress: bool | TrainingProgress = True,
        poll_s: float = 2.0,
        timeout_s: float = 3600.0,
        **fields: Any,
    ) -> TrainingResult:
        """Train a model across the sites; by default wait for it, showing a progress bar.

        ``spec`` is a :class:`~varde.training.TrainingSpec` or its dict; keyword
        ``fields`` add to it (``epsilon`` or ``rho``, ``delta``, ``clip`` may be
        given flat, as in :func:`training_spec`).
        With ``wait=False`` the result holds the just-submitted job's status.
        A failed job is returned (``.ok`` False, reason in ``.status.detail``),
        not raised: its per-site refusals are part of the answer.
        """
        job = training_spec(spec, fields)
        status = self.start_training(job)
        if not wait:
            return TrainingResult(status)
        return self.wait_training(status.id, progress=progress, poll_s=poll_s, timeout_s=timeout_s)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> VardeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoBar:
    """Stands in for a progress bar when none is drawn."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
