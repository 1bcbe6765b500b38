"""The researcher's Python client: send a query, get pandas DataFrames back.

>>> # client = VardeClient("http://127.0.0.1:8700", token)
>>> # res = client.query({"project": "nsclc", "statistic": {"kind": "count"},
>>> #                     "privacy": {"mode": "dp", "epsilon": 0.5}})
>>> # res.frame()          # one row per site and cell, plus the network rows
"""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd

from varde.query import Query


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

    def budgets(self) -> pd.DataFrame:
        """Epsilon budget, cap and remainder per project and site."""
        data = self._check(self._http.get("/v1/budgets"))["projects"]
        rows = [
            {"project": p, "site": s, **(terms or {"epsilon_budget": None})}
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

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> VardeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
