"""Configuration lookup with AVP's precedence, remembering where each value came from.

Precedence (highest first): the operator's tenant policy rule for the application's
project (`overrides`, see `plugin.security.policy`), `ARGOCD_ENV_<KEY>` (Argo CD application
settings), the process environment, a config file (`-c`) or Kubernetes Secret (`-s`),
then built-in defaults. Empty strings count as unset, as in AVP (viper).
Every value is kept with its origin so configuration errors can say which
variable is wrong and where it was set.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plugin.errors import ConfigError

ARGOCD_ENV_PREFIX = "ARGOCD_ENV_"

DEFAULTS: Mapping[str, str] = {
    "AVP_KV_VERSION": "2",
}


@dataclass(frozen=True)
class Setting:
    """A configuration value and a human description of its origin."""

    value: str
    origin: str


@dataclass(frozen=True)
class Settings:
    """An immutable view of all configuration layers."""

    environ: Mapping[str, str]
    file_values: Mapping[str, str] = field(default_factory=dict)
    file_origin: str = "config file"
    defaults: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULTS))
    #: Settings no other layer can change (the tenant policy's identity for the project).
    overrides: Mapping[str, str] = field(default_factory=dict)
    overrides_origin: str = "tenant policy"

    def lookup(self, name: str) -> Setting | None:
        """Find `name` following the precedence order; None when unset everywhere."""
        forced = self.overrides.get(name, "")
        if forced != "":
            return Setting(forced, f"{self.overrides_origin} key {name}")
        argocd = self.environ.get(ARGOCD_ENV_PREFIX + name, "")
        if argocd != "":
            return Setting(argocd, f"environment variable {ARGOCD_ENV_PREFIX}{name}")
        env = self.environ.get(name, "")
        if env != "":
            return Setting(env, f"environment variable {name}")
        from_file = self.file_values.get(name, "")
        if from_file != "":
            return Setting(from_file, f"{self.file_origin} key {name}")
        default = self.defaults.get(name)
        if default is not None:
            return Setting(default, f"default of {name}")
        return None

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self.lookup(name)
        return found.value if found is not None else default

    def require(self, name: str, why: str) -> str:
        found = self.lookup(name)
        if found is None:
            raise ConfigError(f"{name} must be set {why}")
        return found.value

    def get_int(self, name: str, default: int, minimum: int = 0) -> int:
        found = self.lookup(name)
        if found is None:
            return default
        try:
            number = int(found.value.strip())
        except ValueError:
            raise ConfigError(
                f"{name} must be an integer, got {found.value!r} from {found.origin}"
            ) from None
        if number < minimum:
            raise ConfigError(
                f"{name} must be at least {minimum}, got {number} from {found.origin}"
            )
        return number

    def get_float(self, name: str, default: float, minimum: float = 0.0) -> float:
        found = self.lookup(name)
        if found is None:
            return default
        text = found.value.strip().removesuffix("s")
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(
                f"{name} must be a number of seconds, got {found.value!r} from {found.origin}"
            ) from None
        if number < minimum:
            raise ConfigError(
                f"{name} must be at least {minimum}, got {number} from {found.origin}"
            )
        return number

    def get_bool(self, name: str, default: bool) -> bool:
        found = self.lookup(name)
        if found is None:
            return default
        return parse_bool(found.value, name, found.origin)

    def get_go_bool(self, name: str, default: bool) -> bool:
        """A flag AVP reads with Go's strconv.ParseBool (the `VAULT_*` flags): `yes` or `on`,
        which `get_bool` accepts, are errors here as they are for AVP."""
        found = self.lookup(name)
        if found is None:
            return default
        parsed = parse_go_bool(found.value.strip())
        if parsed is None:
            raise ConfigError(
                f"{name} must be true or false, got {found.value!r} from {found.origin}"
            )
        return parsed


TRUE_WORDS = frozenset({"1", "t", "T", "TRUE", "true", "True"})
FALSE_WORDS = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool: the spellings AVP accepts; None when it is none of them."""
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    return None


