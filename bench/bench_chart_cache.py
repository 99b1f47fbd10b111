"""Benchmark: what verifying a cached chart archive on every use costs (not a test).

The shared chart cache re-reads and re-hashes (SHA-256) each archive whenever a render uses
it, and writes a copy of the verified bytes into the render's `charts/` (issue 11, §2). This
measures that path, `ChartCache.cached` + the copy, against the bare read that the cache did
before, for archive sizes from a small chart (20 KiB) to a large one (8 MiB).

    .venv/bin/python bench/bench_chart_cache.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugin.render.chart_cache import ChartCache
from plugin.render.process import Deadline

SIZES = (20 * 1024, 200 * 1024, 1024 * 1024, 8 * 1024 * 1024)
URL = "https://charts.example.com"


def median_ms(action: object, repeat: int) -> float:
    assert callable(action)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = ChartCache(root / "cache" / "helm")
        cache.prepare(root)
        print(f"{'size':>8}  {'plain read':>11}  {'verified use':>13}  {'extra':>8}")
        for size in SIZES:
            data = os.urandom(size)
            version = f"1.0.{size}"
            cache.archive(
                URL,
                "bench",
                version,
                expected="",
                download=lambda data=data: data,
                deadline=Deadline.after(60),
                label="bench",
            )
            entry = cache._entry_path(URL, "bench", version)
            plain_copy = root / "plain.tgz"
            verified_copy = root / "verified.tgz"

            def plain(entry: Path = entry, target: Path = plain_copy) -> None:
                target.write_bytes(entry.read_bytes())

            def verified(version: str = version, target: Path = verified_copy) -> None:
                found = cache.cached(URL, "bench", version)
                assert found is not None
                target.write_bytes(found.data)

            base = median_ms(plain, args.repeat)
            checked = median_ms(verified, args.repeat)
            print(
                f"{size // 1024:>6} K  {base:>9.3f} ms  {checked:>11.3f} ms  "
                f"{checked - base:>+6.3f} ms"
            )


if __name__ == "__main__":
    main()
