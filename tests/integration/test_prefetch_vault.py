"""The secrets prefetch (`plugin.placeholders.prefetch`) against a real OpenBao and real Helm.

Renders are real `plugin generate` processes; every Vault request goes through a counting
loopback proxy (`FaultProxy`), whose per-request hook also looks at the process table to tell
whether Helm was still running when a read arrived.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from plugin.rotation import index
from tests.conftest import OpenBao
from tests.integration.security_support import Plugin, assert_failed_cleanly, assert_succeeded
from tests.integration.test_vault_support import FaultProxy, RootAPI, unique

pytestmark = pytest.mark.integration

KV = "t46kv"
CANARY = "prefetch-canary-Vb7q"


@pytest.fixture(scope="module")
def api(root_api: RootAPI) -> RootAPI:
    root_api.enable_kv(KV, 2)
    return root_api


def chart(directory: Path, used: dict[str, str], unused: dict[str, str] | None = None) -> Path:
    """A chart rendering `used` (from its values) into a ConfigMap; `unused` placeholders are
    written in a template branch that is never rendered (in the source, not in the output)."""
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 1.0.0\n")
    (directory / "values.yaml").write_text(yaml.safe_dump({"used": used, "enabled": False}))
    (directory / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n"
        "{{- range $k, $v := .Values.used }}\n  {{ $k }}: {{ $v | quote }}\n{{- end }}\n"
    )
    lines = "".join(f"  {k}: {v!r}\n" for k, v in (unused or {}).items())
    (directory / "templates" / "off.yaml").write_text(
        "{{- if .Values.enabled }}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f"  name: off\ndata:\n{lines}{{{{- end }}}}\n"
    )
    return directory


def sidecar(tmp_path: Path, proxy: FaultProxy, openbao: OpenBao, helm: str, **extra: str) -> Plugin:
    return Plugin.vault_token(
        tmp_path / "home", proxy.url, openbao.root_token, helm, ARGOCD_APP_NAME=unique("app-"),
        **extra,
    )  # fmt: skip


def reads_of(proxy: FaultProxy, team: str) -> list[str]:
    return [p for m, p in proxy.requests if p.startswith(f"/v1/{KV}/data/{team}/")]


def test_output_and_requests_are_the_same_with_and_without_prefetch(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, helm3_bin: str, tmp_path: Path
) -> None:
    team = unique("same-")
    for n in range(3):
        api("POST", f"{KV}/data/{team}/s{n}", {"data": {"a": f"{CANARY}-{n}", "b": "x"}})
    used = {f"k{i}": f"<path:{KV}/data/{team}/s{i % 3}#{'ab'[i % 2]}>" for i in range(8)}
    source = chart(tmp_path / "chart", used)
    plugin = sidecar(tmp_path, proxy, openbao, helm3_bin)

    with_prefetch = plugin.generate(source)
    counted = proxy.count()
    proxy.reset()
    without = plugin.generate(source, PLUGIN_PREFETCH="false")
    assert_succeeded(with_prefetch, f"{CANARY}-0", f"{CANARY}-2")
    assert with_prefetch.stdout == without.stdout
    # The mount lookup, then one read per path, both ways.
    assert counted == proxy.count()
    assert len(reads_of(proxy, team)) == 3


def test_reads_reach_vault_while_helm_is_still_running(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, helm3_bin: str, tmp_path: Path
) -> None:
    """Helm is a wrapper that waits (at most 20 s) for a flag the proxy raises on the first
    read: with the prefetch the read arrives while it waits, without it only after Helm."""
    team = unique("early-")
    api("POST", f"{KV}/data/{team}/app", {"data": {"password": CANARY}})
    source = chart(tmp_path / "chart", {"password": f"<path:{KV}/data/{team}/app#password>"})
    marker = unique("slow-helm-")
    flag = tmp_path / "flag"
    wrapper = waiting_helm(tmp_path / marker, flag, helm3_bin)
    seen: list[bool] = []

    def plan(method: str, path: str) -> None:
        if path.startswith(f"/v1/{KV}/data/{team}/"):
            seen.append(_running(marker))
            flag.touch()
        return None

    proxy.plan = plan
    # The wrapper polls a file outside the render's sandbox: Landlock off for this test only.
    plugin = sidecar(tmp_path, proxy, openbao, str(wrapper), PLUGIN_SANDBOX="off")
    assert_succeeded(plugin.generate(source), CANARY)
    assert seen == [True]

    flag.unlink()
    seen.clear()
    assert_succeeded(plugin.generate(source, PLUGIN_PREFETCH="false"), CANARY)
    assert seen == [False]


def waiting_helm(path: Path, flag: Path, helm: str) -> Path:
    """A Helm that waits (at most 20 s) for `flag` to exist before running the real one."""
    path.write_text(
        "#!/bin/sh\n"
        f"i=0; while [ ! -e {flag} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done\n"
        f'exec {helm} "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _running(marker: str) -> bool:
    """Whether a process whose command line names `marker` exists (the Helm wrapper)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    return True
        except OSError:
            continue
    return False


