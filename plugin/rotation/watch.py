"""`plugin watch`: poll what each Application read, ask Argo CD to re-render the changed ones.

Why: Argo CD caches generated manifests per Git revision, so a secret rotated in Vault reaches
nothing until the Application is hard-refreshed. The watcher reads the reference index (what
each Application's last successful render read, `rotation.index`), polls those references
through the poller (KV v2 metadata, KV v1 keyed fingerprints; the render's identity under the
tenant policy) and, for each Application whose secrets changed since that render, patches the
Application with `argocd.argoproj.io/refresh: hard` through the refresher.

The loop (`Watcher`) talks to four small protocols so that it is tested with fakes and wired
to the real things (`poll`, `kube`, `lease`) only in `run`:

- `Poller.check(record)`: has anything the record read changed? (and how many Vault requests
  that cost); `Refresher.request_hard_refresh(name, namespace)`; `Elector` (Lease-based leader
  election: only the leader polls, standby replicas only try to acquire); `Clock`.

Guarantees of the loop:
- One request per render: once a refresh was requested for an Application's render (keyed by
  the record's `rendered_at`), the Application is neither polled nor patched again until Argo
  CD re-rendered it (a new `rendered_at`) or the refresh back-off expired
  (`PLUGIN_WATCH_REFRESH_RETRY`, doubling per attempt, at most one hour): an Application whose
  new render fails is not patched every cycle.
- Vault requests are capped by a token bucket (`PLUGIN_WATCH_RATE` per second); an
  Application whose poll failed is polled again after an exponential back-off (one interval,
  doubling, at most `PLUGIN_WATCH_MAX_BACKOFF`).
- Leadership is checked before every poll and every patch: a replica that lost the Lease stops
  in the middle of a cycle.
- The Application's own namespace is not the record's `namespace` (Argo CD's
  `ARGOCD_APP_NAMESPACE` is the destination namespace): Argo CD names an Application outside
  its control-plane namespace `<namespace>_<name>` in `ARGOCD_APP_NAME`; a plain name lives in
  the control-plane namespace, the watcher's own (the repo-server's).
- Nothing secret passes here: records hold no value, the poller returns booleans and counts,
  logs and metrics carry names, kinds and counts only.

Layer: `rotation` (below `serve` and `cli`); `plugin generate` never imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from plugin.config import WatchSettings, watch_settings
from plugin.errors import ConfigError
from plugin.rotation.index import Record, index_root, read_records
from plugin.rotation.metrics import EventLog, Metrics, MetricsServer

#: Seconds between two leadership checks (no I/O: the elector's own thread renews the Lease).
LEADER_CHECK = 1.0
#: Random spread of each interval, so replicas and restarts do not poll Vault in step.
JITTER = 0.1
#: The annotation the hard-refresh patch adds (Argo CD's controller removes it when done).
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
#: Longest wait before a refresh Argo CD ignored is requested again.
MAX_REFRESH_RETRY = 3600.0
#: /healthz fails when the loop has not moved for this long (a hung poll or patch).
STALL_AFTER = 300.0

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


# ------------------------------------------------------------------ protocols


class PollOutcome(Protocol):
    """What one poll of one record found (never a value)."""

    @property
    def changed(self) -> bool: ...

    @property
    def errors(self) -> Sequence[object]: ...

    @property
    def requests(self) -> int: ...


class Poller(Protocol):
    """Polls one record. An optional `start_cycle()` is called before each cycle: the real
    poller forgets the previous cycle's answers there (within a cycle a path shared by many
    Applications of one identity is asked once)."""

    def check(self, record: Record) -> PollOutcome: ...


class Refresher(Protocol):
    """Asks Argo CD for a hard refresh. An optional `get_application(name, namespace)` lets
    the loop see, when a refresh back-off expires, whether Argo CD acted on it."""

    def request_hard_refresh(self, name: str, namespace: str | None = None) -> object: ...


class Elector(Protocol):
    def step(self) -> bool: ...

    def is_leader(self) -> bool: ...

    def release(self) -> object: ...


class EveryReplica:
    """The elector of `PLUGIN_WATCH_ELECTION=none`: always the leader, never touches a Lease.

    Why it exists: with a per-pod cache volume each replica's index holds only its own
    renders, so a single elected watcher would silently miss the others' Applications."""

    def step(self) -> bool:
        return True

    def is_leader(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def run(self, stop: threading.Event) -> None:
        stop.wait()


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep up to `seconds`; True when `stop` was set."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds))


# ------------------------------------------------------------------ helpers


class TokenBucket:
    """At most `rate` Vault requests per second on average, bursts of one second's worth.

    A poll's cost is known only afterwards (a login, a few reads): `acquire` reserves an
    estimate before it, `charge` settles the difference after it. The balance may go negative,
    and the next `acquire` then waits for the debt to be paid, so the long-run rate holds.
    """

    def __init__(self, rate: float, clock: Clock) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock.monotonic()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self, cost: float, stop: threading.Event) -> bool:
        """Wait until `cost` tokens are there and take them; False when stopped meanwhile."""
        cost = min(max(cost, 0.0), self.capacity)
        self._refill()
        while self.tokens < cost - 1e-6:  # rounding must not leave a wait too small to pass
            if self._clock.wait(stop, (cost - self.tokens) / self.rate):
                return False
            self._refill()
        self.tokens -= cost
        return True

    def charge(self, extra: float) -> None:
        self.tokens = min(self.capacity, self.tokens - extra)


