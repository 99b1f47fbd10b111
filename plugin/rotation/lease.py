"""Leader election on a coordination.k8s.io Lease, with client-go's leaderelection semantics.

Why: with several repo-server replicas, each pod runs a watcher, but one Application change
must give one hard-refresh patch and one set of Vault polls, not one per replica. Kubernetes
already has the primitive (the Lease every controller uses); this module follows client-go's
`leaderelection` package instead of inventing a protocol:

- The Lease's spec holds `holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime`
  and `leaseTransitions`. Every write is an update carrying the resourceVersion it read, so two
  candidates racing for the same Lease cannot both win (the loser gets 409 Conflict).
- A candidate takes the Lease when it is absent, released (empty holder) or expired. Expiry is
  judged with the observer's own monotonic clock: the time it last saw the record *change*,
  plus the record's `leaseDurationSeconds`. The remote `renewTime` is never compared with the
  local clock, so clock skew between nodes does not matter.
- The leader renews every `retry_period`; it counts as leader only while its last successful
  renewal is younger than `renew_deadline` (shorter than the lease duration, so it steps down
  before anyone else may take over).
- On shutdown the leader releases the Lease (empty holder, duration 1 s): a standby takes it
  at its next attempt instead of waiting for expiry.

The decisions (`observe`, `held_by_other`, `next_record`, `released_record`) are pure functions
of a record and clock readings, unit-tested with a fake clock; `LeaderElector` does the I/O
through `kube.KubeClient`.
"""

from __future__ import annotations

import datetime
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from plugin.errors import PluginError
from plugin.rotation.kube import KubeClient, KubeConflictError

log = logging.getLogger(__name__)

#: The Lease the watchers of one Argo CD installation share (the Role names it).
DEFAULT_LEASE_NAME = "argocd-secrets-plugin-watch"
#: client-go's defaults for controllers (kube-controller-manager uses the same).
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0
#: client-go's JitterFactor for the acquire loop.
JITTER_FACTOR = 1.2


def default_identity() -> str:
    """`<hostname>_<random>` (the pod name, as client-go's examples): unique even when a
    container restarts in the same pod."""
    host = socket.gethostname() or "watcher"
    return f"{host}_{uuid.uuid4().hex}"


