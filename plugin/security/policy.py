"""Tenant policy: which Argo CD project may read which secret paths, as which Vault identity.

The operator mounts a YAML (or JSON) file into the sidecar and names it in the sidecar's own
environment variable `PLUGIN_TENANT_POLICY` (never read from `ARGOCD_ENV_*`, which an
Application controls). Each application is matched by `ARGOCD_APP_PROJECT_NAME`, which Argo CD
sets from the Application's project and a user cannot spoof::

    projects:                       # rules, first match wins
      - project: team-a             # glob on the project name (fnmatch: * ? [..])
        paths:                      # secret paths the project may read
          - kv/data/team-a/**
          - kv/team-a/**
        vault:                      # settings that win over every other source
          AVP_AUTH_TYPE: k8s
          AVP_K8S_ROLE: team-a
        allowEnv: [HELM_VALUES]     # optional: ARGOCD_ENV_<NAME> the app may set

Semantics
- With a policy, an application whose project matches no rule is refused, whatever it reads.
- `paths` are globs over the path as written in the placeholder (or the
  `avp.kubernetes.io/path` annotation), without leading/trailing `/`: `*` and `?` stay within
  one path segment, `**` matches anything including `/`. A path with an empty, `.` or `..`
  segment, or with `\\`, `%`, `?`, `#` or control characters, is refused whatever the
  patterns. The check happens before any read; a refused path is never sent to the backend.
  No `paths` means the project may read nothing (rendering without secrets still works).
- `vault` sets the identity the render logs in with (so Vault's own policies apply to each
  team; the token cache is keyed by that identity). Keys are limited to `VAULT_KEYS`.
- Application settings (`ARGOCD_ENV_<NAME>`): without `allowEnv` every name is allowed except
  the protected ones (`is_protected`: backend, auth and sidecar settings). `allowEnv` replaces
  that default with its own list of names and globs; a glob never grants a protected name,
  which must be listed by its exact name. Setting a name that is not allowed (to a non-empty
  value) refuses the render, naming the variable and the project.
- Error messages name the project and the refused path or variable, never the rules.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plugin.config import ARGOCD_ENV_PREFIX, load_operator_yaml, read_text_file
from plugin.errors import ConfigError

POLICY_ENV = "PLUGIN_TENANT_POLICY"
PROJECT_ENV = "ARGOCD_APP_PROJECT_NAME"

#: Settings a rule's `vault` section may set: the identity a render logs in with.
VAULT_KEYS = frozenset(
    {
        "AVP_AUTH_TYPE",
        "AVP_MOUNT_PATH",
        "AVP_K8S_ROLE",
        "AVP_K8S_MOUNT_PATH",
        "AVP_K8S_TOKEN_PATH",
        "AVP_JWT_ROLE",
        "AVP_JWT_TOKEN_PATH",
        "AVP_CERT_ROLE",
        "AVP_ROLE_ID",
        "AVP_SECRET_ID",
        "VAULT_NAMESPACE",
    }
)

#: The application settings of `plugin.argocd.request` (allowed by default).
APP_SETTINGS = frozenset(
    {
        "HELM_VALUES",
        "HELM_ARGS",
        "VALUES_FILES",
        "RELEASE_NAME",
        "SOURCE_TYPE",
        "RESOLVE_VALUES",
        "ALLOW_EMPTY",
        "CONTEXT_FILES",
    }
)

_PROTECTED_PREFIXES = ("AVP_", "VAULT_", "BAO_", "PLUGIN_", "KUBERNETES_", "HELM_", "KUSTOMIZE_")
_PROTECTED_NAMES = frozenset({"KUBECONFIG"})
_GLOB_CHARS = frozenset("*?[")
_RULE_KEYS = frozenset({"project", "paths", "vault", "allowEnv"})
_BAD_PATH_CHARS = re.compile(r"[\\%?#\x00-\x1f\x7f]")


class PolicyDeniedError(ConfigError):
    """The tenant policy refuses this application (its project, a setting or a path)."""


def is_protected(name: str) -> bool:
    """Backend, auth and sidecar settings: an Application may not set them by default."""
    upper = name.upper()
    if upper in APP_SETTINGS:
        return False
    return upper.startswith(_PROTECTED_PREFIXES) or upper in _PROTECTED_NAMES


def normalise_path(path: str) -> str | None:
    """The path as compared with the patterns, or None when it must be refused outright."""
    text = path.strip().strip("/")
    if not text or _BAD_PATH_CHARS.search(text):
        return None
    if any(segment in ("", ".", "..") for segment in text.split("/")):
        return None
    return text


def path_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: `**` any characters, `*` and `?` within one segment."""
    text = pattern.strip().strip("/")
    out: list[str] = []
    position = 0
    while position < len(text):
        if text.startswith("**", position):
            out.append(".*")
            position += 2
            continue
        char = text[position]
        out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
        position += 1
    return re.compile("".join(out), re.DOTALL)


@dataclass(frozen=True)
class Rule:
    """One entry of the policy: a project pattern and what its applications may do."""

    project: str
    paths: tuple[str, ...] = ()
    vault: Mapping[str, str] = field(default_factory=dict)
    #: None: the default (everything but protected names); else the names/globs allowed.
    allow_env: tuple[str, ...] | None = None
    position: int = 0
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(path_pattern(p) for p in self.paths))

    def matches(self, project: str) -> bool:
        return fnmatch.fnmatchcase(project, self.project)

    def allows_path(self, path: str) -> bool:
        """True when `path` (as written in the manifest) matches one of the path globs."""
        normal = normalise_path(path)
        if normal is None:
            return False
        return any(pattern.fullmatch(normal) for pattern in self._compiled)

    def env_allowed(self, name: str) -> bool:
        """May an Application set `ARGOCD_ENV_<name>`?"""
        if self.allow_env is None:
            return not is_protected(name)
        for pattern in self.allow_env:
            if _GLOB_CHARS.isdisjoint(pattern):
                if pattern == name:
                    return True
            elif not is_protected(name) and fnmatch.fnmatchcase(name, pattern):
                return True
        return False

    @property
    def vault_overrides(self) -> Mapping[str, str]:
        return dict(self.vault)