def application_of(record: Record, control_plane: str) -> tuple[str, str] | None:
    """(namespace, name) of the Application a record describes; None when it cannot be one.

    `ARGOCD_APP_NAME` is `<namespace>_<name>` for an Application outside the control-plane
    namespace (Kubernetes names have no `_`, so the split is unambiguous) and a plain name in
    it. Both parts are checked as Kubernetes names: the index is written by renders whose
    environment a tenant partly controls, and the names end up in an API URL.
    """
    namespace, sep, name = record.name.partition("_")
    if not sep:
        namespace, name = control_plane, record.name
    if not _DNS_LABEL.match(namespace) or not _DNS_SUBDOMAIN.match(name):
        return None
    return namespace, name


def error_kind(error: object) -> str:
    """A short, bounded label for an error: its `kind`, else its class name, in snake case."""
    kind = getattr(error, "kind", None)
    if isinstance(kind, str) and kind:
        text = kind
    elif isinstance(error, str):
        text = "poll"
    else:
        text = type(error).__name__.removesuffix("Error") or "error"
    text = re.sub(r"(?<!^)(?=[A-Z])", "_", text).lower()
    return re.sub(r"[^a-z0-9_]", "_", text)[:40] or "error"


# ------------------------------------------------------------------ the loop


@dataclass
class AppState:
    """What the watcher remembers about one Application between cycles."""

    #: `rendered_at` of the render a refresh was requested for (None: no request pending).
    pending_for: str | None = None
    refresh_attempts: int = 0
    retry_at: float = 0.0
    #: `rendered_at` of a record Argo CD's refresh left behind (see `_after_retry`): not
    #: polled again until the Application is rendered in this pod again.
    superseded: str | None = None
    #: Consecutive failed polls or patches, and when to poll again.
    failures: int = 0
    poll_after: float = 0.0


@dataclass
class CycleReport:
    """What one cycle did (`plugin watch --once` prints it as JSON)."""

    leader: bool = True
    applications: int = 0
    polled: int = 0
    changed: int = 0
    refreshed: list[str] = field(default_factory=list)
    pending: int = 0
    superseded: int = 0
    backing_off: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    vault_requests: int = 0
    interrupted: bool = False

    def as_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


