"""The README's first command: ``varde demo --once`` runs every example and exits cleanly."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from launcher.demo import EXAMPLES, STATISTICS
from tests.console_client import StaffClient

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("demo")]


def test_demo_once_answers_every_example(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "demo", "--once", "--rows", "3000", "--dir",
         str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for title, _ in EXAMPLES + STATISTICS:
        assert title in out
    assert "refused:" not in out
    assert "Preview (nothing charged)" in out and "pm95_count" in out
    assert "median" in out and "q0.5" in out  # survival median and pooled quantile rows
    # one example is refused by Trondheim's policy, by design, and says so
    assert "site 'trondheim' does not expose field(s) pdl1_tps" in out
    assert out.count("end to end)") == len(EXAMPLES) + len(STATISTICS)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (the gateway and nodes run in their own sessions)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The demo's output up to the line holding ``marker`` (bounded by ``timeout``).

    A thread reads the pipe (a text pipe buffers lines that ``select`` cannot see).
    """
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} within {timeout} s:\n{''.join(seen)[-3000:]}")


def _git_status(path: Path) -> str:
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run(
        ["git", "status", "--porcelain", "--", str(path)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_demo_stops_every_process_it_started_and_writes_no_tracked_file(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """``varde demo --console``: staff raise a budget in a console; then a signal stops all.

    The console edit lands in the demo's own copy of the policy (the repository's
    ``policies/`` stays as git has it), the examples spent the demo's own project (the
    researcher's keeps its whole budget), and after the signal no child of the demo is left.
    """
    repo_policies = Path(__file__).resolve().parents[2] / "policies"
    before = _git_status(repo_policies)
    workdir = tmp_path / "demo"
    with subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "demo", "--console", "--rows", "3000", "--dir",
         str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:  # fmt: skip
        _edit_a_budget_then_signal(proc, sig, workdir, repo_policies, before)


def _edit_a_budget_then_signal(
    proc: subprocess.Popen[str], sig: signal.Signals, workdir: Path, repo: Path, before: str
) -> None:
    """Wait for the running demo, check its budgets, edit one in a console, send ``sig``."""
    repo_policies = repo
    try:
        out = _read_until(proc, "Press Ctrl-C to stop", timeout=240)
        urls = dict(
            re.findall(r"^\s+(oslo|bergen|trondheim)\s+(http://127\.0\.0\.1:\d+)$", out, re.M)
        )
        login = re.search(r"login: (\S+) / (\S+)", out)
        assert set(urls) == {"oslo", "bergen", "trondheim"} and login is not None, out[-2000:]
        token = re.search(r"Researcher token: (\S+)", out)
        assert token is not None
        gateway = re.search(r"Gateway on (http://127\.0\.0\.1:\d+)", out)
        assert gateway is not None
        budgets = httpx.get(
            f"{gateway.group(1)}/v1/budgets",
            headers={"Authorization": f"Bearer {token.group(1)}"},
            timeout=10,
        ).json()["projects"]
        # the examples paid from the demo's project; the researcher's is untouched
        assert budgets["nsclc-feasibility"]["oslo"]["remaining"] == {"epsilon": 10.0}
        assert budgets["demo-tour"]["oslo"]["remaining"]["epsilon"] < 10.0

        with StaffClient(urls["oslo"]) as staff:
            assert staff.login(login.group(1), login.group(2)).status_code == 200
            resp = staff.act(
                "/budgets/nsclc-feasibility", data={"budget": "11.5", "confirm": "yes"}
            )
            assert resp.status_code == 200, resp.text
        copy = workdir / "policies" / "oslo.yaml"
        assert "epsilon_budget: 11.5" in copy.read_text()
        assert _git_status(repo_policies) == before
        assert "11.5" not in (repo_policies / "oslo.yaml").read_text()

        children = _descendants(proc.pid)
        assert len(children) >= 4, children  # gateway and three nodes at least
        proc.send_signal(sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in children if _alive(p)], "processes outlived the demo"
    finally:  # whatever failed, leave no process behind
        children = _descendants(proc.pid) if proc.poll() is None else set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the demo stops what it started
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for pid in children:  # SIGKILL to the demo itself would orphan them
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
