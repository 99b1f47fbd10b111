"""The built-in file backend: format, versions and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.config import Settings
from plugin.errors import BackendError, ConfigError, MissingPathError
from plugin.secrets.base import SecretRef
from plugin.secrets.file import FileBackend


def backend(tmp_path: Path, text: str) -> FileBackend:
    path = tmp_path / "secrets.yaml"
    path.write_text(text)
    return FileBackend.from_file(path)


def test_reads_keep_types(tmp_path: Path) -> None:
    store = backend(tmp_path, "a/b:\n  s: x\n  'n': 80\n  f: '1.0'\n  m: {k: [1]}\n")
    assert store.read(SecretRef("a/b")) == {"s": "x", "n": 80, "f": "1.0", "m": {"k": [1]}}


@pytest.mark.parametrize(("key", "shown"), [("n", "false"), ("on", "true"), ("1e3", "1000.0")])
def test_keys_that_go_reads_as_other_types_are_refused(
    tmp_path: Path, key: str, shown: str
) -> None:
    with pytest.raises(ConfigError, match=f"has a key that YAML reads as {shown}"):
        backend(tmp_path, f"a/b:\n  {key}: x\n")


def test_versions(tmp_path: Path) -> None:
    store = backend(tmp_path, "v:\n  '@versions':\n  - {s: one}\n  - {s: two}\n")
    assert store.read(SecretRef("v"))["s"] == "two"
    assert store.read(SecretRef("v", "1"))["s"] == "one"
    with pytest.raises(MissingPathError, match="no version 3"):
        store.read(SecretRef("v", "3"))
    with pytest.raises(BackendError, match="not a number"):
        store.read(SecretRef("v", "latest"))


def test_version_of_unversioned_path_is_ignored(tmp_path: Path) -> None:
    assert backend(tmp_path, "p: {k: v}\n").read(SecretRef("p", "7")) == {"k": "v"}


def test_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match="no secret at path x/y"):
        backend(tmp_path, "p: {k: v}\n").read(SecretRef("x/y"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "must be a mapping"),
        ("p: text\n", "entry 'p' must be a mapping"),
        ("p: {'@versions': [], k: 1}\n", "mixes @versions"),
        ("p: [unclosed\n", "not valid YAML at line"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        backend(tmp_path, text)


def test_missing_file_and_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read secrets file"):
        FileBackend.from_file(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="AVP_FILE_PATH"):
        FileBackend.from_settings(Settings(environ={}))
