"""`plugin watch` end to end, everything real: OpenBao, kube-apiserver + etcd, the CMP path.

Applications are rendered through Argo CD's real argocd-cmp-server (`tests/real_cmp.py`: the
sidecar's environment, cmp-config/plugin.yaml, `ARGOCD_APP_*` from the request) with a tenant
policy that gives project `team-a` its own approle; the renders write the reference index into
the sidecar's cache directory. The Application objects live in a fresh namespace of the real
API server; the watcher runs as `plugin watch` processes with the sidecar's environment plus
an in-cluster service-account directory whose token has exactly the watcher's Role. Every
Vault request goes through a counting loopback proxy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from plugin.rotation import index
from tests.cmp_harness import VENV_BIN, App, sidecar_env
from tests.conftest import OpenBao, free_port
from tests.integration.security_support import encodings
from tests.integration.test_vault_support import FaultProxy, RootAPI
from tests.kube_fixture import KubeAPI
from tests.real_cmp import POOL, Sidecar
from tests.rotation.test_kube import WATCHER_RULES, in_cluster_env, service_account_dir

pytestmark = pytest.mark.integration

MOUNT = "t15watch"
REFRESH = "argocd.argoproj.io/refresh"
PREFIX = "argocd_secrets_plugin_watch_"


def canary(tag: str) -> str:
    return f"watch-canary-{tag}-{uuid.uuid4().hex[:10]}"


@dataclass
class World:
    tmp: Path
    api: RootAPI
    kube: KubeAPI
    proxy: FaultProxy
    namespace: str
    team: str
    cmp: Sidecar
    env: dict[str, str]
    canaries: list[str]

    # --- Vault

    def write(self, name: str, value: str) -> None:
        self.api("POST", f"{MOUNT}/data/{self.team}/{name}", {"data": {"password": value}})
        self.canaries.append(value)

    # --- renders through the CMP path

    def render(self, app: str, *placeholders: str) -> dict[str, Any]:
        repo = self.tmp / "repos" / app
        repo.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"  k{i}: {text}\n" for i, text in enumerate(placeholders))
        (repo / "secret.yaml").write_text(
            f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {app}\nstringData:\n{lines}"
        )
        result = self.cmp.generate(repo, App(name=app, namespace="dest", project="team-a"))
        assert result.ok and result.code == 0, result.stderr
        return result.one("Secret", app)

    def path(self, name: str) -> str:
        return f"{MOUNT}/data/{self.team}/{name}"

    # --- Kubernetes

    def create_application(self, name: str) -> None:
        self.kube.create(
            f"/apis/argoproj.io/v1alpha1/namespaces/{self.namespace}/applications",
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {
                    "project": "team-a",
                    "source": {
                        "repoURL": "https://git.example.invalid/apps.git",
                        "path": name,
                        "plugin": {"name": "argocd-secrets-plugin-v1"},
                    },
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": "d"},
                },
            },
        )

    def annotations(self, name: str) -> dict[str, str]:
        app = self.kube.get(
            f"/apis/argoproj.io/v1alpha1/namespaces/{self.namespace}/applications/{name}"
        )
        return dict(app["metadata"].get("annotations") or {})

    def refreshed(self) -> set[str]:
        listing = self.kube.get(
            f"/apis/argoproj.io/v1alpha1/namespaces/{self.namespace}/applications"
        )
        return {
            item["metadata"]["name"]
            for item in listing["items"]
            if (item["metadata"].get("annotations") or {}).get(REFRESH) == "hard"
        }

    def clear_refresh(self, name: str) -> None:
        """What Argo CD's controller does once it refreshed the Application."""
        self.kube.patch(
            f"/apis/argoproj.io/v1alpha1/namespaces/{self.namespace}/applications/{name}",
            {"metadata": {"annotations": {REFRESH: None}}},
        )

    # --- the watcher

    def watch_once(self, **extra: str) -> tuple[dict[str, Any], str]:
        proc = subprocess.run(
            [str(VENV_BIN / "plugin"), "watch", "--once"],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        self.assert_clean(proc.stdout + proc.stderr)
        report = json.loads(proc.stdout)
        # exit 1 when the cycle had errors (here: the refused record), else 0
        assert proc.returncode == (1 if report["errors"] else 0), proc.stderr
        return report, proc.stderr

    def assert_clean(self, text: str) -> None:
        for value in self.canaries:
            for form in encodings(value):
                assert form not in text, "a secret value leaked"
        assert self.api.token not in text

    def vault_requests(self, fragment: str) -> int:
        return self.proxy.count(lambda method, path: fragment in path)


def make_role(api: RootAPI, team: str) -> tuple[str, str]:
    policy = (
        f'path "{MOUNT}/data/{team}/*" {{ capabilities = ["read"] }}\n'
        f'path "{MOUNT}/metadata/{team}/*" {{ capabilities = ["read"] }}\n'
    )
    api("PUT", f"sys/policies/acl/{team}", {"policy": policy})
    api("POST", f"auth/approle/role/{team}", {"token_policies": [team], "token_ttl": "1h"})
    role_id = api("GET", f"auth/approle/role/{team}/role-id")["data"]["role_id"]
    secret_id = api("POST", f"auth/approle/role/{team}/secret-id", {})["data"]["secret_id"]
    return role_id, secret_id


@pytest.fixture
def world(openbao: OpenBao, kube_api: KubeAPI, tmp_path: Path) -> Iterator[World]:
    api = RootAPI(openbao.addr, openbao.root_token)
    api.enable_kv(MOUNT, 2)
    team = f"team-{uuid.uuid4().hex[:8]}"
    role_id, secret_id = make_role(api, team)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "projects": [
                    {
                        "project": "team-a",
                        "paths": [f"{MOUNT}/data/{team}/**"],
                        "vault": {
                            "AVP_AUTH_TYPE": "approle",
                            "AVP_ROLE_ID": role_id,
                            "AVP_SECRET_ID": secret_id,
                        },
                    }
                ]
            }
        )
    )
    proxy = FaultProxy(openbao.addr)
    # The watcher's namespace (its Lease, plain-named Applications) and exactly its Role.
    namespace = f"t15w-{uuid.uuid4().hex[:8]}"
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    user = kube_api.user_with_role(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "plugin-watch", "namespace": namespace},
            "rules": WATCHER_RULES,
        }
    )
    sa_dir = service_account_dir(tmp_path / "sa", user.token, kube_api.ca_file, namespace)
    env = sidecar_env(
        tmp_path,
        extra={
            "AVP_TYPE": "vault",
            "VAULT_ADDR": proxy.url,
            "AVP_AUTH_TYPE": "token",
            "VAULT_TOKEN": openbao.root_token,
            "PLUGIN_TENANT_POLICY": str(policy),
        },
    )
    env.pop("AVP_FILE_PATH", None)
    server = POOL.get(env)  # Argo CD's real argocd-cmp-server with cmp-config/plugin.yaml
    watcher_env = {
        **env,
        **in_cluster_env(kube_api.url, sa_dir),
        "PLUGIN_WATCH_PORT": "0",
        "PLUGIN_SERVE": "off",
    }
    yield World(
        tmp=tmp_path,
        api=api,
        kube=kube_api,
        proxy=proxy,
        namespace=namespace,
        team=team,
        cmp=Sidecar(server, env),
        env=watcher_env,
        canaries=[secret_id, role_id],
    )
    proxy.stop()
    POOL.release(server)  # fails the test if the zygote (PLUGIN_TEST_SERVE=1) missed a render


