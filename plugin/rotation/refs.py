"""`plugin refs`: which applications use which secret paths, from the reference index.

Impact analysis before a rotation ("who uses kv/data/harbor?"). `--path` is a glob with the
tenant policy's syntax, so operators use one pattern language: `*` and `?` stay within one
path segment, `**` crosses segments (`kv/**` is everything under `kv/`). Paths are compared
without leading or trailing slashes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import TextIO

from plugin.errors import ConfigError
from plugin.rotation.index import Usage, index_root, read_records, usages
from plugin.security.policy import path_pattern

COLUMNS = ("PATH", "APPLICATION", "PROJECT", "BACKEND", "ADDRESS", "VERSION", "READ", "RENDERED")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--path",
        metavar="GLOB",
        help="only paths matching GLOB (* within a segment, ** across segments)",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")


def matcher(glob: str | None) -> Callable[[str], bool]:
    """A predicate over recorded paths; everything when no glob is given."""
    if glob is None or not glob.strip():
        return lambda _path: True
    pattern = path_pattern(glob)
    return lambda path: pattern.fullmatch(path.strip().strip("/")) is not None


def run(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    root = index_root(environ)
    if root is None:
        raise ConfigError(
            "no reference index: no cache directory is configured (PLUGIN_CACHE_DIR, "
            "XDG_CACHE_HOME or HOME)"
        )
    rows = list(usages(read_records(root), matcher(args.path)))
    if args.output == "json":
        body = {"index": str(root), "references": [dataclasses.asdict(row) for row in rows]}
        out.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    else:
        write_table(rows, out)
    return 0


def write_table(rows: list[Usage], out: TextIO) -> None:
    table = [COLUMNS] + [
        tuple(
            _cell(text)
            for text in (
                row.path,
                f"{row.namespace}/{row.application}" if row.namespace else row.application,
                row.project,
                row.backend,
                row.address or "-",
                row.version or "latest",
                row.read_version or "-",
                row.rendered_at,
            )
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for line in table:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() + "\n")
    apps = {(row.namespace, row.application) for row in rows}
    paths = {row.path for row in rows}
    out.write(f"\n{len(paths)} paths used by {len(apps)} applications\n")


def _cell(text: str) -> str:
    """Paths are written by tenants: never print a control character to the terminal raw."""
    return text if text.isprintable() and " " not in text else json.dumps(text)