@dataclass(frozen=True)
class TenantPolicy:
    """The parsed policy file."""

    source: str
    rules: tuple[Rule, ...]

    @classmethod
    def load(cls, path: str) -> TenantPolicy:
        what = f"the tenant policy {path} ({POLICY_ENV})"
        return cls.parse(read_text_file(path, what), what)

    @classmethod
    def parse(cls, text: str, source: str = "the tenant policy") -> TenantPolicy:
        raw = load_operator_yaml(text, source)
        if not isinstance(raw, dict) or set(raw) - {"projects"}:
            raise ConfigError(f"{source} must be a mapping with a single key 'projects'")
        items = raw.get("projects")
        if not isinstance(items, list):
            raise ConfigError(f"{source}: 'projects' must be a list of rules")
        rules = tuple(_rule(item, number, source) for number, item in enumerate(items, 1))
        return cls(source, rules)

    def rule_for(self, project: str) -> Rule | None:
        """The first rule whose project pattern matches `project`."""
        return next((rule for rule in self.rules if rule.matches(project)), None)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{what} must be a list of strings")
    return tuple(item.strip() for item in value if item.strip())


def _rule(item: Any, number: int, source: str) -> Rule:
    where = f"{source}: rule {number}"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(str(key) for key in set(item) - _RULE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    project = item.get("project")
    if not isinstance(project, str) or not project.strip():
        raise ConfigError(f"{where}: 'project' must be a non-empty string")
    vault_raw = item.get("vault") or {}
    if not isinstance(vault_raw, dict):
        raise ConfigError(f"{where}: 'vault' must be a mapping of settings")
    vault: dict[str, str] = {}
    for key, value in vault_raw.items():
        name = str(key).strip().upper()
        if name not in VAULT_KEYS:
            raise ConfigError(
                f"{where}: 'vault' may not set {name} (allowed: {', '.join(sorted(VAULT_KEYS))})"
            )
        if isinstance(value, dict | list) or value is None:
            raise ConfigError(f"{where}: 'vault' key {name} must be a single value")
        vault[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    allow_env = item.get("allowEnv")
    allowed = None if allow_env is None else _strings(allow_env, f"{where}: 'allowEnv'")
    if allowed is not None:
        allowed = tuple(name.upper().removeprefix(ARGOCD_ENV_PREFIX) for name in allowed)
    return Rule(
        project=project.strip(),
        paths=_strings(item.get("paths"), f"{where}: 'paths'"),
        vault=vault,
        allow_env=allowed,
        position=number,
    )


@dataclass(frozen=True)
class Decision:
    """The policy applied to one application: its project and the rule that governs it."""

    project: str
    rule: Rule
    source: str

    @property
    def overrides(self) -> Mapping[str, str]:
        return self.rule.vault_overrides

    @property
    def overrides_origin(self) -> str:
        return f"tenant policy rule {self.rule.position} ({self.rule.project})"

    def path_refusal(self, path: str) -> str | None:
        """Why `path` may not be read (None when it may)."""
        if self.rule.allows_path(path):
            return None
        return f"project {_shown(self.project)} may not read path {path.strip()} (tenant policy)"


def _shown(project: str) -> str:
    return project if project else "(none: ARGOCD_APP_PROJECT_NAME is not set)"


def load_for(environ: Mapping[str, str]) -> TenantPolicy | None:
    """The policy named by the process environment, or None when there is none."""
    path = environ.get(POLICY_ENV, "").strip()
    return TenantPolicy.load(path) if path else None


def decide(policy: TenantPolicy, environ: Mapping[str, str]) -> Decision:
    """Apply `policy` to the application described by `environ`; refuse with a clear error."""
    project = environ.get(PROJECT_ENV, "").strip()
    rule = policy.rule_for(project)
    if rule is None:
        raise PolicyDeniedError(
            f"project {_shown(project)} is refused by the tenant policy (no rule for this project)"
        )
    refused = sorted(
        key
        for key, value in environ.items()
        if key.startswith(ARGOCD_ENV_PREFIX)
        and value != ""
        and not rule.env_allowed(key[len(ARGOCD_ENV_PREFIX) :])
    )
    if refused:
        noun = "setting" if len(refused) == 1 else "settings"
        raise PolicyDeniedError(
            f"project {_shown(project)} may not set {', '.join(refused)} (application {noun} "
            "refused by the tenant policy)"
        )
    return Decision(project, rule, policy.source)


def apply(environ: Mapping[str, str]) -> Decision | None:
    """`decide` with the policy named by `PLUGIN_TENANT_POLICY`; None without a policy."""
    policy = load_for(environ)
    return decide(policy, environ) if policy is not None else None


__all__ = [
    "APP_SETTINGS",
    "POLICY_ENV",
    "VAULT_KEYS",
    "Decision",
    "PolicyDeniedError",
    "Rule",
    "TenantPolicy",
    "apply",
    "decide",
    "is_protected",
    "load_for",
    "normalise_path",
    "path_pattern",
]
