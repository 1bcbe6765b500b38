"""``varde query`` built from flags, from YAML and from stdin, in every output format, live.

Previews charge nothing, so most checks preview; the one real query spends a
small epsilon and is then asked again in the other formats (the repeat is
answered from each site's release cache, with no new charge).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from launcher.cli import app
from launcher.network import LocalNetwork
from tests.integration.conftest import charges_everywhere
from varde.results import QueryResult
from varde_client import QueryResponse, VardeClient

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]

runner = CliRunner()
COHORT = "topography^=C34 and stage=IV and age_at_diagnosis in 18..75"
FLAGS = ["--project", "nsclc-feasibility", "--cohort", COHORT, "--statistic", "histogram",
         "--field", "egfr", "--by", "sex"]  # fmt: skip
SPEC = {
    "project": "nsclc-feasibility",
    "cohort": {
        "op": "and",
        "args": [
            {"op": "startswith", "field": "topography", "prefix": "C34"},
            {"op": "eq", "field": "stage", "value": "IV"},
            {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
        ],
    },
    "statistic": {"kind": "histogram", "field": "egfr"},
    "group_by": ["sex"],
    "privacy": {"mode": "dp", "epsilon": 0.02},
}
YAML_SPEC = """\
project: nsclc-feasibility
cohort:
  op: and
  args:
    - {op: startswith, field: topography, prefix: C34}
    - {op: eq, field: stage, value: IV}
    - {op: between, field: age_at_diagnosis, low: 18, high: 75}
statistic: {kind: histogram, field: egfr}
group_by: [sex]
privacy: {mode: dp, epsilon: 0.02}
"""


def varde_query(network: LocalNetwork, *args: str, stdin: str | None = None) -> str:
    result = runner.invoke(
        app, ["query", *args, "--gateway", network.url, "--token", network.token], input=stdin
    )
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_preview_from_flags_is_the_preview_of_the_same_json(
    network: LocalNetwork, client: VardeClient
) -> None:
    before = charges_everywhere(network)
    shown = json.loads(varde_query(network, *FLAGS, "--epsilon", "0.02", "--preview",
                                   "--format", "json"))  # fmt: skip
    expected = client.preview(SPEC)
    assert [row["site"] for row in shown] == list(expected["site"])
    assert [row["epsilon"] for row in shown] == pytest.approx(list(expected["epsilon"]))
    assert [row["pm95_count"] for row in shown] == pytest.approx(list(expected["pm95_count"]))
    assert {row["site"] for row in shown} == {*network.sites, "network"}
    assert all(row["pm95_count"] > 0 for row in shown)
    table = varde_query(network, *FLAGS, "--epsilon", "0.02", "--preview")
    assert "pm95_count" in table and all(site in table for site in network.sites)
    rows = list(csv.DictReader(io.StringIO(
        varde_query(network, *FLAGS, "--epsilon", "0.02", "--preview", "--format", "csv")
    )))  # fmt: skip
    assert [r["site"] for r in rows] == [row["site"] for row in shown]
    assert float(rows[0]["epsilon"]) == pytest.approx(0.02)
    assert charges_everywhere(network) == before  # a preview charges nothing


def test_yaml_file_and_stdin_read_the_same_query(network: LocalNetwork, tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(YAML_SPEC)
    from_yaml = varde_query(network, str(path), "--preview", "--format", "csv")
    from_stdin = varde_query(network, "-", "--preview", "--format", "csv", stdin=json.dumps(SPEC))
    from_yaml_stdin = varde_query(network, "-", "--preview", "--format", "csv", stdin=YAML_SPEC)
    assert from_yaml == from_stdin == from_yaml_stdin
    assert from_yaml.splitlines()[0].startswith("site,status,epsilon")


def test_a_query_from_flags_in_every_format(network: LocalNetwork) -> None:
    before = charges_everywhere(network)
    args = [*FLAGS, "--epsilon", "0.02", "--sites", "oslo,bergen"]
    raw = json.loads(varde_query(network, *args, "--format", "json"))
    result = QueryResult.model_validate(raw)
    assert result.statistic == "histogram" and {s.site for s in result.sites} == {"oslo", "bergen"}
    assert all(s.status == "ok" for s in result.sites) and result.network is not None
    after = charges_everywhere(network)
    assert {site: after[site] - before[site] for site in after} == {
        "oslo": 1, "bergen": 1, "trondheim": 0
    }  # fmt: skip
    frame = pd.read_csv(io.StringIO(varde_query(network, *args, "--format", "csv")))
    assert set(frame["site"]) == {"oslo", "bergen", "network"}
    assert {"sex", "egfr", "value", "ci_low", "ci_high"} <= set(frame.columns)
    sdk = QueryResponse(raw).frame()  # the SDK's frame of the first answer: the cache's numbers
    assert list(frame["value"]) == pytest.approx(list(sdk["value"]))
    assert list(frame["site"]) == list(sdk["site"])
    table = varde_query(network, *args)
    assert "NETWORK" in table and "network 95% CI" in table and "sex x egfr" in table
    assert charges_everywhere(network) == after  # the repeats were answered from the cache


def test_accuracy_target_preview(network: LocalNetwork) -> None:
    args = ["--project", "nsclc-feasibility", "--cohort", COHORT, "--accuracy", "10"]
    shown = json.loads(varde_query(network, *args, "--preview", "--format", "json"))
    sites = [row for row in shown if row["site"] != "network"]
    assert {row["site"] for row in sites} == set(network.sites)
    for row in sites:
        assert row["status"] == "ok", row
        assert 0 < row["epsilon"] and row["pm95_count"] <= 10 + 1e-9
