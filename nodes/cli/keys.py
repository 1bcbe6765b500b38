"""``varde node rotate-key``: replace the node's key, keeping its ledger and audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nodes.cli.common import CaFile, DevNetwork, fail

keys_app = typer.Typer(pretty_exceptions_show_locals=False, no_args_is_help=True)


@keys_app.command("rotate-key")
def node_rotate_key(
    config: Annotated[Path, typer.Option(help="DIR/config.yaml written by 'varde node init'.")],
    token: Annotated[
        str, typer.Option(help="A one-time enrollment token for this site (from the operator).")
    ],
    ca_file: CaFile = None,
    dev_network: DevNetwork = False,
) -> None:
    """Make a new node key, enroll it with the token, and retire the old one.

    Stop the node first. Everything is checked before the token is spent; if the
    gateway refuses, nothing changes. Afterwards the audit trail records the
    handover (signed by the old key), the old key is kept as
    keys/retired/<fingerprint>.pem and ``varde audit verify`` still accepts the
    checkpoints it signed.
    """
    from nodes.key_rotation import RotationError, rotate_key

    try:
        result = rotate_key(
            config, token, ca_file=ca_file, dev_network=True if dev_network else None
        )
    except RotationError as err:
        fail(str(err))
    typer.echo(f"node {result.site}: key rotated, the gateway pins the new key")
    typer.echo(f"  new key: {result.new_fingerprint}  ({result.key_path})")
    typer.echo(f"  old key: {result.old_fingerprint}  retired to {result.retired_key}")
    typer.echo(f"  audit trail: handover recorded at entry {result.handover_entry}")
    if result.gateway_key_changed:
        typer.echo("  the gateway's own key changed too: the new one is pinned")
    typer.echo(f"next: start the node (varde node run --config {config})")
