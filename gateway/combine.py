"""Combine per-site releases into the network row. Only released numbers come in.

The pooling rule of each statistic (add counts, pool a mean's parts, pool a
quantile's or a survival curve's counts) is :mod:`varde.pooling`; this module
picks the sites that released and says what each charged.
"""

from __future__ import annotations

from varde.pooling import pool
from varde.query import Query
from varde.release import SiteRelease
from varde.results import NetworkRow


def combine(query: Query, releases: list[SiteRelease]) -> NetworkRow | None:
    """The network row from the sites whose status is ``ok``; None if there are none."""
    ok = [r for r in releases if r.status == "ok"]
    if not ok:
        return None
    return NetworkRow(
        sites=[r.site for r in ok],
        spent={r.site: r.charged for r in ok if r.charged is not None},
        cells=pool(query.statistic, ok),
    )
