"""TLS on the gateway link, on loopback with a throw-away CA (tests/tls_ca.py).

The gateway serves HTTPS from certificate files (``varde gateway serve --tls-cert
--tls-key``); a node told to trust the CA (``varde node run --ca-file``) enrolls,
connects and answers a query; a node trusting another CA, or facing an expired
certificate, is refused with a message that says so; plain http off loopback is
refused on both sides unless ``--dev-network``.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from launcher.network import DEFAULT_POLICIES, REPO
from tests.tls_ca import ServerFiles, TestCA
from varde.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("tls")]

FEAS = {
    "project": "nsclc-feasibility",
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.1},
}


def varde(*args: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", *args]


def run_varde(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        varde(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            args,
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@dataclass
class PKI:
    ca: TestCA
    other_ca: TestCA
    server: ServerFiles
    expired: ServerFiles


@dataclass
class Gateway:
    url: str
    state: Path
    token: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    ca = TestCA(root / "ca")
    return PKI(
        ca=ca,
        other_ca=TestCA(root / "other", name="Another CA"),
        server=ca.issue_server("gateway"),
        expired=ca.issue_expired_server("expired"),
    )


def start_gateway(work: Path, server: ServerFiles, ca: Path) -> Gateway:
    state = work / "gateway"
    project = run_varde("admin", "project", "add", "nsclc-feasibility", "--state-dir", str(state))
    assert project.returncode == 0, project.stderr
    added = run_varde(
        "admin", "researcher", "add", "alice", "--project", "nsclc-feasibility",
        "--state-dir", str(state),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    port = free_port()
    log = work / "gateway.log"
    proc = spawn(
        varde(
            "gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--state-dir", str(state), "--tls-cert", str(server.cert), "--tls-key", str(server.key),
        ),
        log,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            # an expired certificate cannot be verified: wait for the port with verification off
            httpx.get(f"{url}/healthz", verify=False, timeout=1.0)
            return Gateway(url, state, added.stdout.strip(), proc, log)
        except httpx.HTTPError:
            time.sleep(0.2)
    stop(proc)
    raise AssertionError(f"gateway not up:\n{log.read_text()}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gw"), pki.server, pki.ca.cert_path)
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def site_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """A copy of each demo site's policy and a small synthetic registry, by site."""
    from nodes.synth import generate_registry, write_registry

    root = tmp_path_factory.mktemp("site")
    files = {}
    for site in ("oslo", "bergen"):
        policy = root / f"{site}.yaml"
        shutil.copy(DEFAULT_POLICIES / f"{site}.yaml", policy)
        data = root / f"{site}.parquet"
        write_registry(generate_registry(site, 3_000, seed=11), data, "parquet")
        files[site] = (policy, data)
    return files


def enroll_token(gw: Gateway, site: str) -> str:
    out = run_varde("admin", "enroll-token", site, "--state-dir", str(gw.state))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def start_node(
    gw: Gateway, files: tuple[Path, Path], work: Path, ca_file: Path, site: str
) -> tuple[subprocess.Popen[bytes], Path, str]:
    """``varde node run`` enrolling ``site`` at ``gw``, trusting ``ca_file``; its log and token."""
    policy, data = files
    log = work / f"node-{site}.log"
    token = enroll_token(gw, site)
    proc = spawn(
        varde(
            "node", "run", "--policy", str(policy), "--gateway", gw.url, "--data", str(data),
            "--state-dir", str(work / f"state-{site}"), "--enroll-token", token,
            "--site", site, "--ca-file", str(ca_file),
        ),
        log,
    )  # fmt: skip
    return proc, log, token


