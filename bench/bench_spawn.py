"""How long a renderer start takes in a process of a zygote worker's size, both ways.

`plugin.render.process.run` starts a child either with a `preexec_fn` (in-process runs:
subprocess forks the whole process and runs Python in the child) or, in a zygote worker
(`Confinement.supervised`), from a thread that confined itself, without one (vfork). This
preloads what the zygote preloads, forks one worker (a session leader, as the zygote's),
and there alternates the two ways on the same program with the same Landlock policy:

- until the child exists (`run`'s `on_start`: ruleset built, child started; what delays
  helm's first instruction on the critical path of a render);
- the whole `run` of the program, and the CPU time of the worker's thread(s) meanwhile.

    .venv/bin/python bench/bench_spawn.py [--starts 200] [--program /bin/true]
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _mark(marks: list[float]) -> None:
    marks.append(time.perf_counter())


def measure(starts: int, program: str) -> None:
    from plugin.argocd.request import AppRequest
    from plugin.render.pipeline import RenderContext
    from plugin.render.process import Deadline, run

    scratch = Path("/tmp")
    results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for number in range(starts):
        order = (True, False) if number % 2 == 0 else (False, True)
        for supervised in order:
            ctx = RenderContext(
                request=AppRequest(),
                environ=dict(os.environ),
                deadline=Deadline.after(60),
                supervised=supervised,
            )
            confinement = ctx.confinement(read=[], write=[], programs=[program])
            marks: list[float] = []
            cpu = time.process_time()
            began = time.perf_counter()
            run(
                [program],
                stage="probe",
                cwd=scratch,
                env={},
                deadline=Deadline.after(60),
                confinement=confinement,
                on_start=functools.partial(_mark, marks),
            )
            ended = time.perf_counter()
            used = time.process_time() - cpu
            results[supervised].append((marks[0] - began, ended - began, used))
    for supervised, rows in results.items():
        name = "worker (vfork, confined thread)" if supervised else "in-process (preexec_fn)"
        started, whole, cpu = (
            statistics.median(column) * 1000 for column in zip(*rows, strict=True)
        )
        print(
            f"{name}: child started after {started:.2f} ms, run done {whole:.2f} ms, "
            f"plugin CPU {cpu:.2f} ms (medians of {len(rows)})"
        )
    pairs = [a[0] / b[0] for a, b in zip(results[True], results[False], strict=True)]
    print(f"start time worker / in-process: median of paired ratios {statistics.median(pairs):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=200, help="starts per way")
    parser.add_argument("--program", default="/bin/true")
    args = parser.parse_args()
    from plugin import cli
    from plugin.serve import server as zygote

    zygote.preload()
    cli.warm_up()
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            measure(args.starts, args.program)
            code = 0
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
