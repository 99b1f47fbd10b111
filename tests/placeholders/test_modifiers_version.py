"""`| version`: the version of the secret a placeholder was read at (KV v2, versioned files).

Through the engine with the file backend, whose `@versions` secrets are versioned like KV v2
and whose plain secrets are not (like KV v1). KV v2 against OpenBao:
tests/integration/test_rotation_poll_vault.py.
"""

from __future__ import annotations

import pytest
import yaml

from plugin.errors import ModifierError
from plugin.manifests.inputs import InputStream
from plugin.placeholders import modifiers
from plugin.placeholders.engine import EngineOptions, ResolutionError, generate
from plugin.secrets.base import VersionedData, read_version
from plugin.secrets.file import FileBackend

CANARY = "version-canary-Tq9v"
SECRETS = {
    "kv/app": {"@versions": [{"password": "old"}, {"password": CANARY}]},
    "kv/plain": {"password": CANARY},
}


def render(*placeholders: str) -> str:
    lines = "".join(f"  k{i}: '{text}'\n" for i, text in enumerate(placeholders))
    text = f"kind: ConfigMap\nmetadata: {{name: c}}\ndata:\n{lines}"
    backend = FileBackend(SECRETS, "test")
    return generate([InputStream("c.yaml", text)], EngineOptions(), lambda: backend)


def test_version_of_the_latest_and_of_a_pinned_read() -> None:
    out = render("<path:kv/app#password | version>", "<path:kv/app#password#1 | version>")
    assert yaml.safe_load(out)["data"] == {"k0": "2", "k1": "1"}  # text, as annotations need
    assert CANARY not in out


def test_version_feeds_the_next_modifier() -> None:
    out = render("<path:kv/app#password | version | base64encode>")
    assert "k0: Mg==" in out


def test_no_version_is_an_error_naming_the_placeholder() -> None:
    with pytest.raises(ResolutionError) as caught:
        render("<path:kv/plain#password | version>")
    message = str(caught.value)
    assert "<path:kv/plain#password | version>" in message
    assert "kv/plain has no version (a KV v1 secret or an unversioned file secret)" in message
    assert CANARY not in message


def test_a_missing_key_is_still_an_error() -> None:
    with pytest.raises(ResolutionError, match="key 'absent' not found"):
        render("<path:kv/app#absent | version>")


def test_nothing_read_with_a_default_is_an_error_unless_the_default_comes_last() -> None:
    with pytest.raises(ResolutionError, match="nothing was read from kv/none"):
        render("<path:kv/none#password | default x | version>")
    out = render("<path:kv/none#password | version | default 7>")
    assert yaml.safe_load(out)["data"] == {"k0": "7"}


def test_modifier_unit() -> None:
    context = modifiers.ModifierContext(read_version="12")
    assert modifiers.apply("version", (), "anything", context) == "12"
    with pytest.raises(ModifierError, match="version: invalid parameters"):
        modifiers.apply("version", ("x",), "anything", context)
    with pytest.raises(ModifierError, match="version: no secret version was read"):
        modifiers.apply("version", (), "anything")


def test_versioned_data_is_the_secrets_keys_only() -> None:
    data = VersionedData({"password": CANARY}, "3")
    assert dict(data) == {"password": CANARY} and read_version(data) == "3"
    assert read_version({"password": CANARY}) is None
    assert "version" not in data
