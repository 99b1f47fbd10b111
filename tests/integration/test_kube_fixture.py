"""The ``kube_api`` fixture (tests/kube_fixture.py): a real kube-apiserver and etcd on loopback.

What `plugin watch` (issue 15) will need from the API server works there: Argo CD
Applications (CRD), a merge patch of an annotation by a user whose namespaced Role allows
get/patch on applications.argoproj.io, a 403 for anything else (a ConfigMap), and leader
election on a coordination.k8s.io Lease with optimistic concurrency (a stale update gets 409).
"""

from __future__ import annotations

import datetime
import re
import subprocess
import uuid
from typing import Any

import pytest
import requests

from tests.kube_fixture import (
    ARGOCD_NAMESPACE,
    REPO_SERVER_USER,
    KubeAPI,
    KubeError,
    KubeUser,
    require_kube_tool,
)

pytestmark = pytest.mark.integration

APPS = f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NAMESPACE}/applications"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{ARGOCD_NAMESPACE}/leases"
CONFIGMAPS = f"/api/v1/namespaces/{ARGOCD_NAMESPACE}/configmaps"
ANNOTATION = "argocd-secrets-plugin.io/refresh"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def watcher_role(name: str) -> dict[str, Any]:
    """What a `plugin watch` process would be granted: Applications and its Lease, nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": ARGOCD_NAMESPACE},
        "rules": [
            {
                "apiGroups": ["argoproj.io"],
                "resources": ["applications"],
                "verbs": ["get", "list", "watch", "patch"],
            },
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["get", "create", "update"],
            },
        ],
    }


def application(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": ARGOCD_NAMESPACE},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.example.invalid/apps.git",
                "path": "apps/registry",
                "targetRevision": "HEAD",
                "plugin": {"name": "argocd-secrets-plugin-v1"},
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "registry"},
        },
    }


def micro_time(moment: datetime.datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def watcher(kube_api: KubeAPI) -> KubeUser:
    """The static repo-server user, bound to ``watcher_role`` (a RoleBinding in argocd)."""
    kube_api.bind(watcher_role(unique("watcher")), kube_api.repo_server)
    return kube_api.repo_server


# --- the server itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("kube-apiserver", r"^Kubernetes v1\.37\.2$"), ("etcd", r"etcd Version: 3\.7\.4\b")],
)
def test_pinned_versions(name: str, expected: str) -> None:
    out = subprocess.run(
        [require_kube_tool(name), "--version"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert re.search(expected, out.strip(), re.MULTILINE), out


def test_server_started_with_crd_and_namespace(kube_api: KubeAPI) -> None:
    print(f"kube_api start timings (s): {kube_api.timings}")
    assert kube_api.version["gitVersion"] == "v1.37.2"
    assert kube_api.url.startswith("https://127.0.0.1:")
    crd = kube_api.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/applications.argoproj.io"
    )
    assert crd["spec"]["group"] == "argoproj.io"
    assert kube_api.get(f"/api/v1/namespaces/{ARGOCD_NAMESPACE}")["status"]["phase"] == "Active"


def test_tls_and_authentication_are_real(kube_api: KubeAPI) -> None:
    with requests.Session() as plain:
        plain.trust_env = False  # no proxy for loopback
        with pytest.raises(requests.exceptions.SSLError):  # the cert is not publicly trusted
            plain.get(f"{kube_api.url}/version", timeout=10)
        resp = plain.get(
            f"{kube_api.url}/api/v1/namespaces",
            headers={"Authorization": "Bearer not-a-token"},
            verify=kube_api.ca_file,
            timeout=10,
        )
    assert resp.status_code == 401
    review = kube_api.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        token=kube_api.repo_server.token,
    )
    info = review["status"]["userInfo"]
    assert info["username"] == REPO_SERVER_USER
    assert "system:serviceaccounts:argocd" in info["groups"]


def test_unbound_user_is_forbidden(kube_api: KubeAPI) -> None:
    user = kube_api.user_with_role(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": unique("leases-only"), "namespace": ARGOCD_NAMESPACE},
            "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}
            ],
        }
    )
    assert user.name.startswith("system:serviceaccount:argocd:test-user-")
    with pytest.raises(KubeError) as err:
        kube_api.get(APPS, token=user.token)
    assert err.value.status == 403


# --- Applications -----------------------------------------------------------------------------


def test_restricted_user_merge_patches_an_application_annotation(
    kube_api: KubeAPI, watcher: KubeUser
) -> None:
    name = unique("app")
    created = kube_api.apply(application(name))
    assert created["spec"]["source"]["plugin"]["name"] == "argocd-secrets-plugin-v1"

    patched = kube_api.patch(
        f"{APPS}/{name}",
        {"metadata": {"annotations": {ANNOTATION: "2026-01-01T00:00:00Z"}}},
        token=watcher.token,
    )
    assert patched["metadata"]["annotations"][ANNOTATION] == "2026-01-01T00:00:00Z"
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert kube_api.get(f"{APPS}/{name}", token=watcher.token)["metadata"]["annotations"] == {
        ANNOTATION: "2026-01-01T00:00:00Z"
    }
    assert any(app["metadata"]["name"] == name for app in kube_api.get(APPS)["items"])

    # patch only: no create, no delete
    with pytest.raises(KubeError) as err:
        kube_api.create(APPS, application(unique("app")), token=watcher.token)
    assert err.value.status == 403
    with pytest.raises(KubeError) as err:
        kube_api.delete(f"{APPS}/{name}", token=watcher.token)
    assert err.value.status == 403


def test_restricted_user_cannot_patch_a_configmap(kube_api: KubeAPI, watcher: KubeUser) -> None:
    name = unique("cm")
    kube_api.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ARGOCD_NAMESPACE},
            "data": {"k": "v"},
        }
    )
    with pytest.raises(KubeError) as err:
        kube_api.patch(f"{CONFIGMAPS}/{name}", {"data": {"k": "x"}}, token=watcher.token)
    assert err.value.status == 403
    assert err.value.reason == "Forbidden"
    assert REPO_SERVER_USER in str(err.value)
    assert kube_api.get(f"{CONFIGMAPS}/{name}")["data"] == {"k": "v"}
    assert not kube_api.can(watcher, "patch", "configmaps", namespace=ARGOCD_NAMESPACE)
    # the Role is namespaced: Applications elsewhere are out of reach too
    assert not kube_api.can(watcher, "patch", "applications.argoproj.io", namespace="default")


# --- leader election --------------------------------------------------------------------------


def test_lease_create_renew_and_conflict(kube_api: KubeAPI, watcher: KubeUser) -> None:
    name = unique("plugin-watch-leader")
    spec = {
        "holderIdentity": "watch-a",
        "leaseDurationSeconds": 15,
        "acquireTime": micro_time(),
        "renewTime": micro_time(),
        "leaseTransitions": 0,
    }
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": ARGOCD_NAMESPACE},
        "spec": spec,
    }
    created = kube_api.create(LEASES, lease, token=watcher.token)
    assert created["spec"]["holderIdentity"] == "watch-a"

    # renew: a conditional update (resourceVersion) of renewTime
    renewed_body = dict(created)
    renewed_body["spec"] = dict(created["spec"], renewTime=micro_time())
    renewed = kube_api.put(f"{LEASES}/{name}", renewed_body, token=watcher.token)
    assert renewed["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert renewed["spec"]["renewTime"] == renewed_body["spec"]["renewTime"]

    # a second candidate updating from the stale version loses: 409 Conflict
    stale = dict(created)
    stale["spec"] = dict(created["spec"], holderIdentity="watch-b", leaseTransitions=1)
    with pytest.raises(KubeError) as err:
        kube_api.put(f"{LEASES}/{name}", stale, token=watcher.token)
    assert err.value.status == 409

    # creating it again is a conflict too (AlreadyExists), and the holder is unchanged
    with pytest.raises(KubeError) as err:
        kube_api.create(LEASES, lease, token=watcher.token)
    assert err.value.status == 409
    assert kube_api.get(f"{LEASES}/{name}", token=watcher.token)["spec"]["holderIdentity"] == (
        "watch-a"
    )
