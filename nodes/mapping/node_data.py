"""What a starting node loads: its registry, through a mapping or from a common-schema file.

Why the checks run here: a node must refuse to start on data that fail a hard
check (naming the source, the column and the rule) and start, with the
warnings logged, on data with only soft ones. Both ways in (``--mapping`` or a
plain ``--data`` file in the common schema) go through the same
:mod:`nodes.mapping.contradictions` rules.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from nodes.data import RegistryData, prepare
from nodes.mapping.check import DataReport, check_registry_frame
from nodes.mapping.loader import MappingError, load_mapping
from nodes.mapping.reader import load_site, mapping_base, refusal
from nodes.registry_io import read_registry

log = logging.getLogger("varde.node.data")


def load_node_data(
    *,
    site: str,
    max_rows_per_patient: int,
    data_path: Path | None = None,
    mapping_path: Path | None = None,
) -> RegistryData:
    """The prepared registry of ``site`` (bounded per patient), or :class:`MappingError`.

    With ``mapping_path`` the rows come through the mapping (``data_path``, if
    given, replaces the mapping's source); without, ``data_path`` is a registry
    file in the common schema.
    """
    if mapping_path is not None:
        mapping = load_mapping(mapping_path)
        if mapping.site != site:
            raise MappingError(
                f"{mapping_path}: mapping is for site {mapping.site!r}, not {site!r}"
            )
        load = load_site(mapping, mapping_base(mapping_path), data_path)
        if load.frame is None:
            raise MappingError(refusal(load))
        frame = load.frame
        for problem in load.log.soft:
            log.warning("site %s data: %s", site, problem.line())
    elif data_path is not None:
        frame = read_registry(data_path)
        report = check_registry_frame(frame, site=site, source=str(data_path))
        _refuse_or_warn(report)
    else:
        raise MappingError("give a registry file (--data) or a mapping (--mapping)")
    data = prepare(frame, site=site, max_rows_per_patient=max_rows_per_patient)
    absent = frozenset(frame.attrs.get("not_available", ()))
    return dataclasses.replace(data, not_available=absent) if absent else data


def _refuse_or_warn(report: DataReport) -> None:
    hard = [f for f in report.findings if f.hard]
    if hard:
        lines = [f"{report.source}: {report.rows_rejected:,} of {report.rows_read:,} row(s) fail"]
        lines += [f"  {f.field}: {f.rule}: {f.detail}: {f.rows:,} row(s)" for f in hard]
        raise MappingError("\n".join(lines))
    for f in report.findings:
        log.warning(
            "site %s data: %s: %s: %s: %d row(s)", report.site, f.field, f.rule, f.detail, f.rows
        )
