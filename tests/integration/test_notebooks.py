"""The notebooks in ``notebooks/`` run top to bottom on a real network, as researchers run them.

One :class:`~launcher.network.LocalNetwork` with Flower (``training=True``: the model notebook
trains on it), registries of 50,000 tumours as in the demo. Each notebook runs with ``nbclient`` in
a fresh IPython kernel of *this* interpreter: the test writes a ``python3`` kernelspec naming
``sys.executable`` into a directory of its own and puts it first on ``JUPYTER_PATH``, so no kernel
installed elsewhere on the machine (another Python) is picked up. The kernel gets
``VARDE_GATEWAY`` and ``VARDE_TOKEN``, so the notebooks connect to this network and start none of
their own. A cell that raises fails the test (nbclient raises ``CellExecutionError`` with the
cell and its traceback).

After a notebook's last cell the test runs one more cell of its own in the same kernel, which
prints as JSON what the notebook computed; the assertions read that and the notebook's own
outputs (its plots are PNG images). All three notebooks spend project ``nsclc-feasibility`` on
the one network, so they also show that together they stay within every site's budget.

Also: the committed notebooks carry no outputs and no execution counts, and each is run here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

from launcher.demo import DEMO_PROJECT, SITES, USER_PROJECT
from launcher.network import LocalNetwork

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
EXECUTED = ("feasibility", "survival", "federated_model")
"""Every notebook in ``notebooks/``, each run by a test below."""

PROBE_MARK = "__varde_probe__"


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    net = LocalNetwork(
        workdir=tmp_path_factory.mktemp("notebook-net"),
        sites=SITES,
        rows=50_000,
        seed=0,
        training=True,
        extra_projects={DEMO_PROJECT: USER_PROJECT},
    )
    try:
        net.start()
        yield net
    finally:
        net.stop()


@pytest.fixture(scope="module")
def kernel_env(
    network: LocalNetwork, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The kernel's environment; this process's Jupyter paths point at a kernelspec of our own."""
    jupyter = tmp_path_factory.mktemp("jupyter")
    spec = jupyter / "data" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (test)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(jupyter / "data"))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(jupyter / "runtime"))
        mp.setenv("JUPYTER_CONFIG_DIR", str(jupyter / "config"))
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        mp.setenv("IPYTHONDIR", str(jupyter / "ipython"))
        yield {**os.environ, "VARDE_GATEWAY": network.url, "VARDE_TOKEN": network.token}


def run_notebook(
    name: str, env: dict[str, str], probe: str, *, until: str | None = None
) -> tuple[NotebookNode, dict[str, Any]]:
    """Execute ``notebooks/<name>.ipynb``, then ``probe`` (an expression) in the same kernel.

    With ``until``, only the cells up to the one of that id. Returns the executed
    notebook and the probe's value, which the kernel prints as JSON.
    """
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if until is not None:
        ids = [c.get("id") for c in nb.cells]
        nb.cells = nb.cells[: ids.index(until) + 1]
    code = f"import json as _json\nprint({PROBE_MARK!r}, _json.dumps({probe}, default=str))"
    nb.cells.append(nbformat.v4.new_code_cell(code, id="test-probe"))
    client = NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO)}},
    )
    client.execute(env=env)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, errors
    printed = "".join(o.text for o in nb.cells[-1].outputs if o.output_type == "stream")
    found = printed.split(PROBE_MARK, 1)[1]
    nb.cells.pop()
    return nb, json.loads(found)


def outputs(nb: NotebookNode, cell_id: str) -> list[NotebookNode]:
    (cell,) = [c for c in nb.cells if c.get("id") == cell_id]
    return list(cell.outputs)


def shows_png(nb: NotebookNode, cell_id: str) -> bool:
    return any("image/png" in o.get("data", {}) for o in outputs(nb, cell_id))


