"""``varde node check-data``: what a site's data look like through its mapping, printed locally.

Why a report of its own: before a node serves anything, staff need to see, in
one place, how many rows were read and rejected and why, how much of each field
is missing, which rows contradict themselves, and one verdict. Nothing here is
sent anywhere; the node runs the same checks at start (:func:`verdict_of`) and
refuses data that fail a hard one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field

from nodes.mapping.contradictions import check_contradictions
from nodes.mapping.loader import load_mapping
from nodes.mapping.model import SiteMapping
from nodes.mapping.reader import load_site, mapping_base
from nodes.mapping.transform import ProblemLog
from varde.schema import FIELDS

Verdict = Literal["ok", "warnings", "fail"]


class Finding(BaseModel):
    """One rule broken by some rows (a rejected value, or a contradiction)."""

    field: str
    column: str | None
    rule: str
    detail: str
    rows: int
    examples: list[str]
    hard: bool
    first_rows: list[int] = Field(default=[], description="First rows found (1 = first data row).")


class DataReport(BaseModel):
    """The whole report of one site's data (what :func:`check_data` returns)."""

    site: str
    source: str
    rows_read: int
    rows_rejected: int
    findings: list[Finding] = Field(default=[])
    missing_share: dict[str, float] = Field(default={}, description="Field -> share missing.")
    not_available: list[str] = Field(default=[])
    load_error: str | None = None

    @property
    def verdict(self) -> Verdict:
        """``fail`` on any hard finding, ``warnings`` on soft ones only, else ``ok``."""
        if self.load_error or any(f.hard for f in self.findings):
            return "fail"
        return "warnings" if self.findings else "ok"

    def summary(self) -> str:
        """The one-line verdict."""
        hard = sum(f.rows for f in self.findings if f.hard)
        soft = sum(f.rows for f in self.findings if not f.hard)
        if self.verdict == "fail":
            why = (
                self.load_error.splitlines()[0]
                if self.load_error
                else f"{hard:,} hard finding(s) in rows"
            )
            return f"verdict: FAIL - {why}; the node will not start on these data"
        if self.verdict == "warnings":
            return f"verdict: WARNINGS - {soft:,} row finding(s) worth a look; the node starts"
        return f"verdict: OK - {self.rows_read:,} rows usable"

    def render(self) -> str:
        """The report as text (what the command prints)."""
        out = [f"site {self.site}: {self.source}", f"rows read: {self.rows_read:,}"]
        out.append(f"rows rejected: {self.rows_rejected:,}")
        if self.load_error:
            out.append(f"error: {self.load_error}")
        for title, hard in (("rejected / hard", True), ("warnings / soft", False)):
            group = [f for f in self.findings if f.hard is hard]
            if group:
                out.append(f"{title}:")
                for f in sorted(group, key=lambda f: -f.rows):
                    col = f" (column {f.column!r})" if f.column and f.column != f.field else ""
                    eg = f", e.g. {', '.join(f.examples)}" if f.examples else ""
                    at = f" (rows {', '.join(map(str, f.first_rows))})" if f.first_rows else ""
                    out.append(f"  {f.rule:<32} {f.rows:>8,}  {f.field}{col}: {f.detail}{eg}{at}")
        if self.not_available:
            out.append(f"not available at this site: {', '.join(self.not_available)}")
        if self.missing_share:
            shown = [f"{n} {s:.1%}" for n, s in self.missing_share.items() if s > 0]
            out.append("missing per field: " + (", ".join(shown) if shown else "none"))
        out.append(self.summary())
        return "\n".join(out)


def _findings(log: ProblemLog) -> list[Finding]:
    return [
        Finding(
            field=p.field,
            column=p.column,
            rule=p.rule,
            detail=p.detail,
            rows=p.count,
            examples=p.examples,
            hard=p.hard,
            first_rows=p.first_rows,
        )
        for p in log.problems.values()
    ]


def missing_shares(frame: pd.DataFrame, fields: list[str]) -> dict[str, float]:
    """Share of missing values per field (0.0 .. 1.0)."""
    n = max(len(frame), 1)
    return {name: float(frame[name].isna().sum()) / n for name in fields}


def check_data(
    mapping: SiteMapping | Path, data_override: Path | None = None, *, base: Path | None = None
) -> DataReport:
    """Read the site's source through ``mapping`` and report on it (nothing leaves the machine).

    A source that cannot be opened is reported as a ``fail`` with its error.
    """
    from nodes.mapping.loader import MappingError

    if isinstance(mapping, Path):
        base = mapping_base(mapping)
        mapping = load_mapping(mapping)
    try:
        load = load_site(mapping, base or Path.cwd(), data_override)
    except MappingError as err:
        return DataReport(
            site=mapping.site,
            source=str(data_override or mapping.source.kind),
            rows_read=0,
            rows_rejected=0,
            load_error=str(err),
            not_available=list(mapping.not_available),
        )
    provided = [f.name for f in FIELDS if f.name in mapping.provided]
    frame = load.checked
    return DataReport(
        site=mapping.site,
        source=load.source,
        rows_read=load.log.rows_read,
        rows_rejected=load.log.rejected_rows,
        findings=_findings(load.log),
        missing_share=missing_shares(frame, provided) if frame is not None else {},
        not_available=list(mapping.not_available),
        load_error=load.conform_error,
    )


def check_registry_frame(frame: pd.DataFrame, *, site: str, source: str) -> DataReport:
    """The same cross-field report for a common-schema file read without a mapping."""
    log = ProblemLog(rows_read=len(frame))
    available = frozenset(frame.columns) - set(frame.attrs.get("not_available", []))
    check_contradictions(frame, available, log)
    return DataReport(
        site=site,
        source=source,
        rows_read=len(frame),
        rows_rejected=log.rejected_rows,
        findings=_findings(log),
        missing_share=missing_shares(frame, [f.name for f in FIELDS if f.name in available]),
    )
