"""``varde node doctor``: every check a node's set-up needs, each ok / warn / fail with the fix.

Why one command: a hospital's IT person, the registry's staff and the
network's operator on the phone need the same list (config, key files, policy,
data, network path, TLS, clock, whether the gateway knows this key), in the
order in which one problem hides the next. Nothing here changes anything; the
only signed request (``POST /v1/nodes/whoami``) hands out no work, so the
doctor can run beside the running node.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
import ssl
import stat
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from nodes.config import NodeConfig, NodeConfigError, load_config
from nodes.enrollment import key_path, load_identity
from nodes.transport import (
    GatewayURLError,
    check_gateway_url,
    explain,
    gateway_client,
    is_loopback_url,
    tls_context,
)
from varde.crypto import key_fingerprint, load_private_key, public_key_b64
from varde.envelope import seal, utcnow

Status = Literal["ok", "warn", "fail"]

SKEW_WARN_S = 5.0
SKEW_FAIL_S = 30.0
"""Signed messages live about a minute: beyond 30 s of skew they start to expire in transit."""
CERT_WARN_DAYS = 14


class Check(BaseModel):
    """One check's outcome; ``fix`` says what to do when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def render(self) -> str:
        """``ok   name: detail`` (and the fix on its own line)."""
        line = f"{self.status:<4} {self.name}: {self.detail}"
        return f"{line}\n     fix: {self.fix}" if self.fix and self.status != "ok" else line


def _ok(name: str, detail: str) -> Check:
    return Check(name=name, status="ok", detail=detail)


def _warn(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, status="warn", detail=detail, fix=fix)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, status="fail", detail=detail, fix=fix)


def check_keys(cfg: NodeConfig) -> list[Check]:
    """The private key exists, is an Ed25519 key, and only its owner can read it."""
    path = key_path(cfg.state_dir)
    if not path.exists():
        return [
            _fail(
                "key",
                f"no key file at {path}",
                "restore keys/node_key.pem from the backup, or enroll again (varde node init)",
            )
        ]
    try:
        key = load_private_key(path)
    except (ValueError, OSError) as err:
        return [_fail("key", f"{path} is not a usable key ({err})", "restore it from the backup")]
    out = [_ok("key", f"{path} ({key_fingerprint(public_key_b64(key))})")]
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        out.append(
            _fail(
                "key file mode", f"{path} is mode {mode:o}: others can read it", f"chmod 600 {path}"
            )
        )
    else:
        out.append(_ok("key file mode", f"{mode:o}"))
    folder = path.parent
    fmode = stat.S_IMODE(folder.stat().st_mode)
    if folder.name == "keys" and fmode & 0o077:
        out.append(
            _warn("key directory mode", f"{folder} is mode {fmode:o}", f"chmod 700 {folder}")
        )
    return out


def check_identity(cfg: NodeConfig) -> Check:
    """The node pinned a gateway key at enrollment."""
    try:
        ident = load_identity(cfg.state_dir)
    except ValueError as err:
        return _fail(
            "enrollment", f"identity.json unreadable ({err})", "restore it from the backup"
        )
    if ident is None:
        return _fail(
            "enrollment",
            f"not enrolled (no {cfg.state_dir / 'identity.json'})",
            "enroll with a token from the gateway operator (varde node init)",
        )
    if ident.site != cfg.site:
        return _fail(
            "enrollment",
            f"identity is for site {ident.site!r}, config says {cfg.site!r}",
            "make site: in config.yaml match the enrolled site",
        )
    return _ok(
        "enrollment", f"site {ident.site}, gateway key {key_fingerprint(ident.gateway_public_key)}"
    )


def check_policy(cfg: NodeConfig) -> Check:
    """``varde policy check`` on the configured policy; deny-all is a warning."""
    from nodes.policy_check import check_policy_file

    result = check_policy_file(cfg.policy, site=cfg.site)
    if not result.ok or result.policy is None:
        return _fail("policy", result.explain(), f"fix it, then: varde policy check {cfg.policy}")
    pol = result.policy
    if not pol.projects or not pol.fields or not pol.statistics:
        return _warn(
            "policy",
            f"{cfg.policy} is valid but DENIES EVERYTHING (no project, field or statistic)",
            "registry staff add the projects, fields and statistics they agreed to serve",
        )
    return _ok("policy", result.explain())


