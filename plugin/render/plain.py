"""A plain directory of manifests: every .yaml/.yml/.json file, recursively, in name order.

Files that hold no Kubernetes object (a stray values.yaml, notes) are skipped by the engine
(`skip_non_manifests=True`), exactly as `plugin generate DIR` always did. A symlinked file is
read only when it stays inside `confine` (the repository); symlinked directories are not
followed.
"""

from __future__ import annotations

from pathlib import Path

from plugin.manifests import reader
from plugin.manifests.inputs import InputStream


def read_directory(
    app_dir: Path,
    display_root: Path | None = None,
    *,
    confine: Path | None = None,
    max_bytes: int | None = None,
) -> list[InputStream]:
    files = reader.discover(app_dir, confine)
    root = display_root if display_root is not None else app_dir
    return reader.read_files(files, root, max_bytes)