def wait_for_log(proc: subprocess.Popen[bytes], log: Path, needle: str, timeout: float = 40) -> str:
    """Wait until the node's log holds ``needle`` (or it exits); return the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if needle in text or proc.poll() is not None:
            time.sleep(0.2)
            return log.read_text(errors="replace")
        time.sleep(0.2)
    return log.read_text(errors="replace")


def sites_seen(gw: Gateway, ca: Path) -> dict[str, bool]:
    resp = httpx.get(
        f"{gw.url}/v1/sites", headers={"Authorization": f"Bearer {gw.token}"}, verify=trust(ca)
    )
    return {s["site"]: s["connected"] for s in resp.json()}


def test_gateway_serves_https_verified_against_the_ca(gateway: Gateway, pki: PKI) -> None:
    ok = httpx.get(f"{gateway.url}/healthz", verify=trust(pki.ca.cert_path), timeout=5)
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    # by host name too: the certificate names localhost as well as the address
    host = gateway.url.replace("127.0.0.1", "localhost")
    assert httpx.get(f"{host}/healthz", verify=trust(pki.ca.cert_path)).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{gateway.url}/healthz", verify=trust(pki.other_ca.cert_path), timeout=5)
    # plain http to the TLS port gets no answer from the API
    with pytest.raises(httpx.HTTPError):
        httpx.get(gateway.url.replace("https", "http") + "/healthz", timeout=5)


def test_enrollment_over_https(gateway: Gateway, pki: PKI) -> None:
    from varde.crypto import generate_key, public_key_b64

    token = enroll_token(gateway, "stavanger")
    resp = httpx.post(
        f"{gateway.url}/v1/nodes/enroll",
        json={"token": token, "site": "stavanger", "public_key": public_key_b64(generate_key())},
        verify=trust(pki.ca.cert_path),
    )
    assert resp.status_code == 200 and resp.json()["gateway_public_key"]


def test_node_trusting_the_ca_connects_and_answers(
    gateway: Gateway, pki: PKI, site_files: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    proc, log, _ = start_node(gateway, site_files["oslo"], tmp_path, pki.ca.cert_path, "oslo")
    try:
        deadline = time.monotonic() + 60
        while not sites_seen(gateway, pki.ca.cert_path).get("oslo"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"node never connected:\n{log.read_text()}"
            time.sleep(0.3)
        res = httpx.post(
            f"{gateway.url}/v1/queries",
            json={**FEAS, "sites": ["oslo"]},
            headers={"Authorization": f"Bearer {gateway.token}"},
            verify=trust(pki.ca.cert_path),
            timeout=60,
        )
        assert res.status_code == 200, res.text
        (row,) = res.json()["sites"]
        assert row["site"] == "oslo" and row["status"] == "ok", row
    finally:
        stop(proc)


def test_node_trusting_another_ca_is_refused(
    gateway: Gateway, pki: PKI, site_files: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    proc, log, token = start_node(
        gateway, site_files["bergen"], tmp_path, pki.other_ca.cert_path, "bergen"
    )
    try:
        text = wait_for_log(proc, log, "not trusted")
        assert "not trusted by the CA in" in text and "--ca-file" in text, text
    finally:
        stop(proc)
    assert "bergen" not in sites_seen(gateway, pki.ca.cert_path)
    # the refusal came before anything was sent: the one-time token is still unspent
    from varde.crypto import generate_key, public_key_b64

    resp = httpx.post(
        f"{gateway.url}/v1/nodes/enroll",
        json={"token": token, "site": "bergen", "public_key": public_key_b64(generate_key())},
        verify=trust(pki.ca.cert_path),
    )
    assert resp.status_code == 200, resp.text


def test_expired_certificate_is_refused(
    pki: PKI, site_files: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    gw = start_gateway(tmp_path, pki.expired, pki.ca.cert_path)
    try:
        with pytest.raises(httpx.ConnectError, match="certificate has expired"):
            httpx.get(f"{gw.url}/healthz", verify=trust(pki.ca.cert_path), timeout=5)
        proc, log, _ = start_node(gw, site_files["oslo"], tmp_path, pki.ca.cert_path, "oslo")
        try:
            text = wait_for_log(proc, log, "has expired")
            assert "TLS certificate" in text and "has expired" in text, text
        finally:
            stop(proc)
    finally:
        stop(gw.proc)


def test_plain_http_off_loopback_is_refused(tmp_path: Path, pki: PKI) -> None:
    state = str(tmp_path / "gw")
    out = run_varde("gateway", "serve", "--host", "0.0.0.0", "--state-dir", state)
    assert out.returncode == 2
    assert "refusing plain http on --host 0.0.0.0" in out.stderr and "--dev-network" in out.stderr
    half = run_varde(
        "gateway", "serve", "--host", "0.0.0.0", "--state-dir", state,
        "--tls-cert", str(pki.server.cert),
    )  # fmt: skip
    assert half.returncode == 2 and "both --tls-cert and --tls-key" in half.stderr
    # the same rule as a function: loopback, TLS or an explicit development network pass
    from gateway.cli import check_listen_tls

    check_listen_tls("10.1.2.3", None, None, dev_network=True)
    check_listen_tls("::1", None, None, dev_network=False)
    check_listen_tls("10.1.2.3", pki.server.cert, pki.server.key, dev_network=False)
    with pytest.raises(ValueError, match="refusing plain http on --host 10.1.2.3"):
        check_listen_tls("10.1.2.3", None, None, dev_network=False)
    # the node side refuses a plain-http gateway URL off loopback before sending anything
    node = run_varde(
        "node", "run", "--policy", str(DEFAULT_POLICIES / "oslo.yaml"),
        "--gateway", "http://192.0.2.10:8700", "--data", str(tmp_path / "none.parquet"),
        "--state-dir", str(tmp_path / "node"), "--enroll-token", "ve_x",
    )  # fmt: skip
    assert node.returncode != 0 and "plain http" in node.stderr, node.stderr


def test_forwarded_headers_count_only_with_proxy_headers_from_an_allowed_proxy(
    tmp_path: Path,
) -> None:
    """OPERATIONS.md's reverse-proxy setup: the client address a proxy forwards is taken only
    with --proxy-headers and only from --forwarded-allow-ips (seen in the access log)."""
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    cases = {
        "trusted": ["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"],
        "other proxy": ["--proxy-headers", "--forwarded-allow-ips", "192.0.2.1"],
        "no flag": [],
    }
    seen = {}
    for name, flags in cases.items():
        port = free_port()
        log = tmp_path / f"{name}.log"
        proc = spawn(
            varde(
                "gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--state-dir", str(tmp_path / name), "--log-level", "info", *flags,
            ),
            log,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    resp = httpx.get(f"http://127.0.0.1:{port}/healthz", headers=forwarded)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.2)
            assert resp.status_code == 200
            for _ in range(50):  # the access log line is written after the response
                lines = [ln for ln in log.read_text().splitlines() if "GET /healthz" in ln]
                if lines:
                    break
                time.sleep(0.1)
            seen[name] = lines[-1]
        finally:
            stop(proc)
    assert "203.0.113.7" in seen["trusted"], seen
    assert "203.0.113.7" not in seen["other proxy"] and "127.0.0.1" in seen["other proxy"], seen
    assert "203.0.113.7" not in seen["no flag"] and "127.0.0.1" in seen["no flag"], seen
