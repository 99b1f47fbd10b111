"""Helpers for the fault, concurrency and tenant-policy tests (this module holds no tests).

- `Plugin`: runs `python -m plugin generate` as Argo CD's sidecar would (a private HOME, the
  pinned Helm, caches in a given directory, no inherited Vault/AVP variables) and times it.
- `assert_failed_cleanly`: exit non-zero, stdout empty, a single clear `Error:` on stderr,
  and no planted canary in any encoding anywhere.
- `HangingServer`: a loopback HTTP server that accepts and then never answers (while
  `hang` is set), else serves a directory (a chart repository's index).
- `umbrella_chart`: a chart with a dependency from a chart repository and placeholders in
  its values and in its own template.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent


def encodings(value: str) -> list[str]:
    data = value.encode()
    return [
        value,
        base64.b64encode(data).decode(),
        base64.b64encode(data).decode().rstrip("="),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1]
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e"),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
    ]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float


class Plugin:
    """`plugin generate` in a sidecar-like environment."""

    def __init__(self, home: Path, helm: str | None = None, **extra: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.env: dict[str, str] = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PLUGIN_CACHE_DIR": str(home / "plugin-cache"),
            "AVP_TOKEN_CACHE_DIR": str(home / "token-cache"),
            "ARGOCD_APP_NAME": "demo",
            "ARGOCD_APP_NAMESPACE": "demo-ns",
            "ARGOCD_APP_PROJECT_NAME": "default",
        }
        if helm:
            self.env["HELM_BIN"] = helm
        self.env.update(extra)

    @classmethod
    def vault_token(
        cls, home: Path, addr: str, token: str, helm: str | None = None, **extra: str
    ) -> Plugin:
        """A sidecar reading Vault (or OpenBao) at `addr` with a fixed token."""
        return cls(
            home, helm, AVP_TYPE="vault", VAULT_ADDR=addr, AVP_AUTH_TYPE="token", VAULT_TOKEN=token,
            **extra,
        )  # fmt: skip

    def generate(self, path: Path, timeout: float = 120, **extra: str) -> Run:
        env = {**self.env, **extra}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "plugin", "generate", str(path)],
            capture_output=True,
            env=env,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
        return Run(
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
            time.monotonic() - started,
        )


def secret_app(directory: Path, *values: str) -> Path:
    """`directory` as a plain app: one Secret `s` whose stringData keys k0, k1... hold `values`."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"  k{i}: {text}\n" for i, text in enumerate(values))
    (directory / "secret.yaml").write_text(
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n{lines}"
    )
    return directory


def assert_failed_cleanly(run: Run, canaries: list[str], *expected: str) -> None:
    assert run.code != 0, run.stdout[-500:]
    assert run.stdout == ""
    assert run.stderr.startswith("Error: "), run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    for canary in canaries:
        for form in encodings(canary):
            assert form not in run.stderr, "a canary leaked on stderr"
    for text in expected:
        assert text in run.stderr, run.stderr[-2000:]


def assert_succeeded(run: Run, *expected: str) -> list[dict[str, Any]]:
    assert run.code == 0, run.stderr[-3000:]
    for text in expected:
        assert text in run.stdout
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc is not None]


class HangingServer:
    """Accepts connections and, while `hang` is set, never answers; otherwise serves `root`."""

    def __init__(self, root: Path) -> None:
        self.hang = threading.Event()
        self.release = threading.Event()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if server.hang.is_set():
                    server.release.wait(300)  # hold the connection, say nothing
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def umbrella_chart(
    directory: Path,
    repository: str,
    secret_path: str,
    *,
    name: str = "umbrella",
    extra_values: Mapping[str, Any] | None = None,
) -> Path:
    """A chart depending on webapp 0.1.0 from `repository`, with placeholders for
    `secret_path` (keys `password` and `apiKey`) in the subchart's values and in its own
    template."""
    (directory / "templates").mkdir(parents=True, exist_ok=True)
    chart = {
        "apiVersion": "v2",
        "name": name,
        "version": "1.0.0",
        "dependencies": [{"name": "webapp", "version": "0.1.0", "repository": repository}],
    }
    (directory / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
    values: dict[str, Any] = {
        "webapp": {"secret": {"stringData": {"password": f"<path:{secret_path}#password>"}}},
        **(extra_values or {}),
    }
    (directory / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    (directory / "templates" / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-api\n"
        f"stringData:\n  apiKey: <path:{secret_path}#apiKey>\n"
    )
    return directory
