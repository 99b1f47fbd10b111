"""Leader election on a Lease: the pure decisions with a fake clock, then candidates racing on the
real kube-apiserver (`kube_api`, integration) with fake monotonic clocks, so expiry is exact and
no test sleeps for a lease to run out.
"""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plugin.rotation import lease
from plugin.rotation.kube import KubeClient
from plugin.rotation.lease import (
    ElectionConfig,
    LeaderElector,
    LeaseRecord,
    Observation,
    held_by_other,
    next_record,
    observe,
    released_record,
)
from tests.kube_fixture import KubeAPI, KubeUser, free_port, wait_for
from tests.rotation.test_kube import WATCHER_RULES, client_for, role

WALL = "2026-12-05T23:00:00.000000Z"
LATER = "2026-12-05T23:00:07.000000Z"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------ pure decisions


def test_record_round_trips_through_a_lease_spec() -> None:
    record = LeaseRecord("a", 15, WALL, LATER, 2)
    spec = record.to_spec()
    assert spec == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": WALL,
        "renewTime": LATER,
        "leaseTransitions": 2,
    }
    assert LeaseRecord.from_spec(spec) == record
    assert LeaseRecord.from_spec(None) == LeaseRecord()
    # a hostile or broken spec reads as "no holder, expired", never as an exception
    broken = {"holderIdentity": None, "leaseDurationSeconds": "15", "leaseTransitions": True}
    assert LeaseRecord.from_spec(broken) == LeaseRecord()


def test_observed_time_moves_only_when_the_record_changes() -> None:
    first = LeaseRecord("a", 15, WALL, WALL, 0)
    seen = observe(None, first, 10.0)
    assert seen == Observation(first, 10.0)
    assert observe(seen, first, 20.0) is seen  # the holder did not renew: time keeps running
    renewed = LeaseRecord("a", 15, WALL, LATER, 0)
    assert observe(seen, renewed, 20.0) == Observation(renewed, 20.0)


def test_expiry_is_judged_by_the_observers_clock_not_remote_timestamps() -> None:
    # renewTime far in the future (a skewed clock) does not extend the lease, nor does one
    # far in the past shorten it: only the local time of the last change counts
    for renew in ("2099-01-01T00:00:00.000000Z", "1999-01-01T00:00:00.000000Z"):
        seen = Observation(LeaseRecord("a", 15, renew, renew, 0), 100.0)
        assert held_by_other("b", seen, 100.0)
        assert held_by_other("b", seen, 114.999)
        assert not held_by_other("b", seen, 115.0)


def test_own_or_empty_or_durationless_leases_are_not_held_by_another() -> None:
    assert not held_by_other("a", Observation(LeaseRecord("a", 15), 100.0), 100.0)
    assert not held_by_other("b", Observation(LeaseRecord("", 15), 100.0), 100.0)
    assert not held_by_other("b", Observation(LeaseRecord("a", 0), 100.0), 100.0)


def test_next_record_counts_transitions_like_client_go() -> None:
    assert next_record("a", None, 15, WALL) == LeaseRecord("a", 15, WALL, WALL, 0)
    mine = LeaseRecord("a", 15, WALL, WALL, 4)
    assert next_record("a", mine, 15, LATER) == LeaseRecord("a", 15, WALL, LATER, 4)
    assert next_record("b", mine, 20, LATER) == LeaseRecord("b", 20, LATER, LATER, 5)
    released = released_record(mine, LATER)
    assert released == LeaseRecord("", 1, LATER, LATER, 4)
    assert next_record("b", released, 15, LATER).transitions == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"identity": ""}, "identity"),
        ({"lease_duration": 10.0, "renew_deadline": 10.0}, "greater than renew_deadline"),
        ({"retry_period": 10.0}, "below renew_deadline"),
        ({"retry_period": 0}, "positive"),
    ],
)
def test_election_config_is_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ElectionConfig(**{"identity": "a", **kwargs})


def test_default_identity_is_unique_per_process_start() -> None:
    first, second = lease.default_identity(), lease.default_identity()
    assert first != second
    assert first.rsplit("_", 1)[0] == second.rsplit("_", 1)[0]


