"""The watcher's Kubernetes client: in-cluster config, the hard-refresh patch, Leases, errors.

Unit tests need no server; the others run against the real kube-apiserver + etcd of the
`kube_api` fixture (marked integration through the fixture).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from plugin.errors import ConfigError
from plugin.rotation import kube
from plugin.rotation.kube import (
    KubeClient,
    KubeConfig,
    KubeConflictError,
    KubeError,
    KubeNotFoundError,
)
from tests.kube_fixture import ARGOCD_NAMESPACE, KubeAPI, KubeUser, free_port, make_tls_material

APPS = f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NAMESPACE}/applications"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def service_account_dir(
    directory: Path, token: str, ca_file: str, namespace: str = ARGOCD_NAMESPACE
) -> Path:
    """What Kubernetes projects into a pod: token, ca.crt, namespace."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token + "\n")
    shutil.copyfile(ca_file, directory / "ca.crt")
    (directory / "namespace").write_text(namespace)
    return directory


def in_cluster_env(url: str, directory: Path) -> dict[str, str]:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        kube.SERVICE_ACCOUNT_DIR_SETTING: str(directory),
    }


def client_for(kube_api: KubeAPI, token: str, tmp_path: Path, **kwargs: Any) -> KubeClient:
    directory = service_account_dir(tmp_path / unique("sa"), token, kube_api.ca_file)
    return KubeClient(KubeConfig.in_cluster(in_cluster_env(kube_api.url, directory)), **kwargs)


def application(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": ARGOCD_NAMESPACE, "annotations": annotations or {}},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.example.invalid/apps.git",
                "path": "apps/registry",
                "plugin": {"name": "argocd-secrets-plugin-v1"},
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "registry"},
        },
    }


