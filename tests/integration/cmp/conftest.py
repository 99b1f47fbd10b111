"""Fixtures for the CMP contract tests: secrets for the file backend, a sidecar factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cmp_harness import CmpServer, sidecar_env
from tests.real_cmp import PLUGIN_YAML, RealCmpServer
from tests.real_cmp import require as real_cmp_require

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


SidecarFactory = Callable[..., CmpServer]


@pytest.fixture
def sidecar(tmp_path: Path, secrets_file: Path) -> SidecarFactory:
    """`sidecar(helm=..., kustomize=..., extra={...}, config=...)` -> a CmpServer."""

    def make(
        *,
        helm: str | None = None,
        kustomize: str | None = None,
        extra: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        **kwargs: Any,
    ) -> CmpServer:
        workdir = tmp_path / "cmp-work"
        workdir.mkdir(exist_ok=True)
        env = sidecar_env(
            tmp_path,
            helm=helm,
            kustomize=kustomize,
            secrets_file=secrets_file,
            cache_dir=cache_dir,
            extra=extra,
        )
        return CmpServer(env, workdir, **kwargs)

    return make


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
def real_cmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCmpFactory]:
    """`real_cmp(env, config=PLUGIN_YAML, socket_dir=None)` -> a started argocd-cmp-server.

    `env` is the sidecar container's environment. One server per (config, env, socket_dir) for
    the whole session; all are stopped at its end. Skips (fails under CI=true) without the
    tools."""
    servers: dict[tuple[str, tuple[tuple[str, str], ...], str], RealCmpServer] = {}

    def make(
        env: Mapping[str, str], config: Path = PLUGIN_YAML, socket_dir: Path | None = None
    ) -> RealCmpServer:
        key = (str(config), tuple(sorted(env.items())), str(socket_dir))
        server = servers.get(key)
        if server is None or not server.running:
            server = RealCmpServer(
                real_cmp_require("argocd-cmp-server"),
                real_cmp_require("cmp-client"),
                config,
                env,
                tmp_path_factory.mktemp("real-cmp"),
                socket_dir,
            ).start()
            servers[key] = server
        return server

    try:
        yield make
    finally:
        for server in servers.values():
            server.stop()
