"""The worker's time after helm exits, in process: load, resolve, write (not a test).

W2's `helm template` output (150 ConfigMaps, 40 placeholders over 5 paths) is rendered once;
each round then forks a process (as the zygote forks a worker: what the first render
imported and compiled is there, caches filled while rendering are not) that runs what
`plugin generate` runs on it after helm (`engine.load`,
`engine.resolve` with the file backend holding W2's secrets and a redactor that learnt
them before, as with the Vault prefetch, `engine.write`
to a string), and reports the median CPU time of each phase over the rounds. To compare two
trees, run it with each tree's interpreter path first (`PYTHONPATH=TREE`), alternating:

    HELM_BIN=... .venv/bin/python bench/bench_posthelm.py [--rounds 200] [--pair OTHER_TREE]
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def helm_output() -> str:
    """W2's chart rendered by helm (the chart of `bench_avp.w2`, its secrets not needed)."""
    sys.path.insert(0, str(REPO))
    from bench.bench_avp import w2

    helm = os.environ.get("HELM_BIN") or str(REPO / ".tools" / "bin" / "helm3")
    with tempfile.TemporaryDirectory() as tmp:
        chart = w2(Path(tmp), lambda *_args, **_kw: None)  # type: ignore[arg-type]
        return subprocess.run(
            [helm, "template", "bench", str(chart)], check=True, capture_output=True, text=True
        ).stdout


def measure(text: str, rounds: int) -> dict[str, float]:
    """Median CPU milliseconds of each phase (the code imported from `sys.path`)."""
    from plugin.manifests.inputs import InputStream
    from plugin.placeholders import engine
    from plugin.secrets.file import FileBackend
    from plugin.security.redact import Redactor

    secrets = {f"kv/data/w2/s{s}": {f"k{k}": f"w2-{s}-{k}" for k in range(8)} for s in range(5)}

    class Prefetched(FileBackend):
        """As the Vault prefetch: every read answered from memory, its values learnt while
        helm ran (so not in the times measured here)."""

        def prefetched(self, _ref: object) -> bool:
            return True

    phases: dict[str, list[float]] = {"load": [], "resolve": [], "write": [], "total": []}
    outputs: set[str] = set()

    def one_render() -> str:
        """In a forked child, as the zygote's worker renders: caches start as preloaded."""
        redactor = Redactor()
        for data in secrets.values():
            redactor.add_secret(data)
        options = engine.EngineOptions(rules=engine.Rules(redactor=redactor))
        a = time.process_time()
        documents = engine.load([InputStream("helm template", text)], True)
        b = time.process_time()
        outcome = engine.resolve(documents, options, lambda: Prefetched(secrets, "bench"))
        c = time.process_time()
        out = io.StringIO()
        engine.write(outcome, out)
        d = time.process_time()
        took = [(b - a) * 1000, (c - b) * 1000, (d - c) * 1000, (d - a) * 1000]
        return " ".join(map(str, took)) + "\n" + out.getvalue()

    one_render()  # imports and compiled patterns, as `plugin serve` preloads them
    gc.collect()
    gc.freeze()
    for _ in range(rounds):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            with os.fdopen(write_end, "w") as answer:
                answer.write(one_render())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as answer:
            times, _, output = answer.read().partition("\n")
        os.waitpid(pid, 0)
        outputs.add(output)
        for name, took in zip(phases, map(float, times.split()), strict=True):
            phases[name].append(took)
    if len(outputs) != 1:
        raise SystemExit("output differs between rounds")
    return {name: statistics.median(values) for name, values in phases.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--pair", help="another tree: run both, alternating, 5 times each")
    parser.add_argument("--text", help="(internal) helm's output, already rendered")
    parser.add_argument("--print-output", action="store_true", help="(internal)")
    args = parser.parse_args()
    if args.text:
        text = Path(args.text).read_text()
        if args.print_output:
            from plugin.manifests.inputs import InputStream
            from plugin.placeholders import engine
            from plugin.secrets.file import FileBackend

            secrets = {
                f"kv/data/w2/s{s}": {f"k{k}": f"w2-{s}-{k}" for k in range(8)} for s in range(5)
            }
            documents = engine.load([InputStream("helm template", text)], True)
            outcome = engine.resolve(
                documents, engine.EngineOptions(), lambda: FileBackend(secrets, "bench")
            )
            engine.write(outcome, sys.stdout)
            return
        print(" ".join(f"{k}={v:.3f}" for k, v in measure(text, args.rounds).items()))
        return
    text = helm_output()
    print(f"helm output: {len(text)} characters, {text.count('<path:')} placeholders")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as saved:
        saved.write(text)
        saved.flush()
        trees = [REPO] + ([Path(args.pair).resolve()] if args.pair else [])
        outputs = set()
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            argv = [sys.executable, str(Path(__file__).resolve()), "--text", saved.name]
            outputs.add(
                subprocess.run(
                    [*argv, "--print-output"],
                    env=env,
                    cwd=tree,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
        print(f"outputs identical across trees: {len(outputs) == 1}")
        results: dict[Path, list[str]] = {tree: [] for tree in trees}
        for number in range(5 if args.pair else 1):
            for tree in trees if number % 2 == 0 else trees[::-1]:
                env = {**os.environ, "PYTHONPATH": str(tree)}
                line = subprocess.run(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--text",
                        saved.name,
                        "--rounds",
                        str(args.rounds),
                    ],
                    env=env,
                    cwd=tree,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                results[tree].append(line)
        for tree, lines in results.items():
            print(f"{tree}:")
            for line in lines:
                print(f"  {line}")


if __name__ == "__main__":
    main()
