"""The node's one HTTP client to the gateway: TLS verified, no plain HTTP off loopback, proxies.

Every node-to-gateway request (the agent's long poll, enrollment, ``varde node
init`` and ``varde node doctor``) goes through :func:`gateway_client`, so the
rules are the same everywhere:

* the gateway's TLS certificate is verified against the operating system's
  trust store (where hospital IT installs its own CAs) or, with ``ca_file``,
  against that CA only. This is *in addition to* the gateway signing key the
  node pins at enrollment: TLS keeps the link private and stops a
  man-in-the-middle from even seeing work items; the pinned key proves who
  signed them;
* plain ``http://`` is refused for anything but loopback (``127.0.0.1``,
  ``localhost``, ``::1``) unless ``dev_network`` says this is a development
  network: a typo must not send a node's manifest and releases in clear text;
* ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` are honoured (httpx
  ``trust_env``), because a hospital usually reaches the internet through a
  proxy only.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from varde.gateway_url import LOOPBACK_HOSTS, GatewayURLError, check_gateway_url, is_loopback_url

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)

# The URL rule is shared with the researcher SDK (varde.gateway_url); re-exported for node code.
__all__ = [
    "DEFAULT_TIMEOUT",
    "LOOPBACK_HOSTS",
    "GatewayURLError",
    "check_gateway_url",
    "explain",
    "gateway_client",
    "is_loopback_url",
    "tls_context",
]


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Certificate verification for the gateway: the system trust store, or only ``ca_file``.

    Raises :class:`GatewayURLError` if ``ca_file`` is missing or not a PEM CA.
    """
    if ca_file is None:
        return ssl.create_default_context()
    if not ca_file.is_file():
        raise GatewayURLError(f"--ca-file {ca_file} does not exist (give the CA's PEM file)")
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (ssl.SSLError, ValueError, OSError) as err:
        raise GatewayURLError(
            f"--ca-file {ca_file} is not a PEM certificate file ({err}); give the CA "
            "certificate that signed the gateway's certificate"
        ) from err


def gateway_client(
    url: str,
    *,
    ca_file: Path | None = None,
    dev_network: bool = False,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
) -> httpx.Client:
    """The HTTP client a node uses to reach the gateway at ``url`` (checked first).

    Requests are made with full URLs (``f"{url}/v1/..."``); the client only
    carries the TLS, proxy and timeout settings.
    """
    check_gateway_url(url, dev_network)
    return httpx.Client(
        verify=tls_context(ca_file),
        timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
        trust_env=True,  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, SSL_CERT_FILE
    )


def explain(err: httpx.HTTPError, url: str, ca_file: Path | None = None) -> str:
    """One line saying why the gateway at ``url`` could not be reached, and what to do."""
    text = str(err) or type(err).__name__
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or str(cause)
            if "expired" in reason:
                return (
                    f"the gateway's TLS certificate at {url} has expired ({reason}): "
                    "ask the network's operator to renew it"
                )
            trust = f"the CA in {ca_file}" if ca_file else "this machine's trusted CAs"
            return (
                f"the gateway's TLS certificate at {url} is not trusted by {trust} ({reason}): "
                "pass --ca-file with the CA certificate the network's operator gave you"
            )
        if isinstance(cause, ssl.SSLError):
            return (
                f"TLS handshake with {url} failed ({cause.reason or cause}): is it really an "
                "https gateway, and does a proxy in between intercept TLS?"
            )
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, httpx.ProxyError):
        return f"the proxy refused the connection to {url} ({text}): check HTTPS_PROXY"
    if isinstance(err, httpx.TimeoutException):
        return f"the gateway at {url} did not answer in time ({text}): check the network"
    return (
        f"cannot reach the gateway at {url} ({text}): check the URL, the outbound "
        "firewall rule and HTTPS_PROXY"
    )
