"""What Argo CD asks for: its environment and `ARGOCD_APP_PARAMETERS`, as a typed `AppRequest`.

Inputs (contract §2.2-§2.3):

- build environment: `ARGOCD_APP_NAME` (`<namespace>_<name>` for Applications outside the
  control-plane namespace), `ARGOCD_APP_NAMESPACE` (destination namespace),
  `ARGOCD_APP_PROJECT_NAME`, `ARGOCD_APP_REVISION*`, `ARGOCD_APP_SOURCE_*`, `KUBE_VERSION`,
  `KUBE_API_VERSIONS` (comma-separated);
- application settings (`spec.source.plugin.env`, arriving as `ARGOCD_ENV_<NAME>`, read through
  `Settings` so the plain variable works for local runs): `HELM_VALUES`, `VALUES_FILES`,
  `RELEASE_NAME`, `HELM_ARGS`, `SOURCE_TYPE`, `RESOLVE_VALUES`, `ALLOW_EMPTY`;
- parameters (`spec.source.plugin.parameters`, JSON in `ARGOCD_APP_PARAMETERS`): see
  `PARAMETERS`.

Precedence where a setting and a parameter say the same thing: the parameter wins for single
values; lists add up (settings first). Everything here is pure: no file or process access.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugin.config import Settings, parse_bool
from plugin.errors import ConfigError

PARAMETERS_ENV = "ARGOCD_APP_PARAMETERS"


@dataclass(frozen=True)
class ParameterSpec:
    """A parameter this plugin understands (announced in plugin.yaml)."""

    name: str
    collection: str  # "string", "array" or "map"
    title: str
    tooltip: str


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "values-files",
        "array",
        "Values files",
        "Helm values files, relative to the application directory ('/' = repository root)",
    ),
    ParameterSpec("values", "string", "Values", "Inline Helm values (YAML), applied last"),
    ParameterSpec(
        "helm-parameters", "map", "Helm parameters", "Helm --set parameters (key = value)"
    ),
    ParameterSpec("release-name", "string", "Release name", "Helm release name"),
    ParameterSpec("namespace", "string", "Namespace", "Namespace passed to helm template"),
    ParameterSpec("skip-crds", "string", "Skip CRDs", "true: leave out the chart's crds/"),
    ParameterSpec("skip-tests", "string", "Skip tests", "true: leave out Helm test hooks"),
    ParameterSpec(
        "source-type", "string", "Source type", "helm, kustomize or directory (default: detect)"
    ),
    ParameterSpec(
        "context-files",
        "array",
        "Template context files",
        "YAML files giving the Jinja2 context (*.j2 files)",
    ),
    ParameterSpec(
        "resolve-values",
        "string",
        "Resolve secrets in values",
        "auto (default), true or false: replace placeholders in values before helm template",
    ),
)
_SPECS = {spec.name: spec for spec in PARAMETERS}

SOURCE_TYPES = ("helm", "kustomize", "directory")
_SOURCE_ALIASES = {"plain": "directory", "dir": "directory", "kustomization": "kustomize"}


@dataclass(frozen=True)
class Parameter:
    """One element of ARGOCD_APP_PARAMETERS (any of the three kinds may be present)."""

    name: str
    string: str | None = None
    array: tuple[str, ...] | None = None
    map: Mapping[str, str] | None = None


@dataclass(frozen=True)
class InlineValues:
    """Inline YAML values and where they came from (for error messages, never the text)."""

    origin: str
    text: str


@dataclass(frozen=True)
class AppRequest:
    """Everything one render needs to know about the Application and the cluster."""

    app_name: str = ""
    release_name: str = ""
    #: Where the release name came from, for errors (parameter, setting or the app name).
    release_name_origin: str = "RELEASE_NAME"
    namespace: str = ""
    project: str = ""
    kube_version: str = ""
    api_versions: tuple[str, ...] = ()
    revision: str = ""
    source_repo_url: str = ""
    source_path: str = ""
    source_target_revision: str = ""
    source_type: str = ""  # "" = detect
    values_files: tuple[str, ...] = ()
    inline_values: tuple[InlineValues, ...] = ()
    helm_parameters: Mapping[str, str] = field(default_factory=dict)
    helm_args: str = ""
    skip_crds: bool = False
    skip_tests: bool = False
    context_files: tuple[str, ...] = ()
    resolve_values: bool = False
    #: RESOLVE_VALUES=auto (the default): start with one phase, switch to two when a
    #: placeholder in the values does not reach Helm's output as written.
    resolve_values_auto: bool = True
    allow_empty: bool = False
    in_argocd: bool = False

    @property
    def environment(self) -> dict[str, str]:
        """Build-environment variables for `$VAR` expansion (as Argo CD does for --set values)."""
        return {
            "ARGOCD_APP_NAME": self.app_name,
            "ARGOCD_APP_NAMESPACE": self.namespace,
            "ARGOCD_APP_PROJECT_NAME": self.project,
            "ARGOCD_APP_REVISION": self.revision,
            "ARGOCD_APP_SOURCE_REPO_URL": self.source_repo_url,
            "ARGOCD_APP_SOURCE_PATH": self.source_path,
            "ARGOCD_APP_SOURCE_TARGET_REVISION": self.source_target_revision,
            "KUBE_VERSION": self.kube_version,
        }


def strip_app_namespace(instance_name: str) -> str:
    """Argo CD's release name: the Application name without a `<namespace>_` prefix."""
    _, sep, name = instance_name.partition("_")
    return name if sep and name else instance_name


