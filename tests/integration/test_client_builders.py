"""The SDK's statistic methods against the real network: each answers, charges what it asked.

Budget: every charged query here goes to ``breast-outcomes`` at Oslo only (budget 5.0,
0.05 a query, 0.4 in all). The other tests of this network spend ``breast-outcomes`` at
Bergen only (test_faults exhausts it there and expects it untouched before) and ask Oslo
for it in aggregate mode, which spends nothing; ``nsclc-feasibility``, which they spend,
is not touched here.
"""

from __future__ import annotations

import pytest

from launcher.network import LocalNetwork
from varde_client import Field, UnknownCategory, UnknownField, VardeClient, parse_cohort_text
from varde_client.frames import QueryResponse

from .conftest import ledger_of

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]

PROJECT = "breast-outcomes"
EPS = 0.05
ASK = {"project": PROJECT, "epsilon": EPS, "sites": ["oslo"]}
BREAST = Field("cancer_type") == "breast"


def _spent(network: LocalNetwork) -> float:
    led = ledger_of(network, "oslo")
    try:
        return led.spent(PROJECT)
    finally:
        led.close()


def test_each_statistic_method_answers_and_charges_its_epsilon(
    network: LocalNetwork, client: VardeClient
) -> None:
    before = _spent(network)
    later_stage = parse_cohort_text("cancer_type=breast and stage in (II, III, IV)")
    answers = {
        "count": client.count(BREAST, by="stage", **ASK),
        "survival": client.survival(later_stage, months=24, interval=12, **ASK),
        "funnel": client.funnel(
            [
                ("breast", BREAST),
                ("stage II-IV", Field("stage").isin(["II", "III", "IV"])),
                ("age 18-75", Field("age_at_diagnosis").between(18, 75)),
            ],
            **ASK,
        ),
        "quantile": client.quantile("age_at_diagnosis", range(0, 111, 10), BREAST, **ASK),
        "crosstab": client.crosstab(["stage", "her2"], BREAST, **ASK),
        "mean": client.mean("age_at_diagnosis", 0, 110, BREAST, **ASK),
        "sum": client.sum("days_to_treatment", 0, 365, BREAST, **ASK),
        "histogram": client.histogram("age_at_diagnosis", BREAST, bins=[0, 50, 70, 110], **ASK),
    }
    for kind, res in answers.items():
        assert isinstance(res, QueryResponse), kind
        assert res.raw["statistic"] == kind
        (site,) = res.raw["sites"]
        assert site["site"] == "oslo" and site["status"] == "ok", (kind, site)
        assert site["charged"] == {"epsilon": pytest.approx(EPS)}, kind
        assert not res.frame().empty
    funnel = answers["funnel"].frame()
    assert list(funnel[funnel.site == "oslo"]["step"]) == ["breast", "stage II-IV", "age 18-75"]
    assert _spent(network) == pytest.approx(before + len(answers) * EPS)


def test_preview_and_typos_charge_nothing(network: LocalNetwork, client: VardeClient) -> None:
    before = _spent(network)
    # a question no test asks (a repeat would be previewed at its cached price: nothing)
    frame = client.count(BREAST & (Field("her2") == "positive"), by="grade", preview=True, **ASK)
    assert frame.attrs["measure"] == "epsilon"
    oslo = frame.set_index("site").loc["oslo"]
    assert oslo["status"] == "ok" and oslo["epsilon"] == pytest.approx(EPS)
    assert oslo["pm95_count"] > 0
    with pytest.raises(UnknownField, match="did you mean 'stage'"):
        client.count(Field("stge") == "IV", **ASK)
    with pytest.raises(UnknownCategory, match="did you mean 'positive'"):
        client.histogram("her2", BREAST, categories=["positiv"], **ASK)
    assert _spent(network) == before