def micro_time(moment: datetime.datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# ------------------------------------------------------------------ pure decisions


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec."""

    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LeaseRecord:
        spec = spec or {}

        def number(key: str) -> int:
            value = spec.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=number("leaseDurationSeconds"),
            acquire_time=str(spec.get("acquireTime") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=number("leaseTransitions"),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


@dataclass(frozen=True)
class Observation:
    """A record and the local monotonic time at which it was first seen in this form."""

    record: LeaseRecord
    at: float


def observe(previous: Observation | None, current: LeaseRecord, now: float) -> Observation:
    """client-go's observedTime: it moves only when the record changes.

    A holder that stops renewing leaves the record unchanged, so its lease runs out by the
    observer's clock, whatever `renewTime` says.
    """
    if previous is not None and previous.record == current:
        return previous
    return Observation(current, now)


def held_by_other(identity: str, observed: Observation, now: float) -> bool:
    """True while another candidate's lease is valid by the observer's clock."""
    record = observed.record
    if not record.holder or record.holder == identity:
        return False
    return observed.at + record.lease_duration_seconds > now


def next_record(
    identity: str, current: LeaseRecord | None, duration_seconds: int, wall: str
) -> LeaseRecord:
    """The record to write to acquire or renew: a renewal keeps acquireTime and the
    transition count; taking over from another holder (or an empty one) counts a transition."""
    if current is None:
        return LeaseRecord(identity, duration_seconds, wall, wall, 0)
    if current.holder == identity:
        return replace(current, lease_duration_seconds=duration_seconds, renew_time=wall)
    return LeaseRecord(identity, duration_seconds, wall, wall, current.transitions + 1)


def released_record(current: LeaseRecord, wall: str) -> LeaseRecord:
    """What a leader writes on shutdown: no holder, so a standby need not wait for expiry."""
    return LeaseRecord("", 1, wall, wall, current.transitions)


# ------------------------------------------------------------------ the elector


@dataclass(frozen=True)
class ElectionConfig:
    """Who competes for which Lease, and client-go's three durations (seconds)."""

    identity: str
    name: str = DEFAULT_LEASE_NAME
    #: None: the client's namespace (the pod's).
    namespace: str | None = None
    lease_duration: float = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("leader election needs an identity")
        if not self.lease_duration > self.renew_deadline > 0:
            raise ValueError("lease_duration must be greater than renew_deadline (> 0)")
        if not 0 < self.retry_period < self.renew_deadline:
            raise ValueError("retry_period must be positive and below renew_deadline")


class LeaderElector:
    """One candidate: `step()` tries once, `run()` loops until stopped and then releases.

    `is_leader()` is what the watcher checks before each patch; it needs no I/O and is safe to
    call from any thread.
    """

    def __init__(
        self,
        client: KubeClient,
        config: ElectionConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self.client = client
        self.config = config
        self.namespace = config.namespace or client.namespace
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._observed: Observation | None = None
        #: Local time just before the request that last acquired or renewed the Lease.
        self._renewed_at: float | None = None
        self._was_leader = False
        self._last_error = ""

    @property
    def identity(self) -> str:
        return self.config.identity

    def is_leader(self) -> bool:
        with self._lock:
            return self._leading(self._clock())

    def _leading(self, now: float) -> bool:
        return (
            self._renewed_at is not None
            and self._observed is not None
            and self._observed.record.holder == self.identity
            and now - self._renewed_at < self.config.renew_deadline
        )

    def step(self) -> bool:
        """One acquire-or-renew attempt (client-go's tryAcquireOrRenew); True when leading.

        API errors are logged (never with a token) and count as a failed attempt.
        """
        try:
            self._try_acquire_or_renew()
            self._last_error = ""
        except PluginError as exc:
            # once per distinct failure: a standby retrying every few seconds against an
            # unreachable API server must not flood the log
            if str(exc) != self._last_error:
                log.warning("leader election on Lease %s/%s: %s", self.namespace, self.name, exc)
            self._last_error = str(exc)
        leading = self.is_leader()
        if leading != self._was_leader:
            log.info(
                "%s leadership of Lease %s/%s as %s",
                "acquired" if leading else "lost",
                self.namespace,
                self.name,
                self.identity,
            )
            self._was_leader = leading
        return leading

    @property
    def name(self) -> str:
        return self.config.name

    def _duration_seconds(self) -> int:
        return max(1, math.ceil(self.config.lease_duration))

    def _try_acquire_or_renew(self) -> None:
        started = self._clock()
        wall = micro_time(self._wall())
        lease = self.client.get_lease(self.name, self.namespace)
        if lease is None:
            record = next_record(self.identity, None, self._duration_seconds(), wall)
            try:
                self.client.create_lease(self.name, record.to_spec(), self.namespace)
            except KubeConflictError:
                return  # another candidate created it first: read it next time
            self._won(record, started)
            return
        current = LeaseRecord.from_spec(lease.get("spec"))
        with self._lock:
            self._observed = observe(self._observed, current, self._clock())
            if held_by_other(self.identity, self._observed, self._clock()):
                self._renewed_at = None
                return
        record = next_record(self.identity, current, self._duration_seconds(), wall)
        updated = dict(lease)
        updated["spec"] = {**(lease.get("spec") or {}), **record.to_spec()}
        try:
            self.client.update_lease(updated)
        except KubeConflictError:
            return  # someone wrote in between: re-read at the next attempt
        self._won(record, started)

    def _won(self, record: LeaseRecord, started: float) -> None:
        with self._lock:
            self._observed = Observation(record, self._clock())
            self._renewed_at = started

    def release(self) -> bool:
        """Give the Lease up if this candidate holds it; True when released (or not held).

        Leadership ends locally first, so `is_leader()` is already False while the update is
        in flight.
        """
        with self._lock:
            held = self._observed is not None and self._observed.record.holder == self.identity
            self._renewed_at = None
        self._was_leader = False
        if not held:
            return True
        try:
            lease = self.client.get_lease(self.name, self.namespace)
            if lease is None:
                return True
            current = LeaseRecord.from_spec(lease.get("spec"))
            if current.holder != self.identity:
                return True
            record = released_record(current, micro_time(self._wall()))
            updated = dict(lease)
            updated["spec"] = {**(lease.get("spec") or {}), **record.to_spec()}
            self.client.update_lease(updated)
        except PluginError as exc:
            log.warning("releasing Lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        with self._lock:
            self._observed = Observation(record, self._clock())
        log.info("released Lease %s/%s", self.namespace, self.name)
        return True

    def run(self, stop: threading.Event) -> None:
        """Try or renew every `retry_period` until `stop` is set, then release the Lease.

        A standby waits `retry_period` plus up to 1.2 times as much (client-go's jitter) so
        standbys do not hit the API server in lockstep. Meant for a daemon thread: it never
        raises, an unexpected error counts as a failed attempt.
        """
        try:
            while not stop.is_set():
                try:
                    leading = self.step()
                except Exception as exc:
                    # a bug must not end the election thread (the watcher would stay a standby
                    # for ever); logged by type only, never with its text
                    log.error("leader election attempt failed: %s", type(exc).__name__)
                    leading = False
                wait = self.config.retry_period
                if not leading:
                    wait += random.uniform(0, JITTER_FACTOR * wait)  # noqa: S311 - jitter only
                stop.wait(wait)
        finally:
            self.release()
