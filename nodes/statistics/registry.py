"""Every releasable statistic, found by the query kind it answers.

Adding a statistic means adding its module and one entry here; the pipeline,
the pricing of previews and aggregate mode all find it through :func:`statistic`.
"""

from __future__ import annotations

from nodes.statistics.base import Statistic
from nodes.statistics.counts import COUNTS
from nodes.statistics.funnel import FUNNEL
from nodes.statistics.quantiles import QUANTILE
from nodes.statistics.sums import MEAN, SUM
from nodes.statistics.survival import SURVIVAL

STATISTICS: dict[str, Statistic] = {
    kind: stat for stat in (COUNTS, SUM, MEAN, FUNNEL, QUANTILE, SURVIVAL) for kind in stat.kinds
}
"""Every releasable statistic, by the query kind it answers."""


def statistic(kind: str) -> Statistic:
    """The statistic that answers queries of ``kind``."""
    found = STATISTICS.get(kind)
    if found is None:  # the query language and this table are out of step: a bug
        raise TypeError(f"no statistic answers kind {kind!r}")
    return found