def test_a_path_the_tenant_policy_refuses_is_never_requested(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, helm3_bin: str, tmp_path: Path
) -> None:
    team = unique("team-")
    other = unique("other-")
    api("POST", f"{KV}/data/{team}/app", {"data": {"password": CANARY}})
    api("POST", f"{KV}/data/{other}/app", {"data": {"password": "not-for-team-a"}})
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump({"projects": [{"project": "team-a", "paths": [f"{KV}/data/{team}/**"]}]})
    )
    plugin = sidecar(
        tmp_path, proxy, openbao, helm3_bin,
        PLUGIN_TENANT_POLICY=str(policy), ARGOCD_APP_PROJECT_NAME="team-a",
    )  # fmt: skip
    own = f"<path:{KV}/data/{team}/app#password>"
    stolen = f"<path:{KV}/data/{other}/app#password>"

    # In a template branch that is not rendered: the render succeeds, the path is never sent.
    source = chart(tmp_path / "unused", {"password": own}, {"stolen": stolen})
    assert_succeeded(plugin.generate(source), CANARY)
    assert len(reads_of(proxy, team)) == 1
    assert proxy.count(lambda m, p: other in p) == 0

    # In the values, used: the render fails naming the policy, and the path is never sent.
    source = chart(tmp_path / "used", {"password": own, "stolen": stolen})
    assert_failed_cleanly(plugin.generate(source), [CANARY], "tenant policy")
    assert proxy.count(lambda m, p: other in p) == 0


def test_a_prefetched_path_the_output_does_not_use_is_not_in_the_reference_index(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, helm3_bin: str, tmp_path: Path
) -> None:
    team = unique("index-")
    api("POST", f"{KV}/data/{team}/used", {"data": {"password": CANARY}})
    api("POST", f"{KV}/data/{team}/unused", {"data": {"password": "unused-value"}})
    source = chart(
        tmp_path / "chart",
        {"password": f"<path:{KV}/data/{team}/used#password>"},
        {"password": f"<path:{KV}/data/{team}/unused#password>"},
    )
    plugin = sidecar(tmp_path, proxy, openbao, helm3_bin)
    assert_succeeded(plugin.generate(source), CANARY)
    # The prefetch did read the unused path (else this test would prove nothing)...
    assert reads_of(proxy, team).count(f"/v1/{KV}/data/{team}/unused") == 1
    root = index.index_root(plugin.env)
    assert root is not None
    (record,) = [r for r in index.read_records(root) if r.name == plugin.env["ARGOCD_APP_NAME"]]
    # ...and only what the output used is recorded.
    assert [ref.path for ref in record.references] == [f"{KV}/data/{team}/used"]


def test_a_missing_path_the_output_does_not_use_does_not_fail_the_render(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, helm3_bin: str, tmp_path: Path
) -> None:
    team = unique("missing-")
    api("POST", f"{KV}/data/{team}/app", {"data": {"password": CANARY}})
    source = chart(
        tmp_path / "chart",
        {"password": f"<path:{KV}/data/{team}/app#password>"},
        {"gone": f"<path:{KV}/data/{team}/gone#password>"},
    )
    plugin = sidecar(tmp_path, proxy, openbao, helm3_bin)
    assert_succeeded(plugin.generate(source), CANARY)
    assert reads_of(proxy, team).count(f"/v1/{KV}/data/{team}/gone") == 1


