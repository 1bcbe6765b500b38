"""``varde node init`` against a live gateway: the directory, one-time tokens, bad input.

Every refusal is checked for its message and for what it leaves behind: no
node directory (not even a temporary one) and, where the check comes before
enrollment, a token that still works afterwards.
"""

from __future__ import annotations

import datetime as dt
import http.server
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from launcher.cli import app
from launcher.network import LocalNetwork
from nodes.config import load_config
from nodes.enrollment import key_path, load_identity
from varde.crypto import (
    generate_key,
    key_fingerprint,
    load_private_key,
    public_key_b64,
    save_private_key,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]

runner = CliRunner()


def _token(net: LocalNetwork, site: str, valid_for: dt.timedelta = dt.timedelta(hours=1)) -> str:
    from gateway.admin import enrollment_token
    from gateway.core.db import make_engine, make_sessionmaker

    engine = make_engine(net._settings().db_url)
    try:
        return enrollment_token(make_sessionmaker(engine), site, valid_for)
    finally:
        engine.dispose()


def _init(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["node", "init", *args])
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture(scope="module")
def data_file(small_network: LocalNetwork) -> Path:
    return small_network.data_files["bergen"]


def _nothing_left(parent: Path) -> None:
    assert sorted(p.name for p in parent.iterdir()) == [], list(parent.iterdir())


