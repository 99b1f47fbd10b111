"""Fixtures for the CMP contract tests: secrets for the file backend, sidecars behind Argo CD's
real argocd-cmp-server (tests/real_cmp.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cmp_harness import sidecar_env
from tests.real_cmp import PLUGIN_YAML, POOL, RealCmpServer, Sidecar

SECRETS: dict[str, dict[str, Any]] = {
    "kv/data/webapp": {"password": "webapp-pass-7391"},
    "kv/data/database": {"username": "dbuser", "password": "db-pass-5582"},
    "kv/data/umbrella": {"apiKey": "api-key-0417", "replicas": 3},
}


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(SECRETS))
    return path


SidecarFactory = Callable[..., Sidecar]


@pytest.fixture
def sidecar(tmp_path: Path, secrets_file: Path) -> Iterator[SidecarFactory]:
    """`sidecar(helm=..., kustomize=..., extra={...}, cache_dir=..., config=...)` -> a
    :class:`Sidecar`: argocd-cmp-server with cmp-config/plugin.yaml (or `config`), its
    environment the sidecar container's (HOME, plugin cache and secrets file private to the
    test). Its servers (and zygotes, PLUGIN_TEST_SERVE=1) stop with the test, which fails if
    a zygote did not serve every `plugin` command."""
    made: list[RealCmpServer] = []

    def make(
        *,
        helm: str | None = None,
        kustomize: str | None = None,
        extra: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        config: Path = PLUGIN_YAML,
    ) -> Sidecar:
        env = sidecar_env(
            tmp_path,
            helm=helm,
            kustomize=kustomize,
            secrets_file=secrets_file,
            cache_dir=cache_dir,
            extra=extra,
        )
        server = POOL.get(env, config)
        if all(known is not server for known in made):
            made.append(server)
        return Sidecar(server, env)

    yield make
    problems = []
    for server in made:
        try:
            POOL.release(server)
        except AssertionError as exc:
            problems.append(str(exc))
    assert not problems, "; ".join(problems)


def write(root: Path, files: Mapping[str, str]) -> Path:
    """Write `files` (relative path -> text) under `root`; returns `root`."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# --- the real Argo CD cmp-server (tests/real_cmp.py) -----------------------------------------

RealCmpFactory = Callable[..., RealCmpServer]


@pytest.fixture(scope="session")
def real_cmp() -> RealCmpFactory:
    """`real_cmp(env, config=PLUGIN_YAML, socket_dir=None)` -> a started argocd-cmp-server.

    `env` is the sidecar container's environment. One server per (config, env, socket_dir) for
    the whole session (tests/real_cmp.py `POOL`, stopped at its end). Skips (fails under
    CI=true) without the tools."""
    return POOL.get
