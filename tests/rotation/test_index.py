"""The reference index: private files, atomic writes, a per-volume key, never a value."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.config import Settings
from plugin.errors import MissingPathError
from plugin.rotation import index
from plugin.secrets.base import SecretData, SecretRef
from plugin.secrets.file import FileBackend

CANARY = "canary-R0t4tion-9f"
CANARY_KEY_NAME = "canary-keyname-value-Xq"


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def record(name: str, namespace: str, *paths: str) -> index.Record:
    return index.Record(
        name=name,
        namespace=namespace,
        project="team-a",
        identity={"AVP_AUTH_TYPE": "k8s", "AVP_K8S_ROLE": "team-a"},
        references=tuple(index.Reference(backend="vault", path=p, kv_version="2") for p in paths),
        rendered_at="2026-12-05T21:00:00Z",
    )


def recorded_render(tmp_path: Path, environ: dict[str, str]) -> Path | None:
    backend = FileBackend(
        {"kv/app": {"password": CANARY, "user": "u"}, "kv/other": {"token": CANARY + "2"}}, "test"
    )
    recorder = index.Recorder()
    wrapped = recorder.wrap(lambda: backend)()
    wrapped.login()
    wrapped.read(SecretRef("kv/app"))
    wrapped.read(SecretRef("kv/other", "3", "1"))
    with pytest.raises(MissingPathError):
        wrapped.read(SecretRef("kv/absent"))
    settings = Settings(environ, defaults={})
    return index.record_render(recorder, environ, settings, None)


def app_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PLUGIN_CACHE_DIR": str(tmp_path / "cache"),
        "ARGOCD_APP_NAME": "web",
        "ARGOCD_APP_NAMESPACE": "argocd",
        "ARGOCD_APP_PROJECT_NAME": "team-a",
        "AVP_TYPE": "file",
        **extra,
    }


def test_record_is_private_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    written = recorded_render(tmp_path, app_env(tmp_path))
    assert written is not None
    root = tmp_path / "cache" / index.INDEX_DIR
    assert written.parent == root / index.APPS_DIR
    assert mode(tmp_path / "cache") == 0o700
    assert mode(root) == 0o700
    assert mode(root / index.APPS_DIR) == 0o700
    assert mode(written) == 0o600
    assert mode(root / index.KEY_FILE) == 0o600
    assert len((root / index.KEY_FILE).read_bytes()) == index.KEY_BYTES
    # No temporary file is left behind.
    assert sorted(p.name for p in root.iterdir()) == [index.APPS_DIR, index.KEY_FILE]
    assert [p.name for p in (root / index.APPS_DIR).iterdir()] == [written.name]


def test_existing_loose_directory_is_tightened(tmp_path: Path, open_umask: None) -> None:
    root = tmp_path / "cache" / index.INDEX_DIR
    root.mkdir(parents=True, mode=0o777)
    os.chmod(root, 0o777)
    recorded_render(tmp_path, app_env(tmp_path))
    assert mode(root) == 0o700


def test_symlinked_index_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "cache" / index.INDEX_DIR).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(index.UnsafeIndexError):
        recorded_render(tmp_path, app_env(tmp_path))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_record_content_and_no_value(tmp_path: Path) -> None:
    written = recorded_render(tmp_path, app_env(tmp_path))
    assert written is not None
    text = written.read_text()
    assert CANARY not in text  # neither value appears (the second one contains the first)
    body = json.loads(text)
    assert (body["name"], body["namespace"], body["project"]) == ("web", "argocd", "team-a")
    refs = {r["path"]: r for r in body["references"]}
    assert set(refs) == {"kv/app", "kv/other", "kv/absent"}
    assert refs["kv/other"]["version"] == "3"
    assert refs["kv/other"]["kv_version"] == "1"
    assert refs["kv/app"]["version"] is None
    assert refs["kv/absent"]["status"] == "missing"
    assert refs["kv/absent"]["fingerprint"] == ""
    assert refs["kv/app"]["fingerprint"].startswith(index.FINGERPRINT_PREFIX)
    key = (tmp_path / "cache" / index.INDEX_DIR / index.KEY_FILE).read_bytes()
    assert refs["kv/app"]["fingerprint"] == index.fingerprint(
        key, {"user": "u", "password": CANARY}
    )
    # Scan every file of the volume (the key file aside) for the values, raw and encoded.
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file() and path.name != index.KEY_FILE:
            data = path.read_bytes()
            assert CANARY.encode() not in data
            assert json.dumps(CANARY).encode() not in data


def test_file_name_is_a_digest_of_namespace_and_name(tmp_path: Path) -> None:
    env = app_env(tmp_path, ARGOCD_APP_NAME="../../etc/passwd", ARGOCD_APP_NAMESPACE="ns/..")
    written = recorded_render(tmp_path, env)
    assert written is not None
    assert written.parent == tmp_path / "cache" / index.INDEX_DIR / index.APPS_DIR
    assert written.name == index.app_file_name("ns/..", "../../etc/passwd")
    assert len(written.stem) == 64 and set(written.stem) <= set("0123456789abcdef")
    assert index.app_file_name("a", "b/c") != index.app_file_name("a/b", "c")


def test_no_application_no_record(tmp_path: Path) -> None:
    env = app_env(tmp_path)
    del env["ARGOCD_APP_NAME"]
    assert recorded_render(tmp_path, env) is None
    assert not (tmp_path / "cache").exists()


def test_volume_key_is_created_once_and_reused(tmp_path: Path) -> None:
    root = tmp_path / "rotation"
    first = index.volume_key(root)
    assert index.volume_key(root) == first
    other = index.volume_key(tmp_path / "other-volume")
    assert other != first


def test_volume_key_race_yields_one_key(tmp_path: Path) -> None:
    root = tmp_path / "rotation"
    keys: list[bytes] = []
    errors: list[BaseException] = []

    def take() -> None:
        try:
            keys.append(index.volume_key(root))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(keys)) == 1


def test_loose_key_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "rotation"
    index.volume_key(root)
    os.chmod(root / index.KEY_FILE, 0o644)
    with pytest.raises(index.UnsafeIndexError, match="readable by other users"):
        index.volume_key(root)


def test_fingerprint_depends_on_key_and_content() -> None:
    data: SecretData = {"a": "1", "b": "2"}
    key = b"k" * 32
    assert index.fingerprint(key, data) == index.fingerprint(key, {"b": "2", "a": "1"})
    assert index.fingerprint(key, data) != index.fingerprint(key, {"a": "1", "b": "3"})
    assert index.fingerprint(key, data) != index.fingerprint(b"x" * 32, data)


def test_write_is_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "rotation"
    first = index.write_record(root, record("web", "argocd", "kv/a"))
    before = first.read_text()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        index.write_record(root, record("web", "argocd", "kv/a", "kv/b"))
    monkeypatch.undo()
    # The old record is intact and no temporary file remains.
    assert first.read_text() == before
    assert [p.name for p in first.parent.iterdir()] == [first.name]
    second = index.write_record(root, record("web", "argocd", "kv/a", "kv/b"))
    assert second == first
    assert [r.path for r in index.read_records(root)[0].references] == ["kv/a", "kv/b"]


def test_record_write_does_not_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The record is written after every render: an fsync there costs the render 5-130 ms
    # (bench_avp W4/W5). A record torn by a machine crash is skipped by readers instead.
    root = tmp_path / "rotation"
    index.volume_key(root)  # the key file, written once per volume, is still synced
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    index.write_record(root, record("web", "argocd", "kv/a"))
    assert synced == []
    (root / index.APPS_DIR / "torn.json").write_text('{"format": 2, "name": "we')
    assert [r.name for r in index.read_records(root)] == ["web"]


def test_read_records_skips_foreign_and_broken_files(tmp_path: Path) -> None:
    root = tmp_path / "rotation"
    index.write_record(root, record("web", "argocd", "kv/a"))
    apps = root / index.APPS_DIR
    (apps / "broken.json").write_text("{not json")
    (apps / "other-format.json").write_text(json.dumps({"format": 99}))
    (tmp_path / "planted.json").write_text(record("evil", "x", "kv/z").to_json())
    (apps / "link.json").symlink_to(tmp_path / "planted.json")
    records = index.read_records(root)
    assert [(r.namespace, r.name) for r in records] == [("argocd", "web")]


def test_identity_is_described_without_credentials(tmp_path: Path) -> None:
    env = app_env(
        tmp_path,
        AVP_TYPE="vault",
        VAULT_ADDR="https://bao.example:8200",
        AVP_AUTH_TYPE="approle",
        AVP_ROLE_ID="role-id-canary",
        AVP_SECRET_ID=CANARY,
        VAULT_TOKEN=CANARY_KEY_NAME,
    )
    settings = Settings(env)
    recorder = index.Recorder()
    recorder.reads[SecretRef("kv/data/app")] = {"password": CANARY}
    built = index.build_record(recorder, env, settings, None, b"k" * 32)
    assert built is not None
    text = built.to_json()
    assert CANARY not in text and CANARY_KEY_NAME not in text and "role-id-canary" not in text
    assert built.identity == {"AVP_AUTH_TYPE": "approle"}
    (reference,) = built.references
    assert (reference.backend, reference.address, reference.kv_version) == (
        "vault",
        "https://bao.example:8200",
        "2",
    )


def test_credentials_the_application_supplied_are_named_never_recorded(tmp_path: Path) -> None:
    env = app_env(
        tmp_path,
        AVP_TYPE="vault",
        AVP_AUTH_TYPE="approle",
        AVP_ROLE_ID="operator-role",
        ARGOCD_ENV_AVP_ROLE_ID="role-id-canary",
        ARGOCD_ENV_AVP_SECRET_ID=CANARY,
        ARGOCD_ENV_AVP_JWT_ROLE="app-jwt-role",
    )
    built = index.build_record(index.Recorder(), env, Settings(env), None, b"k" * 32)
    assert built is not None
    assert CANARY not in built.to_json() and "role-id-canary" not in built.to_json()
    assert built.identity[index.APPLICATION_CREDENTIALS] == "AVP_ROLE_ID,AVP_SECRET_ID"
    assert built.identity["AVP_JWT_ROLE"] == "app-jwt-role"
    # the operator's own credentials (or the policy's) are not the Application's
    operator = app_env(tmp_path, AVP_TYPE="vault", AVP_SECRET_ID=CANARY)
    built = index.build_record(index.Recorder(), operator, Settings(operator), None, b"k" * 32)
    assert built is not None and index.APPLICATION_CREDENTIALS not in built.identity
    forced = Settings(env, overrides={"AVP_ROLE_ID": "r", "AVP_SECRET_ID": "s"})
    built = index.build_record(index.Recorder(), env, forced, None, b"k" * 32)
    assert built is not None and index.APPLICATION_CREDENTIALS not in built.identity