def test_init_makes_an_enrolled_node_directory(
    small_network: LocalNetwork, data_file: Path, tmp_path: Path
) -> None:
    token = _token(small_network, "voss")
    node = tmp_path / "voss-node"
    code, out = _init(
        "--gateway", small_network.url, "--token", token, "--site", "voss",
        "--dir", str(node), "--data", str(data_file),
    )  # fmt: skip
    assert code == 0, out
    assert "DENIES EVERYTHING" in out and "varde node doctor --config" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voss-node"]  # no temporary left
    assert sorted(p.name for p in node.iterdir()) == [
        "config.yaml",
        "keys",
        "mapping.yaml",
        "policies",
        "state",
    ]
    assert stat.S_IMODE((node / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((node / "keys" / "node_key.pem").stat().st_mode) == 0o600
    cfg = load_config(node / "config.yaml")
    assert (cfg.site, cfg.gateway_url, cfg.data) == ("voss", small_network.url, data_file.resolve())
    assert cfg.policy == node / "policies" / "voss.yaml" and cfg.state_dir == node / "state"
    # the policy checks and denies all; the mapping is the starter one for this site
    check = runner.invoke(app, ["policy", "check", str(cfg.policy)])
    assert check.exit_code == 0 and "0 project(s), 0 field(s)" in check.stdout
    assert "site: voss" in (node / "mapping.yaml").read_text()
    # the gateway pinned exactly this key; the node pinned the gateway's
    key = load_private_key(key_path(cfg.state_dir))
    assert key_path(cfg.state_dir) == node / "keys" / "node_key.pem"
    ident = load_identity(cfg.state_dir)
    assert ident is not None and ident.site == "voss"
    gateway_key = httpx.get(f"{small_network.url}/healthz").json()  # reachable
    assert gateway_key["status"] == "ok"
    listed = runner.invoke(
        app, ["admin", "nodes", "--json", "--state-dir", str(small_network.gateway_state)]
    )
    rows = [line for line in listed.stdout.splitlines() if '"voss"' in line]
    assert len(rows) == 1 and key_fingerprint(public_key_b64(key)) in rows[0]
    assert key_fingerprint(public_key_b64(key)) in out
    # the token was spent: a second init with it is refused, leaving nothing
    again = tmp_path / "again"
    code, out = _init(
        "--gateway", small_network.url, "--token", token, "--site", "voss", "--dir", str(again)
    )
    assert code == 2 and "already used" in out and "enroll-token" in out
    assert not again.exists()
    # an existing directory is never overwritten
    code, out = _init(
        "--gateway", small_network.url, "--token", _token(small_network, "voss"),
        "--site", "voss", "--dir", str(node),
    )  # fmt: skip
    assert code == 2 and "already exists" in out


def test_node_run_with_the_config_reports_its_version_and_state(
    small_network: LocalNetwork, data_file: Path, tmp_path: Path
) -> None:
    node = tmp_path / "alta-node"
    code, out = _init(
        "--gateway", small_network.url, "--token", _token(small_network, "alta"),
        "--site", "alta", "--dir", str(node), "--data", str(data_file),
    )  # fmt: skip
    assert code == 0, out
    env = {**os.environ, "NO_PROXY": "127.0.0.1"}
    log = tmp_path / "node.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "launcher.cli",
                "node",
                "run",
                "--config",
                str(node / "config.yaml"),
            ],
            stdout=sink,
            stderr=sink,
            env=env,
        )
    try:
        headers = {"Authorization": f"Bearer {small_network.token}"}
        deadline = time.monotonic() + 60
        site: dict[str, object] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            sites = httpx.get(f"{small_network.url}/v1/sites", headers=headers).json()
            site = next((s for s in sites if s["site"] == "alta"), {})
            if site.get("state") == "deny-all":
                break
            time.sleep(0.3)
        assert proc.poll() is None, log.read_text()
        from varde import __version__

        assert site.get("state") == "deny-all", (site, log.read_text())
        assert site["version"] == __version__
        assert site["connected"] is True and site["last_seen"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("plain http", "plain http"),
        ("malformed token", "not an enrollment token"),
        ("bad site name", "lower case"),
        ("no site", "give --site"),
        ("missing data", "does not exist"),
        ("unreadable data", "cannot read --data"),
        ("bad mapping", "--mapping"),
        ("mapping of another site", "is for site 'bodo'"),
        ("unreachable gateway", "cannot reach"),
        ("not a gateway", "not as a Varde gateway"),
        ("missing CA file", "--ca-file"),
    ],
)
def test_bad_input_is_refused_before_the_token_is_spent(
    small_network: LocalNetwork, tmp_path: Path, case: str, words: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "bad.csv").write_text("patient_id,sex\n1,F\n")
    (tmp_path / "bad-mapping.yaml").write_text("site: tana\nsource: {kind: csv}\nbogus: 1\n")
    from nodes.mapping import starter_mapping_text

    (tmp_path / "bodo-mapping.yaml").write_text(starter_mapping_text("bodo"))
    token = _token(small_network, "tana")
    args = {
        "gateway": small_network.url,
        "token": token,
        "site": "tana",
        "dir": str(work / "tana-node"),
    }
    extra: list[str] = []
    if case == "plain http":
        args["gateway"] = "http://gateway.example.org"
    elif case == "malformed token":
        args["token"] = "ve_short"
    elif case == "bad site name":
        args["site"] = "Tana Site"
    elif case == "no site":
        del args["site"]
    elif case == "missing data":
        extra = ["--data", str(tmp_path / "nope.parquet")]
    elif case == "unreadable data":
        extra = ["--data", str(tmp_path / "bad.csv")]
    elif case == "bad mapping":
        extra = ["--mapping", str(tmp_path / "bad-mapping.yaml")]
    elif case == "mapping of another site":
        extra = ["--mapping", str(tmp_path / "bodo-mapping.yaml")]
    elif case == "unreachable gateway":
        from varde.processes import free_port

        args["gateway"] = f"http://127.0.0.1:{free_port()}"
    elif case == "not a gateway":
        args["gateway"] = f"{small_network.url}/v1"
    elif case == "missing CA file":
        extra = ["--ca-file", str(tmp_path / "ca.pem")]
    flags = [x for k, v in args.items() for x in (f"--{k}", v)]
    code, out = _init(*flags, *extra)
    assert code == 2, out
    assert words in out, out
    assert len(out.strip().splitlines()) >= 1 and out.lstrip().startswith("error:"), out
    _nothing_left(work)
    # nothing was spent: the same token still enrolls the site
    code, out = _init(
        "--gateway", small_network.url, "--token", token, "--site", "tana",
        "--dir", str(work / "ok"),
    )  # fmt: skip
    assert code == 0, out