def index_root(world: World) -> Path:
    root = index.index_root(world.env)
    assert root is not None
    return root


def assert_index_clean(world: World) -> None:
    for path in index_root(world).rglob("*"):
        if path.is_file():
            world.assert_clean(path.read_bytes().decode("utf-8", "replace"))


def test_rotation_reaches_only_the_applications_that_read_it(world: World) -> None:
    world.write("shared", canary("shared1"))
    world.write("web", canary("web1"))
    world.write("pinned", canary("pinned1"))
    world.write("other", canary("other1"))
    secret_b = canary("forbidden")
    world.api("POST", f"{MOUNT}/data/not-{world.team}/secret", {"data": {"password": secret_b}})
    world.canaries.append(secret_b)
    apps = {
        "web": (f"<path:{world.path('shared')}#password>", f"<path:{world.path('web')}#password>"),
        "api": (f"<path:{world.path('shared')}#password>",),
        "pinned": (f"<path:{world.path('pinned')}#password#1>",),
        "other": (f"<path:{world.path('other')}#password>",),
    }
    for name, placeholders in apps.items():
        world.render(name, *placeholders)
        world.create_application(name)
    # A record naming a path project team-a may not read (the policy changed after the
    # render, or the index was tampered with): it must never be polled.
    root = index_root(world)
    forbidden = f"{MOUNT}/data/not-{world.team}/secret"
    index.write_record(
        root,
        index.Record(
            name="sneaky",
            namespace="d",
            project="team-a",
            identity={"policy": "tenant policy"},
            references=(index.Reference("vault", forbidden, world.proxy.url, None, "2"),),
            rendered_at="2026-12-05T00:00:00Z",
        ),
    )
    world.create_application("sneaky")
    assert {r.name for r in index.read_records(root)} == {*apps, "sneaky"}

    # 1. Nothing changed: nothing is patched; the shared path is asked once for two apps.
    world.proxy.reset()
    report, logs = world.watch_once()
    assert report["leader"] and report["refreshed"] == []
    assert report["polled"] == 5 and report["changed"] == 0
    assert report["errors"] == {"policy_refused": 1}
    assert world.refreshed() == set()
    assert world.vault_requests(f"/metadata/{world.team}/shared") == 1
    # KV v2: the metadata endpoint only, never the data (mount lookups aside)
    assert world.vault_requests(f"/v1/{MOUNT}/data/") == 0, world.proxy.requests
    assert world.vault_requests(f"not-{world.team}") == 0

    # 2. New versions of web's own secret and of the pinned one: only web is refreshed.
    world.write("web", canary("web2"))
    world.write("pinned", canary("pinned2"))
    world.api(
        "POST", f"{MOUNT}/data/not-{world.team}/secret", {"data": {"password": secret_b + "x"}}
    )
    world.canaries.append(secret_b + "x")
    report, logs = world.watch_once()
    assert report["refreshed"] == [f"{world.namespace}/web"]
    assert world.refreshed() == {"web"}
    assert world.annotations("web")[REFRESH] == "hard"
    assert world.vault_requests(f"not-{world.team}") == 0  # never, whatever changed
    assert world.vault_requests(f"/{world.team}/pinned") == 0  # pinned: never polled
    events = [json.loads(line) for line in logs.splitlines()]
    requested = [e for e in events if e["event"] == "refresh_requested"]
    assert [(e["application"], e["changed"]) for e in requested] == [("web", [world.path("web")])]

    # 3. Argo CD re-renders web: the render gives the new value, the next poll is quiet.
    world.clear_refresh("web")
    new_value = world.canaries[-3]  # web2
    assert new_value.startswith("watch-canary-web2")
    secret = world.render("web", *apps["web"])
    assert secret["stringData"]["k1"] == new_value
    report, _ = world.watch_once()
    assert report["refreshed"] == [] and world.refreshed() == set()

    assert_index_clean(world)


