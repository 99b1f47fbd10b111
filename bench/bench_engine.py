"""Benchmark of the placeholder engine with the file backend (not a test).

Workloads (issue 3):
  (a) 50 MB of rendered manifests without placeholders (the pass-through path);
  (b) 10,000 documents holding 20,000 placeholders over 200 paths, half inline,
      some with modifiers.
Each runs the real CLI (`python -m plugin generate -`) in a subprocess and
reports wall time, MB/s and the child's peak RSS.

    .venv/bin/python bench/bench_engine.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}
  namespace: bench
  labels:
    app.kubernetes.io/name: app-{i}
    app.kubernetes.io/instance: bench
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: app-{i}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: app-{i}
    spec:
      containers:
      - name: app
        image: registry.example.com/team/app:{i}.0.0
        ports:
        - containerPort: 8080
          name: http
        env:
        - name: LOG_LEVEL
          value: info
        resources:
          requests: {{cpu: 100m, memory: 128Mi}}
          limits: {{cpu: 500m, memory: 256Mi}}
"""


def workload_plain(target_bytes: int) -> str:
    parts: list[str] = []
    size, i = 0, 0
    while size < target_bytes:
        doc = DEPLOYMENT.format(i=i)
        parts.append(doc)
        size += len(doc) + 4
        i += 1
    return "---\n".join(parts)


def workload_placeholders(documents: int, paths: int) -> tuple[str, str]:
    secrets = "".join(
        f"app/{p}:\n  user: user-{p}\n  password: pw-{p}\n  port: {8000 + p}\n"
        for p in range(paths)
    )
    parts = []
    for i in range(documents):
        inline = f"<path:app/{(i * 7) % paths}#user>"
        if i % 5 == 0:
            inline = f"<path:app/{(i * 7) % paths}#password | base64encode>"
        parts.append(
            "apiVersion: v1\nkind: ConfigMap\n"
            f"metadata:\n  name: cm-{i}\n  annotations:\n"
            f"    avp.kubernetes.io/path: app/{i % paths}\n"
            f"data:\n  inline: {inline}\n  generic: <password>\n  plain: unchanged-{i}\n"
        )
    return "---\n".join(parts), secrets


def run(stdin_text: str, secrets: str) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        secrets_file = Path(tmp) / "secrets.yaml"
        secrets_file.write_text(secrets or "{}\n")
        input_file = Path(tmp) / "input.yaml"
        input_file.write_text(stdin_text)
        env = {**os.environ, "AVP_TYPE": "file", "AVP_FILE_PATH": str(secrets_file)}
        with input_file.open("rb") as stdin:
            started = time.perf_counter()
            child = subprocess.Popen(
                [sys.executable, "-m", "plugin", "generate", "-"],
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=REPO,
            )
            _, status, usage = os.wait4(child.pid, 0)
            elapsed = time.perf_counter() - started
            child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"plugin generate failed with exit code {child.returncode}")
    return elapsed, usage.ru_maxrss


def report(name: str, text: str, secrets: str, repeat: int) -> None:
    times = []
    peak = 0
    for _ in range(repeat):
        elapsed, peak = run(text, secrets)
        times.append(elapsed)
    best = min(times)
    megabytes = len(text.encode()) / 1e6
    print(
        f"{name}: {megabytes:.1f} MB, best {best:.3f} s of {repeat} "
        f"(all: {', '.join(f'{t:.3f}' for t in times)}), {megabytes / best:.1f} MB/s, "
        f"peak RSS {peak / 1024:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report("(a) 50 MB, no placeholders", workload_plain(50_000_000), "", args.repeat)
    text, secrets = workload_placeholders(10_000, 200)
    report("(b) 10,000 docs, 20,000 placeholders, 200 paths", text, secrets, args.repeat)
    empty = run("", "")[0]
    print(f"process start-up (empty input): {empty:.3f} s")


if __name__ == "__main__":
    main()
