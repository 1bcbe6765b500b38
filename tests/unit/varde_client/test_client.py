"""The SDK refuses to send a researcher's token in clear text off this machine."""

from __future__ import annotations

import pytest

from varde.gateway_url import GatewayURLError
from varde_client import VardeClient


@pytest.mark.parametrize(
    "url", ["https://gateway.example.org", "http://127.0.0.1:8700", "http://localhost:8700"]
)
def test_https_anywhere_and_plain_http_on_loopback_are_accepted(url: str) -> None:
    with VardeClient(url, "token") as client:
        assert client.url == url


@pytest.mark.parametrize("url", ["http://10.1.2.3:8700", "http://gateway.example.org"])
def test_plain_http_off_loopback_is_refused_unless_a_dev_network(url: str) -> None:
    with pytest.raises(GatewayURLError, match=r"plain http .*--dev-network \(dev_network=True"):
        VardeClient(url, "token")
    with VardeClient(url, "token", dev_network=True) as client:
        assert client.url == url


@pytest.mark.parametrize(
    ("url", "words"),
    [("127.0.0.1:8700", "give it as https://"), ("https://u:pw@gw.example.org", "user name")],
)
def test_malformed_urls_are_refused_naming_the_fix(url: str, words: str) -> None:
    with pytest.raises(GatewayURLError, match=words):
        VardeClient(url, "token")
