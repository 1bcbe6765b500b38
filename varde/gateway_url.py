"""The one rule for a gateway URL, shared by every client of the gateway (nodes and researchers).

A node's manifest and releases and a researcher's bearer token must never cross
a network in clear text because of a typo, so ``http://`` is accepted only for
loopback (where a test or demo gateway runs on the same machine) unless the
caller says this really is a development network. Nodes
(:mod:`nodes.transport`) and the researcher SDK (:mod:`varde_client.client`)
both check here, so they accept and refuse the same URLs with the same words.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["LOOPBACK_HOSTS", "GatewayURLError", "check_gateway_url", "is_loopback_url"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Hosts where plain http is allowed without a development-network override."""


class GatewayURLError(ValueError):
    """The gateway URL (or the TLS settings for it) cannot be used; the message says the fix."""


def check_gateway_url(
    url: str, dev_network: bool = False, *, override: str = "--dev-network"
) -> None:
    """Refuse a gateway URL that must not be used, naming the problem and the fix.

    ``https://`` anywhere, ``http://`` only to loopback unless ``dev_network``;
    ``override`` names how the caller says so (a flag, a keyword argument).

    >>> check_gateway_url("https://gateway.example.org")
    >>> check_gateway_url("http://127.0.0.1:8700")
    >>> try:
    ...     check_gateway_url("http://10.1.2.3:8700")
    ... except GatewayURLError as err:
    ...     print(str(err).split(";")[0])
    bad gateway URL 'http://10.1.2.3:8700': plain http to 10.1.2.3
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as err:
        raise GatewayURLError(f"bad gateway URL {url!r}: malformed ({err})") from err
    if parts.scheme not in {"http", "https"} or not host:
        raise GatewayURLError(
            f"bad gateway URL {url!r}: give it as https://gateway.example.org "
            "(scheme https, then the host name)"
        )
    if parts.username or parts.password:
        raise GatewayURLError(f"bad gateway URL {url!r}: it must not carry a user name or password")
    if parts.query or parts.fragment:
        raise GatewayURLError(f"bad gateway URL {url!r}: it must not carry a query or fragment")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS and not dev_network:
        raise GatewayURLError(
            f"bad gateway URL {url!r}: plain http to {host}; use https:// (the gateway "
            f"serves TLS), or pass {override} if this really is a development network"
        )


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine."""
    return urlsplit(url).hostname in LOOPBACK_HOSTS