def check_data(cfg: NodeConfig) -> Check:
    """The data through the mapping (``check-data``), or the common-schema file, as run loads it."""
    from nodes.mapping.check import DataReport

    report: DataReport
    if cfg.mapping is not None:
        from nodes.mapping import MappingError
        from nodes.mapping.check import check_data as check_mapped

        try:
            report = check_mapped(cfg.mapping, cfg.data)
        except (MappingError, OSError) as err:
            return _fail("data", f"mapping {cfg.mapping}: {err}", "fix the mapping")
        hint = f"varde node check-data --mapping {cfg.mapping}"
    elif cfg.data is not None:
        from nodes.mapping.check import check_registry_frame
        from nodes.registry_io import read_registry

        try:
            frame = read_registry(cfg.data)
        except (ValueError, OSError) as err:
            return _fail("data", f"cannot read {cfg.data}: {err}", "fix data: in config.yaml")
        report = check_registry_frame(frame, site=cfg.site, source=str(cfg.data))
        hint = f"varde node check-data --data {cfg.data}"
    else:
        return _fail("data", "no data configured", "set data: (or mapping:) in config.yaml")
    if report.verdict == "fail":
        return _fail("data", report.summary(), f"see the full report: {hint}")
    if report.verdict == "warnings":
        return _warn("data", report.summary(), f"see the full report: {hint}")
    return _ok("data", report.summary())


def proxy_for(url: str) -> str | None:
    """The proxy the node's HTTP client would use for ``url`` (environment, NO_PROXY honoured)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def check_certificate(url: str, ca_file: Path | None, timeout: float = 5.0) -> Check:
    """The gateway's certificate chain verifies for its host name and is not about to expire."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        if is_loopback_url(url):
            return _ok("tls", "plain http on loopback (TLS not needed on this machine)")
        return _warn("tls", "plain http (--dev-network): nothing is encrypted", "use https://")
    host, port = parts.hostname or "", parts.port or 443
    try:
        ctx = tls_context(ca_file)
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as err:
        trust = f"the CA in {ca_file}" if ca_file else "this machine's trusted CAs"
        return _fail(
            "tls",
            f"certificate of {host} not accepted by {trust}: {err.verify_message or err}",
            "pass --ca-file (ca_file: in config.yaml) with the CA the operator gave you, "
            "or ask the operator to renew the certificate",
        )
    except (OSError, GatewayURLError) as err:
        return _fail("tls", f"TLS handshake with {host}:{port} failed: {err}", "check the URL")
    if not cert or "notAfter" not in cert:
        return _ok("tls", f"{host}: chain verified")
    expires = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), dt.UTC)
    left = expires - utcnow()
    issuer = {str(k): str(v) for rdn in cert.get("issuer", ()) for k, v in rdn}  # type: ignore[str-unpack]
    detail = (
        f"{host}: chain verified (issuer {issuer.get('commonName', '?')}), "
        f"valid for {left.days} more day(s)"
    )
    if left < dt.timedelta(days=CERT_WARN_DAYS):
        return _warn("tls", detail, "ask the network's operator to renew the certificate")
    return _ok("tls", detail)


def _clock(resp: httpx.Response, body: dict[str, object] | None) -> dt.datetime | None:
    text = body.get("server_time") if body else None
    if isinstance(text, str):
        return dt.datetime.fromisoformat(text)
    date = resp.headers.get("date")
    return email.utils.parsedate_to_datetime(date) if date else None


def check_gateway(cfg: NodeConfig) -> list[Check]:
    """Proxy, reachability, clock skew and whether the gateway knows this node's key."""
    out: list[Check] = []
    url = cfg.gateway_url.rstrip("/")
    proxy = proxy_for(url)
    try:
        client = gateway_client(url, ca_file=cfg.ca_file, dev_network=cfg.dev_network)
    except GatewayURLError as err:
        return [_fail("gateway", str(err), "fix gateway_url / ca_file in config.yaml")]
    with client:
        try:
            health = client.get(f"{url}/healthz")
        except httpx.HTTPError as err:
            reason = explain(err, url, cfg.ca_file)
            if proxy:
                out.append(_fail("proxy", f"through {proxy}: {reason}", "check HTTPS_PROXY"))
            out.append(_fail("reachable", reason, "open outbound HTTPS to the gateway host"))
            return out
        if proxy:
            out.append(_ok("proxy", f"the gateway answers through {proxy}"))
            if url.startswith("https://"):  # the tunnel hides the chain from a direct look
                out.append(_ok("tls", "certificate chain verified through the proxy"))
        if health.status_code != 200:
            out.append(
                _fail("reachable", f"/healthz answered {health.status_code}", "check gateway_url")
            )
            return out
        version = health.json().get("version", "?") if health.content else "?"
        out.append(_ok("reachable", f"{url} answers (gateway version {version})"))
        out.extend(_whoami(cfg, client, url))
    return out


