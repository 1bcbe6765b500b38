"""``varde node doctor`` checks that need no gateway: config, key, policy, data, TLS, proxy."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.config import NodeConfig
from nodes.doctor import Check, check_certificate, diagnose, proxy_for
from nodes.node_init import starter_policy_text
from tests.tls_ca import TestCA
from varde.crypto import generate_key, save_private_key
from varde.processes import free_port


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_an_unreadable_config_is_the_only_check(tmp_path: Path) -> None:
    [check] = diagnose(tmp_path / "config.yaml")
    assert check.status == "fail" and "cannot read the node config" in check.detail
    (tmp_path / "config.yaml").write_text("site: voss\nbogus: 1\n")
    [check] = diagnose(tmp_path / "config.yaml")
    assert check.status == "fail" and "bogus" in check.detail


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A node directory as init lays it out, never enrolled, its gateway not running."""
    node = tmp_path / "node"
    (node / "keys").mkdir(parents=True, mode=0o700)
    (node / "keys").chmod(0o700)
    save_private_key(generate_key(), node / "keys" / "node_key.pem")
    (node / "policies").mkdir()
    (node / "policies" / "voss.yaml").write_text(starter_policy_text("voss"))
    (node / "state").mkdir()
    cfg = NodeConfig(
        site="voss",
        gateway_url=f"http://127.0.0.1:{free_port()}",
        policy=Path("policies/voss.yaml"),
    )
    (node / "config.yaml").write_text(cfg.to_yaml())
    return node


def test_offline_checks_say_what_is_wrong_and_the_fix(node_dir: Path) -> None:
    checks = _by_name(diagnose(node_dir / "config.yaml"))
    assert checks["config"].status == "ok" and checks["gateway url"].status == "ok"
    assert checks["key"].status == "ok" and checks["key file mode"].status == "ok"
    assert checks["enrollment"].status == "fail" and "varde node init" in checks["enrollment"].fix
    assert checks["policy"].status == "warn" and "DENIES EVERYTHING" in checks["policy"].detail
    assert checks["data"].status == "fail" and "data:" in checks["data"].fix
    assert checks["tls"].status == "ok" and "loopback" in checks["tls"].detail
    assert checks["reachable"].status == "fail" and "cannot reach" in checks["reachable"].detail
    (node_dir / "keys" / "node_key.pem").chmod(0o644)
    (node_dir / "keys").chmod(0o755)
    checks = _by_name(diagnose(node_dir / "config.yaml"))
    assert checks["key file mode"].status == "fail" and "chmod 600" in checks["key file mode"].fix
    assert checks["key directory mode"].status == "warn"
    rendered = checks["key file mode"].render()
    assert rendered.startswith("fail key file mode: ") and "\n     fix: chmod 600" in rendered


def test_a_bad_policy_or_data_file_fails(node_dir: Path, tmp_path: Path) -> None:
    (node_dir / "policies" / "voss.yaml").write_text("site: voss\nfields: [nonsense]\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id\n1\n")
    text = (node_dir / "config.yaml").read_text() + f"data: {bad}\n"
    (node_dir / "config.yaml").write_text(text)
    checks = _by_name(diagnose(node_dir / "config.yaml"))
    assert checks["policy"].status == "fail" and "policy check" in checks["policy"].fix
    assert checks["data"].status == "fail" and "cannot read" in checks["data"].detail


def _tls_server(cert: Path, key: Path) -> tuple[http.server.HTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"https://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def serve(ca: TestCA) -> Iterator[object]:
    servers: list[http.server.HTTPServer] = []

    def start(days: float) -> str:
        now = dt.datetime.now(dt.UTC)
        files = ca.issue_server(
            f"gw{len(servers)}",
            not_before=now - dt.timedelta(days=20),
            not_after=now + dt.timedelta(days=days),
        )
        server, url = _tls_server(files.cert, files.key)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_certificate_checks(ca: TestCA, serve: object, tmp_path: Path) -> None:
    start = serve  # days of validity left -> url
    good = check_certificate(start(60), ca.cert_path)  # type: ignore[operator]
    assert (
        good.status == "ok" and "chain verified" in good.detail and "Varde Test CA" in good.detail
    )
    soon = check_certificate(start(5), ca.cert_path)  # type: ignore[operator]
    assert soon.status == "warn" and "renew" in soon.fix
    expired = check_certificate(start(-1), ca.cert_path)  # type: ignore[operator]
    assert expired.status == "fail" and "expired" in expired.detail
    other = TestCA(tmp_path / "other", name="Other CA")
    wrong = check_certificate(start(60), other.cert_path)  # type: ignore[operator]
    assert wrong.status == "fail" and "--ca-file" in wrong.fix
    system = check_certificate(start(60), None)  # type: ignore[operator]
    assert system.status == "fail" and "trusted CAs" in system.detail


def test_proxy_for_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("https://gw.example.org") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.hospital:3128")
    assert proxy_for("https://gw.example.org") == "http://proxy.hospital:3128"
    assert proxy_for("http://127.0.0.1:8700") is None  # HTTPS_PROXY is for https only
    monkeypatch.setenv("NO_PROXY", "gw.example.org")
    assert proxy_for("https://gw.example.org") is None
