"""The prefetch's source scan and its session, with the (real, local) file backend.

Timing and the Vault backend are covered by tests/integration/test_prefetch_vault.py.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from plugin.errors import MissingPathError
from plugin.manifests.inputs import InputStream
from plugin.placeholders import engine
from plugin.placeholders import prefetch as prefetch_module
from plugin.placeholders.prefetch import (
    MAX_PREFETCHED_PATHS,
    SLOW_FIRST_READ_SECONDS,
    Prefetch,
    prefetch_threads,
    scan_sources,
)
from plugin.placeholders.substitute import Rules
from plugin.rotation.index import Recorder
from plugin.secrets.base import SecretData, SecretRef
from plugin.secrets.fetch import fetch_all
from plugin.secrets.file import FileBackend
from plugin.security.redact import Redactor

BIG = 1 << 20


def test_scan_finds_distinct_refs_in_texts_then_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text("a: <path:kv/data/one#k>\nb: <path:kv/data/one#j>\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "x.yaml").write_text("c: <path:kv/data/two#k#4>\n")
    refs = scan_sources(
        [tmp_path], ["<path:kv/data/zero#k>"], Rules(), max_bytes=BIG, max_files=100
    )
    assert refs == [
        SecretRef("kv/data/zero"),
        SecretRef("kv/data/one"),  # a directory's own files before its subdirectories'
        SecretRef("kv/data/two", "4"),
    ]


def test_scan_leaves_out_refused_paths(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text(
        "a: <path:kv/data/team-a/x#k>\nb: <path:kv/data/team-b/x#k>\nc: <path:other/x#k>\n"
    )
    rules = Rules(
        path_validation=re.compile(r"^kv/"),
        path_check=lambda path: None if "/team-a/" in path else "refused",
    )
    refs = scan_sources([tmp_path], [], rules, max_bytes=BIG, max_files=100)
    assert refs == [SecretRef("kv/data/team-a/x")]


def test_scan_skips_binary_oversized_and_linked_files_and_stops_at_the_budgets(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-binary.tgz").write_bytes(b"\0\x1f<path:kv/data/bin#k>")
    (tmp_path / "b-big.yaml").write_text("x: <path:kv/data/big#k>\n" + "#" * 2000)
    (tmp_path / "c-link.yaml").symlink_to(tmp_path / "z-real.yaml")
    (tmp_path / "d-latin1.yaml").write_bytes(b"\xe9 <path:kv/data/latin#k>")
    (tmp_path / "z-real.yaml").write_text("x: <path:kv/data/real#k>\n")
    refs = scan_sources([tmp_path], [], Rules(), max_bytes=1000, max_files=100)
    assert refs == [SecretRef("kv/data/real")]
    assert scan_sources([tmp_path], [], Rules(), max_bytes=1000, max_files=4) == []


def test_scan_stops_at_the_cap(tmp_path: Path) -> None:
    text = "".join(f"k{i}: <path:kv/data/p{i}#k>\n" for i in range(MAX_PREFETCHED_PATHS + 10))
    refs = scan_sources([], [text], Rules(), max_bytes=BIG, max_files=100)
    assert len(refs) == MAX_PREFETCHED_PATHS
    assert refs[-1] == SecretRef(f"kv/data/p{MAX_PREFETCHED_PATHS - 1}")


def file_store(tmp_path: Path) -> FileBackend:
    store = tmp_path / "secrets.yaml"
    store.write_text(yaml.safe_dump({"kv/data/app": {"password": "prefetched-value-Qx9"}}))
    return FileBackend.from_file(store)


def test_the_engine_gets_prefetched_data_and_rereads_what_failed(tmp_path: Path) -> None:
    made: list[FileBackend] = []

    def make() -> FileBackend:
        made.append(file_store(tmp_path))
        return made[-1]

    redactor = Redactor()
    prefetch = Prefetch(
        make, Rules(redactor=redactor), time.monotonic() + 60, max_bytes=BIG, max_files=10
    )
    recorder = Recorder()
    prefetch.start([], ["<path:kv/data/app#password> <path:kv/data/gone#k>"])
    engine_backend = recorder.wrap(prefetch.factory())()
    engine_backend.login()
    assert "prefetched-value-Qx9" in redactor.values  # registered when it arrived
    assert isinstance(prefetch.results[SecretRef("kv/data/gone")], MissingPathError)
    assert engine_backend.read(SecretRef("kv/data/app")) == {"password": "prefetched-value-Qx9"}
    try:
        engine_backend.read(SecretRef("kv/data/gone"))
    except MissingPathError as exc:
        assert "kv/data/gone" in str(exc)
    else:
        raise AssertionError("a failed prefetch must be read again and fail the same way")
    assert len(made) == 1  # one session, shared
    # Only what the engine asked for is recorded.
    assert set(recorder.reads) == {SecretRef("kv/data/app"), SecretRef("kv/data/gone")}
    prefetch.close()


def test_nothing_prefetched_nothing_made_until_the_engine_asks(tmp_path: Path) -> None:
    made: list[FileBackend] = []

    def make() -> FileBackend:
        made.append(file_store(tmp_path))
        return made[-1]

    prefetch = Prefetch(make, Rules(), time.monotonic() + 60, max_bytes=BIG, max_files=10)
    prefetch.start([tmp_path], ["no placeholder"])
    prefetch.wait()
    assert made == []
    backend = prefetch.factory()()
    backend.login()
    assert backend.read(SecretRef("kv/data/app")) == {"password": "prefetched-value-Qx9"}
    assert len(made) == 1
    prefetch.close()


class CountingRedactor(Redactor):
    def __init__(self) -> None:
        super().__init__()
        self.maps: list[dict[str, object]] = []

    def add_secret(self, value: object) -> None:
        if isinstance(value, dict):
            self.maps.append(value)
        super().add_secret(value)


def test_the_engine_does_not_register_prefetched_values_again(tmp_path: Path) -> None:
    """The prefetch registered them as they arrived; the engine registers only what it read."""
    redactor = CountingRedactor()
    rules = Rules(redactor=redactor)
    prefetch = Prefetch(
        lambda: file_store(tmp_path), rules, time.monotonic() + 60, max_bytes=BIG, max_files=10
    )
    prefetch.start([], ["<path:kv/data/app#password>"])
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n"
        "  a: <path:kv/data/app#password>\n  b: <path:kv/data/gone#k | default x>\n"
    )
    documents = engine.load([InputStream("t", text)], skip_non_manifests=False)
    outcome = engine.resolve(documents, engine.EngineOptions(rules=rules), prefetch.factory())
    assert not outcome.failures
    assert redactor.maps == [{"password": "prefetched-value-Qx9"}]
    prefetch.close()


def test_prefetched_reads_are_answered_in_the_callers_thread(tmp_path: Path) -> None:
    """`fetch_all` starts no thread for what is in memory; the rest is read as before."""
    prefetch = Prefetch(
        lambda: file_store(tmp_path), Rules(), time.monotonic() + 60, max_bytes=BIG, max_files=10
    )
    prefetch.start([], ["<path:kv/data/app#password>"])
    view = prefetch.factory()()
    view.login()
    threads: dict[SecretRef, str] = {}
    plain_read = view.read

    def read(ref: SecretRef) -> SecretData:
        threads[ref] = threading.current_thread().name
        return plain_read(ref)

    view.read = read  # type: ignore[method-assign]
    results = fetch_all(
        view, [SecretRef("kv/data/app"), SecretRef("kv/data/gone")], time.monotonic() + 60
    )
    assert results[SecretRef("kv/data/app")] == {"password": "prefetched-value-Qx9"}
    assert isinstance(results[SecretRef("kv/data/gone")], MissingPathError)
    assert threads[SecretRef("kv/data/app")] == threading.current_thread().name
    assert threads[SecretRef("kv/data/gone")].startswith("fetch-")
    prefetch.close()


def test_binary_files_are_told_by_their_first_8_kib(tmp_path: Path) -> None:
    """A NUL in the first 8 KiB skips the file (without reading the rest); a NUL after it
    does not (the same rule as before the head was read on its own)."""
    (tmp_path / "chart.tgz").write_bytes(b"\x1f\x8b\0" + b"x" * 100_000 + b"<path:kv/data/p#k>")
    (tmp_path / "late-nul.yaml").write_bytes(b"a: <path:kv/data/q#k>\n" + b"x" * 9000 + b"\0")
    refs = scan_sources([tmp_path], [], Rules(), max_bytes=BIG, max_files=10)
    assert refs == [SecretRef("kv/data/q")]


class ThreadRecordingStore(FileBackend):
    """The file store with Vault's concurrency, noting which thread read each path; the
    first read takes `first` seconds, the others 20 ms (long enough that idle threads would
    take the next paths)."""

    max_workers = 8

    def __init__(self, data: dict[str, dict[str, str]], first: float = 0.0) -> None:
        super().__init__(data, "test")
        self.threads: dict[str, str] = {}
        self.first = first

    def read(self, ref: SecretRef) -> SecretData:
        time.sleep(self.first if not self.threads else 0.02)
        self.threads[ref.path] = threading.current_thread().name
        return super().read(ref)


def prefetched_by(data: dict[str, dict[str, str]], first: float = 0.0) -> dict[str, str]:
    """Which thread read each path of `data` ahead (all of them, successfully)."""
    store = ThreadRecordingStore(data, first)
    prefetch = Prefetch(lambda: store, Rules(), time.monotonic() + 60, max_bytes=BIG, max_files=1)
    prefetch.start([], [" ".join(f"<path:{path}#k>" for path in data)])
    prefetch.wait()
    assert len(prefetch.results) == len(data)
    assert all(not isinstance(value, Exception) for value in prefetch.results.values())
    prefetch.close()
    return store.threads


def test_the_prefetch_reads_with_one_thread_per_eight_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five paths on one thread (one connection), seventeen on two: the read-ahead is not
    what the render waits for, so it spends as little CPU as it can next to the renderer."""
    # A near Vault, however loaded the machine running the test is.
    monkeypatch.setattr(prefetch_module, "SLOW_FIRST_READ_SECONDS", 60.0)
    for count, threads in ((5, 1), (17, 2)):  # the first alone, then 16 on fetch-0 and -1
        data = {f"kv/data/p{n}": {"k": f"v{n}"} for n in range(count)}
        assert len(set(prefetched_by(data).values())) == threads
    assert [prefetch_threads(n) for n in (0, 1, 8, 9, 64)] == [1, 1, 1, 2, 8]


def test_a_far_vault_is_read_ahead_with_the_backends_concurrency(tmp_path: Path) -> None:
    """When the first read (and mount lookup) is slow, the others are read in parallel."""
    data = {f"kv/data/p{n}": {"k": f"v{n}"} for n in range(5)}
    threads = prefetched_by(data, first=SLOW_FIRST_READ_SECONDS * 3)
    assert len(set(threads.values())) == 4  # fetch-0 to fetch-3 for the four others


def test_fetch_all_uses_at_most_the_threads_it_is_given(tmp_path: Path) -> None:
    data = {f"kv/data/p{n}": {"k": f"v{n}"} for n in range(6)}
    store = ThreadRecordingStore(data, first=0.02)
    refs = [SecretRef(path) for path in data]
    fetch_all(store, refs, time.monotonic() + 60, max_workers=2)
    assert len(set(store.threads.values())) == 2
    store.threads.clear()  # (the first read takes 20 ms again)
    fetch_all(store, refs, time.monotonic() + 60)
    assert len(set(store.threads.values())) == 6  # the backend's own concurrency, as before
