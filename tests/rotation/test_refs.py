"""`plugin refs`: impact analysis from the reference index."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from plugin.errors import ConfigError
from plugin.rotation import index, refs


def populate(root: Path) -> None:
    for name, paths in (
        ("harbor", ("kv/data/harbor", "kv/data/shared")),
        ("gitlab", ("kv/data/shared", "kv/data/gitlab")),
    ):
        index.write_record(
            root,
            index.Record(
                name=name,
                namespace="argocd",
                project="platform",
                identity={"AVP_AUTH_TYPE": "k8s"},
                references=tuple(
                    index.Reference(backend="vault", path=p, address="https://bao:8200")
                    for p in paths
                ),
                rendered_at="2026-12-05T21:00:00Z",
            ),
        )


def run(tmp_path: Path, path: str | None, output: str) -> str:
    out = io.StringIO()
    args = argparse.Namespace(path=path, output=output)
    assert refs.run(args, {"PLUGIN_CACHE_DIR": str(tmp_path)}, out) == 0
    return out.getvalue()


def test_two_apps_sharing_a_path_json(tmp_path: Path) -> None:
    populate(tmp_path / index.INDEX_DIR)
    body = json.loads(run(tmp_path, "kv/data/shared", "json"))
    assert [(r["path"], r["application"]) for r in body["references"]] == [
        ("kv/data/shared", "gitlab"),
        ("kv/data/shared", "harbor"),
    ]
    body = json.loads(run(tmp_path, "kv/data/harbor", "json"))
    assert [r["application"] for r in body["references"]] == ["harbor"]


def test_table_lists_every_path_and_app(tmp_path: Path) -> None:
    populate(tmp_path / index.INDEX_DIR)
    text = run(tmp_path, None, "table")
    lines = text.splitlines()
    assert lines[0].split() == list(refs.COLUMNS)
    rows = [line.split()[:2] for line in lines[1:] if line.startswith("kv/")]
    assert rows == [
        ["kv/data/gitlab", "argocd/gitlab"],
        ["kv/data/harbor", "argocd/harbor"],
        ["kv/data/shared", "argocd/gitlab"],
        ["kv/data/shared", "argocd/harbor"],
    ]
    assert "3 paths used by 2 applications" in text


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        ("kv/*", set()),  # `*` stays within one segment
        ("kv/data/*", {"kv/data/harbor", "kv/data/shared", "kv/data/gitlab"}),
        ("kv/**", {"kv/data/harbor", "kv/data/shared", "kv/data/gitlab"}),
        ("/kv/data/h*/", {"kv/data/harbor"}),
        ("kv/data/?itlab", {"kv/data/gitlab"}),
    ],
)
def test_glob_syntax_is_the_tenant_policy_one(
    tmp_path: Path, glob: str, expected: set[str]
) -> None:
    populate(tmp_path / index.INDEX_DIR)
    body = json.loads(run(tmp_path, glob, "json"))
    assert {r["path"] for r in body["references"]} == expected


def test_control_characters_are_escaped_in_the_table() -> None:
    out = io.StringIO()
    row = index.Usage("kv/\x1b[2Jx", "ns", "app", "p", "file", "", None, None, "")
    refs.write_table([row], out)
    assert "\x1b" not in out.getvalue()
    assert "\\u001b" in out.getvalue()


def test_empty_index(tmp_path: Path) -> None:
    assert json.loads(run(tmp_path, None, "json"))["references"] == []


def test_no_cache_directory_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="PLUGIN_CACHE_DIR"):
        refs.run(argparse.Namespace(path=None, output="json"), {}, io.StringIO())


def test_the_version_each_application_read_is_shown(tmp_path: Path) -> None:
    """After a rotation: which Applications still run the old version?"""
    root = tmp_path / index.INDEX_DIR
    for name, read in (("old", "3"), ("new", "4")):
        reference = index.Reference(
            backend="vault", path="kv/data/db", address="https://bao:8200", read_version=read
        )
        index.write_record(root, index.Record(name, "argocd", "p", {}, (reference,)))
    body = json.loads(run(tmp_path, "kv/data/db", "json"))
    assert {(r["application"], r["read_version"]) for r in body["references"]} == {
        ("old", "3"),
        ("new", "4"),
    }
    lines = run(tmp_path, None, "table").splitlines()
    read_column = lines[0].split().index("READ")
    assert sorted(line.split()[read_column] for line in lines[1:3]) == ["3", "4"]