class Watcher:
    """The poll loop; see the module docstring for its guarantees."""

    def __init__(
        self,
        *,
        records: Callable[[], list[Record]],
        poller: Poller,
        refresher: Refresher,
        elector: Elector,
        settings: WatchSettings,
        control_plane: str,
        metrics: Metrics | None = None,
        log: Callable[..., None] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.records = records
        self.poller = poller
        self.refresher = refresher
        self.elector = elector
        self.settings = settings
        self.control_plane = control_plane
        self.metrics = metrics or Metrics()
        self.log = log or (lambda level, event, **fields: None)
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.bucket = TokenBucket(settings.rate, self.clock)
        self.apps: dict[tuple[str, str], AppState] = {}
        self.heartbeat = self.clock.monotonic()
        self._was_leader = False

    # --- scheduling

    def next_delay(self) -> float:
        return self.settings.interval * self.rng.uniform(1.0 - JITTER, 1.0 + JITTER)

    def healthy(self) -> bool:
        return self.clock.monotonic() - self.heartbeat < max(STALL_AFTER, 3 * LEADER_CHECK)

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: standby while another replica leads, poll every interval while leader.

        A replica that becomes leader polls at once (it does not know what the previous leader
        saw), then every jittered interval.
        """
        next_cycle: float | None = None
        while not stop.is_set():
            self.heartbeat = self.clock.monotonic()
            leader = self._leadership()
            if leader:
                if next_cycle is None or self.clock.monotonic() >= next_cycle:
                    self.cycle(stop)
                    next_cycle = self.clock.monotonic() + self.next_delay()
                wait = min(LEADER_CHECK, next_cycle - self.clock.monotonic())
            else:
                next_cycle = None
                wait = LEADER_CHECK
            self.clock.wait(stop, max(0.0, wait))

    def run_once(self, stop: threading.Event | None = None) -> CycleReport:
        """One acquire attempt, one cycle when leader, then give the Lease back."""
        stop = stop or threading.Event()
        if not self.elector.step():
            self.metrics.set("is_leader", 0)
            self.log("info", "standby", reason="another replica holds the lease")
            return CycleReport(leader=False)
        self.metrics.set("is_leader", 1)
        try:
            return self.cycle(stop)
        finally:
            self.elector.release()
            self.metrics.set("is_leader", 0)

    def _leadership(self) -> bool:
        leader = bool(self.elector.is_leader())
        self.metrics.set("is_leader", 1 if leader else 0)
        if leader != self._was_leader:
            self.log("info", "leader" if leader else "standby")
            self._was_leader = leader
        return leader

    # --- one cycle

    def cycle(self, stop: threading.Event) -> CycleReport:
        report = CycleReport()
        try:
            records = self.records()
        except OSError as exc:
            self._error(report, "index")
            self.log("error", "index_unreadable", error=type(exc).__name__)
            return report
        self.metrics.inc("cycles_total")
        start_cycle = getattr(self.poller, "start_cycle", None)
        if start_cycle is not None:
            start_cycle()
        latest = self._latest_per_application(records, report)
        report.applications = len(latest)
        self.metrics.set("applications", len(latest))
        for target in list(self.apps):
            if target not in latest:
                del self.apps[target]  # the Application left the index
        for target, record in latest.items():
            self.heartbeat = self.clock.monotonic()
            if stop.is_set() or not self.elector.is_leader():
                report.interrupted = True
                break
            self._visit(target, record, report, stop)
        self.metrics.set(
            "refreshes_pending", sum(1 for s in self.apps.values() if s.pending_for is not None)
        )
        self.log(
            "info",
            "cycle",
            applications=report.applications,
            polled=report.polled,
            changed=report.changed,
            refreshed=len(report.refreshed),
            pending=report.pending,
            superseded=report.superseded,
            backing_off=report.backing_off,
            errors=sum(report.errors.values()),
            vault_requests=report.vault_requests,
            interrupted=report.interrupted,
        )
        return report

    def _latest_per_application(
        self, records: list[Record], report: CycleReport
    ) -> dict[tuple[str, str], Record]:
        """One record per Application: its newest render (an old destination namespace can
        leave a second record for the same Application)."""
        latest: dict[tuple[str, str], Record] = {}
        for record in records:
            target = application_of(record, self.control_plane)
            if target is None:
                self._error(report, "invalid_record")
                continue
            known = latest.get(target)
            if known is None or record.rendered_at > known.rendered_at:
                latest[target] = record
        return latest

    def _visit(
        self,
        target: tuple[str, str],
        record: Record,
        report: CycleReport,
        stop: threading.Event,
    ) -> None:
        state = self.apps.setdefault(target, AppState())
        now = self.clock.monotonic()
        if state.pending_for is not None:
            if state.pending_for != record.rendered_at:
                self.log("info", "refresh_done", **_app_fields(target, record))
                state.pending_for, state.refresh_attempts = None, 0
            elif now < state.retry_at:
                report.pending += 1
                return
            elif not self._after_retry(target, record, state, report):
                return
        if state.superseded is not None:
            if state.superseded == record.rendered_at:
                report.superseded += 1
                return
            state.superseded = None  # rendered here again: watched again
        if now < state.poll_after:
            report.backing_off += 1
            return
        estimate = 1 + sum(1 for ref in record.references if ref.version is None)
        if not self.bucket.acquire(estimate, stop):
            report.interrupted = True
            return
        try:
            outcome = self.poller.check(record)
        except Exception as exc:  # a poller bug must not stop the watcher for everyone
            self.bucket.charge(0)
            self._failed(target, record, state, report, [exc])
            return
        requests = max(0, int(outcome.requests))
        self.bucket.charge(requests - estimate)
        report.polled += 1
        report.vault_requests += requests
        self.metrics.inc("polls_total")
        self.metrics.inc("vault_requests_total", requests)
        refused = int(getattr(outcome, "refused", 0) or 0)
        if refused:  # the tenant policy refuses them now: never polled, no back-off needed
            self._error(report, "policy_refused", refused)
        if outcome.errors:
            self._failed(target, record, state, report, list(outcome.errors))
        else:
            state.failures, state.poll_after = 0, 0.0
            wall = self.clock.time()
            for address in sorted({ref.address for ref in record.references if ref.address}):
                self.metrics.poll_succeeded(address, wall)
        if outcome.changed:
            report.changed += 1
            self.metrics.inc("changes_detected_total")
            self._refresh(target, record, state, report, _changed_paths(outcome))

    def _after_retry(
        self, target: tuple[str, str], record: Record, state: AppState, report: CycleReport
    ) -> bool:
        """The refresh back-off expired without a new record: look at the Application first.

        - `argocd.argoproj.io/refresh` still set: Argo CD has not acted yet; asking again
          changes nothing, so wait (doubling).
        - The annotation is gone: Argo CD refreshed, and the render it made is not in this
          pod's index: another repo-server replica rendered it (this record is stale), or the
          render failed (Argo CD retries failed renders on its own, and the next success writes
          a new record). Either way a new request would only repeat a refresh: the record is
          marked superseded and not polled until the Application is rendered here again.
        - The Application cannot be read (no `get_application`, an API error): poll and ask
          again as before; a deleted Application is dropped like a failed patch.

        True when the caller should poll (and maybe request) again.
        """
        namespace, name = target
        get = getattr(self.refresher, "get_application", None)
        if get is None:
            return True
        try:
            application = get(name, namespace)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                self._error(report, "application_not_found")
                state.pending_for, state.refresh_attempts = None, 0
                state.poll_after = self.clock.monotonic() + self.settings.max_backoff
                return False
            self._error(report, "kubernetes")
            return True
        metadata = application.get("metadata") if isinstance(application, dict) else None
        annotations = (metadata or {}).get("annotations") or {}
        if annotations.get(REFRESH_ANNOTATION):
            state.refresh_attempts += 1
            state.retry_at = self.clock.monotonic() + self._refresh_delay(state.refresh_attempts)
            report.pending += 1
            self.log("info", "refresh_waiting", **_app_fields(target, record))
            return False
        state.pending_for, state.refresh_attempts = None, 0
        state.superseded = record.rendered_at
        report.superseded += 1
        self.metrics.inc("records_superseded_total")
        self.log("info", "record_superseded", **_app_fields(target, record))
        return False

    def _refresh_delay(self, attempts: int) -> float:
        delay: float = self.settings.refresh_retry * 2.0 ** (attempts - 1)
        return min(delay, MAX_REFRESH_RETRY)

    def _failed(
        self,
        target: tuple[str, str],
        record: Record,
        state: AppState,
        report: CycleReport,
        errors: list[object],
    ) -> None:
        kinds = sorted({error_kind(error) for error in errors})
        for error in errors:
            self._error(report, error_kind(error))
        state.failures += 1
        delay = min(self.settings.interval * 2 ** (state.failures - 1), self.settings.max_backoff)
        state.poll_after = self.clock.monotonic() + delay
        self.log(
            "warning",
            "poll_failed",
            **_app_fields(target, record),
            kinds=kinds,
            errors=[_message(error) for error in errors[:5]],
            retry_in=round(delay, 1),
        )

    def _refresh(
        self,
        target: tuple[str, str],
        record: Record,
        state: AppState,
        report: CycleReport,
        paths: list[str],
    ) -> None:
        namespace, name = target
        if not self.elector.is_leader():
            report.interrupted = True
            return
        try:
            self.refresher.request_hard_refresh(name, namespace)
        except Exception as exc:
            status = getattr(exc, "status", None)
            kind = "application_not_found" if status == 404 else "kubernetes"
            self._error(report, kind)
            state.failures += 1
            delay = (
                self.settings.max_backoff
                if status == 404
                else min(
                    self.settings.interval * 2 ** (state.failures - 1), self.settings.max_backoff
                )
            )
            state.poll_after = self.clock.monotonic() + delay
            self.log(
                "warning",
                "refresh_failed",
                **_app_fields(target, record),
                kind=kind,
                error=_message(exc),
                retry_in=round(delay, 1),
            )
            return
        state.refresh_attempts += 1
        state.pending_for = record.rendered_at
        state.retry_at = self.clock.monotonic() + self._refresh_delay(state.refresh_attempts)
        report.refreshed.append(f"{namespace}/{name}")
        self.metrics.inc("refreshes_requested_total")
        self.log(
            "info",
            "refresh_requested",
            **_app_fields(target, record),
            attempt=state.refresh_attempts,
            changed=paths,
        )

    def _error(self, report: CycleReport, kind: str, count: int = 1) -> None:
        report.errors[kind] = report.errors.get(kind, 0) + count
        self.metrics.inc("errors_total", count, kind=kind)


def _app_fields(target: tuple[str, str], record: Record) -> dict[str, object]:
    return {
        "application": target[1],
        "namespace": target[0],
        "project": record.project,
        "rendered_at": record.rendered_at,
    }


def _changed_paths(outcome: PollOutcome) -> list[str]:
    """The paths that changed, when the poller says (paths are not secret: they are in Git)."""
    paths = getattr(outcome, "changed_paths", ())
    return [str(path) for path in paths][:20]


def _message(error: object) -> str:
    """An error's own message: plugin errors never hold a value (see errors.py), nor does
    the poller's (`path`, `message`); others are reduced to their class name (a library's
    text could quote what it received)."""
    from plugin.errors import PluginError

    if isinstance(error, str):
        return error[:500]
    message = getattr(error, "message", None)
    if isinstance(message, str):
        path = getattr(error, "path", "")
        return (f"{path}: {message}" if path else message)[:500]
    if isinstance(error, PluginError):
        return str(error)[:500]
    return type(error).__name__


# ------------------------------------------------------------------ wiring (the CLI)


def run(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    """`plugin watch [--once]` with the real poller, Kubernetes client and Lease election."""
    settings = watch_settings(environ)
    root = index_root(environ)
    if root is None:
        raise ConfigError(
            "no reference index: no cache directory is configured (PLUGIN_CACHE_DIR, "
            "XDG_CACHE_HOME or HOME)"
        )
    log = EventLog(err)
    metrics = Metrics()
    _route_plugin_logging(log)
    with _real_parts(environ, settings.election) as (
        poller,
        refresher,
        elector,
        control_plane,
        election,
    ):
        watcher = Watcher(
            records=lambda: read_records(root),
            poller=poller,
            refresher=refresher,
            elector=elector,
            settings=settings,
            control_plane=control_plane,
            metrics=metrics,
            log=log,
        )
        if args.once:
            report = watcher.run_once()
            out.write(report.as_json() + "\n")
            out.flush()
            return 1 if report.errors else 0
        return _serve(
            watcher, election=election, settings=settings, metrics=metrics, log=log, root=root
        )


def _serve(
    watcher: Watcher,
    *,
    election: Callable[[threading.Event], None],
    settings: WatchSettings,
    metrics: Metrics,
    log: EventLog,
    root: Path,
) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log("info", "stopping", signal=signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = None
    if settings.port:
        server = MetricsServer(settings.bind, settings.port, metrics, watcher.healthy).start()
    elector_thread = threading.Thread(
        target=election, args=(stop,), name="plugin-watch-lease", daemon=True
    )
    elector_thread.start()
    log(
        "info",
        "started",
        index=str(root),
        interval=settings.interval,
        rate=settings.rate,
        port=server.port if server is not None else 0,
    )
    try:
        watcher.run(stop)
    finally:
        stop.set()
        elector_thread.join(timeout=15)  # the elector gives the Lease back on its way out
        if server is not None:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log("info", "stopped")
    return 0


class _EventLogHandler(logging.Handler):
    """The plugin's own log records (lease: acquired, released, API failures) as JSON lines."""

    def __init__(self, log: EventLog) -> None:
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._log(
                record.levelname.lower(), "log", logger=record.name, message=self.format(record)
            )
        except Exception:
            self.handleError(record)