def parse_bool(text: str, name: str, origin: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "t", "true", "yes", "y", "on"}:
        return True
    if lowered in {"0", "f", "false", "no", "n", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {text!r} from {origin}")


# ---------------------------------------------------------------------------------------------
# Loading: config file (-c), Kubernetes Secret (-s / AVP_SECRET), durations
# ---------------------------------------------------------------------------------------------

#: Process-environment-only overrides of the in-cluster service-account files (used by tests;
#: deliberately not read through `Settings`, so an Application's ARGOCD_ENV_* cannot move them).
SA_TOKEN_PATH_ENV = "KUBERNETES_SA_TOKEN_PATH"  # noqa: S105 - a variable name
SA_CA_PATH_ENV = "KUBERNETES_SA_CA_PATH"
DEFAULT_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_SECRET_NAMESPACE = "argocd"  # noqa: S105 - a namespace
KUBERNETES_TIMEOUT_SECONDS = 10.0

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration_seconds(text: str) -> float | None:
    """Seconds in a Vault-style duration: plain seconds (`30`, `1.5`) or Go syntax (`1m30s`).

    None when the text is neither.
    """
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    position = 0
    total = 0.0
    for match in _GO_DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _GO_DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        return None
    return total


def settings_where(settings: Settings, name: str) -> str:
    """Where `name` was looked for, for "missing setting" messages."""
    places = [f"{ARGOCD_ENV_PREFIX}{name}", f"environment variable {name}"]
    if settings.file_values:
        places.append(f"{settings.file_origin} key {name}")
    return "looked in " + ", ".join(places)


def get_duration(settings: Settings, name: str, default: float, minimum: float = 0.0) -> float:
    """A duration setting in seconds (`30`, `30s`, `1m`); ConfigError names the variable."""
    found = settings.lookup(name)
    if found is None:
        return default
    seconds = parse_duration_seconds(found.value)
    if seconds is None:
        raise ConfigError(
            f"{name} must be a duration such as 30, 30s or 1m, got {found.value!r} "
            f"from {found.origin}"
        )
    if seconds < minimum:
        raise ConfigError(f"{name} must be at least {minimum}s, got {seconds}s from {found.origin}")
    return seconds


def load_settings(
    environ: Mapping[str, str],
    config_path: str | None = None,
    secret_name: str | None = None,
    overrides: Mapping[str, str] | None = None,
    overrides_origin: str = "tenant policy",
) -> Settings:
    """Build `Settings` from the environment plus a config file (`-c`) or a Kubernetes Secret.

    - `config_path` (`-c`): YAML (`.yaml`, `.yml`, or no extension), JSON (`.json`), TOML
      (`.toml`) or dotenv (`.env`). As in AVP, when both a file and a Secret are given the file
      replaces the Secret entirely, so the Secret is not read at all.
    - `secret_name` (`-s`) `[namespace:]name`, default namespace `argocd`; when not given,
      `AVP_SECRET` (`ARGOCD_ENV_AVP_SECRET` first) selects the Secret. It is read from the
      in-cluster API with the pod's service-account token.
    - Keys are case-insensitive (stored upper-case, as viper matches them). Scalars that are
      not strings are converted: booleans to `true`/`false`, numbers with `str()`; null means
      unset; lists and mappings are rejected naming the key (never the value).
    - `overrides` (the tenant policy's settings for the project) win over every other layer.
    """
    env = dict(environ)
    forced = dict(overrides or {})
    if config_path:
        values = _read_config_file(config_path)
        return Settings(
            environ=env,
            file_values=values,
            file_origin=f"config file {config_path}",
            overrides=forced,
            overrides_origin=overrides_origin,
        )
    if not secret_name:
        secret_name = Settings(environ=env, overrides=forced).get("AVP_SECRET")
    if secret_name:
        namespace, name = parse_secret_name(secret_name.strip())
        values = read_kubernetes_secret(env, namespace, name)
        return Settings(
            environ=env,
            file_values=values,
            file_origin=f"Kubernetes Secret {namespace}/{name}",
            overrides=forced,
            overrides_origin=overrides_origin,
        )
    return Settings(environ=env, overrides=forced, overrides_origin=overrides_origin)


def parse_secret_name(text: str) -> tuple[str, str]:
    """`[namespace:]name` -> (namespace, name), default namespace `argocd`, both validated."""
    namespace, sep, name = text.partition(":")
    if not sep:
        namespace, name = DEFAULT_SECRET_NAMESPACE, text
    if not _DNS_LABEL.match(namespace):
        raise ConfigError(f"invalid Kubernetes namespace {namespace!r} in Secret name {text!r}")
    if not _DNS_SUBDOMAIN.match(name):
        raise ConfigError(f"invalid Kubernetes Secret name {name!r} in {text!r}")
    return namespace, name


def _stringify(key: str, value: object, origin: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | dict | tuple):
        raise ConfigError(f"{origin} key {key} must be a single value, not a list or mapping")
    return str(value)


def _normalise(raw: object, origin: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin} must contain a mapping of settings at the top level")
    values: dict[str, str] = {}
    for key, value in raw.items():
        name = str(key).strip().upper()
        text = _stringify(name, value, origin)
        if text is not None:
            values[name] = text
    return values


def read_text_file(path: str, what: str) -> str:
    """An operator's file as text; errors name `what` (never the content)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror or type(exc).__name__}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not UTF-8 text") from None


def load_operator_yaml(text: str, what: str) -> Any:
    """Parse an operator's YAML file; errors give positions only (the text may be secret).

    PyYAML is imported here, not with the module: most runs have no YAML configuration file,
    and the settings are read by every command, `plugin version` included.
    """
    import yaml

    from plugin.manifests.yamlio import Loader

    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{what} is not valid YAML{where}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{what} is not valid YAML") from None


def _read_config_file(path: str) -> dict[str, str]:
    origin = f"config file {path}"
    text = read_text_file(path, origin)
    suffix = os.path.splitext(path)[1].lower()
    # Parser messages are reduced to positions: the text around an error may be a secret.
    if suffix == ".json":
        try:
            raw: object = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{origin} is not valid JSON (line {exc.lineno}, column {exc.colno})"
            ) from None
    elif suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"{origin} is not valid TOML") from None
    elif suffix in {".env", ".dotenv"}:
        raw = _parse_dotenv(text, origin)
    elif suffix in {".yaml", ".yml", ""}:
        raw = load_operator_yaml(text, origin)
    else:
        raise ConfigError(
            f"unsupported config file type {suffix!r} for {path} "
            "(use .yaml, .yml, .json, .toml or .env)"
        )
    return _normalise(raw, origin)


def _parse_dotenv(text: str, origin: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        stripped = stripped.removeprefix("export ").strip()
        key, sep, value = stripped.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{origin} line {number} is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read_kubernetes_secret(environ: Mapping[str, str], namespace: str, name: str) -> dict[str, str]:
    """The decoded `.data` of Secret `namespace/name`, read with the pod's service account.

    Uses `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` and the service-account token and
    CA under /var/run/secrets/kubernetes.io/serviceaccount (overridable with
    `KUBERNETES_SA_TOKEN_PATH` / `KUBERNETES_SA_CA_PATH` in the process environment).
    """
    import requests  # only needed (and paid for) when a Secret is read

    what = f"Kubernetes Secret {namespace}/{name}"
    prefix = f"could not connect to local Kubernetes cluster to read Secret {namespace}/{name}"
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
    if not host:
        raise ConfigError(f"{prefix}: KUBERNETES_SERVICE_HOST is not set (not running in a pod?)")
    token_path = environ.get(SA_TOKEN_PATH_ENV) or f"{DEFAULT_SA_DIR}/token"
    ca_path = environ.get(SA_CA_PATH_ENV) or f"{DEFAULT_SA_DIR}/ca.crt"
    try:
        with open(token_path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise ConfigError(
            f"{prefix}: cannot read the service-account token {token_path}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    if not os.path.exists(ca_path):
        raise ConfigError(f"{prefix}: service-account CA file {ca_path} does not exist")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/secrets/{name}"
    try:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(
                url,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                verify=ca_path,
                timeout=KUBERNETES_TIMEOUT_SECONDS,
            )
    except requests.RequestException as exc:
        raise ConfigError(f"{prefix}: {type(exc).__name__}") from None
    if response.status_code == 404:
        raise ConfigError(f'secrets "{name}" not found in namespace {namespace}')
    if response.status_code in {401, 403}:
        raise ConfigError(f"the service account may not read {what} (HTTP {response.status_code})")
    if response.status_code != 200:
        raise ConfigError(f"reading {what} failed with HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise ConfigError(f"reading {what}: the API answer is not JSON") from None
    data = body.get("data") if isinstance(body, dict) else None
    values: dict[str, str] = {}
    if not isinstance(data, dict):
        return values
    for key, encoded in data.items():
        upper = str(key).strip().upper()
        try:
            decoded = base64.b64decode(str(encoded), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(f"{what} key {key} is not base64-encoded UTF-8 text") from None
        values[upper] = decoded
    return values


# ---------------------------------------------------------------------------------------------
# `plugin watch`: the rotation watcher's settings (sidecar environment only)
# ---------------------------------------------------------------------------------------------

WATCH_INTERVAL_SETTING = "PLUGIN_WATCH_INTERVAL"
WATCH_RATE_SETTING = "PLUGIN_WATCH_RATE"
WATCH_MAX_BACKOFF_SETTING = "PLUGIN_WATCH_MAX_BACKOFF"
WATCH_REFRESH_RETRY_SETTING = "PLUGIN_WATCH_REFRESH_RETRY"
WATCH_PORT_SETTING = "PLUGIN_WATCH_PORT"
WATCH_BIND_SETTING = "PLUGIN_WATCH_BIND"
WATCH_ELECTION_SETTING = "PLUGIN_WATCH_ELECTION"
#: `lease`: one replica polls (the index must be shared by the replicas, or there is one);
#: `none`: every replica polls the renders of its own pod (a per-pod cache volume).
WATCH_ELECTIONS = ("lease", "none")


@dataclass(frozen=True)
class WatchSettings:
    """How often and how hard `plugin watch` polls, and where it serves /metrics.

    Why these knobs: the interval bounds how late a rotation reaches the cluster; the rate caps
    what hundreds of Applications cost Vault whatever the interval; the back-offs keep a broken
    backend or an Application that fails to re-render from being hammered every cycle.
    """

    #: Seconds between two polls of every reference (each cycle is jittered by +/-10 %).
    interval: float = 60.0
    #: Vault requests per second, at most (token bucket; bursts of up to one second's worth).
    rate: float = 20.0
    #: Longest wait before an Application whose poll failed is polled again.
    max_backoff: float = 600.0
    #: Seconds after which a hard refresh Argo CD has not acted on (no new render) is asked
    #: again; doubles on each new request, up to one hour.
    refresh_retry: float = 300.0
    #: TCP port of /metrics and /healthz; 0 serves nothing.
    port: int = 9102
    #: Address /metrics and /healthz listen on.
    bind: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes the pod's IP
    #: Who polls (`WATCH_ELECTIONS`). A Lease makes one replica active, which is right only
    #: when it sees every replica's renders; with per-pod indexes each replica must watch
    #: its own, and an Application rendered in several pods may be patched once per pod.
    election: str = "lease"


def watch_settings(environ: Mapping[str, str]) -> WatchSettings:
    """The watcher's settings from the sidecar's own environment.

    `ARGOCD_ENV_*` names are dropped first: the watcher is not an Application's render, and no
    Application may tune how the shared watcher treats Vault.
    """
    own = {k: v for k, v in environ.items() if not k.startswith(ARGOCD_ENV_PREFIX)}
    settings = Settings(environ=own, defaults={})
    defaults = WatchSettings()
    rate = settings.get_float(WATCH_RATE_SETTING, defaults.rate)
    if rate <= 0:
        raise ConfigError(f"{WATCH_RATE_SETTING} must be a positive number of requests per second")
    port = settings.get_int(WATCH_PORT_SETTING, defaults.port)
    if port > 65535:
        raise ConfigError(f"{WATCH_PORT_SETTING} must be a TCP port (0 to 65535), got {port}")
    return WatchSettings(
        interval=get_duration(settings, WATCH_INTERVAL_SETTING, defaults.interval, minimum=1.0),
        rate=rate,
        max_backoff=get_duration(
            settings, WATCH_MAX_BACKOFF_SETTING, defaults.max_backoff, minimum=1.0
        ),
        refresh_retry=get_duration(
            settings, WATCH_REFRESH_RETRY_SETTING, defaults.refresh_retry, minimum=1.0
        ),
        port=port,
        bind=(settings.get(WATCH_BIND_SETTING) or defaults.bind).strip(),
        election=_watch_election(settings.get(WATCH_ELECTION_SETTING), defaults.election),
    )


def _watch_election(value: str | None, default: str) -> str:
    election = (value or default).strip().lower()
    if election not in WATCH_ELECTIONS:
        raise ConfigError(
            f"{WATCH_ELECTION_SETTING} must be one of {', '.join(WATCH_ELECTIONS)}, got {value!r}"
        )
    return election
