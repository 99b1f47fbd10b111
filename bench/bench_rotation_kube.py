"""Kubernetes API cost of `plugin watch`: hard-refresh patches and leader election (not a test).

Against a real kube-apiserver + etcd on loopback (KUBE_APISERVER_BIN / ETCD_BIN, else
.tools/bin), as a service account bound to the shipped Role
(cmp-config/install/kustomize/watch-rbac.yaml):

- the time of one hard-refresh merge patch of an Application (median and 95th percentile);
- the time of one election attempt: the leader's renewal (GET + PUT), a standby's check (GET);
- the requests per minute each replica sends for the election, from client-go's durations
  (leader: GET + PUT every retry period; standby: one GET every retry period plus jitter).

    .venv/bin/python bench/bench_rotation_kube.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from plugin.rotation.kube import KubeClient, KubeConfig  # noqa: E402
from plugin.rotation.lease import (  # noqa: E402
    DEFAULT_RETRY_PERIOD,
    JITTER_FACTOR,
    ElectionConfig,
    LeaderElector,
)
from tests.kube_fixture import find_kube_tool, running_kube_api, wait_for  # noqa: E402

RBAC = REPO / "cmp-config" / "install" / "kustomize" / "watch-rbac.yaml"


def timed(action: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median and 95th percentile of `rounds` calls, in milliseconds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    apiserver, etcd = find_kube_tool("kube-apiserver"), find_kube_tool("etcd")
    if apiserver is None or etcd is None:
        print("kube-apiserver/etcd not found (make tools)", file=sys.stderr)
        return 2
    with running_kube_api(apiserver, etcd) as api, tempfile.TemporaryDirectory() as scratch:
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for doc in yaml.safe_load_all(RBAC.read_text()):
            api.apply({**doc, "metadata": {**doc["metadata"], "namespace": namespace}})
        account = {"name": "argocd-repo-server", "namespace": namespace}
        api.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": account})
        issued = api.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/argocd-repo-server/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        api.apply(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {"name": "bench", "namespace": namespace},
                "spec": {
                    "project": "default",
                    "source": {"repoURL": "https://git.example.invalid/a.git", "path": "."},
                    "destination": {"server": "https://kubernetes.default.svc"},
                },
            }
        )
        sa_dir = Path(scratch)
        (sa_dir / "token").write_text(issued["status"]["token"])
        shutil.copyfile(api.ca_file, sa_dir / "ca.crt")
        config = KubeConfig(api.url, str(sa_dir / "ca.crt"), str(sa_dir / "token"), namespace)
        user = f"system:serviceaccount:{namespace}:argocd-repo-server"
        wait_for(
            lambda: api.can(user, "patch", "applications.argoproj.io", namespace=namespace),
            "RBAC of the shipped Role",
            timeout=30,
            interval=0.05,
        )
        with KubeClient(config) as leader_client, KubeClient(config) as standby_client:
            leader = LeaderElector(leader_client, ElectionConfig(identity="bench-leader"))
            standby = LeaderElector(standby_client, ElectionConfig(identity="bench-standby"))
            assert leader.step() and not standby.step()
            patch = timed(lambda: leader_client.request_hard_refresh("bench"), args.rounds)
            renew = timed(leader.step, args.rounds)
            check = timed(standby.step, args.rounds)
            assert leader.is_leader() and not standby.is_leader()
            leader.release()
            takeover = timed(standby.step, 1)
            assert standby.is_leader()
    mean_standby_wait = DEFAULT_RETRY_PERIOD * (1 + JITTER_FACTOR / 2)
    print(f"kube-apiserver {api.version['gitVersion']} on loopback, {args.rounds} rounds (ms)")
    print(f"hard-refresh patch        median {patch[0]:6.2f}  p95 {patch[1]:6.2f}")
    print(f"leader renewal (GET+PUT)  median {renew[0]:6.2f}  p95 {renew[1]:6.2f}")
    print(f"standby check (GET)       median {check[0]:6.2f}  p95 {check[1]:6.2f}")
    print(f"takeover after release    {takeover[0]:6.2f} (one attempt: GET+PUT)")
    print(
        f"election requests/min: leader {2 * 60 / DEFAULT_RETRY_PERIOD:.0f}, "
        f"each standby {60 / mean_standby_wait:.1f} (retry {DEFAULT_RETRY_PERIOD:g} s, "
        f"jitter x{JITTER_FACTOR})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
