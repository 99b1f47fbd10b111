"""W2 as the zygote's worker runs it: preload once, fork one process per render.

`bench_avp.py` measures whole commands (client, zygote, worker, exit), so on a shared machine
a change of a few milliseconds inside the worker drowns in the noise. This benchmark forks
workers from one preloaded process (`plugin.serve.server.preload()`, as `plugin serve` does)
and alternates two variants render by render, so that each pair ran under the same load:

- wall time of `plugin.cli.main(["generate", "."])` in the worker;
- CPU time of the worker and its children (helm), from `getrusage`;
- with `--profile`, a cProfile of the worker's main thread (summed over the renders);
- the time from the fork until the worker starts the renderer (`process.run` is called):
  the worker's fixed work before `helm template`;
- with `--timeline`, the worker's `--verbose` log with milliseconds since the fork.

`--workload w4` renders W4 (one ConfigMap, no placeholder: the worker's fixed cost alone)
instead of W2 (a Helm chart of 150 documents with 40 placeholders).

The variants differ by environment: by default `PLUGIN_PREFETCH=true` against `false`
(`--variant NAME=VALUE` to compare another setting). `--variant supervised=false` compares
instead how helm is started: as a zygote worker starts it (the default here: vfork from a
thread that confined itself, `plugin.render.process`) against an in-process run's start
(`preexec_fn`, which forks). Each worker is a session leader without a terminal, as the
zygote's (`plugin.serve.server.work`). OpenBao is a real dev server on loopback.

    HELM_BIN=... BAO_BIN=... .venv/bin/python bench/bench_worker.py [--renders 40]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_avp import w2, w4  # noqa: E402
from tests.conftest import OpenBao, find_tool  # noqa: E402
from tests.integration.test_vault_support import RootAPI  # noqa: E402


def render(
    chart: Path,
    env: dict[str, str],
    profile: Path | None,
    log: Path | None,
    supervised: bool = True,
    *,
    to_renderer: bool = False,
) -> str:
    """Fork a worker that renders `chart` once; returns "status wall cpu", and with
    `to_renderer` a fourth field: the time from the fork until the worker calls `process.run`
    for the renderer (helm, kustomize), in seconds; "nan" when no renderer ran (a plain
    directory)."""
    from plugin import cli
    from plugin.render import pipeline

    # As the zygote's supervisor does (`plugin.serve.server._scratch`): each request's
    # temporary files go to a fresh private directory, removed after the request.
    request_tmp = tempfile.mkdtemp(prefix="plugin-request-")
    read_end, write_end = os.pipe()
    forked, forked_at = time.perf_counter(), time.time()
    pid = os.fork()
    if pid == 0:  # the worker
        reached = [float("nan")]
        spawn = pipeline.run

        def run(*args: object, **kwargs: object) -> object:
            if reached[0] != reached[0]:
                reached[0] = time.perf_counter() - forked
                pipeline.log.debug("%s: starting the renderer", kwargs.get("stage"))
            return spawn(*args, **kwargs)  # type: ignore[arg-type]

        pipeline.run = run  # type: ignore[assignment]
        os.close(read_end)
        os.setsid()  # as the zygote's worker: its own session, no controlling terminal
        os.environ.clear()
        os.environ.update(env)
        os.chdir(chart)
        tempfile.tempdir = request_tmp
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        argv = ["generate", "."]
        if log is not None:
            import logging

            since = forked_at
            plain = logging.Formatter.format

            def stamped(self: logging.Formatter, record: logging.LogRecord) -> str:
                took = (record.created - since) * 1000
                return f"{took:6.1f} ms [{record.threadName}] {plain(self, record)}"

            logging.Formatter.format = stamped  # type: ignore[method-assign]
            os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
            argv = ["generate", "--verbose", "."]
        profiler = cProfile.Profile() if profile is not None else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        code = cli.main(argv, supervised=supervised)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        wall = time.perf_counter() - started
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        fields = f"{code} {wall} {cpu}" + (f" {reached[0]}" if to_renderer else "")
        os.write(write_end, fields.encode())
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 200).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    shutil.rmtree(request_tmp, ignore_errors=True)
    return answer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--renders", type=int, default=40, help="renders per variant")
    parser.add_argument("--variant", default="PLUGIN_PREFETCH=false")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--timeline", action="store_true")
    parser.add_argument("--focus", default="", help="with --profile: only functions matching")
    parser.add_argument(
        "--workload",
        choices=("w2", "w4"),
        default="w2",
        help="w2: the Helm chart with 40 placeholders; w4: one ConfigMap, no placeholder",
    )
    args = parser.parse_args()
    name, _, value = args.variant.partition("=")
    helm = os.environ.get("HELM_BIN") or find_tool("helm3")
    bao = find_tool("bao")
    if not helm or not bao:
        raise SystemExit("needs HELM_BIN and BAO_BIN")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = OpenBao(bao, root)
        server.start()
        try:
            if args.workload == "w2":
                chart = w2(root, RootAPI(server.addr, server.root_token))
            else:
                chart = w4(root).parent
            (root / "home").mkdir(exist_ok=True)
            base = {
                "PATH": os.environ["PATH"],
                "HOME": str(root / "home"),
                "LANG": "C.UTF-8",
                "AVP_TYPE": "vault",
                "AVP_AUTH_TYPE": "token",
                "VAULT_ADDR": server.addr,
                "VAULT_TOKEN": server.root_token,
                "PLUGIN_CACHE_DIR": str(root / "cache"),
                "HELM_BIN": helm,
                "ARGOCD_APP_NAME": "bench",
                "ARGOCD_APP_NAMESPACE": "bench",
            }
            if name == "supervised":  # how helm is started, same environment
                variants = {"default": base, args.variant: base}
                supervised = {"default": True, args.variant: value.lower() == "true"}
            else:
                variants = {"default": base, args.variant: {**base, name: value}}
                supervised = {"default": True, args.variant: True}
            from plugin import cli
            from plugin.serve import server as zygote

            zygote.preload()
            cli.warm_up()
            gc.freeze()
            for label, env in variants.items():  # warm-up: page cache, token lookup, OpenBao
                render(chart, env, None, None, supervised[label])
            walls: dict[str, list[float]] = {label: [] for label in variants}
            cpus: dict[str, list[float]] = {label: [] for label in variants}
            to_renderer: dict[str, list[float]] = {label: [] for label in variants}
            profiles: dict[str, list[str]] = {label: [] for label in variants}
            for number in range(args.renders):
                order = list(variants) if number % 2 == 0 else list(variants)[::-1]
                for label in order:
                    profile = root / f"{len(profiles[label])}-{label}.prof"
                    log = root / f"{label}.log" if args.timeline and number == 0 else None
                    code, wall, cpu, reached = render(
                        chart,
                        variants[label],
                        profile if args.profile else None,
                        log,
                        supervised[label],
                        to_renderer=True,
                    ).split()
                    if code != "0":
                        raise SystemExit(f"{label}: exit status {code}")
                    walls[label].append(float(wall))
                    cpus[label].append(float(cpu))
                    to_renderer[label].append(float(reached))
                    if args.profile:
                        profiles[label].append(str(profile))
                    if log is not None:
                        print(f"# timeline, {label}:\n{log.read_text()}")
            first, second = variants
            ratios = [a / b for a, b in zip(walls[first], walls[second], strict=True)]
            for label in variants:
                print(
                    f"{label}: wall median {statistics.median(walls[label]) * 1000:.1f} ms, "
                    f"CPU (worker + helm) median {statistics.median(cpus[label]) * 1000:.1f} ms, "
                    f"fork to renderer start median "
                    f"{statistics.median(to_renderer[label]) * 1000:.1f} ms"
                )
            print(
                f"{first} / {args.variant}: median of {len(ratios)} paired ratios "
                f"{statistics.median(ratios):.3f}; load average {os.getloadavg()[0]:.1f}"
            )
            if args.profile:
                for label in variants:
                    text = io.StringIO()
                    stats = pstats.Stats(*profiles[label], stream=text)
                    stats.sort_stats("cumulative")
                    if args.focus:
                        stats.print_stats(args.focus, 60)
                    else:
                        stats.print_stats(40)
                    print(f"# profile, {label} (main thread, {args.renders} renders)")
                    print(text.getvalue())
        finally:
            server.stop()


if __name__ == "__main__":
    main()
