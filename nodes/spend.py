"""Who spent this site's privacy budget, on what: the audit trail summed per researcher or project.

Why from the audit trail and not the ledger: the ledger knows amounts per
project, the trail also knows who asked (every ``charged`` entry names the
researcher, the question and the policy version; see :mod:`nodes.question`),
and it is the record the data-protection officer can verify
(``varde audit verify``). ``varde audit report`` and the console's spend page
both print :func:`spend_report`; the console's chart draws :func:`spend_series`.

Amounts are summed per *measure* (epsilon and rho never add up), one row per
researcher or project and measure, then a total row per measure. An entry
written before researchers were recorded on charges (or a charge recovered
after a crash) is attributed through the ``work_received`` entry of the same
work item; failing that, to ``(unknown)``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from nodes.audit import AuditEntry

__all__ = [
    "RELEASE_KINDS",
    "By",
    "SpendRow",
    "render_csv",
    "render_table",
    "spend_report",
    "spend_series",
]

By = Literal["researcher", "project"]
RELEASE_KINDS = ("charged", "released", "released_from_cache", "work_received")
"""The entry kinds a report reads (``work_received`` only to name who asked)."""

UNKNOWN = "(unknown)"
TOTAL = "TOTAL"
_NEW_RELEASES = {"training round", "evaluation"}
"""Charges that are releases in themselves (a query's release has its own entry)."""


@dataclass(frozen=True)
class SpendRow:
    """What one researcher (or project) spent of one measure, and how often numbers left."""

    key: str
    measure: str
    """``epsilon``, ``rho``, or ``none`` for aggregate-mode releases (no DP budget)."""
    spent: float
    charges: int
    releases: int
    """Releases that put new numbers out: DP and aggregate queries, training rounds, evaluations."""
    repeats: int
    """Repeats answered from the release cache (the same numbers again, nothing charged)."""
    first: dt.datetime | None
    last: dt.datetime | None


@dataclass
class _Acc:
    spent: float = 0.0
    charges: int = 0
    releases: int = 0
    repeats: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None

    def saw(self, at: dt.datetime) -> None:
        self.first = at if self.first is None or at < self.first else self.first
        self.last = at if self.last is None or at > self.last else self.last


def _researchers(entries: list[AuditEntry]) -> dict[str, str]:
    return {
        e.query_id: str(e.data["researcher"])
        for e in entries
        if e.kind == "work_received" and e.data.get("researcher")
    }


def _who(e: AuditEntry, by: By, asked_by: dict[str, str]) -> str:
    if by == "project":
        return e.project or UNKNOWN
    return str(e.data.get("researcher") or asked_by.get(e.query_id) or UNKNOWN)


def _measure(e: AuditEntry) -> str:
    data = e.data
    if data.get("measure"):
        return str(data["measure"])
    charged = data.get("charged")  # entries written before the measure was recorded
    if isinstance(charged, dict) and charged:
        return "rho" if "rho" in charged else "epsilon"
    return "none"


def _events(
    entries: Iterable[AuditEntry], by: By, since: dt.datetime | None
) -> list[tuple[str, str, AuditEntry]]:
    """(who, measure, entry) of every charge and release at or after ``since``."""
    listed = list(entries)
    asked_by = _researchers(listed)
    out = []
    for e in listed:
        if e.kind not in {"charged", "released", "released_from_cache"}:
            continue
        if since is not None and e.at < since:
            continue
        out.append((_who(e, by, asked_by), _measure(e), e))
    return out


def spend_report(
    entries: Iterable[AuditEntry], *, by: By, since: dt.datetime | None = None
) -> list[SpendRow]:
    """Spend per researcher (or project) and measure, sorted by key, then a total per measure."""
    if by not in ("researcher", "project"):
        raise ValueError(f"a spend report is by researcher or by project, not {by!r}")
    rows: dict[tuple[str, str], _Acc] = {}
    for who, measure, e in _events(entries, by, since):
        acc = rows.setdefault((who, measure), _Acc())
        acc.saw(e.at)
        if e.kind == "charged":
            acc.spent += float(e.data.get("amount", 0.0))
            acc.charges += 1
            acc.releases += e.data.get("what") in _NEW_RELEASES
        elif e.kind == "released":
            acc.releases += 1
        else:
            acc.repeats += 1
    out = [
        SpendRow(k, m, a.spent, a.charges, a.releases, a.repeats, a.first, a.last)
        for (k, m), a in sorted(rows.items())
    ]
    for measure in sorted({m for _, m in rows}):
        mine = [r for r in out if r.measure == measure]
        firsts = [r.first for r in mine if r.first is not None]
        lasts = [r.last for r in mine if r.last is not None]
        out.append(
            SpendRow(
                TOTAL,
                measure,
                sum(r.spent for r in mine),
                sum(r.charges for r in mine),
                sum(r.releases for r in mine),
                sum(r.repeats for r in mine),
                min(firsts) if firsts else None,
                max(lasts) if lasts else None,
            )
        )
    return out


def spend_series(
    entries: Iterable[AuditEntry], *, by: By, since: dt.datetime | None = None
) -> dict[str, dict[str, list[tuple[dt.datetime, float]]]]:
    """Cumulative spend over time: ``{measure: {who: [(time, spent so far), ...]}}`` (charges)."""
    out: dict[str, dict[str, list[tuple[dt.datetime, float]]]] = {}
    for who, measure, e in _events(entries, by, since):
        if e.kind != "charged":
            continue
        line = out.setdefault(measure, {}).setdefault(who, [])
        before = line[-1][1] if line else 0.0
        line.append((e.at, before + float(e.data.get("amount", 0.0))))
    return out


_HEAD = ["spent", "charges", "releases", "repeats", "first (UTC)", "last (UTC)"]


def _cells(row: SpendRow) -> list[str]:
    def when(t: dt.datetime | None) -> str:
        return "" if t is None else t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")

    spent = "" if row.measure == "none" else f"{row.spent:.6g}"
    return [
        row.key,
        row.measure,
        spent,
        str(row.charges),
        str(row.releases),
        str(row.repeats),
        when(row.first),
        when(row.last),
    ]


def render_table(rows: list[SpendRow], *, by: By) -> str:
    """The report as an aligned text table (what ``varde audit report`` prints)."""
    if not rows:
        return "nothing was charged or released in this period"
    table = [[by, "measure", *_HEAD], *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    numeric = {2, 3, 4, 5}
    lines = [
        "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    ]
    return "\n".join(lines)


def render_csv(rows: list[SpendRow], *, by: By) -> str:
    """The report as CSV (full precision, ISO times), for a spreadsheet."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([by, "measure", "spent", "charges", "releases", "repeats", "first", "last"])
    for r in rows:
        writer.writerow(
            [
                r.key,
                r.measure,
                repr(r.spent),
                r.charges,
                r.releases,
                r.repeats,
                "" if r.first is None else r.first.isoformat(),
                "" if r.last is None else r.last.isoformat(),
            ]
        )
    return buf.getvalue()
