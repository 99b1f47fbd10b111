"""`plugin watch` observability: Prometheus `/metrics`, `/healthz`, and JSON log lines.

Why hand-written: the exposition text format is a few lines of escaping, and the image should
not carry a metrics library for one endpoint; the tests parse our output with the reference
parser (prometheus_client) so a formatting slip fails there.

What never appears, by construction:
- no secret value and no token: the watcher never holds a value (KV v2 metadata only; KV v1
  fingerprints), and tokens stay inside the poller;
- no secret path and no Application name in a label: paths and names are written by tenants
  (unbounded cardinality, label injection) and tell a scraper which secrets rotate when. The
  only free-form label is the backend `address` (an operator setting, or an Application's
  when no tenant policy pins it): it is escaped and capped at `MAX_ADDRESSES` distinct values,
  the rest counted under `address="other"`. Which Application changed is in the logs.
"""

from __future__ import annotations

import datetime
import http.server
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

PREFIX = "argocd_secrets_plugin_watch_"
MAX_ADDRESSES = 32
OTHER_ADDRESS = "other"

#: name -> (type, help). Counters end in `_total` as the format's convention asks.
FAMILIES: Mapping[str, tuple[str, str]] = {
    "cycles_total": ("counter", "Poll cycles run while leader."),
    "polls_total": ("counter", "Applications polled (one poll covers all references of one)."),
    "changes_detected_total": (
        "counter",
        "Applications whose secrets changed since their last render.",
    ),
    "refreshes_requested_total": (
        "counter",
        "Hard refreshes requested from Argo CD (Application patches that succeeded).",
    ),
    "records_superseded_total": (
        "counter",
        "Refreshes Argo CD made without a new render in this pod's index (rendered by another "
        "replica, or failed): that record is not polled until the Application renders here.",
    ),
    "errors_total": ("counter", "Errors, by kind."),
    "vault_requests_total": ("counter", "Requests sent to Vault/OpenBao by the poller."),
    "last_successful_poll_timestamp_seconds": (
        "gauge",
        "Unix time of the last poll without error, per backend address.",
    ),
    "is_leader": ("gauge", "1 when this replica holds the lease and polls, else 0."),
    "applications": ("gauge", "Applications in the reference index at the last cycle."),
    "refreshes_pending": (
        "gauge",
        "Hard refreshes requested that Argo CD has not answered with a new render yet.",
    ),
}

#: Families whose series all carry labels (no series until something happened).
LABELLED = frozenset({"errors_total", "last_successful_poll_timestamp_seconds"})

LabelKey = tuple[tuple[str, str], ...]


class Metrics:
    """Thread-safe counters and gauges, rendered in the Prometheus text format (0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[LabelKey, float]] = {name: {} for name in FAMILIES}
        self._addresses: set[str] = set()
        for name in FAMILIES:
            if name not in LABELLED:  # a family without labels is exposed from the start
                self._values[name][()] = 0.0

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        with self._lock:
            series = self._values[name]
            key = self._key(labels)
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][self._key(labels)] = float(value)

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values[name].get(self._key(labels, register=False), 0.0)

    def poll_succeeded(self, address: str, when: float) -> None:
        self.set("last_successful_poll_timestamp_seconds", when, address=address)

    def _key(self, labels: Mapping[str, str], register: bool = True) -> LabelKey:
        if "address" in labels:
            address = labels["address"]
            if address not in self._addresses:
                if len(self._addresses) < MAX_ADDRESSES and register:
                    self._addresses.add(address)
                elif register:
                    labels = {**labels, "address": OTHER_ADDRESS}
        return tuple(sorted(labels.items()))

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in FAMILIES.items():
                full = PREFIX + name
                lines.append(f"# HELP {full} {help_text}")
                lines.append(f"# TYPE {full} {kind}")
                for key, value in sorted(self._values[name].items()):
                    lines.append(f"{full}{_labels(key)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _labels(key: LabelKey) -> str:
    if not key:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in key) + "}"


def _escape(value: str) -> str:
    """Label value escaping of the text format: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


# ------------------------------------------------------------------ HTTP


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    """`/metrics` and `/healthz` from a daemon thread (stdlib `ThreadingHTTPServer`).

    `healthy()` decides /healthz: 200 `ok` when true, 503 otherwise. Nothing else is served
    (404), and requests are not logged (the scrape rate would drown the watcher's own logs).
    """

    def __init__(self, bind: str, port: int, metrics: Metrics, healthy: Callable[[], bool]) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "plugin-watch"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, outer.metrics.render(), CONTENT_TYPE)
                elif path == "/healthz":
                    ok = outer.healthy()
                    self._answer(200 if ok else 503, "ok\n" if ok else "stalled\n")
                else:
                    self._answer(404, "not found\n")

            def _answer(
                self, status: int, body: str, content_type: str = "text/plain; charset=utf-8"
            ) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.metrics = metrics
        self.healthy = healthy
        self.httpd = http.server.ThreadingHTTPServer((bind, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="plugin-watch-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------ logs


class EventLog:
    """One JSON object per line: `time`, `level`, `event`, then the event's fields.

    Fields are typed (str, int, float, bool, None, or lists of those) so a caller cannot pass
    an object whose text could carry a value; the CLI's redacting stderr still covers the
    configured credentials.
    """

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.time) -> None:
        self._stream = stream
        self._clock = clock
        self._lock = threading.Lock()

    def __call__(self, level: str, event: str, **fields: object) -> None:
        stamp = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        body: dict[str, object] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": level,
            "event": event,
        }
        for name, value in fields.items():
            body[name] = _plain(value)
        line = json.dumps(body, ensure_ascii=False, sort_keys=False) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def _plain(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return type(value).__name__
