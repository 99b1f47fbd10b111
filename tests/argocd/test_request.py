"""Argo CD's request: environment, application settings and ARGOCD_APP_PARAMETERS."""

from __future__ import annotations

import json

import pytest

from plugin.argocd.request import (
    PARAMETERS,
    announcements,
    app_request,
    normalise_kube_version,
    parse_parameters,
    split_list,
    strip_app_namespace,
)
from plugin.errors import ConfigError


@pytest.mark.parametrize("text", [None, "", "  ", "null", "[]"])
def test_no_parameters(text: str | None) -> None:
    assert parse_parameters(text) == {}


def test_parameters_of_every_kind() -> None:
    raw = json.dumps(
        [
            {"name": "values-files", "array": ["a.yaml", "b.yaml"]},
            {"name": "helm-parameters", "map": {"image.tag": "1.2"}},
            {"name": "release-name", "string": "rel"},
        ]
    )
    params = parse_parameters(raw)
    assert params["values-files"].array == ("a.yaml", "b.yaml")
    assert params["helm-parameters"].map == {"image.tag": "1.2"}
    assert params["release-name"].string == "rel"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{", "not valid JSON"),
        ('{"name": "x"}', "JSON array"),
        ('[{"string": "x"}]', "no name"),
        ('[{"name": "bogus", "string": "x"}]', "unknown parameter 'bogus'"),
        ('[{"name": "values", "string": 3}]', "'string' must be a string"),
        ('[{"name": "values-files", "array": [1]}]', "list of strings"),
        ('[{"name": "helm-parameters", "map": {"a": 1}}]', "strings to strings"),
    ],
)
def test_bad_parameters(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_parameters(raw)


def test_secret_values_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_parameters('[{"name": "values", "string": 12345678}]')
    assert "12345678" not in str(info.value)


@pytest.mark.parametrize(
    ("instance", "release"),
    [("app", "app"), ("ns_app", "app"), ("ns_app_x", "app_x"), ("_", "_"), ("app_", "app_")],
)
def test_strip_app_namespace(instance: str, release: str) -> None:
    assert strip_app_namespace(instance) == release


def test_kube_version_and_lists() -> None:
    assert normalise_kube_version("v1.29.3+k3s1") == "1.29.3"
    assert normalise_kube_version("") == ""
    assert split_list(" a, ,b,") == ("a", "b")


def test_request_from_environment() -> None:
    env = {
        "ARGOCD_APP_NAME": "team_web",
        "ARGOCD_APP_NAMESPACE": "web",
        "ARGOCD_APP_PROJECT_NAME": "proj",
        "KUBE_VERSION": "1.30.1",
        "KUBE_API_VERSIONS": "v1,apps/v1,monitoring.coreos.com/v1/ServiceMonitor",
        "ARGOCD_APP_SOURCE_PATH": "apps/web",
        "ARGOCD_ENV_VALUES_FILES": "values.yaml, values-prod.yaml",
        "ARGOCD_ENV_HELM_VALUES": "a: 1",
        "ARGOCD_ENV_HELM_ARGS": "--skip-tests",
        "ARGOCD_APP_PARAMETERS": json.dumps(
            [
                {"name": "values-files", "array": ["extra.yaml"]},
                {"name": "values", "string": "b: 2"},
                {"name": "namespace", "string": "override"},
                {"name": "skip-crds", "string": "true"},
            ]
        ),
    }
    request = app_request(env)
    assert request.release_name == "web"
    assert request.namespace == "override"
    assert request.kube_version == "1.30.1"
    assert request.api_versions[-1] == "monitoring.coreos.com/v1/ServiceMonitor"
    assert request.values_files == ("values.yaml", "values-prod.yaml", "extra.yaml")
    # HELM_VALUES is applied last, after the `values` parameter.
    assert [v.text for v in request.inline_values] == ["b: 2", "a: 1"]
    assert request.skip_crds and not request.skip_tests
    assert request.helm_args == "--skip-tests"
    assert request.in_argocd


def test_release_name_precedence() -> None:
    base = {"ARGOCD_APP_NAME": "ns_app"}
    assert app_request(base).release_name == "app"
    assert app_request({**base, "ARGOCD_ENV_RELEASE_NAME": "env"}).release_name == "env"
    param = json.dumps([{"name": "release-name", "string": "param"}])
    with_param = {**base, "ARGOCD_ENV_RELEASE_NAME": "env", "ARGOCD_APP_PARAMETERS": param}
    assert app_request(with_param).release_name == "param"


def test_source_type_and_flags() -> None:
    assert app_request({"ARGOCD_ENV_SOURCE_TYPE": "plain"}).source_type == "directory"
    assert app_request({"SOURCE_TYPE": "Kustomize"}).source_type == "kustomize"
    with pytest.raises(ConfigError, match="SOURCE_TYPE"):
        app_request({"ARGOCD_ENV_SOURCE_TYPE": "jsonnet"})
    param = json.dumps([{"name": "resolve-values", "string": "yes"}])
    assert app_request({"ARGOCD_APP_PARAMETERS": param}).resolve_values
    assert app_request({"ARGOCD_ENV_RESOLVE_VALUES": "true"}).resolve_values
    assert app_request({"ARGOCD_ENV_ALLOW_EMPTY": "1"}).allow_empty
    with pytest.raises(ConfigError, match="helm-parameters"):
        app_request(
            {"ARGOCD_APP_PARAMETERS": json.dumps([{"name": "helm-parameters", "string": "a"}])}
        )


def test_announcements_are_argocd_shaped() -> None:
    items = announcements()
    assert [item["name"] for item in items] == [spec.name for spec in PARAMETERS]
    for item in items:
        assert all(isinstance(value, str) for value in item.values())


def test_context_files_from_setting_then_parameter() -> None:
    environ = {
        "ARGOCD_ENV_CONTEXT_FILES": "/clusters/base.yaml, /clusters/prod.yaml",
        "ARGOCD_APP_PARAMETERS": '[{"name": "context-files", "array": ["local.yaml"]}]',
    }
    request = app_request(environ)
    assert request.context_files == ("/clusters/base.yaml", "/clusters/prod.yaml", "local.yaml")


def test_resolve_values_is_auto_by_default_and_accepts_true_false_auto() -> None:
    default = app_request({})
    assert (default.resolve_values, default.resolve_values_auto) == (False, True)
    off = app_request({"ARGOCD_ENV_RESOLVE_VALUES": "false"})
    assert (off.resolve_values, off.resolve_values_auto) == (False, False)
    on = app_request({"ARGOCD_ENV_RESOLVE_VALUES": "true"})
    assert (on.resolve_values, on.resolve_values_auto) == (True, False)
    auto = app_request({"ARGOCD_ENV_RESOLVE_VALUES": "auto"})
    assert (auto.resolve_values, auto.resolve_values_auto) == (False, True)
