"""The on-disk Vault token cache, without a Vault server (logins are plain callables).

The same cache is exercised against OpenBao in tests/integration/test_vault_token_cache.py.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plugin.config import Settings
from plugin.secrets.vault.auth.base import LoginResult
from plugin.secrets.vault.token_cache import (
    TokenCache,
    cache_key,
    default_cache_dir,
    expiry_margin,
)

ROOT = Path(__file__).resolve().parents[3]
CANARY_TOKEN = "s.canary-token-Xy7-never-log-me"


class Logins:
    """A login callable that hands out numbered tokens and counts calls."""

    def __init__(self, lease: int = 3600, prefix: str = CANARY_TOKEN) -> None:
        self.calls = 0
        self.lease = lease
        self.prefix = prefix

    def __call__(self) -> LoginResult:
        self.calls += 1
        return LoginResult(f"{self.prefix}-{self.calls}", self.lease, True)


@pytest.fixture
def cache(tmp_path: Path) -> TokenCache:
    opened = TokenCache.open(tmp_path / "cache" / "vault-tokens")
    assert opened is not None
    return opened


KEY = cache_key(["http://127.0.0.1:8200", "", "approle", "auth/approle", "role-a"])


def test_cache_key_is_a_hash_of_identity_parts() -> None:
    parts = ["http://v:8200", "ns1", "userpass", "auth/userpass", "alice"]
    key = cache_key(parts)
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    assert key == cache_key(list(parts))
    assert key != cache_key([*parts[:4], "bob"])
    assert key != cache_key(["http://v:8200", "ns2", *parts[2:]])
    assert key != cache_key(["http://other:8200", *parts[1:]])
    # no ambiguity from joining
    assert cache_key(["a/b", "c"]) != cache_key(["a", "b/c"])


def test_permissions_directory_0700_file_0600(tmp_path: Path, cache: TokenCache) -> None:
    logins = Logins()
    got = cache.obtain(KEY, "approle role_id=role-a", logins)
    assert not got.from_cache and logins.calls == 1
    assert stat.S_IMODE(os.stat(cache.directory).st_mode) == 0o700
    entry = cache.entry_path(KEY)
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache.directory / f"{KEY}.lock").st_mode) == 0o600
    document = json.loads(entry.read_text())
    assert document["token"] == got.result.token
    assert document["expires_at"] == pytest.approx(time.time() + 3600, abs=5)
    # no temporary files left behind
    assert sorted(p.name for p in cache.directory.iterdir()) == [f"{KEY}.json", f"{KEY}.lock"]


def test_loose_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "loose"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    assert TokenCache.open(directory) is not None
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_second_obtain_reuses_entry(cache: TokenCache) -> None:
    logins = Logins()
    first = cache.obtain(KEY, "id", logins)
    second = cache.obtain(KEY, "id", logins)
    assert second.from_cache and second.result.token == first.result.token
    assert logins.calls == 1


def test_identities_are_separate(cache: TokenCache) -> None:
    other = cache_key(["http://127.0.0.1:8200", "", "approle", "auth/approle", "role-b"])
    a, b = Logins(prefix="tok-a"), Logins(prefix="tok-b")
    token_a = cache.obtain(KEY, "a", a).result.token
    token_b = cache.obtain(other, "b", b).result.token
    assert token_a != token_b
    assert cache.obtain(KEY, "a", a).result.token == token_a
    assert cache.obtain(other, "b", b).result.token == token_b
    assert (a.calls, b.calls) == (1, 1)


def test_expiry_margin() -> None:
    assert expiry_margin(3600) == 60
    assert expiry_margin(100) == 10
    assert expiry_margin(3) == 1


def test_expired_or_nearly_expired_entries_are_not_reused(cache: TokenCache) -> None:
    logins = Logins(lease=100)
    cache.obtain(KEY, "id", logins)
    entry = cache.entry_path(KEY)
    document = json.loads(entry.read_text())
    document["expires_at"] = time.time() + 5  # less than 10% of 100 s left
    entry.write_text(json.dumps(document))
    again = cache.obtain(KEY, "id", logins)
    assert not again.from_cache and logins.calls == 2
    document = json.loads(entry.read_text())
    document["expires_at"] = time.time() + 50
    entry.write_text(json.dumps(document))
    assert cache.obtain(KEY, "id", logins).from_cache and logins.calls == 2


def test_lease_zero_never_expires(cache: TokenCache) -> None:
    logins = Logins(lease=0)
    first = cache.obtain(KEY, "id", logins)
    assert first.expires_at is None
    assert json.loads(cache.entry_path(KEY).read_text())["expires_at"] is None
    assert cache.obtain(KEY, "id", logins).from_cache and logins.calls == 1


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[1, 2]",
        b'{"vault_token": "avp-format"}',
        json.dumps({"format": 1, "key": "other", "token": "t", "lease_duration": 0,
                    "renewable": False, "expires_at": None}).encode(),
        json.dumps({"format": 1, "key": KEY, "token": 5, "lease_duration": 0,
                    "renewable": False, "expires_at": None}).encode(),
        json.dumps({"format": 1, "key": KEY, "token": "t", "lease_duration": True,
                    "renewable": False, "expires_at": None}).encode(),
        json.dumps({"format": 1, "key": KEY, "token": "t", "lease_duration": 60,
                    "renewable": False, "expires_at": None}).encode(),
        json.dumps({"format": 1, "key": KEY, "token": "t", "lease_duration": 60,
                    "renewable": False, "expires_at": "tomorrow"}).encode(),
        b"\xff\xfe garbage",
        b" " * (70 * 1024),
    ],
)  # fmt: skip
def test_corrupt_entry_is_ignored_and_overwritten(cache: TokenCache, content: bytes) -> None:
    cache.entry_path(KEY).write_bytes(content)
    logins = Logins()
    got = cache.obtain(KEY, "id", logins)
    assert not got.from_cache and logins.calls == 1
    assert json.loads(cache.entry_path(KEY).read_text())["token"] == got.result.token
    assert cache.obtain(KEY, "id", logins).from_cache


def test_symlinked_entry_is_not_followed(cache: TokenCache, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    cache.entry_path(KEY).symlink_to(target)
    logins = Logins()
    assert not cache.obtain(KEY, "id", logins).from_cache
    assert target.read_text() == "{}"  # replaced the link, not written through it
    assert not cache.entry_path(KEY).is_symlink()


def test_reject_token_forces_login_unless_refreshed_elsewhere(cache: TokenCache) -> None:
    logins = Logins()
    first = cache.obtain(KEY, "id", logins).result.token
    second = cache.obtain(KEY, "id", logins, reject_token=first)
    assert not second.from_cache and logins.calls == 2
    # the entry now holds a newer token than the rejected one: reuse it
    third = cache.obtain(KEY, "id", logins, reject_token=first)
    assert third.from_cache and third.result.token == second.result.token


def test_unwritable_directory_disables_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with caplog.at_level(logging.INFO):
        assert TokenCache.open(blocker / "cache") is None
    assert "token cache disabled" in caplog.text
    assert str(blocker / "cache") in caplog.text


def test_read_only_directory_disables_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits: use a read-only bind of /proc instead
        with caplog.at_level(logging.INFO):
            assert TokenCache.open(Path("/proc/self/vault-tokens")) is None
    else:
        directory = tmp_path / "ro"
        directory.mkdir(mode=0o500)
        with caplog.at_level(logging.INFO):
            assert TokenCache.open(directory) is None
    assert "token cache disabled" in caplog.text


def test_default_directory(tmp_path: Path) -> None:
    home = Settings(environ={"HOME": str(tmp_path)})
    assert default_cache_dir(home)[0] == tmp_path / ".cache/argocd-secrets-plugin/vault-tokens"
    xdg = Settings(environ={"HOME": str(tmp_path), "XDG_CACHE_HOME": "/xdg"})
    assert default_cache_dir(xdg)[0] == Path("/xdg/argocd-secrets-plugin/vault-tokens")
    override = Settings(environ={"HOME": "/h", "ARGOCD_ENV_AVP_TOKEN_CACHE_DIR": "/o"})
    directory, reason = default_cache_dir(override)
    assert directory == Path("/o") and "ARGOCD_ENV_AVP_TOKEN_CACHE_DIR" in reason
    assert default_cache_dir(Settings(environ={})) == (None, "HOME is not set")
    assert default_cache_dir(Settings(environ={"HOME": "/"}))[0] is None


def test_lock_held_elsewhere_times_out_to_uncached_login(cache: TokenCache) -> None:
    logins = Logins()
    handle = os.open(cache.directory / f"{KEY}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        started = time.monotonic()
        got = cache.obtain(KEY, "id", logins, lock_timeout=0.3)
        assert 0.25 < time.monotonic() - started < 5
        assert not got.from_cache and logins.calls == 1
        assert not cache.entry_path(KEY).exists()  # not written without the lock
    finally:
        os.close(handle)


def test_tokens_never_logged(cache: TokenCache, caplog: pytest.LogCaptureFixture) -> None:
    logins = Logins(lease=100)
    with caplog.at_level(logging.DEBUG):
        cache.obtain(KEY, "id", logins)
        cache.obtain(KEY, "id", logins)
        cache.entry_path(KEY).write_text("garbage")
        cache.obtain(KEY, "id", logins)
    assert caplog.text
    assert CANARY_TOKEN not in caplog.text


SNIPPET = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from plugin.secrets.vault.auth.base import LoginResult
    from plugin.secrets.vault.token_cache import TokenCache
    cache = TokenCache.open(Path(sys.argv[1]))
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    def login():
        with open(sys.argv[2], "a") as log:
            log.write(f"{os.getpid()}\\n")
        time.sleep(0.3)
        return LoginResult(f"token-{os.getpid()}", 3600, True)
    got = cache.obtain(sys.argv[4], "id", login)
    print(got.result.token, got.from_cache)
    """
)