def test_per_pod_watchers_act_on_their_own_index_without_the_lease(world: World) -> None:
    """PLUGIN_WATCH_ELECTION=none: a replica whose index is its own pod's (the shipped
    emptyDir) must act on it even while another replica holds the Lease; with the default
    `lease` it stands by, and the rotation of an Application rendered here is missed."""
    world.write("solo", canary("solo1"))
    world.render("solo", f"<path:{world.path('solo')}#password>")
    world.create_application("solo")
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    world.kube.create(
        f"/apis/coordination.k8s.io/v1/namespaces/{world.namespace}/leases",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "argocd-secrets-plugin-watch", "namespace": world.namespace},
            "spec": {
                "holderIdentity": "another-replica",
                "leaseDurationSeconds": 3600,
                "acquireTime": now,
                "renewTime": now,
            },
        },
    )
    world.write("solo", canary("solo2"))
    report, _ = world.watch_once()
    assert not report["leader"] and report["refreshed"] == []
    assert world.refreshed() == set()

    report, _ = world.watch_once(PLUGIN_WATCH_ELECTION="none")
    assert report["leader"] and report["refreshed"] == [f"{world.namespace}/solo"]
    assert world.refreshed() == {"solo"}
    lease = world.kube.get(
        f"/apis/coordination.k8s.io/v1/namespaces/{world.namespace}/leases/"
        "argocd-secrets-plugin-watch"
    )
    assert lease["spec"]["holderIdentity"] == "another-replica"  # untouched
    assert_index_clean(world)


