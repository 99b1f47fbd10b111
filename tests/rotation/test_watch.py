"""The watch loop with fakes for time, the poller, the refresher and the elector.

Every fake records what it was asked; the clock only moves when the loop waits, so the
schedule (intervals, jitter, back-offs, the rate limit) is asserted on virtual time, never on
the wall clock.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from plugin.config import WatchSettings
from plugin.errors import BackendError
from plugin.rotation.index import Record, Reference
from plugin.rotation.metrics import Metrics
from plugin.rotation.watch import (
    JITTER,
    MAX_REFRESH_RETRY,
    TokenBucket,
    Watcher,
    application_of,
    error_kind,
)

ADDRESS = "https://bao.example:8200"


# ------------------------------------------------------------------ fakes


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        #: Called on every wait (a test uses it to stop the loop or change the world).
        self.on_wait: Callable[[FakeClock], None] = lambda clock: None

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        self.on_wait(self)
        return stop.is_set()


@dataclass
class Outcome:
    changed: bool = False
    errors: list[object] = field(default_factory=list)
    requests: int = 2


class FakePoller:
    """Answers per Application name; `changed` names are reported changed."""

    def __init__(self) -> None:
        self.changed: set[str] = set()
        self.failing: dict[str, list[object]] = {}
        self.calls: list[str] = []
        self.requests = 2
        self.before: Callable[[Record], None] = lambda record: None

    def check(self, record: Record) -> Outcome:
        self.before(record)
        self.calls.append(record.name)
        return Outcome(
            changed=record.name in self.changed,
            errors=list(self.failing.get(record.name, [])),
            requests=self.requests,
        )


class ApiError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class FakeRefresher:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str]] = []
        self.fail_with: dict[str, int] = {}

    def request_hard_refresh(self, name: str, namespace: str | None = None) -> object:
        assert namespace is not None
        if name in self.fail_with:
            raise ApiError(self.fail_with[name])
        self.patches.append((namespace, name))
        return {}


class FakeElector:
    def __init__(self, leader: bool = True) -> None:
        self.leader = leader
        self.steps = 0
        self.released = 0

    def step(self) -> bool:
        self.steps += 1
        return self.leader

    def is_leader(self) -> bool:
        return self.leader

    def release(self) -> None:
        self.released += 1
        self.leader = False


def record(name: str, rendered_at: str = "2026-12-05T21:00:00Z", *paths: str) -> Record:
    refs = tuple(
        Reference(backend="vault", path=p, address=ADDRESS, kv_version="2")
        for p in (paths or (f"kv/data/{name}",))
    )
    return Record(
        name=name,
        namespace="dest-ns",
        project="team-a",
        identity={"AVP_AUTH_TYPE": "k8s"},
        references=refs,
        rendered_at=rendered_at,
    )


class World:
    """A watcher wired to fakes, with an index that tests edit between cycles."""

    def __init__(self, **settings: float) -> None:
        self.index: list[Record] = []
        self.clock = FakeClock()
        self.poller = FakePoller()
        self.refresher = FakeRefresher()
        self.elector = FakeElector()
        self.metrics = Metrics()
        self.logs: list[dict[str, object]] = []
        self.stop = threading.Event()
        self.settings = WatchSettings(
            interval=settings.get("interval", 60.0),
            rate=settings.get("rate", 1000.0),
            max_backoff=settings.get("max_backoff", 600.0),
            refresh_retry=settings.get("refresh_retry", 300.0),
        )
        self.watcher = Watcher(
            records=lambda: list(self.index),
            poller=self.poller,
            refresher=self.refresher,
            elector=self.elector,
            settings=self.settings,
            control_plane="argocd",
            metrics=self.metrics,
            log=self._log,
            clock=self.clock,
            rng=random.Random(7),
        )

    def _log(self, level: str, event: str, **fields: object) -> None:
        self.logs.append({"level": level, "event": event, **fields})

    def cycle(self) -> list[tuple[str, str]]:
        """Run one cycle; the patches it made."""
        before = len(self.refresher.patches)
        self.watcher.cycle(self.stop)
        return self.refresher.patches[before:]

    def events(self, name: str) -> list[dict[str, object]]:
        return [entry for entry in self.logs if entry["event"] == name]


# ------------------------------------------------------------------ change -> one refresh


def test_unchanged_secrets_patch_nothing() -> None:
    world = World()
    world.index = [record("web"), record("api")]
    assert world.cycle() == []
    assert sorted(world.poller.calls) == ["api", "web"]
    assert world.metrics.value("polls_total") == 2
    assert world.metrics.value("changes_detected_total") == 0


def test_a_change_refreshes_that_application_only() -> None:
    world = World()
    world.index = [record("web"), record("api"), record("teams_billing")]
    world.poller.changed = {"api", "teams_billing"}
    patches = world.cycle()
    # A plain name lives in the control-plane namespace, not in the destination namespace;
    # `<namespace>_<name>` is an Application outside it.
    assert sorted(patches) == [("argocd", "api"), ("teams", "billing")]
    assert world.metrics.value("refreshes_requested_total") == 2
    assert world.metrics.value("changes_detected_total") == 2
    logged = world.events("refresh_requested")
    assert {(e["namespace"], e["application"]) for e in logged} == set(patches)


def test_requested_once_per_render_then_again_after_the_back_off() -> None:
    world = World(interval=60, refresh_retry=300)
    world.index = [record("web")]
    world.poller.changed = {"web"}
    assert world.cycle() == [("argocd", "web")]
    # Argo CD has not re-rendered yet (same rendered_at): neither polled nor patched again.
    world.poller.calls.clear()
    for _ in range(4):
        world.clock.now += 60
        assert world.cycle() == []
    assert world.poller.calls == []
    assert world.metrics.value("refreshes_pending") == 1
    # The back-off expired (300 s): asked once more, then after 600 s (doubling).
    world.clock.now += 60
    assert world.cycle() == [("argocd", "web")]
    world.clock.now += 599
    assert world.cycle() == []
    world.clock.now += 1
    assert world.cycle() == [("argocd", "web")]
    assert [e["attempt"] for e in world.events("refresh_requested")] == [1, 2, 3]


def test_refresh_retry_is_capped() -> None:
    world = World(refresh_retry=3000)
    world.index = [record("web")]
    world.poller.changed = {"web"}
    world.cycle()
    world.clock.now += 3000
    world.cycle()
    state = world.watcher.apps[("argocd", "web")]
    assert state.retry_at - world.clock.now == MAX_REFRESH_RETRY


def test_a_new_render_ends_the_pending_refresh() -> None:
    world = World()
    world.index = [record("web", "2026-12-05T21:00:00Z")]
    world.poller.changed = {"web"}
    assert world.cycle() == [("argocd", "web")]
    # Argo CD re-rendered: the new record is polled again, and is unchanged now.
    world.index = [record("web", "2026-12-05T21:01:00Z")]
    world.poller.changed = set()
    world.poller.calls.clear()
    assert world.cycle() == []
    assert world.poller.calls == ["web"]
    assert len(world.events("refresh_done")) == 1
    assert world.metrics.value("refreshes_pending") == 0
    # The next rotation is refreshed at once (no leftover back-off).
    world.poller.changed = {"web"}
    assert world.cycle() == [("argocd", "web")]


def test_the_newest_record_of_an_application_is_the_one_polled() -> None:
    world = World()
    old = record("web", "2026-12-05T20:00:00Z", "kv/data/old")
    new = record("web", "2026-12-05T21:00:00Z", "kv/data/new")
    seen: list[tuple[str, ...]] = []
    world.poller.before = lambda r: seen.append(tuple(ref.path for ref in r.references))
    world.index = [new, old]
    world.cycle()
    assert seen == [("kv/data/new",)]


@pytest.mark.parametrize(
    "name",
    ["Web", "web/../../x", "a_b_c", "_web", "web_", "x" * 254, "", "ns.dots_web"],
)
def test_a_record_that_cannot_name_an_application_is_never_polled(name: str) -> None:
    world = World()
    world.index = [record(name)]
    world.poller.changed = {name}
    assert world.cycle() == []
    assert world.poller.calls == []
    assert world.metrics.value("errors_total", kind="invalid_record") == 1


def test_application_of() -> None:
    assert application_of(record("web"), "argocd") == ("argocd", "web")
    assert application_of(record("team-a_web.v2"), "argocd") == ("team-a", "web.v2")
    assert application_of(record("a_b_c"), "argocd") is None


# ------------------------------------------------------------------ leadership


def test_a_standby_replica_never_polls_nor_patches() -> None:
    world = World()
    world.elector.leader = False
    world.index = [record("web")]
    world.poller.changed = {"web"}
    waits = 0

    def stop_after_some(clock: FakeClock) -> None:
        nonlocal waits
        waits += 1
        if waits == 10:
            world.stop.set()

    world.clock.on_wait = stop_after_some
    world.watcher.run(world.stop)
    assert world.poller.calls == []
    assert world.refresher.patches == []
    assert world.metrics.value("is_leader") == 0


def test_losing_the_lease_mid_cycle_stops_polling_and_patching() -> None:
    world = World()
    world.index = [record("a"), record("b"), record("c")]
    world.poller.changed = {"a", "b", "c"}

    def lose_after_first(r: Record) -> None:
        if r.name == "a":
            world.elector.leader = False

    world.poller.before = lose_after_first
    report = world.watcher.cycle(world.stop)
    assert world.poller.calls == ["a"]
    assert world.refresher.patches == []  # checked again right before the patch
    assert report.interrupted


def test_a_new_leader_polls_at_once_then_every_jittered_interval() -> None:
    world = World(interval=60)
    world.elector.leader = False
    world.index = [record("web")]
    cycle_times: list[float] = []
    world.poller.before = lambda r: cycle_times.append(world.clock.now)

    def script(clock: FakeClock) -> None:
        if clock.now >= 1005 and not world.elector.leader:
            world.elector.leader = True
        if len(cycle_times) == 6:
            world.stop.set()

    world.clock.on_wait = script
    world.watcher.run(world.stop)
    assert cycle_times[0] <= 1006  # within one leadership check of taking over
    gaps = [b - a for a, b in itertools.pairwise(cycle_times)]
    assert len(gaps) == 5
    for gap in gaps:  # each interval is jittered by +/-10 % (the loop wakes every second)
        assert 60 * (1 - JITTER) <= gap <= 60 * (1 + JITTER) + 1
    assert len({round(gap, 3) for gap in gaps}) > 1  # jitter is really applied


def test_run_once_acquires_polls_and_releases() -> None:
    world = World()
    world.index = [record("web")]
    world.poller.changed = {"web"}
    report = world.watcher.run_once()
    assert report.leader and report.refreshed == ["argocd/web"]
    assert world.elector.steps == 1 and world.elector.released == 1
    assert world.metrics.value("is_leader") == 0


def test_run_once_as_standby_does_nothing() -> None:
    world = World()
    world.elector.leader = False
    world.index = [record("web")]
    world.poller.changed = {"web"}
    report = world.watcher.run_once()
    assert not report.leader
    assert world.poller.calls == [] and world.refresher.patches == []
    assert world.elector.released == 0


def test_stop_ends_the_loop_between_applications() -> None:
    world = World()
    world.index = [record("a"), record("b")]
    world.poller.before = lambda r: world.stop.set()
    world.watcher.run(world.stop)
    assert world.poller.calls == ["a"]


# ------------------------------------------------------------------ errors and back-off


def test_a_failing_poll_backs_off_exponentially_up_to_the_cap() -> None:
    world = World(interval=60, max_backoff=400)
    world.index = [record("web"), record("api")]
    world.poller.failing["web"] = [BackendError("permission denied reading kv/data/web")]
    polled_at: list[float] = []
    world.poller.before = lambda r: polled_at.append(world.clock.now) if r.name == "web" else None
    for _ in range(150):  # 1500 s
        world.cycle()
        world.clock.now += 10
    gaps = [b - a for a, b in itertools.pairwise(polled_at)]
    assert gaps[:4] == [60, 120, 240, 400]  # 60 * 2**n, capped at 400
    assert world.poller.calls.count("api") == 150  # the healthy app is not slowed down
    assert world.metrics.value("errors_total", kind="backend") == len(polled_at)
    failed = world.events("poll_failed")[0]
    assert failed["kinds"] == ["backend"]
    assert failed["errors"] == ["permission denied reading kv/data/web"]


def test_success_resets_the_back_off_and_stamps_the_backend() -> None:
    world = World(interval=60)
    world.index = [record("web")]
    world.poller.failing["web"] = [BackendError("sealed")]
    world.cycle()
    assert world.metrics.value("last_successful_poll_timestamp_seconds", address=ADDRESS) == 0
    world.poller.failing.clear()
    world.clock.now += 60
    world.cycle()
    assert world.watcher.apps[("argocd", "web")].failures == 0
    stamp = world.metrics.value("last_successful_poll_timestamp_seconds", address=ADDRESS)
    assert stamp == world.clock.time()


def test_a_change_is_refreshed_even_when_another_reference_failed() -> None:
    world = World()
    world.index = [record("web", "2026-12-05T21:00:00Z", "kv/data/a", "kv/data/b")]
    world.poller.changed = {"web"}
    world.poller.failing["web"] = [BackendError("kv/data/b: HTTP 503")]
    assert world.cycle() == [("argocd", "web")]


def test_a_poller_crash_is_an_error_of_that_application_only() -> None:
    world = World()
    world.index = [record("a"), record("b")]

    def explode(r: Record) -> None:
        if r.name == "a":
            raise RuntimeError("secret-looking text that must not be logged")

    world.poller.before = explode
    world.cycle()
    assert world.poller.calls == ["b"]
    assert world.metrics.value("errors_total", kind="runtime") == 1
    assert "secret-looking" not in json.dumps(world.logs)


def test_a_deleted_application_is_not_patched_every_cycle() -> None:
    world = World(interval=60, max_backoff=600)
    world.index = [record("gone")]
    world.poller.changed = {"gone"}
    world.refresher.fail_with["gone"] = 404
    for _ in range(10):  # 600 s
        world.cycle()
        world.clock.now += 60
    assert world.metrics.value("errors_total", kind="application_not_found") == 1
    assert len(world.poller.calls) == 1


def test_a_refused_patch_is_retried_with_back_off() -> None:
    world = World(interval=60, max_backoff=600)
    world.index = [record("web")]
    world.poller.changed = {"web"}
    world.refresher.fail_with["web"] = 403
    world.cycle()
    assert world.metrics.value("errors_total", kind="kubernetes") == 1
    world.clock.now += 60
    del world.refresher.fail_with["web"]
    assert world.cycle() == [("argocd", "web")]


def test_an_unreadable_index_is_an_error_not_a_crash() -> None:
    world = World()

    def broken() -> list[Record]:
        raise PermissionError("denied")

    world.watcher.records = broken
    report = world.watcher.cycle(world.stop)
    assert report.errors == {"index": 1}


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (BackendError("x"), "backend"),
        (RuntimeError("x"), "runtime"),
        ("text", "poll"),
        (type("E", (), {"kind": "policy"})(), "policy"),
        (type("E", (), {"kind": 'x"}\n{'})(), "x____"),
    ],
)
def test_error_kinds_are_short_labels(error: object, kind: str) -> None:
    assert error_kind(error) == kind


# ------------------------------------------------------------------ the rate limit


def test_vault_requests_never_exceed_the_rate() -> None:
    world = World(rate=5.0, interval=60)
    world.poller.requests = 3
    world.index = [record(f"app{i}") for i in range(20)]
    start = world.clock.now
    calls: list[float] = []
    world.poller.before = lambda r: calls.append(world.clock.now)
    world.cycle()
    assert len(calls) == 20
    # 60 requests at 5/s with a burst of 5: never more than 5 + 5 * t requests by time t.
    for n, when in enumerate(calls):
        assert 3 * n <= 5 + 5 * (when - start) + 1e-9
    assert calls[-1] - start >= (60 - 3 - 5) / 5 - 1e-9


def test_token_bucket_debt_is_paid_before_the_next_poll() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, clock)
    stop = threading.Event()
    assert bucket.acquire(1, stop)
    bucket.charge(9)  # the poll cost 10, not 1
    start = clock.now
    assert bucket.acquire(1, stop)
    assert clock.now - start == pytest.approx((1 + 8) / 2.0)


def test_token_bucket_stops_waiting_when_stopped() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, clock)
    stop = threading.Event()
    bucket.charge(100)
    stop.set()
    assert not bucket.acquire(1, stop)


def test_pinned_references_do_not_count_in_the_estimate() -> None:
    world = World(rate=1.0)
    pinned = Record(
        name="web",
        namespace="d",
        project="p",
        identity={},
        references=(Reference("vault", "kv/data/web", ADDRESS, version="3", kv_version="2"),),
    )
    world.index = [pinned]
    world.poller.requests = 0
    world.cycle()
    assert world.clock.waits == []  # a 1-token estimate fits the initial burst


# ------------------------------------------------------------------ reports and logs


def test_cycle_report_and_log_are_json_without_values() -> None:
    world = World()
    world.index = [record("web")]
    world.poller.changed = {"web"}
    report = world.watcher.cycle(world.stop)
    body = json.loads(report.as_json())
    assert body["refreshed"] == ["argocd/web"] and body["polled"] == 1
    cycle = world.events("cycle")[0]
    assert cycle["refreshed"] == 1 and cycle["vault_requests"] == 2


# ------------------------------------------------------------------ after the refresh back-off


class ArgoRefresher(FakeRefresher):
    """Keeps the annotation like the API server does; `argo_done` is Argo CD removing it."""

    def __init__(self) -> None:
        super().__init__()
        self.annotated: set[str] = set()
        self.gets: list[str] = []
        self.get_fails: dict[str, int] = {}

    def request_hard_refresh(self, name: str, namespace: str | None = None) -> object:
        result = super().request_hard_refresh(name, namespace)
        self.annotated.add(name)
        return result

    def get_application(self, name: str, namespace: str | None = None) -> dict[str, object]:
        self.gets.append(name)
        if name in self.get_fails:
            raise ApiError(self.get_fails[name])
        annotations = {"argocd.argoproj.io/refresh": "hard"} if name in self.annotated else {}
        return {"metadata": {"name": name, "annotations": annotations}}

    def argo_done(self, name: str) -> None:
        self.annotated.discard(name)


def argo_world() -> tuple[World, ArgoRefresher]:
    world = World(interval=60, refresh_retry=300)
    refresher = ArgoRefresher()
    world.refresher = refresher
    world.watcher.refresher = refresher
    world.index = [record("web")]
    world.poller.changed = {"web"}
    assert world.cycle() == [("argocd", "web")]
    world.poller.calls.clear()
    return world, refresher


def test_a_refresh_argo_cd_has_not_taken_yet_is_not_asked_again() -> None:
    world, refresher = argo_world()
    world.clock.now += 300
    assert world.cycle() == []  # the annotation is still there: patching again is pointless
    assert refresher.gets == ["web"] and world.poller.calls == []
    world.clock.now += 599
    assert world.cycle() == [] and refresher.gets == ["web"]  # waits doubled (600 s)
    world.clock.now += 1
    world.cycle()
    assert refresher.gets == ["web", "web"]
    assert len(world.events("refresh_waiting")) == 2


def test_a_refresh_rendered_elsewhere_supersedes_the_record() -> None:
    """Argo CD refreshed (annotation gone) but no new record here: another replica rendered
    the Application (or the render failed). The stale record must not cause a refresh every
    back-off: it is no longer polled until the Application renders in this pod again."""
    world, refresher = argo_world()
    refresher.argo_done("web")
    world.clock.now += 300
    assert world.cycle() == []
    assert len(world.events("record_superseded")) == 1
    assert world.metrics.value("records_superseded_total") == 1
    for _ in range(100):  # hours later: never polled, never patched
        world.clock.now += 60
        assert world.cycle() == []
    assert world.poller.calls == []
    assert refresher.gets == ["web"]
    # Rendered here again: watched again, and a new rotation is refreshed.
    world.index = [record("web", "2026-12-06T09:00:00Z")]
    assert world.cycle() == [("argocd", "web")]


def test_a_deleted_application_found_after_the_back_off_is_dropped() -> None:
    world, refresher = argo_world()
    refresher.get_fails["web"] = 404
    world.clock.now += 300
    assert world.cycle() == []
    assert world.metrics.value("errors_total", kind="application_not_found") == 1
    world.clock.now += 60
    assert world.cycle() == [] and world.poller.calls == []  # backing off (max)


def test_an_unreadable_application_falls_back_to_asking_again() -> None:
    world, refresher = argo_world()
    refresher.get_fails["web"] = 500
    world.clock.now += 300
    assert world.cycle() == [("argocd", "web")]
    assert world.metrics.value("errors_total", kind="kubernetes") == 1