def test_fifty_concurrent_processes_log_in_once(tmp_path: Path) -> None:
    directory = tmp_path / "shared-cache"
    record = tmp_path / "logins.txt"
    record.write_text("")
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SNIPPET, str(directory), str(record), str(start), KEY],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(50)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.split())
    assert len(record.read_text().split()) == 1
    tokens = {token for token, _ in outputs}
    assert len(tokens) == 1
    assert sum(1 for _, from_cache in outputs if from_cache == "False") == 1


def test_parents_are_private_even_with_umask_000(tmp_path: Path) -> None:
    """With umask 000, `mkdir(parents=True)` would create the parents 0777."""
    directory = tmp_path / "home" / ".cache" / "argocd-secrets-plugin" / "vault-tokens"
    previous = os.umask(0)
    try:
        assert TokenCache.open(directory) is not None
    finally:
        os.umask(previous)
    for path in (directory, *list(directory.parents)[:3]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path


def test_a_parent_writable_by_others_disables_the_cache(tmp_path: Path) -> None:
    """Another user could swap the cache directory out of a world-writable (non-sticky) parent."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    assert TokenCache.open(shared / "vault-tokens") is None
    os.chmod(shared, 0o1777)  # sticky like /tmp: others cannot rename our directory
    assert TokenCache.open(shared / "vault-tokens") is not None


def test_a_cache_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can create a directory of another user")
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 54321, 54321)
    assert TokenCache.open(foreign) is None
    # A missing component created inside a foreign directory is ours; the foreign one is not.
    assert TokenCache.open(foreign / "sub") is not None
