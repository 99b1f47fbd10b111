"""helm template command building, HELM_ARGS allow-list, values file resolution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugin.errors import ConfigError
from plugin.render.helm import (
    TemplateInputs,
    escape_set_value,
    expand_env,
    find_repo_root,
    flatten_values,
    load_inline_values,
    parameter_sets,
    parse_helm_args,
    resolve_set_files,
    resolve_values_files,
    template_command,
)


def test_argocd_flag_order() -> None:
    inputs = TemplateInputs(
        release_name="rel",
        namespace="ns",
        kube_version="1.29.0",
        sets=[("--set", "a=1"), ("--set-string", "b=2")],
        values_files=["/x/values.yaml", "/tmp/inline.yaml"],
        api_versions=["v1", "monitoring.coreos.com/v1"],
        include_crds=True,
        skip_tests=True,
    )
    assert template_command("helm", inputs) == [
        "helm", "template", ".",
        "--name-template", "rel",
        "--namespace", "ns",
        "--kube-version", "1.29.0",
        "--set", "a=1", "--set-string", "b=2",
        "--values", "/x/values.yaml", "--values", "/tmp/inline.yaml",
        "--api-versions", "v1", "--api-versions", "monitoring.coreos.com/v1",
        "--include-crds",
        "--skip-tests",
    ]  # fmt: skip


def test_minimal_command() -> None:
    assert template_command("helm", TemplateInputs(include_crds=False)) == ["helm", "template", "."]


def test_allowed_helm_args() -> None:
    args = parse_helm_args(
        "-f values.yaml --values=b.yaml -fc.yaml --set a=1,b=2 --set-string 'c=hello world' "
        "--set-file cert=cert.pem --skip-tests --skip-crds -a v1 --api-versions=x/v1,y/v1 "
        "--kube-version v1.30.0"
    )
    assert args.values_files == ["values.yaml", "b.yaml", "c.yaml"]
    assert args.sets == [("--set", "a=1,b=2"), ("--set-string", "c=hello world")]
    assert args.set_files == ["cert=cert.pem"]
    assert args.skip_tests and args.include_crds is False
    assert args.api_versions == ["v1", "x/v1", "y/v1"]
    assert args.kube_version == "1.30.0"
    assert parse_helm_args("--include-crds").include_crds is True
    assert parse_helm_args("").values_files == []


@pytest.mark.parametrize(
    "text",
    [
        "--post-renderer ./x.sh",
        "--post-renderer=./x.sh",
        "--repo https://evil.example.com",
        "--username u --password p",
        "--plugins /tmp",
        "--kubeconfig /etc/k",
        "template",
        "-n other",
        "--set-json a=1",
        "--debug",
    ],
)
def test_refused_helm_args(text: str) -> None:
    with pytest.raises(ConfigError, match="not allowed"):
        parse_helm_args(text)


def test_refusal_names_the_flag_not_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse_helm_args("--password hunter2secret")
    assert "--password" in str(info.value) and "hunter2secret" not in str(info.value)


def test_bad_quoting_and_missing_value() -> None:
    with pytest.raises(ConfigError, match="cannot be split"):
        parse_helm_args("--set 'a=1")
    with pytest.raises(ConfigError, match="needs a value"):
        parse_helm_args("--values")


def test_set_values() -> None:
    assert escape_set_value("a,b") == "a\\,b"
    assert escape_set_value("a\\,b") == "a\\,b"
    assert escape_set_value("{a,b}") == "{a,b}"
    env = {"ARGOCD_APP_NAME": "app"}
    assert parameter_sets({"z": "1", "a": "$ARGOCD_APP_NAME,x"}, env) == [
        ("--set", "a=app\\,x"),
        ("--set", "z=1"),
    ]
    assert expand_env("$A-${B}-$$C-$UNKNOWN", {"A": "1", "B": "2"}) == "1-2-$C-"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "apps/web").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "apps/web/values.yaml").write_text("a: 1\n")
    (root / "apps/web/values-prod.yaml").write_text("a: 2\n")
    (root / "shared/common.yaml").write_text("c: 1\n")
    (tmp_path / "outside.yaml").write_text("x: 1\n")
    return root


def test_values_files_resolution(repo: Path) -> None:
    app = repo / "apps/web"
    got = resolve_values_files(
        ["values.yaml", "/shared/common.yaml", "../../shared/common.yaml", "values-*.yaml"],
        app,
        repo,
        {},
    )
    real = Path(os.path.realpath(repo))
    assert got == [
        real / "apps/web/values.yaml",
        real / "shared/common.yaml",
        real / "apps/web/values-prod.yaml",
    ]


@pytest.mark.parametrize("name", ["../../../outside.yaml", "/../outside.yaml", "link.yaml"])
def test_values_files_escaping_the_repository(repo: Path, name: str) -> None:
    os.symlink(repo.parent / "outside.yaml", repo / "apps/web/link.yaml")
    with pytest.raises(ConfigError, match="outside the repository"):
        resolve_values_files([name], repo / "apps/web", repo, {})


def test_values_files_missing_and_urls(repo: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_values_files(["nope.yaml"], repo / "apps/web", repo, {})
    with pytest.raises(ConfigError, match="matches no file"):
        resolve_values_files(["nope-*.yaml"], repo / "apps/web", repo, {})
    with pytest.raises(ConfigError, match="URLs are not accepted"):
        resolve_values_files(["https://x.example.com/v.yaml"], repo / "apps/web", repo, {})


def test_values_files_taken_from_the_work_copy(repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "rendered.yaml").write_text("r: 1\n")
    (work / "values.yaml").write_text("a: copy\n")
    got = resolve_values_files(["rendered.yaml", "values.yaml"], repo / "apps/web", repo, {}, work)
    assert got == [work / "rendered.yaml", work / "values.yaml"]


def test_set_files(repo: Path) -> None:
    real = os.path.realpath(repo)
    assert resolve_set_files(["a=values.yaml,b=/shared/common.yaml"], repo / "apps/web", repo) == [
        ("--set-file", f"a={real}/apps/web/values.yaml,b={real}/shared/common.yaml")
    ]
    with pytest.raises(ConfigError, match="outside the repository"):
        resolve_set_files(["a=../../../outside.yaml"], repo / "apps/web", repo)


def test_find_repo_root(repo: Path, tmp_path: Path) -> None:
    app = repo / "apps/web"
    assert find_repo_root(app, "apps/web") == repo
    assert find_repo_root(app, "/apps/web/") == repo
    assert find_repo_root(app, ".") == app  # no .git: the app dir itself
    (repo / ".git").mkdir()
    assert find_repo_root(app, "") == repo
    assert find_repo_root(app, "other/nope") == repo  # mismatch: falls back to .git
    # manifest-generate-paths: the tar root is the common root, only the tail matches
    assert find_repo_root(app, "deploy/apps/web") == repo


def test_inline_values() -> None:
    assert load_inline_values("a: 1", "HELM_VALUES") == {"a": 1}
    assert load_inline_values("", "HELM_VALUES") == {}
    with pytest.raises(ConfigError, match="mapping"):
        load_inline_values("- a", "HELM_VALUES")
    with pytest.raises(ConfigError) as info:
        load_inline_values("password: [hunter2secret", "HELM_VALUES")
    assert "hunter2secret" not in str(info.value)


def test_flatten_values() -> None:
    values = {
        "image": {"tag": "1.0", "pull": None},
        "list": [1, {"a": True}],
        "empty": {},
        "dotted.key": "x",
    }
    assert flatten_values(values) == {
        "image.tag": "1.0",
        "image.pull": "null",
        "list[0]": "1",
        "list[1].a": "true",
        "dotted\\.key": "x",
    }
