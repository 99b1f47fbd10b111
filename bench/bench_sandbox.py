"""Cost of confining a renderer child with Landlock (not a test).

Compares, for `helm version` (a short Go program) and `/bin/true`:
  plain      subprocess, no preexec_fn;
  preexec    the plugin's way: ruleset built in the parent, PDEATHSIG + restrict_self in a
             `preexec_fn` between fork and exec;
  wrapper    an exec wrapper, `python -m plugin.security.sandbox --read .. -- CMD`
             (a second Python start-up per child).

    .venv/bin/python bench/bench_sandbox.py [--repeat N] [--helm PATH]
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
sys.path.insert(0, str(REPO))

from plugin.security import sandbox  # noqa: E402


def timed(run: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--helm", default=str(REPO / ".tools" / "bin" / "helm"))
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="bench-sandbox-")
    env = {"HOME": scratch, "PATH": "/usr/bin:/bin"}
    status = sandbox.status(env)
    print(f"Landlock ABI {sandbox.kernel_abi()}, median of {args.repeat} runs")
    for command in (["/bin/true"], [args.helm, "version", "--short"]):
        policy = sandbox.Policy(
            [*sandbox.system_read_paths(env), *sandbox.program_paths(command[0])], [scratch]
        )

        def plain(command: list[str] = command) -> None:
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)

        def preexec(command: list[str] = command, policy: sandbox.Policy = policy) -> None:
            prepared = sandbox.prepare(policy, status)
            try:
                subprocess.run(
                    command,
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    preexec_fn=sandbox.child_setup(prepared),
                )
            finally:
                if prepared is not None:
                    prepared.close()

        def wrapper(command: list[str] = command) -> None:
            argv = [sys.executable, "-m", "plugin.security.sandbox", "--write", scratch]
            subprocess.run(
                [*argv, "--", *command],
                env={**env, "PYTHONPATH": str(REPO)},
                check=True,
                stdout=subprocess.DEVNULL,
            )

        print(os.path.basename(command[0]))
        for name, run in (("plain", plain), ("preexec", preexec), ("wrapper", wrapper)):
            print(f"  {name:8} {timed(run, args.repeat):7.1f} ms")


if __name__ == "__main__":
    main()
