"""``varde node check-data``: a site's data through its mapping, checked and reported locally.

Nothing is sent anywhere: the command reads the source, maps it and prints the
report (:func:`nodes.mapping.check.check_data`), so staff can fix a mapping or
their export before a node serves a single query.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nodes.cli.common import fail

data_app = typer.Typer(pretty_exceptions_show_locals=False, help="Check a site's data.")


@data_app.command("check-data")
def check_data_command(
    mapping: Annotated[
        Path | None,
        typer.Option(help="The site's mapping file (docs/MAPPING.md).", dir_okay=False),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="A CSV or Parquet file: read in place of the mapping's source, or without "
            "--mapping a registry file in the common schema."
        ),
    ] = None,
    site: Annotated[str, typer.Option(help="Site name shown for a file without mapping.")] = "",
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Rows read and rejected (grouped, with counts), missing shares, contradictions, verdict.

    Exit 0 when the node would start (ok or warnings), 1 when it would refuse the data.
    """
    from nodes.mapping.check import check_data, check_registry_frame
    from nodes.mapping.loader import MappingError
    from nodes.registry_io import read_registry

    if fmt not in ("text", "json"):
        fail("--format must be text or json")
    try:
        if mapping is not None:
            report = check_data(mapping, data)
        elif data is not None:
            try:
                frame = read_registry(data)
            except ValueError as err:  # a value outside the schema: what the node would say
                fail(str(err), code=1)
            report = check_registry_frame(frame, site=site or data.stem, source=str(data))
        else:
            fail("give --mapping FILE (and optionally --data FILE), or --data FILE")
    except MappingError as err:  # the mapping file itself is unusable
        fail(str(err))
    typer.echo(report.model_dump_json(indent=2) if fmt == "json" else report.render())
    if report.verdict == "fail":
        raise typer.Exit(code=1)
