"""Study fields over real processes: Oslo's mapping provides two, Bergen's data have neither.

Both sites' policies declare the fields for the project; the researcher names them like
schema fields. The gateway completes the query with the declarations the sites publish,
Oslo answers, Bergen refuses by name and is charged nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from launcher.network import DEFAULT_POLICIES, LocalNetwork
from nodes.synth import generate_registry
from varde.schema import FIELDS
from varde_client import Field, UnknownCategory, VardeClient, VardeHTTPError

from .conftest import charges_everywhere

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("study_fields")]

SITES = ["oslo", "bergen"]
PROJECT = "nsclc-feasibility"
ARM = {"name": "trial_arm", "kind": "categorical", "categories": ["A", "B"]}
CRP = {"name": "crp", "kind": "bounded", "lower": 0.0, "upper": 200.0, "unit": "mg/L"}


def _oslo_mapping(workdir: Path) -> Path:
    """Oslo's registry as a CSV with two study columns, read through a mapping."""
    frame = generate_registry("oslo", 4_000, seed=3)
    rng = np.random.default_rng(1)
    frame["trial_arm"] = rng.choice(["A", "B"], size=len(frame))
    frame["crp"] = np.round(rng.gamma(2.0, 20.0, size=len(frame)), 1)
    frame.to_csv(workdir / "oslo.csv", index=False)
    mapping = {
        "site": "oslo",
        "source": {"kind": "csv", "path": "oslo.csv"},
        "fields": {f.name: {"column": f.name} for f in FIELDS},
        "study_fields": {
            "trial_arm": {"column": "trial_arm", "kind": "categorical"},
            "crp": {"column": "crp", "kind": "number"},
        },
    }
    path = workdir / "oslo-mapping.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


@pytest.fixture(scope="module")
def study_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    workdir = tmp_path_factory.mktemp("study")
    policies = {}
    for site in SITES:
        policy = yaml.safe_load((DEFAULT_POLICIES / f"{site}.yaml").read_text())
        policy["projects"][PROJECT]["study_fields"] = [ARM, CRP]
        path = workdir / f"{site}.yaml"
        path.write_text(yaml.safe_dump(policy))
        policies[site] = path
    net = LocalNetwork(
        workdir=workdir,
        sites=SITES,
        rows=4_000,
        seed=5,
        policies=policies,
        mappings={"oslo": _oslo_mapping(workdir)},
    )
    net.start()
    yield net
    net.stop()


@pytest.fixture(scope="module")
def study_client(study_net: LocalNetwork) -> Iterator[VardeClient]:
    with VardeClient(study_net.url, study_net.token, timeout=60) as c:
        yield c


def _query(**parts: Any) -> dict[str, Any]:
    return {
        "project": PROJECT,
        "statistic": {"kind": "count"},
        "unit": "patients",
        "privacy": {"mode": "dp", "epsilon": 0.3},
        **parts,
    }


def test_a_site_with_the_column_answers_the_other_refuses_it_by_name(
    study_net: LocalNetwork, study_client: VardeClient
) -> None:
    before = charges_everywhere(study_net)
    res = study_client.query(
        _query(
            cohort={"op": "between", "field": "crp", "low": 5, "high": 150},
            group_by=["trial_arm"],
        )
    )
    rows = {s.site: s for s in res.result.sites}
    assert rows["oslo"].status == "ok", rows["oslo"].message
    assert [c.labels for c in rows["oslo"].cells] == [["A"], ["B"]]
    assert rows["bergen"].status == "field_not_available"
    assert "trial_arm" in rows["bergen"].message and "crp" in rows["bergen"].message
    assert res.result.network is not None and res.result.network.sites == ["oslo"]
    after = charges_everywhere(study_net)
    assert after["oslo"] == before["oslo"] + 1
    assert after["bergen"] == before["bergen"]  # refused uncharged
    stored = study_client._http.get(f"/v1/queries/{res.result.query_id}").json()
    # the gateway completed the query with the declarations the sites publish
    assert [f["name"] for f in stored["spec"]["study_fields"]] == ["crp", "trial_arm"]


def test_a_bounded_study_field_is_averaged_over_its_declared_bounds(
    study_client: VardeClient,
) -> None:
    res = study_client.query(
        _query(statistic={"kind": "mean", "field": "crp", "lower": 0, "upper": 200}, sites=["oslo"])
    )
    (oslo,) = res.result.sites
    assert oslo.status == "ok", oslo.message
    assert oslo.cells[0].value is not None and 20 < oslo.cells[0].value < 60  # gamma(2, 20)


def test_a_name_no_site_declares_is_refused_before_any_site(study_client: VardeClient) -> None:
    with pytest.raises(VardeHTTPError) as err:
        study_client.query(_query(group_by=["ecog"]))
    assert err.value.status == 422
    assert "unknown field 'ecog'" in str(err.value)


def test_the_sdk_sees_the_study_fields_and_its_builders_name_them(
    study_client: VardeClient,
) -> None:
    schema = study_client.schema()
    arm = schema[schema.name == "trial_arm"].iloc[0]
    assert arm.kind == "categorical" and list(arm.categories) == ["A", "B"]
    assert arm.sites == ["oslo"] and arm.project == PROJECT
    crp = schema[schema.name == "crp"].iloc[0]
    assert (crp.kind, crp.lower, crp.upper) == ("integer", 0.0, 200.0)
    res = study_client.count(
        Field("crp") >= 20, by="trial_arm", project=PROJECT, unit="patients", epsilon=0.3
    )
    rows = {s.site: s for s in res.result.sites}
    assert rows["oslo"].status == "ok" and rows["bergen"].status == "field_not_available"
    with pytest.raises(UnknownCategory, match="unknown category 'C'"):  # checked before sending
        study_client.count(Field("trial_arm") == "C", project=PROJECT, epsilon=0.3)
