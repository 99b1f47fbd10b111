"""Vault requests per second of `plugin watch` for 100 Applications (not a test).

Workload: 100 Applications, each reading `--own` KV v2 paths of its own plus one of `--shared`
paths shared between them (`app-i` reads `shared-(i mod N)`), all with one identity (the
sidecar's token) or with `--projects P` approle identities through a tenant policy. The loop is
the real `Watcher` with the real poller (`rotation.poll`, cycle memo, token cache); only the
Kubernetes side is replaced (always leader, patches counted). Requests are counted by a
loopback proxy in front of a local OpenBao dev server (BAO_BIN or .tools/bin/bao).

Cycle 1 includes logins and mount lookups; the last cycles are the steady state. The rate is
requests per cycle divided by the interval (jitter averages out).

    .venv/bin/python bench/bench_watch_rate.py [--shared 10] [--own 0] [--projects 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from plugin.config import WatchSettings  # noqa: E402
from plugin.rotation import index  # noqa: E402
from plugin.rotation.watch import Watcher, _RealPoller  # noqa: E402
from tests.conftest import OpenBao, find_tool  # noqa: E402
from tests.integration.test_vault_support import FaultProxy, RootAPI  # noqa: E402

APPS = 100
MOUNT = "benchwatch"


class Leader:
    def step(self) -> bool:
        return True

    def is_leader(self) -> bool:
        return True

    def release(self) -> None:
        pass


class Patches:
    def __init__(self) -> None:
        self.count = 0

    def request_hard_refresh(self, name: str, namespace: str | None = None) -> object:
        self.count += 1
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shared", type=int, default=10, help="shared paths (N)")
    parser.add_argument("--own", type=int, default=0, help="paths of its own per app")
    parser.add_argument("--projects", type=int, default=1, help="identities (approles)")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--interval", type=float, default=60.0)
    args = parser.parse_args()
    binary = find_tool("bao")
    if binary is None:
        print("bao not found (BAO_BIN or .tools/bin/bao)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        server = OpenBao(binary, work)
        server.start()
        proxy = FaultProxy(server.addr)
        try:
            return run(args, server, proxy, work)
        finally:
            proxy.stop()
            server.stop()


def run(args: argparse.Namespace, server: OpenBao, proxy: FaultProxy, work: Path) -> int:
    api = RootAPI(server.addr, server.root_token)
    api.enable_kv(MOUNT, 2)
    environ = {
        "AVP_TYPE": "vault",
        "VAULT_ADDR": proxy.url,
        "AVP_AUTH_TYPE": "token",
        "VAULT_TOKEN": server.root_token,
        "PLUGIN_CACHE_DIR": str(work / "cache"),
        "HOME": str(work),
    }
    if args.projects > 1:
        api("PUT", "sys/policies/acl/bench",
            {"policy": f'path "{MOUNT}/*" {{ capabilities = ["read"] }}'})  # fmt: skip
        rules = []
        for number in range(args.projects):
            role = f"bench-{number}"
            api("POST", f"auth/approle/role/{role}", {"token_policies": ["bench"]})
            role_id = api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
            secret = api("POST", f"auth/approle/role/{role}/secret-id", {})["data"]["secret_id"]
            rules.append(
                {
                    "project": f"project-{number}",
                    "paths": [f"{MOUNT}/**"],
                    "vault": {
                        "AVP_AUTH_TYPE": "approle",
                        "AVP_ROLE_ID": role_id,
                        "AVP_SECRET_ID": secret,
                    },
                }
            )
        policy = work / "policy.yaml"
        policy.write_text(yaml.safe_dump({"projects": rules}))
        environ["PLUGIN_TENANT_POLICY"] = str(policy)
    for number in range(args.shared):
        api("POST", f"{MOUNT}/data/shared-{number}", {"data": {"password": "x"}})
    root = index.index_root(environ)
    assert root is not None
    for number in range(APPS):
        own = [f"{MOUNT}/data/app-{number}/{k}" for k in range(args.own)]
        for path in own:
            api("POST", path, {"data": {"password": "x"}})
        paths = [*own, f"{MOUNT}/data/shared-{number % args.shared}"]
        index.write_record(
            root,
            index.Record(
                name=f"app-{number}",
                namespace="dest",
                project=f"project-{number % args.projects}",
                identity={},
                references=tuple(
                    index.Reference("vault", p, proxy.url, kv_version="2", read_version="1")
                    for p in paths
                ),
                rendered_at="2026-01-01T00:00:00Z",
            ),
        )
    poller = _RealPoller(environ)
    patches = Patches()
    watcher = Watcher(
        records=lambda: index.read_records(root),
        poller=poller,
        refresher=patches,
        elector=Leader(),
        settings=WatchSettings(interval=args.interval, rate=1000.0),
        control_plane="argocd",
    )
    print(
        f"{APPS} apps, {args.shared} shared paths, {args.own} own paths each, "
        f"{args.projects} identities, interval {args.interval:g} s"
    )
    stop = threading.Event()
    steady = 0
    try:
        for cycle in range(1, args.cycles + 1):
            proxy.reset()
            report = watcher.cycle(stop)
            assert not report.errors, report.errors
            total = proxy.count()
            logins = proxy.count(lambda m, p: "login" in p)
            mounts = proxy.count(lambda m, p: "internal/ui/mounts" in p)
            metadata = proxy.count(lambda m, p: "/metadata/" in p)
            steady = total
            print(
                f"cycle {cycle}: {total} requests ({logins} logins, {mounts} mount lookups, "
                f"{metadata} metadata), {total / args.interval:.3f} requests/s at "
                f"{args.interval:g} s; watcher counted {report.vault_requests}"
            )
    finally:
        poller.close()
    print(
        f"steady state: {steady} requests per cycle = {steady / args.interval:.3f} requests/s "
        f"per {APPS} apps; patches: {patches.count}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
