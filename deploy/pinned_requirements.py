"""Print the exact runtime dependency set of an installed ``varde``, one ``name==version`` a line.

Why: an air-gapped hospital server cannot resolve dependencies. On a connected
machine with the same operating system and Python, install the wheel, run this
with that environment's Python, and ``pip download`` exactly these pins into a
wheelhouse (docs/OPERATIONS.md, "Offline install"). Unlike ``pip freeze`` it
walks ``varde``'s own requirements (with the extras asked for), so test and lint
tools installed beside it never enter the set.

    python deploy/pinned_requirements.py [--extra postgres] > requirements.txt
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def pinned(root: str = "varde", extras: frozenset[str] = frozenset()) -> dict[str, str]:
    """The installed distributions ``root`` needs at run time (with ``extras``), by name."""
    found: dict[str, str] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        key = (canonicalize_name(name), wanted)
        if key in done:
            continue
        done.add(key)
        dist = metadata.distribution(name)
        found[canonicalize_name(name)] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": extra}) for extra in {"", *wanted}
            ):
                continue
            todo.append((req.name, frozenset(req.extras)))
    found.pop(canonicalize_name(root))
    return dict(sorted(found.items()))


def main(argv: list[str] | None = None) -> int:
    """Write the pins to standard output."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], help="an extra of varde")
    args = parser.parse_args(argv)
    for name, version in pinned(extras=frozenset(args.extra)).items():
        sys.stdout.write(f"{name}=={version}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
