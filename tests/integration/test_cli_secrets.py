"""No secret in any output: real ``varde`` processes with bad input against the real network.

Each command gets a recognisable fake token; it must appear in no stdout, no
stderr and no log file of the network, and each failure is one ``error:``
line with a non-zero status. A gateway started with access logs masks a token
a client put in a URL and in its ``Authorization`` header.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from launcher.network import REPO, LocalNetwork
from varde.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]

TOKEN = "tok-SECRET-1234567890"
QUERY = (
    '{"project": "nsclc-feasibility", "statistic": {"kind": "count"},'
    ' "privacy": {"mode": "dp", "epsilon": 0.01}}'
)


def varde(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VARDE_")}
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        capture_output=True, text=True, timeout=120, input=stdin, cwd=REPO,
        env={**clean, **(env or {})},
    )  # fmt: skip


def assert_one_clean_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """One ``error:`` line naming the problem (a node logs before it: its log lines only)."""
    shown = proc.stdout + proc.stderr
    assert proc.returncode in (1, 2), shown
    assert TOKEN not in shown, shown
    assert "Traceback" not in shown, shown
    *logged, last = proc.stderr.strip().splitlines()
    assert last.startswith("error: "), shown
    assert all(" INFO " in line or " WARNING " in line for line in logged), shown
    if "node" not in proc.args:
        assert logged == [], shown
    assert proc.stdout == "", shown
    for needle in needles:
        assert needle in last, shown


def assert_no_log_holds_the_token(network: LocalNetwork) -> None:
    for log in (network.workdir / "logs").glob("*.log"):
        assert TOKEN not in log.read_text(errors="replace"), log


def test_bad_inputs_against_the_live_gateway(network: LocalNetwork, tmp_path: Path) -> None:
    good = tmp_path / "q.json"
    good.write_text(QUERY)
    registry = network.data_files["oslo"]  # a node checks its data before it enrolls
    comma = tmp_path / "comma.json"
    comma.write_text(QUERY[:-1] + ",}")
    bad_yaml = tmp_path / "q.yaml"
    bad_yaml.write_text("project: nsclc-feasibility\n  statistic: {kind: count\n")
    url = network.url
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [
        (varde("query", str(good), "--gateway", url, "--token", TOKEN),
         ("401 authentication_failed", "check --token")),
        (varde("query", str(comma), "--gateway", url, "--token", TOKEN), ("not valid JSON",)),
        (varde("query", "-", "--gateway", url, "--token", TOKEN, stdin=QUERY[:-1] + ",}"),
         ("stdin: not valid JSON", "line 1")),
        (varde("query", str(bad_yaml), "--gateway", url, "--token", TOKEN),
         ("not valid YAML", "line 2")),
        (varde("query", str(tmp_path / "nope.json"), "--gateway", url, "--token", TOKEN),
         ("no such file",)),
        (varde("query", str(good), "--gateway", url.removeprefix("http://"), "--token", TOKEN),
         ("bad gateway URL", "https://")),
        (varde("query", str(good), "--gateway", dead, env={"VARDE_TOKEN": TOKEN}),
         ("cannot reach",)),
        (varde("query", "--project", "nsclc-feasibility", "--epsilon", "-1", "--gateway", url,
               "--token", TOKEN), ("401",)),
        (varde("query", "--project", "nsclc-feasibility", "--bins", "1,2", "--epsilon", "0.1",
               "--gateway", url, "--token", TOKEN), ("--bins does not apply",)),
        (varde("train", "--project", "nsclc-feasibility", "--features", "stage", "--rounds", "1",
               "--epsilon", "1", "--gateway", url, "--token", TOKEN), ("401",)),
        (varde("trainings", "--gateway", url, "--token", TOKEN), ("401",)),
        (varde("trainings", "--gateway", url, "--token", TOKEN + "\n"), ("--token",)),
        (varde("node", "run", "--policy", str(network.policy_path("oslo")), "--gateway", url,
               "--data", str(registry), "--state-dir", str(tmp_path / "node"), "--enroll-token",
               TOKEN), ("unknown or already used enrollment token",)),
        (varde("node", "run", "--policy", str(network.policy_path("oslo")), "--gateway",
               url.removeprefix("http://"), "--data", str(registry), "--state-dir",
               str(tmp_path / "node2"), f"--enroll-token={TOKEN}"), ("bad gateway URL",)),
    ]  # fmt: skip
    for proc, needles in cases:
        assert_one_clean_line(proc, *needles)
    assert_no_log_holds_the_token(network)


def test_debug_shows_the_frames_but_no_locals_and_no_token(
    network: LocalNetwork, tmp_path: Path
) -> None:
    path = tmp_path / "comma.json"
    path.write_text(QUERY[:-1] + ",}")
    for proc in (
        varde("--debug", "query", str(path), "--gateway", network.url, "--token", TOKEN),
        varde("query", str(path), "--gateway", network.url, env={"VARDE_DEBUG": "1",
                                                                "VARDE_TOKEN": TOKEN}),
    ):  # fmt: skip
        assert proc.returncode == 2
        err = proc.stderr
        assert err.startswith("Traceback (most recent call last):")
        assert "QueryFileError" in err and 'varde_client/cli.py", line' in err
        assert err.strip().splitlines()[-1].startswith("error: ")
        assert TOKEN not in err + proc.stdout
        assert "locals" not in err and "│" not in err


def test_gateway_access_log_masks_tokens(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "gateway.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VARDE_")}
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher.cli", "gateway", "serve", "--port", str(port),
             "--state-dir", str(tmp_path / "gw"), "--log-level", "info"],
            stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=clean, start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # two shared cores: the start-up may take a while
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "gateway did not start: " + log.read_text()
                time.sleep(0.2)
        answer = httpx.get(
            f"{url}/v1/sites?token={TOKEN}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert answer.status_code == 401
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert "/v1/sites?token=*** HTTP/1.1" in text and "401" in text  # the request was logged
    assert TOKEN not in text
