"""Tenant strings that Helm would parse again (issue 11 §1), through the real Helm 3 and 4.

A file in the repository whose *name* holds `,` or `\\,` passes the "inside the repository"
check, and Helm then splits the name and reads the absolute path that follows (here a fake
service-account token outside the repository); a release name is a template with sprig's `env`
when it goes through `--name-template`. The plugin hands Helm only copies under generated names
and the release name as a checked positional NAME; these tests prove that on real Helm, and a
property test tries many hostile names while recording the argv Helm receives.

Every render here runs with the renderer sandbox off (`PLUGIN_SANDBOX=off`): Landlock would
also stop Helm from reading the token, and these tests must prove the design on its own (the
sandbox is a second, independent wall, tested in tests/security/test_sandbox.py).
"""

from __future__ import annotations

import json
import re
import shlex
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.integration.security_support import Plugin, assert_failed_cleanly, assert_succeeded

pytestmark = pytest.mark.integration

TOKEN_CANARY = "sa-token-canary-Qz81x"
PROXY_CANARY = "proxy-pass-canary-Lm40"

CHART_YAML = "apiVersion: v2\nname: demo\nversion: 0.1.0\n"
#: Prints every value it receives, so a file Helm reads shows up in the output.
ALL_VALUES = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-values\n"
    "data:\n  values: {{ toJson .Values | quote }}\n"
)


def token_outside(base: Path) -> Path:
    """A fake service-account token outside the repository, readable by the sidecar."""
    token = base / "var" / "run" / "secrets" / "token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(f"leak: {TOKEN_CANARY}\n")
    return token


def chart_repo(base: Path) -> Path:
    """The application dir of a repository: a chart printing all its values."""
    repo = base / "repo"
    app = repo / "apps" / "web"
    (app / "templates").mkdir(parents=True)
    (repo / ".git").mkdir()
    (app / "Chart.yaml").write_text(CHART_YAML)
    (app / "values.yaml").write_text("fromChart: 1\n")
    (app / "templates" / "cm.yaml").write_text(ALL_VALUES)
    return app


def plant(app: Path, name: str, text: str = "planted: 1\n") -> None:
    path = app / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def parameters(*items: dict[str, object]) -> str:
    return json.dumps(list(items))


def assert_no_token(run_stdout: str, run_stderr: str) -> None:
    assert TOKEN_CANARY not in run_stdout, "helm read a file outside the repository"
    assert TOKEN_CANARY not in run_stderr, "helm read a file outside the repository"


@pytest.mark.parametrize("how", ["values-files parameter", "HELM_ARGS -f"])
def test_values_file_names_with_commas_cannot_make_helm_read_outside(
    tmp_path: Path, helm_bin: str, how: str
) -> None:
    """`x,/…/token` is one file inside the repository; Helm would read `x` and the token."""
    token = token_outside(tmp_path / "outside")
    app = chart_repo(tmp_path)
    hostile = f"x,{token}"
    plant(app, "x")
    plant(app, hostile)
    plugin = Plugin(tmp_path / "home", helm=helm_bin, PLUGIN_SANDBOX="off")
    if how == "HELM_ARGS -f":
        run = plugin.generate(app, ARGOCD_ENV_HELM_ARGS=f"-f {shlex.quote(hostile)}")
    else:
        run = plugin.generate(
            app, ARGOCD_APP_PARAMETERS=parameters({"name": "values-files", "array": [hostile]})
        )
    assert_no_token(run.stdout, run.stderr)
    docs = assert_succeeded(run)
    assert json.loads(docs[0]["data"]["values"])["planted"] == 1


def test_set_file_names_with_escaped_backslashes_cannot_make_helm_read_outside(
    tmp_path: Path, helm_bin: str
) -> None:
    """`y\\\\,leak=/…/token`: for Helm an escaped backslash, then a second `key=path` pair."""
    token = token_outside(tmp_path / "outside")
    app = chart_repo(tmp_path)
    hostile = f"y\\\\,leak={token}"
    plant(app, "y\\")
    plant(app, hostile)
    plugin = Plugin(tmp_path / "home", helm=helm_bin, PLUGIN_SANDBOX="off")
    run = plugin.generate(app, ARGOCD_ENV_HELM_ARGS=f"--set-file {shlex.quote('k=' + hostile)}")
    assert_no_token(run.stdout, run.stderr)
    # The plugin reads the text as Helm does: two pairs, the second one (an absolute path,
    # taken from the repository root) does not exist in the repository.
    assert_failed_cleanly(run, [TOKEN_CANARY], "--set-file leak", "does not exist")


def test_set_file_with_a_comma_in_its_name_is_read_as_one_file(
    tmp_path: Path, helm_bin: str
) -> None:
    token = token_outside(tmp_path / "outside")
    app = chart_repo(tmp_path)
    hostile = f"z,{token}"
    plant(app, hostile, "the-file-content")
    plant(app, "z", "the-prefix-content")
    plugin = Plugin(tmp_path / "home", helm=helm_bin, PLUGIN_SANDBOX="off")
    escaped = "k=" + hostile.replace(",", "\\,")
    run = plugin.generate(app, ARGOCD_ENV_HELM_ARGS=f"--set-file {shlex.quote(escaped)}")
    assert_no_token(run.stdout, run.stderr)
    docs = assert_succeeded(run)
    assert json.loads(docs[0]["data"]["values"])["k"] == "the-file-content"


