"""Read every planned secret once, concurrently, within a deadline.

Worker threads are daemons so that a read stuck past the deadline can never
keep the process alive after the run has failed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable

from plugin.errors import BackendError
from plugin.secrets.base import Backend, SecretData, SecretRef

log = logging.getLogger(__name__)

Results = dict[SecretRef, SecretData | BackendError]

_MAX_WAIT = 3600.0


def fetch_all(
    backend: Backend,
    refs: Iterable[SecretRef],
    deadline: float,
    *,
    max_workers: int | None = None,
) -> Results:
    """Return data or the error for every ref; `deadline` is a `time.monotonic()` instant.

    At most `backend.max_workers` threads read at once, and at most `max_workers` when given
    (a caller that is not in a hurry spends less CPU on connections and threads).
    """
    pending = sorted(set(refs), key=lambda ref: (ref.path, ref.version or "", ref.kv_version or ""))
    results: Results = {}
    known: Results = {}
    in_memory = getattr(backend, "prefetched", None)
    if callable(in_memory):
        # Answered from memory without a request (`plugin.placeholders.prefetch`): read here,
        # still through `read` (the reference index observes it), without starting threads.
        for ref in pending:
            if in_memory(ref):
                try:
                    known[ref] = backend.read(ref)
                except BackendError as exc:
                    known[ref] = exc
        pending = [ref for ref in pending if ref not in known]
    if not pending:
        return known
    set_deadline = getattr(backend, "set_deadline", None)
    if callable(set_deadline):
        set_deadline(deadline)
    workers = max(1, min(int(backend.max_workers), max_workers or len(pending), len(pending)))
    started = time.monotonic()
    work: queue.SimpleQueue[SecretRef] = queue.SimpleQueue()
    for ref in pending:
        work.put(ref)
    done = threading.Condition()

    def worker() -> None:
        while True:
            try:
                ref = work.get_nowait()
            except queue.Empty:
                return
            outcome: SecretData | BackendError
            began = time.monotonic()
            try:
                outcome = backend.read(ref)
                log.debug("read %s: %d keys in %.3f s", ref.describe(), len(outcome), _since(began))
            except BackendError as exc:
                outcome = exc
                log.debug("read %s failed in %.3f s: %s", ref.describe(), _since(began), exc)
            except Exception as exc:  # a backend bug must not crash the run
                outcome = BackendError(f"reading {ref.describe()} failed: {type(exc).__name__}")
            with done:
                results[ref] = outcome
                done.notify_all()

    for number in range(workers):
        threading.Thread(target=worker, name=f"fetch-{number}", daemon=True).start()
    with done:
        while len(results) < len(pending):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done.wait(min(remaining, _MAX_WAIT))  # an infinite deadline cannot be waited on
        snapshot = dict(results)
    for ref in pending:
        if ref not in snapshot:
            snapshot[ref] = BackendError(f"deadline exceeded before {ref.describe()} could be read")
    snapshot.update(known)
    log.debug(
        "read %d secret paths with %d workers in %.3f s",
        len(pending),
        workers,
        time.monotonic() - started,
    )
    return snapshot


def _since(began: float) -> float:
    return time.monotonic() - began