WATCHER_RULES = [
    {"apiGroups": ["argoproj.io"], "resources": ["applications"], "verbs": ["get", "patch"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
]


def role(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": unique("role"), "namespace": ARGOCD_NAMESPACE},
        "rules": rules,
    }


@pytest.fixture(scope="module")
def watcher(kube_api: KubeAPI) -> KubeUser:
    """A fresh service account with exactly the watcher's permissions (a real SA token)."""
    return kube_api.user_with_role(role(WATCHER_RULES))


# ------------------------------------------------------------------ unit: configuration


def test_in_cluster_config_reads_the_service_account_directory(tmp_path: Path) -> None:
    ca = tmp_path / "some-ca.crt"
    ca.write_text("not checked here")
    directory = service_account_dir(tmp_path / "sa", "tok", str(ca), namespace="team-ns")
    config = KubeConfig.in_cluster(
        {
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
            "KUBERNETES_SERVICE_PORT": "6443",
            kube.SERVICE_ACCOUNT_DIR_SETTING: str(directory),
        }
    )
    assert config == KubeConfig(
        "https://10.96.0.1:6443", str(directory / "ca.crt"), str(directory / "token"), "team-ns"
    )
    ipv6 = KubeConfig.in_cluster(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", kube.SERVICE_ACCOUNT_DIR_SETTING: str(directory)}
    )
    assert ipv6.server == "https://[fd00::1]:443"


def test_in_cluster_config_defaults_to_the_pod_directory() -> None:
    assert kube.DEFAULT_SERVICE_ACCOUNT_DIR == "/var/run/secrets/kubernetes.io/serviceaccount"
    with pytest.raises(ConfigError, match=kube.DEFAULT_SERVICE_ACCOUNT_DIR + "/token"):
        KubeConfig.in_cluster({"KUBERNETES_SERVICE_HOST": "10.96.0.1"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "KUBERNETES_SERVICE_HOST is not set"),
        ({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "x"}, "port number"),
    ],
)
def test_in_cluster_config_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KubeConfig.in_cluster(environ)


def test_missing_files_and_bad_namespace_are_named(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "h", kube.SERVICE_ACCOUNT_DIR_SETTING: str(tmp_path)}
    with pytest.raises(ConfigError, match=f"token {tmp_path}/token does not exist"):
        KubeConfig.in_cluster(env)
    (tmp_path / "token").write_text("t")
    with pytest.raises(ConfigError, match=f"CA certificate {tmp_path}/ca.crt does not exist"):
        KubeConfig.in_cluster(env)
    (tmp_path / "ca.crt").write_text("c")
    with pytest.raises(ConfigError, match=r"cannot read .*namespace"):
        KubeConfig.in_cluster(env)
    (tmp_path / "namespace").write_text("../etc")
    with pytest.raises(ConfigError, match="holds no namespace"):
        KubeConfig.in_cluster(env)


def test_the_token_is_reread_after_its_period(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    now = [0.0]
    token = kube._Token(str(path), 60.0, lambda: now[0])
    assert token.get() == "first"
    path.write_text("second\n")  # the kubelet rotated the projected token
    now[0] = 59.0
    assert token.get() == "first"
    now[0] = 60.0
    assert token.get() == "second"
    path.write_text("third")
    assert token.get(force=True) == "third"
    path.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        token.get(force=True)


# ------------------------------------------------------------------ unit: errors


TOKEN_CANARY = "tok-canary-7Hq2-never-printed"


def unreachable_client(tmp_path: Path) -> KubeClient:
    """A client of a closed loopback port (connection refused at once)."""
    ca = tmp_path / "ca.crt"
    ca.write_text("unused")
    directory = service_account_dir(tmp_path / "sa", TOKEN_CANARY, str(ca))
    env = in_cluster_env(f"https://127.0.0.1:{free_port()}", directory)
    return KubeClient(KubeConfig.in_cluster(env), timeout=5)


def test_invalid_names_never_reach_a_url(tmp_path: Path) -> None:
    client = unreachable_client(tmp_path)
    for name in ("../../../api/v1/namespaces/argocd/secrets/x", "A", "", "a/b", "a" * 254):
        with pytest.raises(KubeError, match="not a valid Kubernetes name") as err:
            client.request_hard_refresh(name)
        assert err.value.status is None
    with pytest.raises(KubeError) as err:
        client.get_application("x" * 10_000)
    assert len(str(err.value)) < 300  # a huge hostile name is not echoed whole
    with pytest.raises(KubeError, match="not a valid Kubernetes namespace"):
        client.get_application("app", namespace="kube-system/../default")


def test_connection_errors_name_the_call_not_the_token(tmp_path: Path) -> None:
    client = unreachable_client(tmp_path)
    with pytest.raises(KubeError) as err:
        client.request_hard_refresh("my-app", namespace="team-a")
    assert str(err.value) == (
        "Kubernetes API: patch applications.argoproj.io team-a/my-app: ConnectionError"
    )
    assert (err.value.verb, err.value.resource, err.value.status) == (
        "patch",
        "applications.argoproj.io",
        None,
    )
    assert TOKEN_CANARY not in repr(err.value.__dict__) + str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_update_lease_needs_a_resource_version(tmp_path: Path) -> None:
    client = unreachable_client(tmp_path)
    with pytest.raises(ValueError, match="resourceVersion"):
        client.update_lease({"metadata": {"name": "l", "namespace": "argocd"}, "spec": {}})


# ------------------------------------------------------------------ the real API server


def test_hard_refresh_adds_the_annotation_and_keeps_the_others(
    kube_api: KubeAPI, watcher: KubeUser, tmp_path: Path
) -> None:
    name = unique("app")
    created = kube_api.apply(application(name, {"team": "registry", "notified.example/x": "1"}))
    with client_for(kube_api, watcher.token, tmp_path) as client:
        assert client.namespace == ARGOCD_NAMESPACE
        assert client.get_application(name)["metadata"]["uid"] == created["metadata"]["uid"]
        patched = client.request_hard_refresh(name)
    assert patched["metadata"]["annotations"] == {
        "team": "registry",
        "notified.example/x": "1",
        "argocd.argoproj.io/refresh": "hard",
    }
    stored = kube_api.get(f"{APPS}/{name}")
    assert stored["metadata"]["annotations"] == patched["metadata"]["annotations"]
    assert stored["spec"] == created["spec"]
    assert int(stored["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    # the same request again changes nothing (idempotent until Argo CD removes the annotation)
    with client_for(kube_api, watcher.token, tmp_path) as client:
        again = client.request_hard_refresh(name)
    assert again["metadata"]["annotations"] == stored["metadata"]["annotations"]


def test_a_token_without_the_role_gets_a_clear_403(kube_api: KubeAPI, tmp_path: Path) -> None:
    name = unique("app")
    kube_api.apply(application(name))
    leases_only = kube_api.user_with_role(role(WATCHER_RULES[1:]))
    with (
        client_for(kube_api, leases_only.token, tmp_path) as client,
        pytest.raises(KubeError) as err,
    ):
        client.request_hard_refresh(name)
    assert str(err.value) == (
        f"Kubernetes API: patch applications.argoproj.io argocd/{name}: HTTP 403 Forbidden"
    )
    assert err.value.status == 403
    assert leases_only.token not in str(err.value)
    assert "argocd.argoproj.io/refresh" not in kube_api.get(f"{APPS}/{name}")["metadata"].get(
        "annotations", {}
    )


def test_a_missing_application_is_not_found(
    kube_api: KubeAPI, watcher: KubeUser, tmp_path: Path
) -> None:
    with client_for(kube_api, watcher.token, tmp_path) as client:
        with pytest.raises(KubeNotFoundError, match="HTTP 404 NotFound"):
            client.request_hard_refresh(unique("deleted-app"))
        with pytest.raises(KubeError, match="HTTP 403 Forbidden"):  # the Role is namespaced
            client.get_application(unique("app"), namespace="default")


def test_a_rotated_token_is_reread_after_a_401(
    kube_api: KubeAPI, watcher: KubeUser, tmp_path: Path
) -> None:
    name = unique("app")
    kube_api.apply(application(name))
    directory = service_account_dir(tmp_path / "sa", "expired-token", kube_api.ca_file)
    config = KubeConfig.in_cluster(in_cluster_env(kube_api.url, directory))
    with KubeClient(config, token_reload=1e9) as client:
        with pytest.raises(KubeError, match="HTTP 401 Unauthorized") as err:
            client.get_application(name)
        assert "expired-token" not in str(err.value)
        (directory / "token").write_text(watcher.token)  # the kubelet wrote a fresh token
        # the cached token is refused once, re-read, and the request succeeds
        assert client.get_application(name)["metadata"]["name"] == name


def test_tls_is_verified_against_the_service_account_ca(
    kube_api: KubeAPI, watcher: KubeUser, tmp_path: Path
) -> None:
    other = tmp_path / "other-pki"
    make_tls_material(other)  # a valid CA, but not the one that signed the server
    directory = service_account_dir(tmp_path / "sa", watcher.token, str(other / "serving.crt"))
    config = KubeConfig.in_cluster(in_cluster_env(kube_api.url, directory))
    with KubeClient(config) as client, pytest.raises(KubeError) as err:
        client.get_application("any")
    assert err.value.status is None
    assert "TLS verification against the service-account CA failed" in str(err.value)


def test_lease_create_get_update_and_conflicts(
    kube_api: KubeAPI, watcher: KubeUser, tmp_path: Path
) -> None:
    name = unique("lease")
    spec = {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}
    with client_for(kube_api, watcher.token, tmp_path) as client:
        assert client.get_lease(name) is None
        created = client.create_lease(name, spec)
        assert created["spec"]["holderIdentity"] == "a"
        read = client.get_lease(name)
        assert read is not None and read["metadata"]["uid"] == created["metadata"]["uid"]

        renewed = client.update_lease({**read, "spec": {**read["spec"], "leaseTransitions": 3}})
        assert renewed["spec"]["leaseTransitions"] == 3

        # an update from the stale read loses: 409, the stored record is unchanged
        with pytest.raises(KubeConflictError, match="HTTP 409 Conflict") as err:
            client.update_lease({**read, "spec": {**read["spec"], "holderIdentity": "b"}})
        assert err.value.status == 409
        assert str(err.value).startswith(
            f"Kubernetes API: update leases.coordination.k8s.io argocd/{name}:"
        )
        with pytest.raises(KubeConflictError, match="HTTP 409 AlreadyExists"):
            client.create_lease(name, {**spec, "holderIdentity": "b"})
        current = client.get_lease(name)
        assert current is not None and current["spec"]["holderIdentity"] == "a"
