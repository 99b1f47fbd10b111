"""Vault requests (and time) of rotation polls for 100 Applications (not a test).

Workload: 100 Applications in 10 projects, each Application reading 2 KV v2 paths of its own
and 1 path shared by every Application (201 distinct paths). With `--identities project`
(default) each project logs in as its own approle through the tenant policy (10 identities);
with `--identities one` every Application uses the sidecar's token (1 identity).

Each cycle is what the watcher does at every interval: `Sessions.start_cycle()`, then
`check_record` for each record. Requests are counted by a loopback proxy in front of a local
OpenBao dev server (BAO_BIN or .tools/bin/bao); the first cycle includes logins and mount
lookups, the next ones are the steady state. One secret is rotated before the last cycle to
show that a change costs nothing extra.

    .venv/bin/python bench/bench_rotation_poll.py [--identities project|one] [--cycles 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from plugin.rotation import index, poll  # noqa: E402
from tests.conftest import OpenBao, find_tool  # noqa: E402
from tests.integration.test_vault_support import FaultProxy, RootAPI  # noqa: E402

APPS = 100
PROJECTS = 10
MOUNT = "benchkv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", choices=("project", "one"), default="project")
    parser.add_argument("--cycles", type=int, default=3)
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
    api("PUT", "sys/policies/acl/bench",
        {"policy": f'path "{MOUNT}/*" {{ capabilities = ["read"] }}'})  # fmt: skip
    environ = {
        "AVP_TYPE": "vault",
        "VAULT_ADDR": proxy.url,
        "AVP_AUTH_TYPE": "token",
        "VAULT_TOKEN": server.root_token,
        "PLUGIN_CACHE_DIR": str(work / "cache"),
        "AVP_TOKEN_CACHE_DIR": str(work / "tokens"),
        "HOME": str(work),
    }
    rules = []
    for number in range(PROJECTS):
        role = f"bench-{number}"
        api("POST", f"auth/approle/role/{role}", {"token_policies": ["bench"], "token_ttl": "1h"})
        role_id = api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
        secret_id = api("POST", f"auth/approle/role/{role}/secret-id", {})["data"]["secret_id"]
        rules.append(
            {
                "project": f"project-{number}",
                "paths": [f"{MOUNT}/**"],
                "vault": {
                    "AVP_AUTH_TYPE": "approle",
                    "AVP_ROLE_ID": role_id,
                    "AVP_SECRET_ID": secret_id,
                },
            }
        )
    if args.identities == "project":
        policy = work / "policy.yaml"
        policy.write_text(yaml.safe_dump({"projects": rules}))
        environ["PLUGIN_TENANT_POLICY"] = str(policy)
    api("POST", f"{MOUNT}/data/shared", {"data": {"password": "x"}})
    records = []
    for number in range(APPS):
        paths = [f"{MOUNT}/data/app-{number}/a", f"{MOUNT}/data/app-{number}/b"]
        for path in paths:
            api("POST", path, {"data": {"password": "x"}})
        references = tuple(
            index.Reference(
                backend="vault", path=path, address=proxy.url, kv_version="2", read_version="1"
            )
            for path in [*paths, f"{MOUNT}/data/shared"]
        )
        records.append(
            index.Record(
                name=f"app-{number}",
                namespace="argocd",
                project=f"project-{number % PROJECTS}",
                identity={},
                references=references,
                rendered_at="2026-01-01T00:00:00Z",
            )
        )
    sessions = poll.Sessions()
    print(f"{APPS} apps, {PROJECTS} projects, identities: {args.identities}")
    try:
        for cycle in range(1, args.cycles + 1):
            if cycle == args.cycles:
                api("POST", f"{MOUNT}/data/shared", {"data": {"password": "y"}})
            proxy.reset()
            sessions.start_cycle()
            started = time.monotonic()
            stale = counted = 0
            for record in records:
                result = poll.check_record(
                    record, environ, deadline=time.monotonic() + 60, sessions=sessions
                )
                assert not result.errors, result.errors
                stale += result.stale
                counted += result.requests
            seconds = time.monotonic() - started
            logins = proxy.count(lambda m, p: "login" in p)
            mounts = proxy.count(lambda m, p: "internal/ui/mounts" in p)
            metadata = proxy.count(lambda m, p: "/metadata/" in p)
            print(
                f"cycle {cycle}: {proxy.count()} requests ({logins} logins, {mounts} mount "
                f"lookups, {metadata} metadata; check_record counted {counted}), "
                f"{stale} stale apps, {seconds:.2f} s"
            )
    finally:
        sessions.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
