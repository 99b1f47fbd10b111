"""Helpers for the tests that render the example GitOps repository (examples/).

The repository is rendered by Argo CD's real cmp-server (tests/real_cmp.py), with `examples/`
as the repository root, the app directory as the source path and the cluster configuration as
the `context-files` parameter. Test-only cluster variants are written into a copy of
`examples/`. One server per Helm binary serves the whole session (one sidecar home and chart
cache, as in a real sidecar).
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from plugin.templating import appdir
from tests.cmp_harness import DEFAULT_API_VERSIONS, ROOT, App, sidecar_env
from tests.real_cmp import POOL, Result, Sidecar

EXAMPLES = ROOT / "examples"
SECRETS_FILE = EXAMPLES / "secrets.yaml"
SECRETS: dict[str, Any] = yaml.safe_load(SECRETS_FILE.read_text())
MONITORING = "monitoring.coreos.com/v1"
#: envName of each cluster configuration (Applications are named <envName>-dso-<app>).
ENV_NAMES = {"vanilla": "vanilla", "openshift": "openshift"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(path: str, *keys: str) -> Any:
    """A value of examples/secrets.yaml: secret("kv/data/vanilla/global", "image", "...")."""
    value: Any = SECRETS[path]
    for key in keys:
        value = value[key]
    return value


def examples_cmp(helm: str, secrets_file: Path = SECRETS_FILE) -> Sidecar:
    """The session's sidecar for `helm` (started on first use, stopped at the session's end)."""
    home = POOL.scratch(f"examples-{Path(helm).name}-{secrets_file.name}")
    return Sidecar(POOL.get(sidecar_env(home, helm=helm, secrets_file=secrets_file)))


def app_for(
    app: str,
    cluster: str,
    *,
    env_name: str | None = None,
    context_files: list[str] | None = None,
    **kwargs: Any,
) -> App:
    """The Application an ApplicationSet would generate for `app` on `cluster`."""
    prefix = env_name or ENV_NAMES.get(cluster, cluster)
    return App(
        name=f"{prefix}-dso-{app}",
        namespace=f"dso-{app}",
        path=f"apps/{app}",
        api_versions=(*DEFAULT_API_VERSIONS, MONITORING),
        parameters=[
            {"name": "context-files", "array": context_files or [f"/clusters/{cluster}.yaml"]}
        ],
        **kwargs,
    )


def render(cmp: Sidecar, repo: Path, app: str, cluster: str, **kwargs: Any) -> Result:
    """Render and require success: exit 0, nothing on stderr, no placeholder left."""
    result = cmp.generate(repo, app_for(app, cluster, **kwargs))
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    assert "<path:" not in result.stdout
    return result


def variant(
    tmp_path: Path,
    name: str,
    base: str,
    change: Callable[[dict[str, Any]], None],
    files: Mapping[str, str] | None = None,
) -> Path:
    """A copy of examples/ with clusters/<name>.yaml = clusters/<base>.yaml changed by `change`
    (and extra or replaced `files`); returns the copy's root."""
    repo = tmp_path / "repo"
    if not repo.exists():
        shutil.copytree(EXAMPLES, repo)
    config = yaml.safe_load((repo / "clusters" / f"{base}.yaml").read_text())
    change(config)
    (repo / "clusters" / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for rel, text in (files or {}).items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return repo


def jinja_stage(
    tmp_path: Path, app: str, cluster: str, repo: Path = EXAMPLES
) -> tuple[appdir.RenderReport, Path]:
    """Only the Jinja2 stage, on a copy of the app: (report, rendered app directory)."""
    work = tmp_path / f"jinja-{app}-{cluster}"
    shutil.copytree(repo / "apps" / app, work)
    environ = {
        "ARGOCD_APP_NAME": f"{ENV_NAMES.get(cluster, cluster)}-dso-{app}",
        "ARGOCD_APP_NAMESPACE": f"dso-{app}",
    }
    context = appdir.build_context(
        repo, repo / "apps" / app, [f"/clusters/{cluster}.yaml"], environ
    )
    return appdir.render_app_dir(work, context, root=work), work


def merged_values(tmp_path: Path, app: str, cluster: str) -> dict[str, Any]:
    report, work = jinja_stage(tmp_path, app, cluster)
    assert report.merged_values_file == (work / "values.yaml").absolute()
    values: dict[str, Any] = yaml.safe_load((work / "values.yaml").read_text())
    return values


def container(manifest: Mapping[str, Any], name: str) -> dict[str, Any]:
    spec = manifest["spec"]
    if manifest["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    found = [c for c in spec["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"expected one container {name}"
    return dict(found[0])


def env_of(manifest: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifest, name)["env"]}
