"""What ``varde node init`` checks before it spends the token (no gateway needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.node_init import (
    InitError,
    InitRequest,
    check_target,
    check_token,
    init_node,
    starter_policy_text,
)
from nodes.policy_check import check_policy_text


@pytest.mark.parametrize("site", ["voss", "st-olavs", "a1"])
def test_the_starter_policy_checks_and_denies_everything(site: str) -> None:
    result = check_policy_text(starter_policy_text(site), site=site)
    assert result.ok, result.explain()
    assert result.policy is not None
    assert (result.policy.projects, result.policy.fields, result.policy.statistics) == ({}, [], [])
    assert "DENIES EVERYTHING" in starter_policy_text(site)


def test_a_real_token_passes_and_malformed_ones_do_not() -> None:
    check_token("ve_" + "A" * 43)
    for bad in ("", "ve_", "vr_" + "A" * 43, "ve_short", "ve_" + "A" * 40 + " x", "A" * 46):
        with pytest.raises(InitError, match="not an enrollment token"):
            check_token(bad)


@given(st.text(max_size=80))
def test_any_token_text_is_accepted_or_refused_clearly(token: str) -> None:
    try:
        check_token(token)
    except InitError as err:
        assert "enrollment token" in str(err)
    else:
        assert token.strip().startswith("ve_")


def test_an_existing_directory_is_never_overwritten(tmp_path: Path) -> None:
    check_target(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty")
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "ledger.sqlite").write_text("")
    with pytest.raises(InitError, match="already exists"):
        check_target(tmp_path / "node")
    with pytest.raises(InitError, match="does not exist"):
        check_target(tmp_path / "no" / "parent" / "node")


def test_plain_http_off_loopback_is_refused_before_anything(tmp_path: Path) -> None:
    req = InitRequest(
        gateway_url="http://10.1.2.3:8700",
        token="ve_" + "A" * 43,
        directory=tmp_path / "node",
        site="voss",
    )
    with pytest.raises(InitError, match="--dev-network"):
        init_node(req)
    assert list(tmp_path.iterdir()) == []