def normalise_kube_version(text: str) -> str:
    """`v1.29.3+k3s1` -> `1.29.3` (Argo CD sends it normalised already; local users may not)."""
    version = text.strip().removeprefix("v")
    version = version.split("+", 1)[0]
    return version


def split_list(text: str) -> tuple[str, ...]:
    """A comma-separated list; blanks dropped, order kept."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_parameters(text: str | None) -> dict[str, Parameter]:
    """Decode ARGOCD_APP_PARAMETERS; absent, empty, `null` and `[]` all mean "none".

    Unknown names are refused (a typo would otherwise be ignored silently), as are values
    that are not strings. Messages name the parameter, never echo a value.
    """
    if text is None or not text.strip():
        return {}
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{PARAMETERS_ENV} is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError(f"{PARAMETERS_ENV} must be a JSON array of parameters")
    found: dict[str, Parameter] = {}
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{PARAMETERS_ENV} item {position} has no name")
        name = item["name"]
        if name not in _SPECS:
            known = ", ".join(spec.name for spec in PARAMETERS)
            raise ConfigError(f"unknown parameter {name!r} (this plugin knows: {known})")
        found[name] = Parameter(
            name,
            string=_string(item, name),
            array=_array(item, name),
            map=_map(item, name),
        )
    return found


def _string(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get("string")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"parameter {name!r}: 'string' must be a string")
    return value


def _array(item: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = item.get("array")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"parameter {name!r}: 'array' must be a list of strings")
    return tuple(value)


def _map(item: Mapping[str, Any], name: str) -> dict[str, str] | None:
    value = item.get("map")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"parameter {name!r}: 'map' must map strings to strings")
    return dict(value)


def _param_string(params: Mapping[str, Parameter], name: str) -> str | None:
    parameter = params.get(name)
    if parameter is None:
        return None
    if parameter.string is not None:
        return parameter.string
    if parameter.array is not None or parameter.map is not None:
        raise ConfigError(f"parameter {name!r} must be given as a string")
    return None


def _param_array(params: Mapping[str, Parameter], name: str) -> tuple[str, ...]:
    parameter = params.get(name)
    if parameter is None:
        return ()
    if parameter.array is not None:
        return tuple(item for item in parameter.array if item.strip())
    if parameter.string is not None:  # tolerated: a comma-separated string
        return split_list(parameter.string)
    if parameter.map is not None:
        raise ConfigError(f"parameter {name!r} must be given as an array")
    return ()


def _resolve_values_mode(settings: Settings, params: Mapping[str, Parameter]) -> tuple[bool, bool]:
    """(two-phase from the start, auto): the parameter `resolve-values` wins over the setting."""
    text = _param_string(params, "resolve-values")
    origin = "parameter 'resolve-values'"
    if text is None or not text.strip():
        found = settings.lookup("RESOLVE_VALUES")
        text, origin = (found.value, found.origin) if found is not None else ("auto", "")
    if text.strip().lower() == "auto":
        return False, True
    return parse_bool(text, "RESOLVE_VALUES", origin or "RESOLVE_VALUES"), False


def _param_bool(params: Mapping[str, Parameter], name: str) -> bool | None:
    text = _param_string(params, name)
    if text is None or not text.strip():
        return None
    return parse_bool(text, name, f"parameter {name!r}")


def _source_type(text: str, origin: str) -> str:
    value = text.strip().lower()
    value = _SOURCE_ALIASES.get(value, value)
    if value in ("", "auto", "detect"):
        return ""
    if value not in SOURCE_TYPES:
        raise ConfigError(
            f"{origin} must be one of {', '.join(SOURCE_TYPES)} (or empty to detect), got {text!r}"
        )
    return value


def app_request(environ: Mapping[str, str], settings: Settings | None = None) -> AppRequest:
    """Build the request from Argo CD's variables, application settings and parameters."""
    settings = settings if settings is not None else Settings(environ=dict(environ))
    params = parse_parameters(environ.get(PARAMETERS_ENV))
    instance = environ.get("ARGOCD_APP_NAME", "").strip()

    release = _param_string(params, "release-name")
    release_origin = "parameter 'release-name'"
    if not release:
        found_release = settings.lookup("RELEASE_NAME")
        if found_release is not None and found_release.value:
            release, release_origin = found_release.value, found_release.origin
        else:
            release = strip_app_namespace(instance)
            release_origin = "the Application name (ARGOCD_APP_NAME)"

    namespace = _param_string(params, "namespace") or environ.get("ARGOCD_APP_NAMESPACE", "")

    source_type = ""
    param_type = _param_string(params, "source-type")
    if param_type:
        source_type = _source_type(param_type, "parameter 'source-type'")
    else:
        found = settings.lookup("SOURCE_TYPE")
        if found is not None:
            source_type = _source_type(found.value, found.origin)

    values_files: list[str] = []
    found_files = settings.lookup("VALUES_FILES")
    if found_files is not None:
        values_files.extend(split_list(found_files.value))
    values_files.extend(_param_array(params, "values-files"))

    inline: list[InlineValues] = []
    param_values = _param_string(params, "values")
    if param_values and param_values.strip():
        inline.append(InlineValues("parameter 'values'", param_values))
    found_values = settings.lookup("HELM_VALUES")
    if found_values is not None and found_values.value.strip():
        inline.append(InlineValues(found_values.origin, found_values.value))

    helm_parameters: dict[str, str] = {}
    parameter = params.get("helm-parameters")
    if parameter is not None:
        if parameter.map is None and (parameter.string is not None or parameter.array):
            raise ConfigError("parameter 'helm-parameters' must be given as a map")
        helm_parameters = dict(parameter.map or {})

    resolve_values, resolve_auto = _resolve_values_mode(settings, params)

    return AppRequest(
        app_name=instance,
        release_name=release,
        release_name_origin=release_origin,
        namespace=namespace.strip(),
        project=environ.get("ARGOCD_APP_PROJECT_NAME", ""),
        kube_version=normalise_kube_version(environ.get("KUBE_VERSION", "")),
        api_versions=split_list(environ.get("KUBE_API_VERSIONS", "")),
        revision=environ.get("ARGOCD_APP_REVISION", ""),
        source_repo_url=environ.get("ARGOCD_APP_SOURCE_REPO_URL", ""),
        source_path=environ.get("ARGOCD_APP_SOURCE_PATH", ""),
        source_target_revision=environ.get("ARGOCD_APP_SOURCE_TARGET_REVISION", ""),
        source_type=source_type,
        values_files=tuple(values_files),
        inline_values=tuple(inline),
        helm_parameters=helm_parameters,
        helm_args=settings.get("HELM_ARGS") or "",
        skip_crds=bool(_param_bool(params, "skip-crds")),
        skip_tests=bool(_param_bool(params, "skip-tests")),
        context_files=_context_files(settings, params),
        resolve_values=resolve_values,
        resolve_values_auto=resolve_auto,
        allow_empty=settings.get_bool("ALLOW_EMPTY", False),
        in_argocd=bool(instance),
    )


def _context_files(settings: Settings, params: Mapping[str, Parameter]) -> tuple[str, ...]:
    """`CONTEXT_FILES` (comma-separated) first, then the `context-files` parameter: later wins."""
    found = settings.lookup("CONTEXT_FILES")
    files = list(split_list(found.value)) if found is not None else []
    files.extend(_param_array(params, "context-files"))
    return tuple(files)


def announcements(specs: Sequence[ParameterSpec] = PARAMETERS) -> list[dict[str, Any]]:
    """Static parameter announcements (the JSON shape of Argo CD's ParameterAnnouncement)."""
    out: list[dict[str, Any]] = []
    for spec in specs:
        item: dict[str, Any] = {"name": spec.name, "title": spec.title, "tooltip": spec.tooltip}
        if spec.collection != "string":
            item["collectionType"] = spec.collection
        out.append(item)
    return out
