"""The node's HTTP client: URL rules, TLS verification against a throw-away CA, proxies."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from nodes.transport import GatewayURLError, check_gateway_url, explain, gateway_client


@pytest.mark.parametrize(
    "url",
    [
        "https://gateway.example.org",
        "https://gateway.example.org:8443/",
        "http://127.0.0.1:8700",
        "http://localhost:8700",
        "http://[::1]:8700",
    ],
)
def test_accepted_urls(url: str) -> None:
    check_gateway_url(url)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://gateway.example.org", "plain http"),
        ("http://10.0.0.5:8700", "--dev-network"),
        ("ftp://gateway.example.org", "https://"),
        ("gateway.example.org", "https://"),
        ("https://", "https://"),
        ("https://gw.example.org:notaport", "malformed"),
        ("https://user:pw@gw.example.org", "password"),
        ("https://gw.example.org/?x=1", "query"),
    ],
)
def test_refused_urls_name_the_problem(url: str, words: str) -> None:
    with pytest.raises(GatewayURLError, match=words.replace("?", r"\?")):
        check_gateway_url(url)


def test_dev_network_allows_plain_http_off_loopback() -> None:
    check_gateway_url("http://10.0.0.5:8700", dev_network=True)
    with pytest.raises(GatewayURLError):
        gateway_client("http://10.0.0.5:8700")
    gateway_client("http://10.0.0.5:8700", dev_network=True).close()


@given(st.text(max_size=60))
def test_any_text_is_accepted_or_refused_clearly(url: str) -> None:
    try:
        check_gateway_url(url)
    except GatewayURLError as err:
        assert str(err)


# --- TLS against a throw-away CA -------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_ca_and_server(tmp: Path, *, expired: bool = False) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (optionally already expired)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    until = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=5))
        .not_valid_after(until)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, cert_pem, key_pem


class _Hello(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        _Hello.seen.append(self.requestline)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(tls: tuple[Path, Path] | None = None) -> tuple[http.server.HTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    scheme = "http"
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca, cert, key = _write_ca_and_server(tmp_path)
    server, url = _serve((cert, key))
    yield url, ca
    server.shutdown()
    server.server_close()


def test_gateway_certificate_signed_by_the_pinned_ca_is_accepted(
    tls_server: tuple[str, Path],
) -> None:
    url, ca = tls_server
    with gateway_client(url, ca_file=ca) as client:
        assert client.get(f"{url}/healthz").json() == {"ok": True}


def test_a_certificate_from_another_ca_is_refused(
    tls_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = tls_server
    (tmp_path / "other").mkdir()
    other_ca, _, _ = _write_ca_and_server(tmp_path / "other")
    for ca_file in (None, other_ca):  # the system trust store, then a wrong pinned CA
        with gateway_client(url, ca_file=ca_file) as client, pytest.raises(httpx.ConnectError) as e:
            client.get(f"{url}/healthz")
        message = explain(e.value, url, ca_file)
        assert "not trusted" in message and "--ca-file" in message


def test_an_expired_certificate_is_refused_and_said_so(tmp_path: Path) -> None:
    ca, cert, key = _write_ca_and_server(tmp_path, expired=True)
    server, url = _serve((cert, key))
    try:
        with gateway_client(url, ca_file=ca) as client, pytest.raises(httpx.ConnectError) as e:
            client.get(f"{url}/healthz")
        assert "expired" in explain(e.value, url, ca)
    finally:
        server.shutdown()
        server.server_close()


def test_a_missing_or_bad_ca_file_is_refused_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(GatewayURLError, match="does not exist"):
        gateway_client("https://gw.example.org", ca_file=tmp_path / "nope.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(GatewayURLError, match="not a PEM"):
        gateway_client("https://gw.example.org", ca_file=junk)


def test_proxy_environment_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY routes through the proxy (absolute-form request line); NO_PROXY bypasses it."""
    proxy, proxy_url = _serve()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        _Hello.seen.clear()
        target = "http://127.0.0.1:9/healthz"  # nothing listens there: only the proxy answers
        with gateway_client("http://127.0.0.1:9") as client:
            assert client.get(target).status_code == 200
        assert _Hello.seen == [f"GET {target} HTTP/1.1"]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with gateway_client("http://127.0.0.1:9") as client, pytest.raises(httpx.ConnectError):
            client.get(target)
    finally:
        proxy.shutdown()
        proxy.server_close()
