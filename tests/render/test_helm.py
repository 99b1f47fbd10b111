"""helm template command building, HELM_ARGS allow-list, values file resolution."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from plugin.errors import ConfigError, RenderError
from plugin.render.helm import (
    ReleaseName,
    TemplateInputs,
    check_set_key,
    escape_set_value,
    expand_env,
    find_repo_root,
    flatten_values,
    load_inline_values,
    parameter_sets,
    parse_helm_args,
    release_name,
    repo_root_note,
    resolve_set_files,
    resolve_values_files,
    split_set_file,
    template_command,
)
from plugin.render.staging import StagedFile, Staging


def test_argocd_flag_order(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "inputs")
    source = tmp_path / "x,/etc/values.yaml"
    source.parent.mkdir(parents=True)
    source.write_text("a: 1\n")
    inputs = TemplateInputs(
        release_name=ReleaseName("rel"),
        namespace="ns",
        kube_version="1.29.0",
        sets=[("--set", "a=1"), ("--set-string", "b=2")],
        set_files=[("cert", staging.copy_set_file(source, "cert"))],
        values_files=[staging.copy_values(source, "x"), staging.in_memory("{}\n", "inline")],
        api_versions=["v1", "monitoring.coreos.com/v1"],
        include_crds=True,
        skip_tests=True,
    )
    inputs_dir = staging.directory
    assert template_command("helm", inputs) == [
        "helm", "template", "rel", ".",
        "--namespace=ns",
        "--kube-version=1.29.0",
        "--set=a=1", "--set-string=b=2",
        f"--set-file=cert={inputs_dir}/set-file-000",
        f"--values={inputs_dir}/values-000.yaml", f"--values=/proc/self/fd/{staging.fds[0]}",
        "--api-versions=v1", "--api-versions=monitoring.coreos.com/v1",
        "--include-crds",
        "--skip-tests",
    ]  # fmt: skip
    assert (inputs_dir / "values-000.yaml").read_text() == "a: 1\n"
    assert (inputs_dir / "values-000.yaml").stat().st_mode & 0o777 == 0o600
    assert inputs_dir.stat().st_mode & 0o777 == 0o700
    staging.__exit__(None, None, None)
    assert staging.fds == []


def test_minimal_command() -> None:
    assert template_command("helm", TemplateInputs(include_crds=False)) == ["helm", "template", "."]


def test_command_takes_only_staged_files_and_checked_names(tmp_path: Path) -> None:
    """The builder refuses a plain path or a plain release name even when the types are
    bypassed, and a StagedFile cannot be made outside Staging."""
    with pytest.raises(TypeError):
        template_command("helm", TemplateInputs(values_files=["/etc/passwd"]))  # type: ignore[list-item]
    with pytest.raises(TypeError):
        template_command("helm", TemplateInputs(release_name="{{ env }}"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StagedFile(tmp_path / "x", "x", object())
    with pytest.raises(ConfigError):
        ReleaseName('{{ env "HOME" }}')


def test_staging_refuses_a_scratch_path_helm_would_parse(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="TMPDIR"):
        Staging(tmp_path / "a,b")


def test_staging_copies_are_bounded_and_regular(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "inputs", max_bytes=10)
    big = tmp_path / "big.yaml"
    big.write_text("x" * 11)
    with pytest.raises(ConfigError, match="larger than"):
        staging.copy_values(big, "values file big.yaml")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        staging.copy_values(fifo, "values file fifo")
    os.symlink(big, tmp_path / "link")
    with pytest.raises(ConfigError, match="cannot be read"):
        staging.copy_values(tmp_path / "link", "values file link")


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ('{{ env "HTTPS_PROXY" }}', "RELEASE_NAME"),
        ("Upper", "parameter 'release-name'"),
        ("a" * 54, "RELEASE_NAME"),
        ("-lead", "RELEASE_NAME"),
        ("trail.", "RELEASE_NAME"),
        ("a_b", "RELEASE_NAME"),
        ("", "RELEASE_NAME"),
    ],
)
def test_release_names_follow_helms_rule(text: str, origin: str) -> None:
    with pytest.raises(ConfigError, match=f"from {re.escape(origin)} is not a valid Helm release"):
        release_name(text, origin)


def test_valid_release_names() -> None:
    for text in ("a", "web", "my-app.v2", "a" * 53, "0-9"):
        assert release_name(text, "RELEASE_NAME").value == text


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
    assert parse_helm_args(" \t\r\n") == parse_helm_args("")
    with pytest.raises(ConfigError, match="a positional argument is not allowed"):
        parse_helm_args("\x0b")  # not blank to a POSIX shell split: a word, and not a flag


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


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        # An escaped backslash before a comma: the comma is a real separator for Helm.
        ("x\\\\,b=1", "x\\\\\\,b=1"),
        ("x\\\\\\,b", "x\\\\\\,b"),
        # Only a value that is exactly one list stays a list.
        ("{a},b={c}", "\\{a}\\,b={c}"),
        ("{a,b", "\\{a\\,b"),
        ("{a\\}", "\\{a\\}"),
        ("trailing\\", "trailing\\"),
    ],
)
def test_set_values_cannot_end_early(value: str, escaped: str) -> None:
    assert escape_set_value(value) == escaped


@pytest.mark.parametrize("key", ["a,b", "a=b", "a\\\\,b", "a\\", " ", "x\\\\=y"])
def test_set_keys_that_helm_would_split_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match="helm-parameters"):
        parameter_sets({key: "1"}, {})


def test_escaped_set_keys_are_kept() -> None:
    for key in ("a\\.b", "list[0].name", "a\\,b", "a\\=b", "x\\\\"):
        check_set_key(key, "test")


def test_split_set_file_counts_backslashes_like_helm() -> None:
    assert split_set_file("a=x,b=y") == [("a", "x"), ("b", "y")]
    assert split_set_file("a=x\\,y") == [("a", "x,y")]
    # `\\\\,` is an escaped backslash, then a separator: two pairs, as Helm reads it.
    assert split_set_file("a=x\\\\,b=/etc/t") == [("a", "x\\"), ("b", "/etc/t")]
    for bad in ("a", "=x", "a=", "a=x,", "a\\=x"):
        with pytest.raises(ConfigError):
            split_set_file(bad)


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
        (real / "apps/web/values.yaml", "values.yaml"),
        (real / "shared/common.yaml", "/shared/common.yaml"),
        (real / "apps/web/values-prod.yaml", "values-*.yaml (/apps/web/values-prod.yaml)"),
    ]


@pytest.mark.parametrize("name", ["../../../outside.yaml", "/../outside.yaml", "link.yaml"])
def test_values_files_escaping_the_repository(repo: Path, name: str) -> None:
    os.symlink(repo.parent / "outside.yaml", repo / "apps/web/link.yaml")
    with pytest.raises(ConfigError, match="outside the repository"):
        resolve_values_files([name], repo / "apps/web", repo, {})


@pytest.mark.parametrize(
    "pattern",
    ["../../../*.yaml", "/../*", "../../../**/*.yaml", "*/../../../../*", "links/*", "/**/*.yaml"],
)
def test_values_file_globs_never_name_files_outside(repo: Path, pattern: str) -> None:
    """A glob reaching outside the repository is refused naming the pattern only: the error
    never lists what exists outside (here `secret-name-canary.yaml`)."""
    (repo.parent / "secret-name-canary.yaml").write_text("x: 1\n")
    (repo / "apps/web/links").mkdir()
    os.symlink(repo.parent / "secret-name-canary.yaml", repo / "apps/web/links/l.yaml")
    os.symlink(repo.parent, repo / "up")
    with pytest.raises(ConfigError) as info:
        resolve_values_files([pattern], repo / "apps/web", repo, {})
    assert "secret-name-canary" not in str(info.value)
    assert "outside.yaml" not in str(info.value)
    assert pattern in str(info.value)


def test_values_files_missing_and_urls(repo: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_values_files(["nope.yaml"], repo / "apps/web", repo, {})
    with pytest.raises(ConfigError, match="matches no file"):
        resolve_values_files(["nope-*.yaml"], repo / "apps/web", repo, {})
    with pytest.raises(ConfigError, match="URLs are not accepted"):
        resolve_values_files(["https://x.example.com/v.yaml"], repo / "apps/web", repo, {})
    with pytest.raises(ConfigError, match="URLs are not accepted"):
        resolve_values_files(["https://x.example.com/*.yaml"], repo / "apps/web", repo, {})


def test_values_files_taken_from_the_work_copy(repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "rendered.yaml").write_text("r: 1\n")
    (work / "values.yaml").write_text("a: copy\n")
    got = resolve_values_files(["rendered.yaml", "values.yaml"], repo / "apps/web", repo, {}, work)
    assert got == [(work / "rendered.yaml", "rendered.yaml"), (work / "values.yaml", "values.yaml")]


def test_set_files(repo: Path) -> None:
    real = Path(os.path.realpath(repo))
    assert resolve_set_files(["a=values.yaml,b=/shared/common.yaml"], repo / "apps/web", repo) == [
        ("a", real / "apps/web/values.yaml"),
        ("b", real / "shared/common.yaml"),
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
    assert find_repo_root(app, " ./apps//web/. ") == repo  # empty and `.` parts ignored
    assert find_repo_root(str(app) + "/", "web") == repo / "apps"
    assert find_repo_root(repo / "apps/web/../web", "apps/web") == repo


def test_find_repo_root_stops_at_the_file_system_root(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    names = [part for part in app.parts if part != "/"]
    assert find_repo_root(app, "/".join(["extra", *names])) == Path("/")
    assert find_repo_root(app, "") == app  # no .git anywhere above: the app dir itself
    assert isinstance(find_repo_root(app, ""), Path)


def test_repo_root_note_says_when_the_root_was_guessed(tmp_path: Path) -> None:
    app = tmp_path / "repo" / "app"
    app.mkdir(parents=True)
    assert "ARGOCD_APP_SOURCE_PATH is not set" in repo_root_note(app, "", app)
    assert "(nope) does not end with" in repo_root_note(app, "nope", app)
    assert repo_root_note(app, "app", app.parent) == ""  # the source path matched
    (app / ".git").mkdir()
    assert repo_root_note(app, "", app) == ""  # a Git checkout: not a guess


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


def test_staging_makes_its_directory_with_the_first_copy_only(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "inputs")
    with staging:
        staging.in_memory("a: 1\n", "inline")  # memory files need no directory
        assert not staging.directory.exists()
        source = tmp_path / "values.yaml"
        source.write_text("a: 1\n")
        copied = staging.copy_values(source, "values.yaml")
    assert copied.path.parent == staging.directory
    assert oct(staging.directory.stat().st_mode & 0o777) == "0o700"
    assert copied.path.read_text() == "a: 1\n"
    assert oct(copied.path.stat().st_mode & 0o777) == "0o600"
