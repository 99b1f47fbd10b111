"""Benchmark of the Vault backend against a local OpenBao dev server (not a test).

Workload: 20,000 placeholders over 200 distinct KV v2 paths (100 placeholders per path).

  (a) planned (this plugin): each distinct path is read once, 200 reads on a thread pool of
      `AVP_MAX_CONCURRENCY` (8), then the 20,000 values are looked up in memory;
  (b) AVP's baseline: one GET of the whole path per placeholder, sequentially (what AVP does
      for inline placeholders, spec section 8), i.e. 20,000 GETs. With `--baseline-sample N`
      only N GETs are timed and the total is extrapolated linearly (reported as such).

Both use the real backend (`plugin.secrets.vault.backend`) over loopback HTTP; requests are counted
by the backend's transport. OpenBao is started from BAO_BIN or .tools/bin/bao. Loopback has
no network latency, so `--rtt-ms R` routes both runs through a loopback proxy that delays each
request by R ms, as a remote Vault would (the baseline is then sampled: 2,000 GETs).

    .venv/bin/python bench/bench_vault.py [--baseline-sample N] [--workers 8] [--rtt-ms R]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from plugin.config import Settings  # noqa: E402
from plugin.secrets.base import SecretRef  # noqa: E402
from plugin.secrets.registry import BackendOptions  # noqa: E402
from plugin.secrets.vault.backend import VaultBackend, make_vault_backend  # noqa: E402
from tests.conftest import OpenBao, find_tool  # noqa: E402
from tests.integration.test_vault_support import FaultProxy, RootAPI  # noqa: E402

PATHS = 200
PLACEHOLDERS = 20_000
KEYS = 5


def backend_for(server: OpenBao, workers: int, addr: str | None = None) -> VaultBackend:
    env = {
        "VAULT_ADDR": addr or server.addr,
        "AVP_AUTH_TYPE": "token",
        "VAULT_TOKEN": server.root_token,
        "AVP_MAX_CONCURRENCY": str(workers),
    }
    backend = make_vault_backend(Settings(environ=env), BackendOptions(disable_token_cache=True))
    backend.login()
    return backend


def placeholders() -> list[tuple[str, str]]:
    """(path, key) for each placeholder: 100 per path, keys cycling."""
    per_path = PLACEHOLDERS // PATHS
    return [
        (f"kv/data/bench/p{p:03d}", f"key{i % KEYS}") for p in range(PATHS) for i in range(per_path)
    ]


def planned(
    server: OpenBao, workers: int, wanted: list[tuple[str, str]], addr: str | None
) -> tuple[float, int]:
    backend = backend_for(server, workers, addr)
    started = time.perf_counter()
    refs = sorted({SecretRef(path) for path, _ in wanted})
    with concurrent.futures.ThreadPoolExecutor(backend.max_workers) as pool:
        data = dict(zip(refs, pool.map(backend.read, refs), strict=True))
    values = [data[SecretRef(path)][key] for path, key in wanted]
    elapsed = time.perf_counter() - started
    assert len(values) == len(wanted)
    count = backend.transport.request_count
    backend.close()
    return elapsed, count


def baseline(
    server: OpenBao, wanted: list[tuple[str, str]], sample: int, addr: str | None
) -> tuple[float, int]:
    backend = backend_for(server, 1, addr)
    backend.read(SecretRef(wanted[0][0]))  # the mount lookup, outside the timing
    before = backend.transport.request_count
    subset = wanted if sample <= 0 else wanted[:sample]
    started = time.perf_counter()
    for path, key in subset:
        value = backend.read(SecretRef(path))[key]
        assert value
    elapsed = time.perf_counter() - started
    count = backend.transport.request_count - before
    backend.close()
    return elapsed, count


def end_to_end(server: OpenBao, wanted: list[tuple[str, str]], workdir: Path) -> tuple[float, Any]:
    """(c) The real CLI: `plugin generate` of 10,000 documents holding the 20,000 placeholders,
    logging in with AppRole (no token cache), every request counted by a loopback proxy."""
    api = RootAPI(server.addr, server.root_token)
    api("POST", "sys/policies/acl/bench", {"policy": 'path "kv/*" { capabilities = ["read"] }'})
    api("POST", "auth/approle/role/bench", {"token_policies": ["bench"], "token_ttl": "10m"})
    role_id = api("GET", "auth/approle/role/bench/role-id")["data"]["role_id"]
    secret_id = api("POST", "auth/approle/role/bench/secret-id")["data"]["secret_id"]
    documents = []
    for number in range(0, len(wanted), 2):
        (path_a, key_a), (path_b, key_b) = wanted[number], wanted[number + 1]
        documents.append(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{number}\n"
            f"data:\n  a: <path:{path_a}#{key_a}>\n  b: <path:{path_b}#{key_b}>\n"
        )
    manifest = workdir / "manifests.yaml"
    manifest.write_text("---\n".join(documents))
    proxy = FaultProxy(server.addr)
    env = {
        **os.environ,
        "AVP_TYPE": "vault",
        "AVP_AUTH_TYPE": "approle",
        "AVP_ROLE_ID": role_id,
        "AVP_SECRET_ID": secret_id,
        "VAULT_ADDR": proxy.url,
    }
    try:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "plugin", "generate", str(manifest), "--disable-token-cache"],
            capture_output=True,
            env=env,
            cwd=REPO,
            check=False,
        )
        elapsed = time.perf_counter() - started
    finally:
        proxy.stop()
    if done.returncode != 0:
        raise SystemExit(f"plugin generate failed: {done.stderr.decode()[-2000:]}")
    return elapsed, proxy.requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline-sample",
        type=int,
        default=0,
        help="time only N baseline GETs and extrapolate (default: all, or 2,000 with --rtt-ms)",
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--rtt-ms", type=float, default=0.0, help="delay every request (emulated network RTT)"
    )
    args = parser.parse_args()
    sample = args.baseline_sample or (2000 if args.rtt_ms > 0 else 0)
    binary = find_tool("bao")
    if binary is None:
        print("bao not found (set BAO_BIN or run `make tools`)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-vault-") as tmp:
        server = OpenBao(binary, Path(tmp))
        server.start()
        try:
            api = RootAPI(server.addr, server.root_token)
            for p in range(PATHS):
                data = {f"key{k}": f"value-{p}-{k}" for k in range(KEYS)}
                api("POST", f"kv/data/bench/p{p:03d}", {"data": data})
            wanted = placeholders()
            proxy = None
            if args.rtt_ms > 0:
                proxy = FaultProxy(server.addr)
                delay = ("delay", args.rtt_ms / 1000)
                proxy.plan = lambda method, path: delay
            addr = proxy.url if proxy else None
            try:
                planned_time, planned_requests = planned(server, args.workers, wanted, addr)
                base_time, base_requests = baseline(server, wanted, sample, addr)
            finally:
                if proxy:
                    proxy.stop()
            cli_time, cli_requests = end_to_end(server, wanted, Path(tmp))
        finally:
            server.stop()
    scale = len(wanted) / base_requests
    base_total = base_time * scale
    note = "" if scale == 1 else f" (measured {base_requests} GETs, extrapolated x{scale:g})"
    rtt = f", +{args.rtt_ms:g} ms per request" if args.rtt_ms > 0 else ", loopback"
    print(f"workload: {len(wanted)} placeholders over {PATHS} KV v2 paths, OpenBao dev server{rtt}")
    print(
        f"(a) planned, {args.workers} workers: {planned_time * 1000:9.1f} ms, "
        f"{planned_requests} HTTP requests ({PATHS} reads + 1 mount lookup)"
    )
    print(
        f"(b) AVP baseline, sequential:   {base_total * 1000:9.1f} ms, "
        f"{int(base_requests * scale)} HTTP requests{note}"
    )
    speed_up = base_total / planned_time
    fewer = base_requests * scale / planned_requests
    print(f"speed-up: x{speed_up:.1f} wall time; x{fewer:.0f} fewer requests")
    kinds: dict[str, int] = {}
    for _, path in cli_requests:
        kind = "login" if "/login" in path else "mount lookup" if "/mounts/" in path else "read"
        kinds[kind] = kinds.get(kind, 0) + 1
    print(
        f"(c) plugin generate, 10,000 documents, AppRole login, loopback: "
        f"{cli_time * 1000:9.1f} ms wall (process start to exit), {len(cli_requests)} HTTP "
        f"requests ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
        f"x{base_total / cli_time:.1f} faster than (b)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
