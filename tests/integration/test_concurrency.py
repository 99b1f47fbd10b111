"""Fifty renders at once, as Argo CD does with `allowConcurrency: true`.

One OpenBao (the session server), one token cache and one chart cache shared by 50 concurrent
`plugin generate` processes rendering a Helm umbrella chart whose dependency comes from the
loopback chart repository and whose placeholders are read with an approle login. Every output
must be identical and correct, the caches must stay readable and consistent, and the work must
not be duplicated: one login, one index fetch, one download of the archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ChartRepo, OpenBao
from tests.integration.security_support import ROOT, Plugin, assert_succeeded, umbrella_chart
from tests.integration.test_vault_support import RootAPI, unique

pytestmark = pytest.mark.integration

RENDERS = 50
MOUNT = "t8concurrency"
PASSWORD = "concurrent-password-Zr8q"
API_KEY = "concurrent-api-key-Lm3c"


def test_fifty_renders_share_caches_without_duplicating_work(
    openbao: OpenBao, chart_repo: ChartRepo, helm3_bin: str, tmp_path: Path
) -> None:
    api = RootAPI(openbao.addr, openbao.root_token)
    api.enable_kv(MOUNT, 2)
    api("POST", f"{MOUNT}/data/app", {"data": {"password": PASSWORD, "apiKey": API_KEY}})
    api("PUT", "sys/policies/acl/t8-concurrency",
        {"policy": f'path "{MOUNT}/data/*" {{ capabilities = ["read"] }}'})  # fmt: skip
    role = unique("t8-concurrency-")
    api("POST", f"auth/approle/role/{role}",
        {"token_policies": ["t8-concurrency"], "token_ttl": "1h"})  # fmt: skip
    role_id = api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = api("POST", f"auth/approle/role/{role}/secret-id", {})["data"]["secret_id"]

    chart = umbrella_chart(tmp_path / "chart", chart_repo.url, f"{MOUNT}/data/app")
    plugin = Plugin(
        tmp_path / "home",
        helm=helm3_bin,
        AVP_TYPE="vault",
        VAULT_ADDR=openbao.addr,
        AVP_AUTH_TYPE="approle",
        AVP_ROLE_ID=role_id,
        AVP_SECRET_ID=secret_id,
        PLUGIN_TIMEOUT="100",
    )
    before = api.token_accessors()
    chart_repo.reset_counts()
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "plugin", "generate", str(chart)],
            cwd=ROOT,
            env=plugin.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(RENDERS)
    ]
    outputs: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert secret_id not in err.decode()
        outputs.append(out.decode())
    elapsed = time.monotonic() - started

    # all identical and correct
    assert len(set(outputs)) == 1
    documents = [doc for doc in yaml.safe_load_all(outputs[0]) if doc]
    secrets = {doc["metadata"]["name"]: doc["stringData"] for doc in documents
               if doc["kind"] == "Secret"}  # fmt: skip
    assert secrets == {"demo-webapp": {"password": PASSWORD}, "demo-api": {"apiKey": API_KEY}}
    assert "<path:" not in outputs[0]

    # work not duplicated
    assert api.tokens_since(before, role_name=role) == 1, "one login for fifty renders"
    assert chart_repo.count("/index.yaml") == 1
    assert chart_repo.count("/webapp-0.1.0.tgz") == 1

    # caches consistent
    tokens = sorted((tmp_path / "home" / "token-cache").glob("*.json"))
    assert len(tokens) == 1
    assert stat.S_IMODE(tokens[0].stat().st_mode) == 0o600
    assert json.loads(tokens[0].read_text())["token"]
    helm_cache = tmp_path / "home" / "plugin-cache" / "helm"
    [index] = helm_cache.glob("index/*.json")
    assert "webapp" in json.loads(index.read_text())["entries"]
    [entry] = helm_cache.glob("charts/*.entry")  # header line, then the archive's bytes
    header, archive = entry.read_bytes().split(b"\n", 1)
    published = chart_repo.root / "webapp-0.1.0.tgz"
    assert hashlib.sha256(archive).digest() == hashlib.sha256(published.read_bytes()).digest()
    assert json.loads(header)["sha256"] == hashlib.sha256(archive).hexdigest()
    leftovers = [p for p in helm_cache.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []

    # and a later render is served entirely from the caches
    chart_repo.reset_counts()
    again = plugin.generate(chart)
    assert_succeeded(again, PASSWORD, API_KEY)
    assert again.stdout == outputs[0]
    assert chart_repo.count() == 0
    assert api.tokens_since(before, role_name=role) == 1
    print(f"{RENDERS} concurrent renders in {elapsed:.1f} s on {os.cpu_count()} CPUs")
