"""/metrics is valid Prometheus text (parsed by the reference parser), /healthz tells a stall."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from plugin.rotation.metrics import (
    CONTENT_TYPE,
    MAX_ADDRESSES,
    PREFIX,
    EventLog,
    Metrics,
    MetricsServer,
)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_every_family_is_exposed_and_parses() -> None:
    metrics = Metrics()
    metrics.inc("polls_total", 3)
    metrics.inc("vault_requests_total", 7)
    metrics.inc("errors_total", kind="backend")
    metrics.set("is_leader", 1)
    metrics.poll_succeeded("https://bao:8200", 1_765_000_000.5)
    text = metrics.render()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families[PREFIX + "polls"] == "counter"
    assert families[PREFIX + "is_leader"] == "gauge"
    samples = parse(text)
    assert samples[(PREFIX + "polls_total", ())] == 3
    assert samples[(PREFIX + "vault_requests_total", ())] == 7
    assert samples[(PREFIX + "refreshes_requested_total", ())] == 0  # exposed before any
    assert samples[(PREFIX + "errors_total", (("kind", "backend"),))] == 1
    stamp = (PREFIX + "last_successful_poll_timestamp_seconds", (("address", "https://bao:8200"),))
    assert samples[stamp] == 1_765_000_000.5
    assert samples[(PREFIX + "is_leader", ())] == 1


def test_hostile_label_values_are_escaped() -> None:
    metrics = Metrics()
    address = 'http://x"} evil_metric 1\n# \\'
    metrics.poll_succeeded(address, 5)
    samples = parse(metrics.render())
    assert samples[(PREFIX + "last_successful_poll_timestamp_seconds", (("address", address),))]
    assert not any(name.startswith("evil") for name, _ in samples)


def test_addresses_are_capped() -> None:
    metrics = Metrics()
    for n in range(MAX_ADDRESSES + 10):
        metrics.poll_succeeded(f"https://vault-{n}:8200", n)
    labels = {
        dict(key)["address"]
        for name, key in parse(metrics.render())
        if name.endswith("timestamp_seconds")
    }
    assert len(labels) == MAX_ADDRESSES + 1
    assert "other" in labels


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    state = {"healthy": True}
    metrics = Metrics()
    metrics.inc("cycles_total")
    srv = MetricsServer("127.0.0.1", 0, metrics, lambda: state["healthy"]).start()
    srv.state = state  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def get(server: MetricsServer, path: str) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(f"http://127.0.0.1:{server.port}{path}", timeout=10)


def test_scrape_over_http(server: MetricsServer) -> None:
    answer = get(server, "/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == CONTENT_TYPE
    assert parse(answer.text)[(PREFIX + "cycles_total", ())] == 1


def test_healthz_follows_the_loop(server: MetricsServer) -> None:
    assert get(server, "/healthz").status_code == 200
    server.state["healthy"] = False  # type: ignore[attr-defined]
    assert get(server, "/healthz").status_code == 503


def test_nothing_else_is_served(server: MetricsServer) -> None:
    assert get(server, "/").status_code == 404
    assert get(server, "/metrics/../etc").status_code == 404


def test_event_log_is_one_json_object_per_line() -> None:
    stream = io.StringIO()
    log = EventLog(stream, clock=lambda: 0.0)
    log("info", "refresh_requested", application="web", attempt=1, changed=["kv/data/web"])
    log("warning", "poll_failed", error=ValueError("value-like text"))
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {
        "time": "1970-01-01T00:00:00.000000Z",
        "level": "info",
        "event": "refresh_requested",
        "application": "web",
        "attempt": 1,
        "changed": ["kv/data/web"],
    }
    assert second["error"] == "ValueError"  # an object's text never reaches the log
