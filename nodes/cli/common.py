"""What the node's commands share: the state-directory option and one way to fail.

The commands work on local files only (a policy file, a node's state
directory) and never talk to the gateway, so registry staff can check, prove
and decide on their own machine. Heavy imports stay inside the commands, so
``varde --help`` on a hospital machine loads only typer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from varde.redaction import redact

# The gateway link's options, the same on init, run, doctor and rotate-key (nodes/transport.py).
CaFile = Annotated[
    Path | None,
    typer.Option(
        "--ca-file",
        help="Trust this CA (PEM) for the gateway's TLS certificate instead of the system CAs.",
    ),
]
DevNetwork = Annotated[
    bool,
    typer.Option(
        "--dev-network", help="Allow plain http to a gateway off loopback (development only)."
    ),
]
NodeStateDir = Annotated[
    Path, typer.Option("--state-dir", help="The node's state directory (key, ledger, audit).")
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit (2: the user's input was wrong)."""
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code=code)


def existing_state(state_dir: Path) -> Path:
    """``state_dir`` if a node has run there; otherwise fail naming what is missing."""
    if not (state_dir / "node.sqlite").exists():
        fail(f"no node state at {state_dir} (expected {state_dir / 'node.sqlite'})")
    return state_dir


def node_public_key(state_dir: Path) -> str | None:
    """The node's public key (base64) from its key file, if it has one."""
    from nodes.enrollment import key_path
    from varde.crypto import load_private_key, public_key_b64

    path = key_path(state_dir)
    return public_key_b64(load_private_key(path)) if path.exists() else None