def metrics_of(port: int) -> dict[str, float]:
    with requests.Session() as session:
        session.trust_env = False
        text = session.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    return values


def test_two_watchers_exactly_one_patches(world: World) -> None:
    world.write("shared", canary("s1"))
    for name in ("alpha", "beta"):
        world.render(name, f"<path:{world.path('shared')}#password>")
        world.create_application(name)
    ports = [free_port(), free_port()]
    procs = []
    logs = [world.tmp / "watch-0.log", world.tmp / "watch-1.log"]
    for port, log in zip(ports, logs, strict=True):
        env = {
            **world.env,
            "PLUGIN_WATCH_INTERVAL": "1",
            "PLUGIN_WATCH_PORT": str(port),
            "PLUGIN_WATCH_BIND": "127.0.0.1",
        }
        with log.open("wb") as handle:
            procs.append(
                subprocess.Popen(
                    [str(VENV_BIN / "plugin"), "watch"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=handle,
                    start_new_session=True,
                )
            )
    try:
        # Both serve /metrics; one of them leads.
        deadline = time.monotonic() + 90
        leaders = 0.0
        while time.monotonic() < deadline:
            try:
                scraped = [metrics_of(port) for port in ports]
            except requests.RequestException:
                time.sleep(0.5)
                continue
            leaders = sum(m[PREFIX + "is_leader"] for m in scraped)
            if leaders == 1 and sum(m[PREFIX + "cycles_total"] for m in scraped) >= 2:
                break
            time.sleep(0.5)
        assert leaders == 1
        assert world.refreshed() == set()

        world.write("shared", canary("s2"))
        deadline = time.monotonic() + 90
        while world.refreshed() != {"alpha", "beta"} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert world.refreshed() == {"alpha", "beta"}
        # Several more cycles while Argo CD "has not re-rendered": still one patch per app.
        before = sum(metrics_of(port)[PREFIX + "cycles_total"] for port in ports)
        while sum(metrics_of(port)[PREFIX + "cycles_total"] for port in ports) < before + 3:
            time.sleep(0.5)
        scraped = [metrics_of(port) for port in ports]
        assert sum(m[PREFIX + "refreshes_requested_total"] for m in scraped) == 2
        assert sorted(m[PREFIX + "refreshes_requested_total"] for m in scraped) == [0, 2]
        assert sum(m[PREFIX + "is_leader"] for m in scraped) == 1
        with requests.Session() as session:
            session.trust_env = False
            raw = "".join(
                session.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text for port in ports
            )
            for port in ports:
                assert session.get(f"http://127.0.0.1:{port}/healthz", timeout=10).ok
        world.assert_clean(raw)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in procs]
    assert codes == [0, 0]  # SIGTERM: a clean stop
    lease = world.kube.get(
        f"/apis/coordination.k8s.io/v1/namespaces/{world.namespace}/leases/"
        "argocd-secrets-plugin-watch"
    )
    assert not lease["spec"].get("holderIdentity")  # released on the way out
    text = "".join(log.read_text() for log in logs)
    world.assert_clean(text)
    events = [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    assert sum(e["event"] == "refresh_requested" for e in events) == 2
    # the Lease's own records (acquired, released) are JSON lines of the same log
    assert any(e["event"] == "log" and e["logger"] == "plugin.rotation.lease" for e in events)
    assert_index_clean(world)
