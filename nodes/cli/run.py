"""``varde node run`` and ``varde synth``: start a hospital node, or write synthetic registries."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from nodes.cli.common import CaFile, DevNetwork, fail
from varde.errors import VardeError
from varde.redaction import install_log_redaction

node_app = typer.Typer(
    pretty_exceptions_show_locals=False, help="Run a hospital node.", no_args_is_help=True
)


@node_app.command("synth")
def synth(
    site: Annotated[list[str], typer.Option("--site", help="Site name (repeat for several).")],
    rows: Annotated[int, typer.Option(min=1, help="Tumours per site.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed (reproducible output).")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("data"),
    fmt: Annotated[str, typer.Option("--format", help="parquet, csv or both.")] = "parquet",
) -> None:
    """Write seeded synthetic registries in the common schema."""
    from nodes.synth import generate_registry, write_registry

    if fmt not in {"parquet", "csv", "both"}:
        fail("--format must be parquet, csv or both")
    out.mkdir(parents=True, exist_ok=True)
    for name in site:
        frame = generate_registry(name, rows, seed=seed)
        for f in ("parquet", "csv") if fmt == "both" else (fmt,):
            path = write_registry(frame, out / f"{name}.{f}", f)
            typer.echo(f"{name}: {len(frame):,} tumours -> {path}")


@node_app.command("run")
def node_run(
    config: Annotated[
        Path | None,
        typer.Option(help="DIR/config.yaml written by 'varde node init' (instead of the paths)."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="policies/<site>.yaml; missing file = deny all.")
    ] = None,
    gateway: Annotated[
        str | None, typer.Option(help="Gateway URL (the node only connects out).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Registry file (.parquet or .csv).")] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            help="Site mapping (docs/MAPPING.md): read the data through it; --data then "
            "replaces the mapping's source."
        ),
    ] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Node state: key, ledger, audit.")] = None,
    enroll_token: Annotated[str | None, typer.Option(help="One-time token (first start).")] = None,
    site: Annotated[
        str | None, typer.Option(help="Site name (needed only without a policy).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=32)] = 4,
    console_port: Annotated[
        int | None, typer.Option(help="Also serve the staff console on 127.0.0.1 at this port.")
    ] = None,
    flower_superlink: Annotated[
        str | None,
        typer.Option(
            help="host:port of the gateway's Flower SuperLink: also run a Flower SuperNode "
            "(federated training, connecting out only) with this node's policy, data and ledger."
        ),
    ] = None,
    flower_insecure: Annotated[
        bool, typer.Option(help="Plain text to the SuperLink (127.0.0.1 only).")
    ] = False,
    flower_root_certificates: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="CA (PEM) of a TLS SuperLink."),
    ] = None,
    ca_file: CaFile = None,
    dev_network: DevNetwork = False,
    log_format: Annotated[
        str,
        typer.Option(
            envvar="VARDE_LOG_FORMAT",
            help="text, or json: one JSON object a line with the request id of each work item.",
        ),
    ] = "text",
) -> None:
    """Run a node: enroll if needed, then long-poll the gateway and answer work.

    Either ``--config DIR/config.yaml`` (a node directory made by ``varde node
    init``) or ``--policy``, ``--gateway``, ``--data`` and ``--state-dir``.
    """
    from nodes.config import NodeConfigError, load_config
    from nodes.policy_check import PolicyError
    from nodes.runner import run_node
    from nodes.training.supernode import SuperNodeSettings
    from varde.logs import configure_logging

    if log_format not in ("text", "json"):
        fail("--log-format must be text or json")
    configure_logging("json" if log_format == "json" else "text", logging.INFO, component="node")
    install_log_redaction()  # the enrollment token and key material never reach the log
    try:
        if config is not None:
            cfg = load_config(config)
            if cfg.data is None and cfg.mapping is None and mapping is None:
                raise ValueError(f"{config}: no data file (set data: in the config)")
            mapping = mapping or cfg.mapping
            policy, gateway, data = (
                policy or cfg.policy,
                gateway or cfg.gateway_url,
                data or cfg.data,
            )
            state_dir, site = state_dir or cfg.state_dir, site or cfg.site
            ca_file, dev_network = ca_file or cfg.ca_file, dev_network or cfg.dev_network
        missing = [
            f"--{name.replace('_', '-')}"
            for name, value in (
                ("policy", policy),
                ("gateway", gateway),
                ("data", data or mapping),
                ("state_dir", state_dir),
            )
            if value is None
        ]
        if missing:
            raise ValueError(f"give --config DIR/config.yaml, or {', '.join(missing)}")
        assert policy and gateway and state_dir  # for mypy: checked just above
        supernode = None
        if flower_superlink is not None:
            supernode = SuperNodeSettings(
                flower_superlink,
                insecure=flower_insecure,
                root_certificates=flower_root_certificates,
            )
        elif flower_insecure or flower_root_certificates is not None:
            raise ValueError("--flower-insecure/--flower-root-certificates need --flower-superlink")
        run_node(
            policy_path=policy,
            gateway_url=gateway,
            data_path=data,
            mapping_path=mapping,
            state_dir=state_dir,
            enroll_token=enroll_token,
            site=site,
            workers=workers,
            console_port=console_port,
            supernode=supernode,
            ca_file=ca_file,
            dev_network=dev_network,
        )
    except ConnectionError as err:
        fail(str(err), code=1)
    except (
        PolicyError,
        NodeConfigError,
        VardeError,
        FileNotFoundError,
        RuntimeError,
        ValueError,
    ) as err:
        fail(str(err))
    except KeyboardInterrupt:
        pass
