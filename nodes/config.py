"""A node directory's ``config.yaml``: where its policy, data, state and gateway are.

``varde node init`` writes it; ``varde node run --config`` and ``varde node
doctor --config`` read it, so a node is started with one argument and the
systemd unit or compose service never repeats paths. Relative paths are
relative to the directory holding the config file, so the directory can be
moved (or mounted elsewhere in a container) as a whole.

Layout made by ``init`` (see docs/JOINING.md)::

    DIR/config.yaml
    DIR/keys/node_key.pem      (0600; DIR/keys 0700)
    DIR/policies/<site>.yaml   (denies everything until staff edit it)
    DIR/mapping.yaml           (how local columns map to the common schema)
    DIR/state/                 (identity.json with the pinned gateway key, ledger, audit)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SITE_PATTERN = r"^[a-z][a-z0-9_-]{1,40}$"
"""A site name as the gateway enrolls it."""

CONFIG_NAME = "config.yaml"


class NodeConfigError(ValueError):
    """The config file cannot be read or does not validate; the message names the key."""


class NodeConfig(BaseModel):
    """One node's settings; paths as written (see :meth:`resolved`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Annotated[str, Field(pattern=SITE_PATTERN, description="This site's name.")]
    gateway_url: str = Field(description="The gateway (https://, or http:// on loopback).")
    policy: Path = Field(description="The site's policy file.")
    mapping: Path | None = Field(default=None, description="Mapping of local data, if any.")
    data: Path | None = Field(default=None, description="Registry file (common schema or raw).")
    state_dir: Path = Field(default=Path("state"), description="Identity, ledger and audit.")
    ca_file: Path | None = Field(default=None, description="CA of the gateway's certificate.")
    dev_network: bool = Field(default=False, description="Allow plain http off loopback.")

    def resolved(self, base: Path) -> NodeConfig:
        """The same config with every relative path made relative to ``base``."""

        def at(path: Path | None) -> Path | None:
            return None if path is None else (path if path.is_absolute() else base / path)

        return self.model_copy(
            update={
                "policy": at(self.policy),
                "mapping": at(self.mapping),
                "data": at(self.data),
                "state_dir": at(self.state_dir),
                "ca_file": at(self.ca_file),
            }
        )

    def to_yaml(self) -> str:
        """The config file's text (paths as given, ``None`` values left out)."""
        doc = self.model_dump(mode="json", exclude_none=True)
        header = (
            "# Varde node configuration (written by 'varde node init').\n"
            "# Relative paths are relative to this file's directory.\n"
            "# Start the node with: varde node run --config <this file>\n"
        )
        return header + yaml.safe_dump(doc, sort_keys=False)


def load_config(path: Path) -> NodeConfig:
    """Read ``path`` and resolve its paths against its directory; clear errors on bad input."""
    try:
        text = path.read_text()
    except OSError as err:
        raise NodeConfigError(
            f"cannot read the node config {path} ({err.strerror or err}): give the "
            "config.yaml that 'varde node init' wrote (--config DIR/config.yaml)"
        ) from err
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise NodeConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise NodeConfigError(f"{path} must be a mapping of keys (site, gateway_url, policy, ...)")
    try:
        config = NodeConfig.model_validate(doc)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in err.errors()
        )
        raise NodeConfigError(f"{path}: {problems}") from err
    return config.resolved(path.resolve().parent)