def test_micro_time_is_utc_with_microseconds() -> None:
    paris = datetime.timezone(datetime.timedelta(hours=1))
    moment = datetime.datetime(2026, 12, 6, 0, 30, 1, 5, tzinfo=paris)
    assert lease.micro_time(moment) == "2026-12-05T23:30:01.000005Z"


# ------------------------------------------------------------------ on the real API server


@pytest.fixture(scope="module")
def watcher(kube_api: KubeAPI) -> KubeUser:
    return kube_api.user_with_role(role(WATCHER_RULES))


Elect = Callable[..., tuple[LeaderElector, FakeClock]]


@pytest.fixture
def elect(kube_api: KubeAPI, watcher: KubeUser, tmp_path: Path) -> Elect:
    """Candidates for one fresh Lease, each with its own client and fake clock."""
    name = f"plugin-watch-{uuid.uuid4().hex[:8]}"

    def make(
        identity: str, client: KubeClient | None = None, **durations: float
    ) -> tuple[LeaderElector, FakeClock]:
        clock = FakeClock()
        config = ElectionConfig(identity=identity, name=name, **durations)
        client = client or client_for(kube_api, watcher.token, tmp_path)
        return LeaderElector(client, config, clock=clock), clock

    return make


def holder(elector: LeaderElector) -> dict[str, Any]:
    found = elector.client.get_lease(elector.name)
    assert found is not None
    spec: dict[str, Any] = found["spec"]
    return spec


def test_two_candidates_exactly_one_leads(elect: Elect) -> None:
    a, _ = elect("watch-a")
    b, _ = elect("watch-b")
    for _ in range(3):
        results = {a.identity: a.step(), b.identity: b.step()}
        assert list(results.values()).count(True) == 1
        assert [a.is_leader(), b.is_leader()] == [True, False]
    spec = holder(a)
    assert spec["holderIdentity"] == "watch-a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] and spec["renewTime"] >= spec["acquireTime"]


def test_the_leader_renews_and_keeps_its_acquire_time(elect: Elect) -> None:
    a, clock = elect("watch-a")
    assert a.step()
    first = holder(a)
    clock.advance(2.0)
    assert a.step()
    second = holder(a)
    assert second["acquireTime"] == first["acquireTime"]
    assert second["renewTime"] > first["renewTime"]
    assert second["leaseTransitions"] == 0


def test_a_silent_leader_is_replaced_after_expiry(elect: Elect) -> None:
    a, clock_a = elect("watch-a")
    b, clock_b = elect("watch-b")
    assert a.step()
    assert not b.step()  # b observes a's record now (its clock: t0)
    # a stops renewing (a hung process): b waits the whole lease duration on its own clock
    clock_b.advance(14.9)
    assert not b.step()
    assert holder(b)["holderIdentity"] == "watch-a"
    clock_b.advance(0.2)
    assert b.step()
    spec = holder(b)
    assert spec["holderIdentity"] == "watch-b"
    assert spec["leaseTransitions"] == 1
    # a has stepped down by its own clock before b could take over (renew deadline 10 s)
    clock_a.advance(10.0)
    assert not a.is_leader()
    assert not a.step()  # and b's lease is valid for it now
    assert [a.is_leader(), b.is_leader()] == [False, True]


def test_a_renewing_leader_is_never_replaced(elect: Elect) -> None:
    a, clock_a = elect("watch-a")
    b, clock_b = elect("watch-b")
    assert a.step()
    for _ in range(12):  # 24 s, far past one lease duration, with a renewing every 2 s
        clock_a.advance(2.0)
        clock_b.advance(2.0)
        assert a.step()
        assert not b.step()
    assert holder(a)["holderIdentity"] == "watch-a"


def test_release_lets_a_standby_take_over_at_once(elect: Elect) -> None:
    a, _ = elect("watch-a")
    b, _ = elect("watch-b")
    assert a.step()
    assert not b.step()
    assert a.release()
    assert not a.is_leader()
    spec = holder(a)
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert b.step()  # no clock advanced: an empty holder is free now
    assert holder(b)["holderIdentity"] == "watch-b"
    assert holder(b)["leaseTransitions"] == 1
    assert b.release() and a.release()  # a holds nothing: a no-op


