"""Budget periods: which ledger account a charge goes to, so a budget can renew.

A site's policy gives each project a ``budget_period``. ``lifetime`` budgets never
renew. ``year``, ``quarter`` and ``month`` budgets renew at the start of each
calendar period (UTC): the project's ``epsilon_budget`` is then what it may
spend *per period*, and each period is its own account in the ledger (whose
``period`` key exists for exactly this). Spent budget is never moved or
forgotten: last quarter's charges stay in last quarter's account, so the audit
of what was released when is unchanged.

>>> import datetime as dt
>>> now = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
>>> [period_key(p, now) for p in ("lifetime", "year", "quarter", "month")]
['lifetime', '2026', '2026-Q4', '2026-11']
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

BudgetPeriod = Literal["lifetime", "year", "quarter", "month"]


def period_key(period: BudgetPeriod, now: dt.datetime) -> str:
    """The ledger account key of ``period`` at time ``now`` (UTC calendar)."""
    if now.tzinfo is None:
        raise ValueError("period_key needs a timezone-aware time")
    at = now.astimezone(dt.UTC)
    if period == "lifetime":
        return "lifetime"
    if period == "year":
        return f"{at.year}"
    if period == "quarter":
        return f"{at.year}-Q{(at.month - 1) // 3 + 1}"
    if period == "month":
        return f"{at.year}-{at.month:02d}"
    raise ValueError(f"unknown budget period {period!r}")


def period_dates(period: BudgetPeriod, now: dt.datetime) -> tuple[dt.date, dt.date] | None:
    """First and last day (UTC) of the budget period containing ``now``; None for lifetime.

    >>> now = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    >>> [period_dates(p, now) for p in ("quarter", "month")]
    [(datetime.date(2026, 10, 1), datetime.date(2026, 12, 31)), (datetime.date(2026, 11, 1), datetime.date(2026, 11, 30))]
    """  # noqa: E501
    if now.tzinfo is None:
        raise ValueError("period_dates needs a timezone-aware time")
    at = now.astimezone(dt.UTC).date()
    if period == "lifetime":
        return None
    if period == "year":
        return dt.date(at.year, 1, 1), dt.date(at.year, 12, 31)
    first_month = (at.month - 1) // 3 * 3 + 1 if period == "quarter" else at.month
    if period not in ("quarter", "month"):
        raise ValueError(f"unknown budget period {period!r}")
    months = 3 if period == "quarter" else 1
    start = dt.date(at.year, first_month, 1)
    after = first_month + months
    end = dt.date(at.year + (after > 12), (after - 1) % 12 + 1, 1) - dt.timedelta(days=1)
    return start, end


def renews_on(period: BudgetPeriod, now: dt.datetime) -> dt.date | None:
    """First day (UTC) of the period after the one containing ``now``; None for lifetime.

    >>> renews_on("quarter", dt.datetime(2026, 11, 23, tzinfo=dt.UTC))
    datetime.date(2027, 1, 1)
    """
    dates = period_dates(period, now)
    return None if dates is None else dates[1] + dt.timedelta(days=1)