@pytest.mark.parametrize("source", ["RELEASE_NAME", "release-name"])
def test_release_name_is_never_a_template(tmp_path: Path, helm_bin: str, source: str) -> None:
    """`{{ env "HTTPS_PROXY" }}` would print the sidecar's proxy credentials."""
    app = chart_repo(tmp_path)
    proxy = f"http://user:{PROXY_CANARY}@127.0.0.1:9"
    plugin = Plugin(tmp_path / "home", helm=helm_bin, HTTPS_PROXY=proxy, PLUGIN_SANDBOX="off")
    name = '{{ env "HTTPS_PROXY" }}'
    if source == "RELEASE_NAME":
        run = plugin.generate(app, ARGOCD_ENV_RELEASE_NAME=name)
        origin = "ARGOCD_ENV_RELEASE_NAME"
    else:
        run = plugin.generate(
            app, ARGOCD_APP_PARAMETERS=parameters({"name": "release-name", "string": name})
        )
        origin = "parameter 'release-name'"
    assert_failed_cleanly(run, [PROXY_CANARY], origin, "not a valid Helm release name")
    # A name that looks harmless to Helm's rule is taken literally, never evaluated.
    run = plugin.generate(app, ARGOCD_ENV_RELEASE_NAME="web.v2")
    docs = assert_succeeded(run)
    assert docs[0]["metadata"]["name"] == "web.v2-values"


# ---------------------------------------------------------------------------- property test

#: Characters Helm's parsers or a shell treat specially, plus unicode and blanks.
_HOSTILE = ",\\={}[]\"' \n\t-.$`*?:;|&<>#%~" + "éß漢字\u202e\u00a0"
_SEGMENT = (
    st.text(alphabet=st.sampled_from(_HOSTILE + "abcxyz019"), min_size=1, max_size=12)
    .filter(lambda s: s not in (".", ".."))
    .filter(lambda s: len(s.encode()) < 200)
)
#: How a name can smuggle a second path to Helm: CSV/strvals separators, then an absolute path.
_SMUGGLE = st.sampled_from(["", ",", "\\,", "\\\\,", ",leak=", "\\\\,leak=", '",'])


CHANNELS = ("values-files parameter", "HELM_ARGS -f", "--set-file escaped", "--set-file raw")


@st.composite
def hostile_names(draw: st.DrawFn) -> tuple[list[str], str, str]:
    segments = draw(st.lists(_SEGMENT, min_size=1, max_size=3))
    if draw(st.booleans()):
        segments[:0] = ["..", "web"]  # up and back into the application directory
    return segments, draw(_SMUGGLE), draw(st.sampled_from(CHANNELS))


#: The only arguments `helm template` may receive here: fixed words and generated names.
_ALLOWED_ARG = re.compile(
    r"template|demo|\.|--namespace=demo-ns|--include-crds"
    r"|--values=/[A-Za-z0-9_./+-]+/values-\d{3}\.yaml"
    r"|--set-file=k=/[A-Za-z0-9_./+-]+/set-file-\d{3}"
)


def recording_helm(base: Path, helm: str) -> tuple[Path, Path]:
    """(wrapper, log): a helm that appends its argv (NUL-separated, one call per record)."""
    log = base / "argv.log"
    wrapper = base / "helm-wrapper"
    wrapper.write_text(
        f"#!/bin/sh\nprintf '%s\\0' \"$@\" >> {shlex.quote(str(log))}\n"
        f"printf '\\n\\0' >> {shlex.quote(str(log))}\n"
        f'exec {shlex.quote(helm)} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper, log


def helm_calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    records = [r for r in log.read_bytes().split(b"\n\0") if r]
    return [[a.decode("utf-8", "surrogateescape") for a in r.split(b"\0") if a] for r in records]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=hostile_names())
def test_helm_never_opens_a_path_chosen_by_a_file_name(
    helm_bin: str, case: tuple[list[str], str, str]
) -> None:
    """Hostile file names as values files (parameter and `-f`) and `--set-file` sources (escaped
    the Helm way, or raw): the render succeeds or fails cleanly, the token outside the
    repository is never read, and every argument Helm receives is a fixed word or a generated
    name."""
    segments, smuggle, channel = case
    with tempfile.TemporaryDirectory(prefix="t11-") as base_name:
        base = Path(base_name)
        token = token_outside(base / "outside")
        app = chart_repo(base)
        name = "/".join(segments)
        if smuggle:
            name = f"{name}{smuggle}{token}"
        try:
            plant(app, name)
            prefix = name.split(",")[0].replace("\\", "") or "p"
            if not (app / prefix).exists():
                plant(app, prefix)  # what Helm would read first, had it split the name
        except OSError:
            return  # a name the file system refuses (a path segment is already a file)
        wrapper, log = recording_helm(base, helm_bin)
        plugin = Plugin(base / "home", helm=str(wrapper), PLUGIN_SANDBOX="off")
        extra: dict[str, str] = {}
        if channel == "values-files parameter":
            extra["ARGOCD_APP_PARAMETERS"] = parameters({"name": "values-files", "array": [name]})
        elif channel == "HELM_ARGS -f":
            extra["ARGOCD_ENV_HELM_ARGS"] = f"-f {shlex.quote(name)}"
        else:
            text = name
            if channel == "--set-file escaped":
                text = name.replace("\\", "\\\\").replace(",", "\\,")
            extra["ARGOCD_ENV_HELM_ARGS"] = f"--set-file {shlex.quote('k=' + text)}"
        run = plugin.generate(app, **extra)
        assert_no_token(run.stdout, run.stderr)
        if run.code != 0:
            assert run.stdout == ""
            assert run.stderr.startswith("Error: "), run.stderr[-500:]
            assert "Traceback" not in run.stderr, run.stderr[-2000:]
        templates = [argv for argv in helm_calls(log) if argv[:1] == ["template"]]
        event(f"{channel}: {'rendered' if run.code == 0 else 'refused'}")
        if run.code == 0:
            assert len(templates) == 1
        for argv in templates:
            for arg in argv:
                assert _ALLOWED_ARG.fullmatch(arg), f"helm received {arg!r}"