def test_expired_and_other_site_tokens_are_refused_with_the_fix(
    small_network: LocalNetwork, tmp_path: Path
) -> None:
    expired = _token(small_network, "kirkenes", dt.timedelta(seconds=-1))
    code, out = _init(
        "--gateway", small_network.url, "--token", expired, "--site", "kirkenes",
        "--dir", str(tmp_path / "k"),
    )  # fmt: skip
    assert code == 2 and "expired" in out and "enroll-token" in out
    other = _token(small_network, "hammerfest")
    code, out = _init(
        "--gateway", small_network.url, "--token", other, "--site", "kirkenes",
        "--dir", str(tmp_path / "k"),
    )  # fmt: skip
    assert code == 2 and "enrolls site 'hammerfest'" in out and "--site" in out
    _nothing_left(tmp_path)


class _ForwardingProxy(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy (absolute-form requests), remembering what it forwarded."""

    seen: list[str] = []

    def _forward(self) -> None:
        _ForwardingProxy.seen.append(f"{self.command} {self.path}")
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection"}}
        with httpx.Client(trust_env=False) as upstream:
            resp = upstream.request(self.command, self.path, content=body, headers=headers)
        self.send_response(resp.status_code)
        for k, v in resp.headers.items():
            if k.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.content)))
        self.end_headers()
        self.wfile.write(resp.content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


def _doctor(config: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["node", "doctor", "--config", str(config)])
    return result.exit_code, result.stdout + result.stderr


def test_doctor_on_an_enrolled_node(
    small_network: LocalNetwork, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    node = tmp_path / "lofoten-node"
    code, out = _init(
        "--gateway", small_network.url, "--token", _token(small_network, "lofoten"),
        "--site", "lofoten", "--dir", str(node), "--data", str(data_file),
    )  # fmt: skip
    assert code == 0, out
    config = node / "config.yaml"
    code, out = _doctor(config)
    assert code == 0, out
    for line in ("ok   key recognised", "ok   clock", "ok   data: verdict: OK", "ok   reachable"):
        assert line in out, out
    assert "warn policy" in out and "all checks passed (1 warning(s))" in out
    assert "fail" not in out
    # through a proxy: the checks go through it, and say so
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForwardingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        _ForwardingProxy.seen.clear()
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        code, out = _doctor(config)
        assert code == 0, out
        assert "ok   proxy: the gateway answers through http://127.0.0.1:" in out
        assert _ForwardingProxy.seen == [
            f"GET {small_network.url}/healthz",
            f"POST {small_network.url}/v1/nodes/whoami",
        ]
    finally:
        proxy.shutdown()
        proxy.server_close()
    from varde.processes import free_port

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # a proxy that is down
    code, out = _doctor(config)
    assert code == 1 and "fail proxy: through http://127.0.0.1:" in out, out
    monkeypatch.delenv("HTTP_PROXY")
    # another key than the one the gateway pinned
    key_file = node / "keys" / "node_key.pem"
    original = key_file.read_bytes()
    key_file.unlink()
    save_private_key(generate_key(), key_file)
    code, out = _doctor(config)
    assert code == 1 and "pinned another key for site 'lofoten'" in out, out
    assert "restore keys/node_key.pem" in out
    # and the node refuses to start on it, saying what to do, instead of polling in vain
    started = runner.invoke(app, ["node", "run", "--config", str(config)])
    assert started.exit_code == 2, started.output
    assert "pinned another key for site 'lofoten'" in started.output
    assert "enroll-token lofoten" in started.output
    key_file.write_bytes(original)
    # revoked by the operator
    revoked = runner.invoke(
        app, ["admin", "revoke", "lofoten", "--state-dir", str(small_network.gateway_state)]
    )
    assert revoked.exit_code == 0, revoked.output
    code, out = _doctor(config)
    assert code == 1 and "fail key recognised: site 'lofoten' was revoked" in out, out
    started = runner.invoke(app, ["node", "run", "--config", str(config)])
    assert started.exit_code == 2 and "was revoked" in started.output, started.output
