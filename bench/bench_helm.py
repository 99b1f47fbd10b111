"""Benchmark: `plugin generate` on an umbrella chart against `helm template` alone (not a test).

Workload (issue 5): an umbrella chart whose three dependencies (one chart under three aliases,
fetched from a loopback Helm repository, the middle one by version range) render ~150
resources; its values hold 40 placeholders over 5 secret paths (file backend). Both commands
run as subprocesses in the same session, alternating, with a warm dependency cache for the
plugin (the first, cold render is reported separately) and `charts/` prebuilt for helm.

    .venv/bin/python bench/bench_helm.py [--helm PATH] [--repeat N]

Target: plugin overhead beyond helm template (median) under 150 ms with a warm cache.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / ".tools" / "bin"
PLUGIN = Path(sys.executable).parent / "plugin"
TARGET_MS = 150.0
PER_ALIAS = 50
ALIASES = ("api", "worker", "web")
PATHS = 5
PLACEHOLDERS = 40

COMPONENT_TEMPLATE = textwrap.dedent(
    """\
    {{- range $i := until (int .Values.count) }}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: {{ $.Release.Name }}-{{ $.Chart.Name }}-{{ $i }}
      labels:
        app.kubernetes.io/instance: {{ $.Release.Name }}
        helm.sh/chart: {{ $.Chart.Name }}-{{ $.Chart.Version }}
    data:
      index: {{ $i | quote }}
      level: {{ $.Values.level | quote }}
    {{- end }}
    ---
    apiVersion: v1
    kind: Secret
    metadata:
      name: {{ .Release.Name }}-{{ .Chart.Name }}-secrets
    type: Opaque
    stringData:
      {{- range $key, $value := .Values.secrets }}
      {{ $key }}: {{ $value | quote }}
      {{- end }}
    """
)


def helm_home(env: dict[str, str], home: Path) -> dict[str, str]:
    for part in ("cache", "config", "data"):
        env[f"HELM_{part.upper()}_HOME"] = str(home / part)
    return env


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def build(workdir: Path, helm: str) -> tuple[Path, str, http.server.ThreadingHTTPServer]:
    env = helm_home(dict(os.environ), workdir / "h")
    component = workdir / "src/component"
    (component / "templates").mkdir(parents=True)
    (component / "Chart.yaml").write_text("apiVersion: v2\nname: component\nversion: 0.4.2\n")
    (component / "values.yaml").write_text(f"count: {PER_ALIAS - 1}\nlevel: info\nsecrets: {{}}\n")
    (component / "templates/all.yaml").write_text(COMPONENT_TEMPLATE)
    served = workdir / "served"
    served.mkdir()
    subprocess.run([helm, "package", str(component), "-d", str(served)], check=True,
                   capture_output=True, env=env)  # fmt: skip
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    subprocess.run([helm, "repo", "index", str(served), "--url", url], check=True,
                   capture_output=True, env=env)  # fmt: skip

    chart = workdir / "repo/apps/umbrella"
    chart.mkdir(parents=True)
    deps = "".join(
        f"  - name: component\n    version: '{'>=0.1.0 <1.0.0' if i == 1 else '0.4.2'}'\n"
        f"    repository: {url}\n    alias: {alias}\n"
        for i, alias in enumerate(ALIASES)
    )
    (chart / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: umbrella\nversion: 1.0.0\ndependencies:\n{deps}"
    )
    values: dict[str, dict[str, object]] = {}
    for n in range(PLACEHOLDERS):
        alias = ALIASES[n % len(ALIASES)]
        entry = values.setdefault(alias, {"level": "debug", "secrets": {}})
        entry["secrets"][f"key{n}"] = f"<path:kv/data/bench/p{n % PATHS}#k{n}>"  # type: ignore[index]
    (chart / "values.yaml").write_text(json.dumps(values, indent=2))
    secrets: dict[str, dict[str, str]] = {}
    for n in range(PLACEHOLDERS):
        secrets.setdefault(f"kv/data/bench/p{n % PATHS}", {})[f"k{n}"] = f"value-{n}"
    (workdir / "secrets.json").write_text(json.dumps(secrets))
    # helm template alone gets the same chart with charts/ prebuilt.
    prebuilt = workdir / "prebuilt"
    shutil.copytree(chart, prebuilt)
    (prebuilt / "charts").mkdir()
    for archive in served.glob("*.tgz"):
        shutil.copy(archive, prebuilt / "charts" / archive.name)
    return chart, url, server


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, bytes]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {done.stderr.decode()[-2000:]}")
    return took, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--helm", default=os.environ.get("HELM_BIN") or str(TOOLS / "helm3"))
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep and print the work directory")
    args = parser.parse_args()
    helm = os.path.abspath(shutil.which(args.helm) or args.helm)
    keep = contextlib.nullcontext(tempfile.mkdtemp(prefix="bench-helm-"))
    with keep if args.keep else tempfile.TemporaryDirectory(prefix="bench-helm-") as tmp:
        workdir = Path(tmp)
        if args.keep:
            print(f"work directory: {workdir}")
        chart, _url, server = build(workdir, helm)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(workdir / "home"),
            "HELM_BIN": helm,
            "PLUGIN_CACHE_DIR": str(workdir / "cache"),
            "AVP_TYPE": "file",
            "AVP_FILE_PATH": str(workdir / "secrets.json"),
            "ARGOCD_APP_NAME": "bench",
            "ARGOCD_APP_NAMESPACE": "bench",
            "ARGOCD_APP_SOURCE_PATH": "apps/umbrella",
            "KUBE_VERSION": "1.29.0",
            "KUBE_API_VERSIONS": "v1,apps/v1",
        }
        helm_env = helm_home(dict(env), workdir / "hh")
        helm_argv = [helm, "template", ".", "--name-template", "bench", "--namespace", "bench",
                     "--kube-version", "1.29.0", "--api-versions", "v1", "--api-versions",
                     "apps/v1", "--include-crds"]  # fmt: skip
        plugin_argv = [str(PLUGIN), "generate", "."]
        cold, out = timed(plugin_argv, chart, env)
        docs = [d for d in out.decode().split("\n---\n") if "kind:" in d]
        assert "<path:" not in out.decode(), "unresolved placeholders"
        _, helm_out = timed(helm_argv, workdir / "prebuilt", helm_env)
        helm_times: list[float] = []
        plugin_times: list[float] = []
        for _ in range(args.repeat):
            helm_times.append(timed(helm_argv, workdir / "prebuilt", helm_env)[0])
            plugin_times.append(timed(plugin_argv, chart, env)[0])
        python_start = timed([sys.executable, "-c", "pass"], workdir, env)[0]
        server.shutdown()
    helm_ms = statistics.median(helm_times) * 1000
    plugin_ms = statistics.median(plugin_times) * 1000
    overhead = plugin_ms - helm_ms
    report = {
        "helm": helm,
        "resources": len(docs),
        "placeholders": PLACEHOLDERS,
        "secret_paths": PATHS,
        "repeat": args.repeat,
        "helm_template_ms_median": round(helm_ms, 1),
        "plugin_generate_ms_median": round(plugin_ms, 1),
        "plugin_generate_cold_cache_ms": round(cold * 1000, 1),
        "overhead_ms_median": round(overhead, 1),
        "overhead_ms_min": round((min(plugin_times) - min(helm_times)) * 1000, 1),
        "python_startup_ms": round(python_start * 1000, 1),
        "target_overhead_ms": TARGET_MS,
        "within_target": overhead < TARGET_MS,
        "helm_output_bytes": len(helm_out),
    }
    out_dir = REPO / "bench" / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "helm.json").write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report.items():
        print(f"{key:32} {value}")
    return 0 if report["within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
