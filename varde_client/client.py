"""The researcher's Python client: send a query, get pandas DataFrames back.

>>> # client = VardeClient("http://127.0.0.1:8700", token)
>>> # res = client.query({"project": "nsclc", "statistic": {"kind": "count"},
>>> #                     "privacy": {"mode": "dp", "epsilon": 0.5}})
>>> # res.frame()          # one row per site and cell, plus the network rows
>>> # model = client.train(project="outcomes", features=["age_at_diagnosis", "stage"],
>>> #                      rounds=5, epsilon=2.0)   # progress bar until it ends (or rho=0.5)
>>> # model.coefficients   # pandas Series, one entry per public design column

Results come back as :class:`~varde_client.frames.QueryResponse` and
:class:`~varde_client.training.TrainingResult`; refusals as the typed
subclasses of :class:`~varde_client.errors.VardeHTTPError` (``docs/CLIENT.md``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pandas as pd

from varde.gateway_url import check_gateway_url
from varde.query import Query
from varde.release import ProjectTerms
from varde.results import PreviewResult
from varde.training import TrainingSpec, TrainingStatus
from varde_client.client_questions import QuestionMethods
from varde_client.errors import error_for
from varde_client.frames import QueryResponse
from varde_client.training import (
    FINAL_STATES,
    NoBar,
    TrainingProgress,
    TrainingResult,
    TrainingTimeout,
    training_spec,
)


class VardeClient(QuestionMethods):
    """Talks to one gateway as one researcher.

    Besides :meth:`query` (a JSON query), one method per statistic builds and checks
    the query first (:class:`~varde_client.client_questions.QuestionMethods`):
    ``client.count(Field("stage") == "IV", by="sex", project="p", epsilon=0.5)``.
    """

    def __init__(
        self, url: str, token: str, *, timeout: float = 120.0, dev_network: bool = False
    ) -> None:
        """Connect to the gateway at ``url`` as the researcher whose bearer ``token`` this is.

        Plain ``http://`` is refused off loopback (the token would cross the network in
        clear text) unless ``dev_network=True`` says this is a development network.
        Raises :class:`~varde.gateway_url.GatewayURLError` naming the fix.
        """
        check_gateway_url(url, dev_network, override="--dev-network (dev_network=True in Python)")
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def _check(self, resp: httpx.Response) -> Any:
        """The JSON body, or the typed error of a 4xx/5xx (:func:`~varde_client.errors.error_for`).

        Every error is a :class:`VardeHTTPError`; a refusal by every site carries
        each one's typed error in ``site_errors``.
        """
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"detail": resp.text}
            raise error_for(resp.status_code, body if isinstance(body, dict) else {"detail": body})
        return resp.json()

    def query(self, spec: dict[str, Any] | Query) -> QueryResponse:
        """Run a query (a dict in the JSON query language, or a :class:`Query`).

        Raises the typed error (:mod:`varde_client.errors`) when the gateway
        refuses the whole query: bad input, token, project, or no site released
        anything because every site refused (the reason they share, each site's
        in ``site_errors``). A partial answer is returned, not raised, and so is
        a 202 (``res.pending``: nothing released yet, some site awaits its
        staff's approval; ask again later): ``res.refusals`` has the typed
        per-site errors and ``res.raise_for_refusals()`` raises them.
        """
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, Query) else spec
        resp = self._http.post("/v1/queries", json=body)
        return QueryResponse(self._check(resp), resp.status_code)

    def preview(self, spec: dict[str, Any] | Query) -> pd.DataFrame:
        """What a query would cost at each site and how accurate it would be; nothing is charged.

        One row per site and a ``network`` row: ``status`` (a site that would
        refuse says why in ``message``), what it would charge in the query's
        measure (an ``epsilon`` or a ``rho`` column; ``attrs["measure"]`` says
        which), and per released part (``count``, ``sum``) the noise standard
        deviation ``std_<part>`` and the 95% half-width ``pm95_<part>`` of every
        number. Ask this before a funnel or a many-cell table.
        """
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, Query) else spec
        data = PreviewResult.model_validate(
            self._check(self._http.post("/v1/queries/preview", json=body))
        )
        measure = data.measure
        rows: list[dict[str, Any]] = []
        for site in data.sites:
            row: dict[str, Any] = {"site": site.site, "status": site.status}
            if measure is not None:
                row[measure] = site.planned.amount if site.planned is not None else 0.0
            row.update({f"std_{k}": v for k, v in site.noise_std.items()})
            row.update({f"pm95_{k}": v for k, v in site.accuracy.items()})
            row["message"] = site.message
            rows.append(row)
        network: dict[str, Any] = {
            "site": "network",
            "status": "ok" if data.network_noise_std else "refused",
        }
        if measure is not None:
            network[measure] = sum(b.amount for b in data.planned.values())
        network["message"] = f"{data.cells} number(s) per site"
        network.update({f"std_{k}": v for k, v in data.network_noise_std.items()})
        network.update({f"pm95_{k}": v for k, v in data.network_accuracy.items()})
        rows.append(network)
        frame = pd.DataFrame(rows)
        frame.attrs["measure"] = measure
        return frame

    def budgets(self) -> pd.DataFrame:
        """Budget, cap and remainder per project and site, in the measure each accounts in.

        ``measure`` is ``epsilon`` or ``rho`` (``accounting`` epsilon or zcdp); a
        site that does not serve a project has ``accounting`` ``"not served"``.
        """
        data = self._check(self._http.get("/v1/budgets"))["projects"]
        rows = []
        for project, sites in data.items():
            for site, terms in sites.items():
                row: dict[str, Any] = {"project": project, "site": site}
                if terms is None:
                    row["accounting"] = "not served"
                else:
                    found = ProjectTerms.model_validate(terms)
                    left = found.remaining
                    row.update(
                        accounting=found.accounting,
                        measure=found.budget.measure,
                        budget=found.budget.amount,
                        max_per_query=found.max_per_query.amount,
                        remaining=left.amount if left is not None else None,
                    )
                rows.append(row)
        return pd.DataFrame(rows)

    def sites(self) -> pd.DataFrame:
        """Enrolled sites and whether they are connected."""
        return pd.DataFrame(self._check(self._http.get("/v1/sites")))

    def schema(self) -> pd.DataFrame:
        """Queryable fields and the sites exposing them."""
        return pd.DataFrame(self._check(self._http.get("/v1/schema")))

    def _study_declarations(self) -> dict[str, dict[str, Any]]:
        """The study fields of your projects the sites publish, by name (``GET /v1/schema``)."""
        records = self._check(self._http.get("/v1/schema"))
        return {r["name"]: r["study"] for r in records if r.get("study")}

    # --- federated training ---------------------------------------------------------------

    def start_training(self, spec: TrainingSpec | Mapping[str, Any]) -> TrainingStatus:
        """Submit a training job (``POST /v1/trainings``); the gateway refuses it saying why."""
        job = training_spec(spec, {}, self._study_declarations)
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
        with bar if bar is not None else NoBar():
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
        job = training_spec(spec, fields, self._study_declarations)
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