def test_a_missing_path_the_output_uses_fails_with_todays_message(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, helm3_bin: str, tmp_path: Path
) -> None:
    team = unique("needed-")
    api("POST", f"{KV}/data/{team}/app", {"data": {"password": CANARY}})
    source = chart(
        tmp_path / "chart",
        {
            "password": f"<path:{KV}/data/{team}/app#password>",
            "gone": f"<path:{KV}/data/{team}/gone#password>",
        },
    )
    plugin = sidecar(tmp_path, proxy, openbao, helm3_bin)
    with_prefetch = plugin.generate(source)
    assert_failed_cleanly(with_prefetch, [CANARY], f"{KV}/data/{team}/gone")
    without = plugin.generate(source, PLUGIN_PREFETCH="false")
    assert_failed_cleanly(without, [CANARY])
    assert with_prefetch.stderr == without.stderr


def test_kustomize_bases_are_read_ahead_and_only_the_output_is_recorded(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, kustomize_bin: str, tmp_path: Path
) -> None:
    """An overlay whose base (`../base`) holds the placeholder, and a file in the base that no
    kustomization lists: both are scanned, only the listed one reaches the output."""
    team = unique("kust-")
    api("POST", f"{KV}/data/{team}/app", {"data": {"password": CANARY}})
    api("POST", f"{KV}/data/{team}/spare", {"data": {"password": "spare-value"}})
    repo = tmp_path / "repo"
    (repo / "base").mkdir(parents=True)
    (repo / "overlay").mkdir()
    (repo / "base" / "kustomization.yaml").write_text("resources: [secret.yaml]\n")
    (repo / "base" / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n"
        f"  password: <path:{KV}/data/{team}/app#password>\n"
    )
    (repo / "base" / "spare.yaml").write_text(
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: spare\nstringData:\n"
        f"  password: <path:{KV}/data/{team}/spare#password>\n"
    )
    (repo / "overlay" / "kustomization.yaml").write_text("resources: [../base]\n")
    plugin = sidecar(
        tmp_path, proxy, openbao, "", KUSTOMIZE_BIN=kustomize_bin, ARGOCD_APP_SOURCE_PATH="overlay"
    )

    with_prefetch = plugin.generate(repo / "overlay")
    assert_succeeded(with_prefetch, CANARY)
    assert reads_of(proxy, team).count(f"/v1/{KV}/data/{team}/spare") == 1
    root = index.index_root(plugin.env)
    assert root is not None
    (record,) = [r for r in index.read_records(root) if r.name == plugin.env["ARGOCD_APP_NAME"]]
    assert [ref.path for ref in record.references] == [f"{KV}/data/{team}/app"]

    proxy.reset()
    without = plugin.generate(repo / "overlay", PLUGIN_PREFETCH="false")
    assert with_prefetch.stdout == without.stdout
    assert reads_of(proxy, team) == [f"/v1/{KV}/data/{team}/app"]


def test_a_failed_render_does_not_wait_for_the_prefetch_and_prints_nothing(
    api: RootAPI, openbao: OpenBao, proxy: FaultProxy, helm3_bin: str, tmp_path: Path
) -> None:
    """The prefetch's read hangs at the proxy (15 s) and only then may Helm run, and fail: the
    render fails with Helm's error without waiting for the read (this test allows 10 s),
    nothing on stdout."""
    team = unique("fail-")
    api("POST", f"{KV}/data/{team}/app", {"data": {"password": CANARY}})
    source = chart(tmp_path / "chart", {"password": f"<path:{KV}/data/{team}/app#password>"})
    (source / "templates" / "boom.yaml").write_text('{{ fail "the chart refuses" }}\n')
    flag = tmp_path / "flag"

    def plan(method: str, path: str) -> tuple[str, float] | None:
        if path.startswith(f"/v1/{KV}/data/{team}/"):
            flag.touch()
            return ("delay", 15)
        return None

    proxy.plan = plan
    helm = waiting_helm(tmp_path / "helm", flag, helm3_bin)
    plugin = sidecar(tmp_path, proxy, openbao, str(helm), PLUGIN_SANDBOX="off")
    run = plugin.generate(source, timeout=10)
    assert_failed_cleanly(run, [CANARY], "the chart refuses")
    assert flag.exists()  # the read had been sent when Helm ran