@pytest.mark.parametrize("name", EXECUTED)
def test_committed_notebooks_are_stripped(name: str) -> None:
    """No outputs and no execution counts in git: the notebooks are read, not their last run."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], cell.id
        assert cell.execution_count is None, cell.id
    assert "widgets" not in nb.metadata


def test_every_notebook_is_executed() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXECUTED)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
@pytest.mark.timeout(900)
def test_feasibility_notebook(kernel_env: dict[str, str]) -> None:
    nb, got = run_notebook(
        "feasibility",
        kernel_env,
        """{
            "python": __import__("sys").executable,
            "started_here": net.started_here,
            "count_sites": sorted(counts.site),
            "count_measure": counts.attrs["measure"],
            "count_charged": counts.attrs["charged"],
            "precise": precise_counts[["site", "ci_low", "ci_high", "epsilon"]].to_dict("records"),
            "funnel_steps": list(funnel.network_frame().step),
        }""",
    )
    assert got["python"] == sys.executable  # the kernel is this interpreter, not another Python
    assert got["started_here"] is False  # it used the network of VARDE_GATEWAY
    assert got["count_sites"] == sorted([*SITES, "network"])
    assert got["count_measure"] == "epsilon"
    assert got["count_charged"] == {site: pytest.approx(0.5) for site in SITES}
    assert got["funnel_steps"] == [
        "lung cancer (C34)",
        "stage IV",
        "EGFR positive",
        "age 18-75, diagnosed 2020+",
    ]
    precise = {row["site"]: row for row in got["precise"]}
    assert sorted(precise) == sorted([*SITES, "network"])
    for site in SITES:  # the accuracy target holds at each site, at a price under the cap
        row = precise[site]
        assert (row["ci_high"] - row["ci_low"]) / 2 <= 10
        assert 0 < row["epsilon"] < 1.0
    # the notebook counts patients: one patient moves a count by 1 whatever a site's k (3 at
    # Oslo and Bergen, 2 at Trondheim), so +-10 costs every site the same, a third of the
    # epsilon 0.94 a tumour count would need at k = 3
    for site in SITES:
        assert precise[site]["epsilon"] == pytest.approx(0.314, abs=0.01)
    for cell in ("funnel-run", "count-plot", "accuracy-plot"):
        assert shows_png(nb, cell), cell


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
@pytest.mark.timeout(900)
def test_survival_notebook(kernel_env: dict[str, str]) -> None:
    nb, got = run_notebook(
        "survival",
        kernel_env,
        """{
            "medians": medians.to_dict("records"),
            "egfr_groups": sorted(egfr_medians.egfr.unique()),
            "charged": [by_stage.frame().attrs["charged"], egfr.attrs["charged"]],
        }""",
    )
    medians = got["medians"]
    scopes = {row["site"] for row in medians}
    assert scopes == {*SITES, "network"}
    stages = {row["stage"] for row in medians}
    assert {"I", "II", "III", "IV"} <= stages
    assert len(medians) == len(scopes) * len(stages)  # one median per site and stage
    (stage_iv,) = [r for r in medians if r["site"] == "network" and r["stage"] == "IV"]
    # most stage IV lung cancer patients die within 5 years: the network median is reached
    assert math.isfinite(stage_iv["value"])
    assert stage_iv["ci_low"] <= stage_iv["value"] <= stage_iv["ci_high"]
    assert got["egfr_groups"] == ["negative", "not_tested", "positive"]
    for charged in got["charged"]:
        assert charged == {site: pytest.approx(0.3) for site in SITES}
    for cell in ("stage-run", "stage-sites", "egfr-run"):
        assert shows_png(nb, cell), cell


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
@pytest.mark.timeout(900)
def test_federated_model_notebook(kernel_env: dict[str, str]) -> None:
    nb, got = run_notebook(
        "federated_model",
        kernel_env,
        """{
            "ok": result.ok,
            "detail": result.status.detail,
            "columns": spec.columns(),
            "coefficients": result.coefficients.to_dict(),
            "spent": result.sites.spent.to_dict(),
            "metrics": result.metrics.to_dict("index"),
            "remaining": budgets[budgets.project == PROJECT].set_index("site").remaining.to_dict(),
        }""",
    )
    assert got["ok"], got["detail"]
    coefficients = got["coefficients"]
    assert list(coefficients) == got["columns"]  # one coefficient per public design column
    assert all(math.isfinite(v) for v in coefficients.values())
    assert sorted(got["spent"]) == sorted(SITES)
    assert all(0 < v <= 1.5 + 1e-9 for v in got["spent"].values())
    network = got["metrics"]["network"]
    assert 0 <= network["auc"] <= 1 and network["auc_pm95"] > 0
    assert shows_png(nb, "metrics-plot")
    # after all three notebooks every site still has budget left for the researcher
    assert all(v > 0 for v in got["remaining"].values())


def _processes_naming(path: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(path) in line]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
@pytest.mark.timeout(300)
def test_a_notebook_without_gateway_starts_and_stops_its_own(
    kernel_env: dict[str, str], tmp_path: Path
) -> None:
    """No VARDE_GATEWAY: ``connect()`` starts a demo network; a kernel shut down before the last
    cell (``net.close()``) still stops every process of it (atexit) and removes its directory."""
    env = {k: v for k, v in kernel_env.items() if k not in ("VARDE_GATEWAY", "VARDE_TOKEN")}
    env["TMPDIR"] = str(tmp_path)  # where connect() makes the network's directory
    _, got = run_notebook(
        "survival",
        env,
        """{
            "started_here": net.started_here,
            "workdir": str(net.workdir),
            "connected": sorted(client.sites().query("connected").site),
        }""",
        until="stage-preview",
    )
    assert got["started_here"] is True
    workdir = Path(got["workdir"])
    assert workdir.parent == tmp_path
    assert got["connected"] == sorted(SITES)
    deadline = time.monotonic() + 30  # the kernel is gone; its atexit hook stopped the network
    while (_processes_naming(workdir) or workdir.exists()) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _processes_naming(workdir)
    for line in left:  # never leave any behind, even when the check fails
        os.kill(int(line.split(None, 1)[0]), 9)
    assert not left, left
    assert not workdir.exists()
