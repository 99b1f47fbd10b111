"""Benchmark of the placeholder engine with the file backend (not a test).

Workloads (issue 3):
  (a) 50 MB of rendered manifests without placeholders (the pass-through path);
  (b) 10,000 documents holding 20,000 placeholders over 200 paths, half inline,
      some with modifiers.
Each runs the real CLI (`python -m plugin generate -`) in a subprocess and
reports wall time, MB/s and the child's peak RSS.

`--w1-floor` instead pairs issue 14's W1 (10,000 ConfigMaps, 20,000 inline placeholders over
200 paths, here with the file backend) with its "floor": a Python process that reads the
same secrets file and input with PyYAML's libyaml loader (`load_all`) and writes them back
with its libyaml dumper (`dump_all`). Each round runs both, in alternating order, so that
the load of a shared machine falls on both alike; the figure is the median of the per-round
ratios of CPU time (user + system, from `wait4`), with wall time beside it.

    .venv/bin/python bench/bench_engine.py [--repeat N]
    .venv/bin/python bench/bench_engine.py --w1-floor [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def workload_w1(documents: int = 10_000, paths: int = 200) -> tuple[str, str]:
    """bench_avp.py's W1 (two inline placeholders per ConfigMap), for the file backend."""
    secrets = "".join(
        f"kv/data/w1/p{p:03d}:\n" + "".join(f"  key{k}: v{p}-{k}\n" for k in range(5))
        for p in range(paths)
    )
    docs = []
    for i in range(documents):
        a, b = (2 * i) % paths, (2 * i + 1) % paths
        docs.append(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n"
            f"  a: <path:kv/data/w1/p{a:03d}#key{i % 5}>\n"
            f"  b: <path:kv/data/w1/p{b:03d}#key{(i + 1) % 5}>\n"
        )
    return "---\n".join(docs), secrets


# The floor: the secrets read and the input loaded and dumped by libyaml, nothing else.
FLOOR = """
import sys, yaml
with open(sys.argv[1]) as f:
    yaml.load(f, Loader=yaml.CSafeLoader)
yaml.dump_all(yaml.load_all(sys.stdin, Loader=yaml.CSafeLoader), sys.stdout,
              Dumper=yaml.CSafeDumper)
"""


def timed(argv: list[str], stdin_path: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one child reading `stdin_path`."""
    with stdin_path.open("rb") as stdin:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:4]} failed with status {status}")
    return wall, usage.ru_utime + usage.ru_stime


def w1_floor(repeat: int) -> None:
    """Paired rounds of the floor and `plugin generate -` on W1; prints medians and ratios."""
    text, secrets = workload_w1()
    with tempfile.TemporaryDirectory() as tmp:
        secrets_file = Path(tmp) / "secrets.yaml"
        secrets_file.write_text(secrets)
        input_file = Path(tmp) / "w1.yaml"
        input_file.write_text(text)
        env = {**os.environ, "AVP_TYPE": "file", "AVP_FILE_PATH": str(secrets_file)}
        floor = [sys.executable, "-c", FLOOR, str(secrets_file)]
        plugin = [sys.executable, "-m", "plugin", "generate", "-"]
        rows: list[tuple[float, float, float, float]] = []
        for round_ in range(repeat):
            if round_ % 2:
                plugin_wall, plugin_cpu = timed(plugin, input_file, env)
                floor_wall, floor_cpu = timed(floor, input_file, env)
            else:
                floor_wall, floor_cpu = timed(floor, input_file, env)
                plugin_wall, plugin_cpu = timed(plugin, input_file, env)
            rows.append((floor_wall, floor_cpu, plugin_wall, plugin_cpu))
            print(
                f"round {round_ + 1}: floor {floor_cpu:.3f} s CPU ({floor_wall:.3f} s wall), "
                f"plugin {plugin_cpu:.3f} s CPU ({plugin_wall:.3f} s wall), "
                f"ratio {plugin_cpu / floor_cpu:.2f} CPU, {plugin_wall / floor_wall:.2f} wall"
            )
    median = statistics.median
    print(
        f"W1 (file backend), {repeat} paired rounds, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}: "
        f"floor {median(r[1] for r in rows):.3f} s CPU, "
        f"plugin {median(r[3] for r in rows):.3f} s CPU; plugin / floor = "
        f"{median(r[3] / r[1] for r in rows):.2f} (CPU), "
        f"{median(r[2] / r[0] for r in rows):.2f} (wall)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--w1-floor", action="store_true", help="W1 against its PyYAML floor")
    args = parser.parse_args()
    if args.w1_floor:
        w1_floor(args.repeat)
        return
    report("(a) 50 MB, no placeholders", workload_plain(50_000_000), "", args.repeat)
    text, secrets = workload_placeholders(10_000, 200)
    report("(b) 10,000 docs, 20,000 placeholders, 200 paths", text, secrets, args.repeat)
    empty = run("", "")[0]
    print(f"process start-up (empty input): {empty:.3f} s")


if __name__ == "__main__":
    main()