def _route_plugin_logging(log: EventLog) -> None:
    """Send the `plugin` loggers to the watcher's JSON log (the CLI restores them on return)."""
    plugin_log = logging.getLogger("plugin")
    plugin_log.handlers[:] = [_EventLogHandler(log)]
    plugin_log.setLevel(logging.INFO)
    plugin_log.propagate = False


#: Seconds one record's poll (logins and requests) may take.
POLL_DEADLINE = 30.0


@dataclass(frozen=True)
class _Failure:
    """A `poll.PollError` with a metric kind: a whole record (login, policy) or one path."""

    kind: str
    path: str
    message: str


@dataclass(frozen=True)
class _Polled:
    changed: bool
    errors: tuple[_Failure, ...]
    requests: int
    refused: int
    changed_paths: tuple[str, ...]


class _RealPoller:
    """Adapts `rotation.poll` to the `Poller` protocol (one `Sessions` for the loop thread)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        from plugin.rotation import poll

        self._poll = poll
        self._sessions = poll.Sessions()
        self._environ = dict(environ)

    def start_cycle(self) -> None:
        self._sessions.start_cycle()

    def check(self, record: Record) -> _Polled:
        result = self._poll.check_record(
            record,
            self._environ,
            deadline=time.monotonic() + POLL_DEADLINE,
            sessions=self._sessions,
        )
        return _Polled(
            changed=result.stale,
            errors=tuple(
                _Failure("poll_path" if e.path else "poll_record", e.path, e.message)
                for e in result.errors
            ),
            requests=result.requests,
            refused=len(result.refused),
            changed_paths=tuple(ref.path for ref in result.changed),
        )

    def close(self) -> None:
        self._sessions.close()


@contextlib.contextmanager
def _real_parts(
    environ: Mapping[str, str], election: str = "lease"
) -> Iterator[tuple[Poller, Refresher, Elector, str, Callable[[threading.Event], None]]]:
    """The real poller, in-cluster Kubernetes client and elector (imported lazily).

    `election` "none" (PLUGIN_WATCH_ELECTION): no Lease; this replica always acts, on the
    renders of its own pod's index."""
    from plugin.rotation.kube import KubeClient, KubeConfig
    from plugin.rotation.lease import ElectionConfig, LeaderElector, default_identity

    client = KubeClient(KubeConfig.in_cluster(environ))
    poller = _RealPoller(environ)
    try:
        if election == "none":
            every = EveryReplica()
            yield poller, client, every, client.namespace, every.run
            return
        elector = LeaderElector(client, ElectionConfig(identity=default_identity()))
        yield poller, client, elector, client.namespace, elector.run
    finally:
        poller.close()
        client.close()


__all__ = [
    "AppState",
    "Clock",
    "CycleReport",
    "Elector",
    "EveryReplica",
    "PollOutcome",
    "Poller",
    "Refresher",
    "SystemClock",
    "TokenBucket",
    "Watcher",
    "application_of",
    "error_kind",
    "run",
]
