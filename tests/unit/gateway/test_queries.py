"""Evidence of releases no query took: kept once, however often a node re-sends it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import func, select

from gateway.core.config import Settings
from gateway.core.db import ReleaseRecord
from gateway.queries import keep_evidence
from gateway.state import GatewayState
from tests.unit.gateway.test_dispatch_pg import KEY, release
from varde.envelope import SignedEnvelope, seal
from varde.release import SiteRelease

TTL = dt.timedelta(seconds=30)


def sealed(rel: SiteRelease) -> SignedEnvelope:
    body = rel.model_dump(mode="json")
    return seal(KEY, kind="release", sender=rel.site, recipient="gateway", body=body, ttl=TTL)


def test_a_release_re_sent_signed_afresh_is_kept_once(tmp_path: Path) -> None:
    state = GatewayState.open(Settings(state_dir=tmp_path))
    try:
        first = release("q1", "oslo")
        keep_evidence(state, *first)
        keep_evidence(state, *release("q1", "oslo"))  # the same release, a new signature
        keep_evidence(state, *first)  # the very same envelope again
        other = SiteRelease(query_id="q1", site="oslo", status="error", message="late")
        keep_evidence(state, other, sealed(other))  # another release of that item: kept too
        keep_evidence(state, *release("q1", "bergen"))  # another site: kept
        with state.sessions() as s:
            rows = s.execute(
                select(ReleaseRecord.site, func.count()).group_by(ReleaseRecord.site)
            ).all()
        assert dict(rows) == {"oslo": 2, "bergen": 1}
    finally:
        state.engine.dispose()
