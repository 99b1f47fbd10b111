"""`kustomize build` (or `kubectl kustomize` when that is what the image has).

The binary comes from the sidecar's own environment (`KUSTOMIZE_BIN`, a path to `kustomize`
or to `kubectl`), else `kustomize`, else `kubectl` on PATH; an Application cannot choose it.
`--enable-helm` is opt-in for the operator (`PLUGIN_KUSTOMIZE_ENABLE_HELM=true`), with the
plugin's Helm binary and a per-render Helm home.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from plugin.config import parse_bool
from plugin.errors import RenderError


def kustomize_base_command(environ: Mapping[str, str]) -> list[str]:
    """`[kustomize, build]` or `[kubectl, kustomize]`, as absolute paths.

    Kustomize may run from a scratch copy: a relative KUSTOMIZE_BIN (or PATH entry) must not
    change meaning there.
    """
    configured = environ.get("KUSTOMIZE_BIN", "").strip()
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise RenderError(f"KUSTOMIZE_BIN={configured} is not an executable program")
        verb = "kustomize" if os.path.basename(found).startswith("kubectl") else "build"
        return [os.path.abspath(found), verb]
    found = shutil.which("kustomize", path=environ.get("PATH"))
    if found is not None:
        return [os.path.abspath(found), "build"]
    found = shutil.which("kubectl", path=environ.get("PATH"))
    if found is not None:
        return [os.path.abspath(found), "kustomize"]
    raise RenderError("neither kustomize nor kubectl was found (install one or set KUSTOMIZE_BIN)")


def enable_helm(environ: Mapping[str, str]) -> bool:
    text = environ.get("PLUGIN_KUSTOMIZE_ENABLE_HELM", "").strip()
    name = "PLUGIN_KUSTOMIZE_ENABLE_HELM"
    return bool(text) and parse_bool(text, name, "the sidecar environment")


def kustomize_command(
    base: list[str], app_dir: Path, helm_enabled: bool = False, helm: str = ""
) -> list[str]:
    argv = [*base, str(app_dir)]
    if helm_enabled:
        argv.append("--enable-helm")
        if helm:
            argv += ["--helm-command", helm]
    return argv


def remote_ports(environ: Mapping[str, str]) -> list[int]:
    """TCP ports a confined `kustomize build` may connect to: HTTP(S) for remote resources,
    and the port of the sidecar's proxy when one is configured."""
    ports = [80, 443]
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        value = environ.get(name, "").strip()
        if not value:
            continue
        try:
            parsed = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
            port = parsed.port
        except ValueError:
            continue
        if port is not None:
            ports.append(port)
    return ports
