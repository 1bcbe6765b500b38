"""The node directory's config.yaml: written by init, read by run and doctor."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.config import NodeConfig, NodeConfigError, load_config


def test_round_trip_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    cfg = NodeConfig(
        site="voss",
        gateway_url="https://gw.example.org",
        policy=Path("policies/voss.yaml"),
        data=Path("/data/voss.parquet"),
    )
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    loaded = load_config(tmp_path / "config.yaml")
    assert loaded.policy == tmp_path.resolve() / "policies" / "voss.yaml"
    assert loaded.state_dir == tmp_path.resolve() / "state"
    assert loaded.data == Path("/data/voss.parquet") and loaded.mapping is None
    assert "varde node run --config" in cfg.to_yaml()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[1, 2]", "must be a mapping"),
        ("site: voss\n  bad: [", "not valid YAML"),
        ("site: Voss\ngateway_url: x\npolicy: p.yaml\n", "site"),
        ("site: voss\ngateway_url: x\npolicy: p.yaml\ntypo: 1\n", "typo"),
        ("site: voss\n", "gateway_url"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(NodeConfigError, match=words):
        load_config(path)


def test_a_missing_config_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="cannot read the node config"):
        load_config(tmp_path / "nope.yaml")
