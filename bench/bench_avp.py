"""Paired benchmark of `plugin generate` against argocd-vault-plugin (not a test).

Workloads (issue 14), all against a real OpenBao dev server on loopback, token auth:
  W1  10,000 ConfigMaps holding 20,000 inline placeholders over 200 KV v2 paths (stdin)
  W2  a Helm chart rendering 150 ConfigMaps with 40 placeholders over 5 paths (in its values):
      `plugin generate DIR` against `helm template | argocd-vault-plugin generate -`
  W3  50 MB of Deployments without any placeholder (stdin)
  W4  one ConfigMap without placeholder (a file): the start-up cost
  W5  an ordinary small app: 10 documents with 5 placeholders on 1 path (a file)

Each workload runs the variants in rotation (A, B, C, A, B, C, ...) so that the load of a shared
machine hits them alike; the table gives medians, the median of the per-round ratios, the
Vault requests of one extra run of each variant counted by a loopback proxy, and the peak RSS
of the process (for the zygote variant: of the client only). Variants:
  plugin      `plugin generate` rendering in its own process (PLUGIN_SERVE=off)
  zygote      `plugin generate` through a zygote started by the benchmark (`plugin serve`)
  zygote-compare  the same through the `--compare` executable (only with --compare)
  avp         argocd-vault-plugin (only with AVP_BIN)

Build AVP v1.18.1 from source (Go module proxy):
    GOBIN=/tmp/avp go install github.com/argoproj-labs/argocd-vault-plugin@v1.18.1
(if the proxy refuses the version list, unzip the module from the proxy and `go build` it).

    AVP_BIN=/tmp/avp/argocd-vault-plugin HELM_BIN=... BAO_BIN=... \\
        .venv/bin/python bench/bench_avp.py [--plugin PATH] [--repeat N] [--only W2,W4]

`--plugin` names the `plugin` executable (default: the one next to this Python). An editable
install pays for its import hook at every start; the image installs a wheel, so measure with a
wheel install (`python -m venv /tmp/bv && /tmp/bv/bin/pip install .`) for numbers that carry
over.

The image runs `plugin` through a launcher (`python -IS`, see plugin/serve/launcher.py), not
pip's console script. Write one for the wheel venv, next to pip's, and measure it against
pip's in the same rounds (`--compare` adds the variant `zygote-compare`: the other executable
through a zygote of its own, started from it on a second socket, and its per-round ratio to
`zygote`). The other executable may belong to another installation: an older version in a
second venv, to measure a change of the zygote itself against the old one, round by round:

    /tmp/bv/bin/python -I -m plugin.serve.launcher /tmp/bv/bin/plugin-launcher
    ... bench/bench_avp.py --plugin /tmp/bv/bin/plugin-launcher --compare /tmp/bv/bin/plugin \
        --only W4,W5 --repeat 8
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_engine import workload_plain  # noqa: E402
from tests.conftest import OpenBao, find_tool  # noqa: E402
from tests.integration.test_vault_support import FaultProxy, RootAPI  # noqa: E402

SOCKET = "PLUGIN_SERVE_SOCKET"


@dataclass
class Sample:
    seconds: float
    rss_kib: int


@dataclass
class Variant:
    name: str
    run: Callable[[Mapping[str, str]], Sample]
    times: list[float] = field(default_factory=list)
    rss: int = 0
    requests: int | None = None


def _wait(procs: list[subprocess.Popen[bytes]], started: float) -> Sample:
    rss = 0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        rss = max(rss, usage.ru_maxrss)
    elapsed = time.perf_counter() - started
    for proc in procs:
        if proc.returncode != 0:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"{proc.args!r} failed ({proc.returncode}): {err[-2000:]}")
    return Sample(elapsed, rss)


def run_one(argv: list[str], env: Mapping[str, str], cwd: Path, stdin: Path | None) -> Sample:
    with open(stdin or os.devnull, "rb") as source:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=source,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return _wait([proc], started)


def run_pipe(first: list[str], second: list[str], env: Mapping[str, str], cwd: Path) -> Sample:
    """`first | second`, timed from the start of `first` to the end of both."""
    started = time.perf_counter()
    producer = subprocess.Popen(
        first, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    consumer = subprocess.Popen(
        second,
        cwd=cwd,
        env=dict(env),
        stdin=producer.stdout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert producer.stdout is not None
    producer.stdout.close()
    return _wait([producer, consumer], started)


# ---------------------------------------------------------------------------- workloads


def w1(root: Path, api: RootAPI) -> tuple[Path, int]:
    for p in range(200):
        api("POST", f"kv/data/w1/p{p:03d}", {"data": {f"key{k}": f"v{p}-{k}" for k in range(5)}})
    docs = []
    for i in range(10_000):
        a, b = (2 * i) % 200, (2 * i + 1) % 200
        docs.append(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n"
            f"  a: <path:kv/data/w1/p{a:03d}#key{i % 5}>\n"
            f"  b: <path:kv/data/w1/p{b:03d}#key{(i + 1) % 5}>\n"
        )
    path = root / "w1.yaml"
    path.write_text("---\n".join(docs))
    return path, 20_000


def w2(root: Path, api: RootAPI) -> Path:
    for s in range(5):
        api("POST", f"kv/data/w2/s{s}", {"data": {f"k{k}": f"w2-{s}-{k}" for k in range(8)}})
    chart = root / "w2" / "app"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 1.0.0\n")
    values = ["secrets:"] + [f'  - "<path:kv/data/w2/s{i % 5}#k{i % 8}>"' for i in range(40)]
    (chart / "values.yaml").write_text("\n".join(values) + "\nreplicas: 2\n")
    (chart / "templates" / "many.yaml").write_text(
        "{{- range $i := until 150 }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        "  name: {{ $.Release.Name }}-cm-{{ $i }}\n  labels:\n"
        "    app.kubernetes.io/instance: {{ $.Release.Name }}\ndata:\n"
        "  index: {{ $i | quote }}\n  replicas: {{ $.Values.replicas | quote }}\n"
        "  {{- if lt $i 40 }}\n  secret: {{ index $.Values.secrets $i | quote }}\n  {{- end }}\n"
        "{{- end }}\n"
    )
    return chart


def w3(root: Path) -> Path:
    path = root / "w3.yaml"
    path.write_text(workload_plain(50_000_000))
    return path


def w4(root: Path) -> Path:
    path = root / "w4" / "configmap.yaml"
    path.parent.mkdir()
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\ndata:\n  a: b\n")
    return path


def w5(root: Path, api: RootAPI) -> Path:
    api("POST", "kv/data/w5/app", {"data": {f"k{k}": f"w5-{k}" for k in range(5)}})
    docs = []
    for i in range(10):
        extra = f"  secret: <path:kv/data/w5/app#k{i}>\n" if i < 5 else ""
        docs.append(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n"
            f"  index: '{i}'\n{extra}"
        )
    path = root / "w5" / "app.yaml"
    path.parent.mkdir()
    path.write_text("---\n".join(docs))
    return path


# ---------------------------------------------------------------------------- running


def machine() -> str:
    model = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}; load average {load}"
    )


def measure(
    label: str, variants: list[Variant], env: Mapping[str, str], repeat: int, proxy: FaultProxy
) -> None:
    for variant in variants:  # warm-up (page cache, chart cache), not counted
        variant.run(env)
    for round_ in range(repeat):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for variant in order:
            sample = variant.run(env)
            variant.times.append(sample.seconds)
            variant.rss = max(variant.rss, sample.rss_kib)
    counted = {**env, "VAULT_ADDR": proxy.url}
    for variant in variants:
        before = len(proxy.requests)
        variant.run(counted)
        variant.requests = len(proxy.requests) - before
    report(label, variants)


def report(label: str, variants: list[Variant]) -> None:
    """One line: medians, the median of the per-round ratios to AVP (and of `zygote` to
    `zygote-compare`) and, when the workload has a `helm-alone` variant, the median of the
    per-round overheads over it."""
    base = variants[-1]
    helm_alone = next((v for v in variants if v.name == "helm-alone"), None)
    compare = next((v for v in variants if v.name == "zygote-compare"), None)
    cells = []
    for variant in variants:
        median = statistics.median(variant.times)
        ratios: list[str] = []
        if compare is not None and variant.name == "zygote":
            per_round = [a / b for a, b in zip(variant.times, compare.times, strict=True)]
            ratios.append(f"{statistics.median(per_round):.2f}x compare")
        if variant is not base and base.name == "avp":
            per_round = [a / b for a, b in zip(variant.times, base.times, strict=True)]
            ratios.append(f"{statistics.median(per_round):.2f}x avp")
        extra = f" = {', '.join(ratios)}" if ratios else ""
        if helm_alone is not None and variant is not helm_alone:
            over = [a - b for a, b in zip(variant.times, helm_alone.times, strict=True)]
            extra += f", +{statistics.median(over) * 1000:.0f} ms over helm"
        cells.append(
            f"{variant.name} {median * 1000:.0f} ms{extra} "
            f"(req {variant.requests}, rss {variant.rss / 1024:.0f} MiB)"
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"| {label} | " + " | ".join(cells) + f" | n={len(base.times)}, load {load} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugin", default=str(Path(sys.executable).parent / "plugin"))
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--only", default="W1,W2,W3,W4,W5")
    parser.add_argument(
        "--compare", help="another `plugin` executable of the same installation, paired"
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    avp = os.environ.get("AVP_BIN")
    helm = os.environ.get("HELM_BIN") or find_tool("helm3") or shutil.which("helm")
    bao = find_tool("bao")
    if not bao or not helm:
        raise SystemExit("needs BAO_BIN (OpenBao) and HELM_BIN")
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    print(f"# plugin: {args.plugin}; avp: {avp or 'not given (AVP_BIN)'}; helm: {helm}")
    if args.compare:
        print(f"# compare: {args.compare}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = OpenBao(bao, root)
        server.start()
        zygote: subprocess.Popen[bytes] | None = None
        compare_zygote: subprocess.Popen[bytes] | None = None
        try:
            api = RootAPI(server.addr, server.root_token)
            proxy = FaultProxy(server.addr)
            env = {
                "PATH": os.environ["PATH"],
                "HOME": str(root / "plugin-home"),
                "LANG": "C.UTF-8",
                "AVP_TYPE": "vault",
                "AVP_AUTH_TYPE": "token",
                "VAULT_ADDR": server.addr,
                "VAULT_TOKEN": server.root_token,
                "PLUGIN_CACHE_DIR": str(root / "cache"),
                "PLUGIN_SERVE_SOCKET": str(root / "run" / "serve.sock"),
                "HELM_BIN": helm,
                "ARGOCD_APP_NAME": "bench",
                "ARGOCD_APP_NAMESPACE": "bench",
                "PLUGIN_MAX_INPUT_SIZE": "128Mi",
            }
            (root / "plugin-home").mkdir()
            zygote = subprocess.Popen(
                [args.plugin, "serve"], env=env, cwd=root, stderr=subprocess.DEVNULL
            )
            while subprocess.run(
                [args.plugin, "serve", "--status"], env=env, capture_output=True, check=False
            ).returncode:
                time.sleep(0.2)
            # The compared executable gets a zygote of its own (it may be another installation,
            # which the first zygote would refuse): same settings, another socket.
            compare_env = {**env, "PLUGIN_SERVE_SOCKET": str(root / "run2" / "serve.sock")}
            if args.compare:
                compare_zygote = subprocess.Popen(
                    [args.compare, "serve"], env=compare_env, cwd=root, stderr=subprocess.DEVNULL
                )
                while subprocess.run(
                    [args.compare, "serve", "--status"],
                    env=compare_env,
                    capture_output=True,
                    check=False,
                ).returncode:
                    time.sleep(0.2)
            off = {"PLUGIN_SERVE": "off"}

            def variants(
                plugin_argv: list[str],
                avp_run: Callable[[Mapping[str, str]], Sample] | None,
                cwd: Path,
                stdin: Path | None,
            ) -> list[Variant]:
                found = [
                    Variant("plugin", lambda e: run_one(plugin_argv, {**e, **off}, cwd, stdin)),
                    Variant("zygote", lambda e: run_one(plugin_argv, e, cwd, stdin)),
                ]
                if args.compare:
                    other = [args.compare, *plugin_argv[1:]]
                    found.append(
                        Variant(
                            "zygote-compare",
                            lambda e: run_one(
                                other, {**e, "PLUGIN_SERVE_SOCKET": compare_env[SOCKET]}, cwd, stdin
                            ),
                        )
                    )
                if avp_run is not None:
                    found.append(Variant("avp", avp_run))
                return found

            def avp_stdin(path: Path) -> Callable[[Mapping[str, str]], Sample] | None:
                if not avp:
                    return None
                return lambda e: run_one([avp, "generate", "-"], e, root, path)

            names = ["plugin", "zygote", *(["zygote-compare"] if args.compare else []), "avp"]
            print("| workload | " + " | ".join(names) + " | rounds |")
            print("|---" * (len(names) + 2) + "|")
            if "W4" in only:
                path = w4(root)
                cases = variants(
                    [args.plugin, "generate", str(path)],
                    (lambda e: run_one([avp, "generate", str(path)], e, root, None))
                    if avp
                    else None,
                    root,
                    None,
                )
                measure("W4 one ConfigMap", cases, env, args.repeat * 2, proxy)
            if "W5" in only:
                path = w5(root, api)
                cases = variants(
                    [args.plugin, "generate", str(path)],
                    (lambda e: run_one([avp, "generate", str(path)], e, root, None))
                    if avp
                    else None,
                    root,
                    None,
                )
                measure("W5 10 docs, 5 placeholders", cases, env, args.repeat * 2, proxy)
            if "W2" in only:
                chart = w2(root, api)
                avp_pipe = (
                    (
                        lambda e: run_pipe(
                            [helm, "template", "bench", ".", "--namespace", "bench"],
                            [avp, "generate", "-"],
                            e,
                            chart,
                        )
                    )
                    if avp
                    else None
                )
                helm_alone = Variant(
                    "helm-alone",
                    lambda e: run_one([helm, "template", "bench", "."], e, chart, None),
                )
                cases = variants([args.plugin, "generate", "."], avp_pipe, chart, None)
                measure(
                    "W2 chart 150 docs, 40 placeholders",
                    [helm_alone, *cases],
                    env,
                    args.repeat,
                    proxy,
                )
            if "W1" in only:
                path, _ = w1(root, api)
                cases = variants([args.plugin, "generate", "-"], avp_stdin(path), root, path)
                measure(
                    "W1 20,000 placeholders / 200 paths",
                    cases,
                    env,
                    max(3, args.repeat // 3),
                    proxy,
                )
            if "W3" in only:
                path = w3(root)
                cases = variants([args.plugin, "generate", "-"], avp_stdin(path), root, path)
                measure("W3 50 MB, no placeholder", cases, env, 3, proxy)
        finally:
            for started in (zygote, compare_zygote):
                if started is not None:
                    started.terminate()
                    started.wait()
            server.stop()
    print(f"# done; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
