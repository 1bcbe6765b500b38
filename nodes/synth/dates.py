"""The diagnosis window, the extraction date, and day arithmetic over whole arrays.

Dates are integer days since 1970-01-01 while a registry is drawn; they become
``datetime64`` only in the finished frame.
"""

from __future__ import annotations

from datetime import date
from typing import Final

import numpy as np

from nodes.synth.codes import Ints

DIAGNOSIS_START: Final = date(2010, 1, 1)
"""First possible diagnosis date."""
DIAGNOSIS_END: Final = date(2025, 12, 31)
"""Last possible diagnosis date."""
DATA_AS_OF: Final = date(2026, 6, 30)
"""Follow-up is censored here: the registry's extraction date."""

_LAST_YEAR: Final = DIAGNOSIS_END.year
_DAY_EPOCH: Final = np.datetime64("1970-01-01", "D")


def _day(d: date) -> int:
    """Days since 1970-01-01, the integer date representation used throughout."""
    return int((np.datetime64(d, "D") - _DAY_EPOCH).astype(np.int64))


_START_DAY: Final = _day(DIAGNOSIS_START)
_END_DAY: Final = _day(DIAGNOSIS_END)
_AS_OF_DAY: Final = _day(DATA_AS_OF)
_MAX_LAG_DAYS: Final = _AS_OF_DAY - _END_DAY - 1  # censoring never precedes a diagnosis
_DAYS_PER_YEAR: Final = 365.25


def _ymd(days: Ints) -> tuple[Ints, Ints, Ints]:
    """Year, month and day of days since 1970-01-01 (proleptic Gregorian).

    Integer arithmetic (H. Hinnant's ``civil_from_days``) because numpy's datetime64 unit
    casts are several times slower on a million rows.
    """
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def _completed_years(birth: Ints, on: Ints) -> Ints:
    """Age in whole years on day ``on`` of someone born on day ``birth``."""
    by, bm, bd = _ymd(birth)
    oy, om, od = _ymd(on)
    before_birthday = (om * 32 + od) < (bm * 32 + bd)
    return oy - by - before_birthday.astype(np.int64)