def _whoami(cfg: NodeConfig, client: httpx.Client, url: str) -> list[Check]:
    path = key_path(cfg.state_dir)
    try:
        key = load_private_key(path)
    except (ValueError, OSError):
        return [_fail("key recognised", "no usable key to sign with", "see the key check above")]
    env = seal(
        key,
        kind="hello",
        sender=cfg.site,
        recipient="gateway",
        body={},
        ttl=dt.timedelta(seconds=60),
    )
    sent = utcnow()
    try:
        resp = client.post(f"{url}/v1/nodes/whoami", json=env.model_dump(mode="json"))
    except httpx.HTTPError as err:
        return [_fail("key recognised", explain(err, url, cfg.ca_file), "try again")]
    got = utcnow()
    try:
        body = resp.json() if resp.content else None
    except ValueError:
        body = None
    detail = str(body.get("detail", resp.text) if isinstance(body, dict) else resp.text)
    out: list[Check] = []
    server = _clock(resp, body if isinstance(body, dict) else None)
    if server is not None:
        skew = (server - (sent + (got - sent) / 2)).total_seconds()
        text = f"{skew:+.1f} s against the gateway"
        if abs(skew) > SKEW_FAIL_S:
            out.append(_fail("clock", text, "synchronise this machine's clock (NTP)"))
        elif abs(skew) > SKEW_WARN_S:
            out.append(_warn("clock", text, "synchronise this machine's clock (NTP)"))
        else:
            out.append(_ok("clock", text))
    mine = key_fingerprint(public_key_b64(key))
    if resp.status_code == 200 and isinstance(body, dict):
        if body.get("key_fingerprint") == mine:
            out.append(_ok("key recognised", f"the gateway pinned this node's key ({mine})"))
        else:
            out.append(
                _fail(
                    "key recognised",
                    f"gateway pinned {body.get('key_fingerprint')}, not {mine}",
                    "enroll again",
                )
            )
    elif resp.status_code == 403:
        out.append(_fail("key recognised", detail, "ask the network's operator"))
    elif "forged" in detail:
        out.append(
            _fail(
                "key recognised",
                f"the gateway pinned another key for site {cfg.site!r} (this one is {mine})",
                "restore keys/node_key.pem from the backup; after a key rotation, enroll "
                f"again with a new token (varde admin enroll-token {cfg.site})",
            )
        )
    elif "unknown_sender" in detail:
        out.append(
            _fail(
                "key recognised",
                f"the gateway has no enrolled site {cfg.site!r}",
                "enroll with a token from the operator (varde node init)",
            )
        )
    else:
        out.append(_fail("key recognised", f"HTTP {resp.status_code}: {detail}", "see the message"))
    return out


def diagnose(
    config_path: Path, *, ca_file: Path | None = None, dev_network: bool | None = None
) -> list[Check]:
    """Every check, in order; later checks are skipped when the config cannot be read.

    ``ca_file`` / ``dev_network``: use these instead of the config's.
    """
    try:
        cfg = load_config(config_path)
    except NodeConfigError as err:
        return [_fail("config", str(err), "give the config.yaml 'varde node init' wrote")]
    if ca_file is not None:
        cfg = cfg.model_copy(update={"ca_file": ca_file})
    if dev_network is not None:
        cfg = cfg.model_copy(update={"dev_network": dev_network})
    out = [_ok("config", f"{config_path} (site {cfg.site})")]
    try:
        check_gateway_url(cfg.gateway_url, cfg.dev_network)
        out.append(_ok("gateway url", cfg.gateway_url))
    except GatewayURLError as err:
        out.append(_fail("gateway url", str(err), "fix gateway_url in config.yaml"))
        return out
    steps: list[Callable[[NodeConfig], Check | list[Check]]] = [
        check_keys,
        check_identity,
        check_policy,
        check_data,
        lambda c: (
            check_certificate(c.gateway_url, c.ca_file) if not proxy_for(c.gateway_url) else []
        ),
        check_gateway,
    ]
    for step in steps:
        got = step(cfg)
        out.extend(got if isinstance(got, list) else [got])
    return out