def test_a_failing_renewal_steps_down_at_the_renew_deadline(
    elect: Elect, caplog: pytest.LogCaptureFixture
) -> None:
    a, clock = elect("watch-a")
    assert a.step()
    # the API server becomes unreachable
    a.client = KubeClient(replace(a.client.config, server=f"https://127.0.0.1:{free_port()}"))
    caplog.set_level(logging.INFO, logger="plugin.rotation.lease")
    clock.advance(5.0)
    assert a.step()  # one failed renewal within the deadline: still leading
    assert a.step()  # the same failure again: logged once
    clock.advance(4.9)
    assert a.is_leader()
    clock.advance(0.2)
    assert not a.is_leader()
    assert not a.step()
    messages = [record.getMessage() for record in caplog.records]
    failures = [m for m in messages if m.endswith(": ConnectionError")]
    assert len(failures) == 1, messages
    assert any(m.startswith("lost leadership of Lease argocd/") for m in messages), messages


class Interleaved(KubeClient):
    """A real client that lets another candidate act right after its next Lease read: the
    deterministic way to lose the race between read and write."""

    meanwhile: Callable[[], object] | None = None

    def get_lease(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        found = super().get_lease(name, namespace)
        action, self.meanwhile = self.meanwhile, None
        if action is not None:
            action()
        return found


def interleaved(kube_api: KubeAPI, watcher: KubeUser, tmp_path: Path) -> Interleaved:
    plain = client_for(kube_api, watcher.token, tmp_path)
    return Interleaved(plain.config)


def test_losing_the_create_race_is_a_conflict_handled(
    elect: Elect, kube_api: KubeAPI, watcher: KubeUser, tmp_path: Path
) -> None:
    client = interleaved(kube_api, watcher, tmp_path)
    b, _ = elect("watch-b", client)
    a, _ = elect("watch-a")
    client.meanwhile = a.step  # b reads "absent", then a creates the Lease
    assert not b.step()  # b's create gets 409 AlreadyExists: no exception, not leader
    assert a.is_leader()
    assert holder(a)["holderIdentity"] == "watch-a"


def test_losing_the_update_race_is_a_conflict_handled(
    elect: Elect, kube_api: KubeAPI, watcher: KubeUser, tmp_path: Path
) -> None:
    a, _ = elect("watch-a")
    assert a.step()
    assert a.release()  # the Lease exists, free
    client = interleaved(kube_api, watcher, tmp_path)
    b, _ = elect("watch-b", client)
    c, _ = elect("watch-c")
    client.meanwhile = c.step  # b reads the free Lease, c takes it, b's update is stale
    assert not b.step()
    assert c.is_leader() and not b.is_leader()
    assert holder(c)["holderIdentity"] == "watch-c"
    assert holder(c)["leaseTransitions"] == 1


def test_run_leads_until_stopped_then_releases(elect: Elect) -> None:
    a, _ = elect("watch-a", lease_duration=3, renew_deadline=2, retry_period=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=a.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(a.is_leader, "watch-a leading", timeout=30, interval=0.01)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert not a.is_leader()
    assert holder(a)["holderIdentity"] == ""


class FailsOnce(KubeClient):
    """A real client whose first Lease read fails with an unexpected error (a bug)."""

    failed = False

    def get_lease(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("unexpected")
        return super().get_lease(name, namespace)


def test_run_survives_an_unexpected_error(
    elect: Elect,
    kube_api: KubeAPI,
    watcher: KubeUser,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FailsOnce(client_for(kube_api, watcher.token, tmp_path).config)
    a, _ = elect("watch-a", client, lease_duration=3, renew_deadline=2, retry_period=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=a.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(a.is_leader, "watch-a leading after the error", timeout=30, interval=0.01)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert client.failed
    assert "leader election attempt failed: RuntimeError" in caplog.text
