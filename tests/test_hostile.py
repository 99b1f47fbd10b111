"""Hostile input: bounded time and memory, a clear error, and nothing secret on stderr.

Covered elsewhere (and listed in docs/security.md): alias bombs and nesting bombs
(tests/placeholders/test_substitute.py, tests/manifests/test_reader.py), NUL bytes and invalid
UTF-8 (tests/manifests/test_reader.py, tests/test_cli.py), parser/modifier/JSONPath property
tests (tests/placeholders/test_grammar.py, test_modifiers.py, test_jsonpath.py), the Jinja2
sandbox (tests/templating/test_environment.py), values files, --set-file and context files
leaving the repository (tests/render/test_helm.py, tests/templating/test_appdir.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin.errors import InputError, JSONPathError, ModifierError, PluginError, RenderError
from plugin.manifests import reader
from plugin.manifests.yamlio import dump, load_all, load_one
from plugin.placeholders.engine import EngineOptions, InputStream, generate, load, resolve
from plugin.placeholders.jsonpath import execute
from plugin.placeholders.modifiers import apply
from plugin.placeholders.substitute import Rules
from plugin.render import kustomize
from plugin.render.copying import copy_tree
from plugin.render.values_secrets import SharedReads
from plugin.secrets.file import FileBackend
from plugin.security.redact import Redactor
from tests.conformance import REPO_ROOT, clean_environment, run_plugin

CANARY = "canary-hostile-Rt5v9Qa"
MiB = 1024 * 1024


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(json.dumps({"kv/data/app": {"password": CANARY, "n": 1}}))
    return clean_environment({"AVP_TYPE": "file", "AVP_FILE_PATH": str(secrets)})


def assert_failed_cleanly(run: Any, *expected: str) -> None:
    assert run.code == 1, run.stderr[-2000:]
    assert run.stdout == ""
    assert run.stderr.startswith("Error: ")
    assert "Traceback" not in run.stderr
    assert CANARY not in run.stderr
    for text in expected:
        assert text in run.stderr


MEASURE = """
import json, resource, subprocess, sys, time
stdin = open(sys.argv[1], "rb") if sys.argv[1] != "-" else subprocess.DEVNULL
started = time.monotonic()
done = subprocess.run(sys.argv[2:], stdin=stdin, capture_output=True)
print(json.dumps({
    "code": done.returncode,
    "seconds": time.monotonic() - started,
    "max_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "stdout": done.stdout.decode("utf-8", "replace"),
    "stderr": done.stderr.decode("utf-8", "replace"),
}))
"""


def measured(args: list[str], env: dict[str, str], stdin: Path | None = None) -> dict[str, Any]:
    """Run the plugin in a fresh parent so that its peak memory can be read alone."""
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE, str(stdin or "-"), sys.executable, "-m", "plugin", *args],
        capture_output=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


# ------------------------------------------------------------------------------ size


def test_a_100_mb_document_on_stdin_is_refused_with_bounded_memory(
    tmp_path: Path, env: dict[str, str]
) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.write(b"kind: Secret\nmetadata: {name: s}\nstringData:\n")
        handle.write(b"  p: <path:kv/data/app#password>\n  x: '")
        chunk = b"A" * MiB
        for _ in range(100):
            handle.write(chunk)
        handle.write(b"'\n")
    result = measured(["generate", "-"], env, stdin=big)
    assert result["code"] == 1
    assert result["stdout"] == ""
    assert result["stderr"].startswith(
        "Error: <stdin> is larger than 64 MiB (PLUGIN_MAX_INPUT_SIZE)"
    )
    assert result["seconds"] < 20
    assert result["max_rss_mib"] < 300, result["max_rss_mib"]


def test_a_100_mb_file_in_a_directory_is_refused_before_reading(
    tmp_path: Path, env: dict[str, str]
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "a.yaml").write_text("kind: ConfigMap\nmetadata: {name: a}\n")
    with (app / "big.yaml").open("wb") as handle:  # sparse: costs no disk space
        handle.truncate(100 * 1000 * 1000)
    started = time.monotonic()
    run = run_plugin(["generate", str(app)], env)
    assert_failed_cleanly(run, "big.yaml: the input files are larger than 64 MiB in all")
    assert time.monotonic() - started < 20
    bigger = run_plugin(["generate", str(app)], {**env, "PLUGIN_MAX_INPUT_SIZE": "200Mi"})
    assert "larger than" not in bigger.stderr
    invalid = run_plugin(["generate", str(app)], {**env, "PLUGIN_MAX_INPUT_SIZE": "lots"})
    assert_failed_cleanly(invalid, "PLUGIN_MAX_INPUT_SIZE must be a size")


def test_a_renderer_printing_100_mb_is_stopped(tmp_path: Path, env: dict[str, str]) -> None:
    helm = tmp_path / "helm"
    helm.write_text(
        "#!/bin/sh\nyes 'x: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy' | head -c 100000000\n"
    )
    helm.chmod(helm.stat().st_mode | stat.S_IXUSR)
    app = tmp_path / "chart"
    (app / "templates").mkdir(parents=True)
    (app / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    result = measured(["generate", str(app)], {**env, "HELM_BIN": str(helm)})
    assert result["code"] == 1 and result["stdout"] == ""
    assert "helm template produced more than 64 MiB of output; stopped" in result["stderr"]
    assert result["max_rss_mib"] < 300, result["max_rss_mib"]


def test_a_single_huge_document_is_not_parsed(tmp_path: Path, env: dict[str, str]) -> None:
    """Under the stream limit, a 20 MB document that needs parsing is refused before libyaml
    sees it; one without placeholders is copied through untouched."""
    filler = "A" * (20 * 1000 * 1000)
    source = tmp_path / "huge.yaml"
    source.write_text(
        "kind: Secret\nmetadata: {name: s}\nstringData:\n"
        f"  p: <path:kv/data/app#password>\n  x: '{filler}'\n"
    )
    result = measured(["generate", str(source)], env)
    assert result["code"] == 1 and result["stdout"] == ""
    assert "the document is 19.1 MiB, larger than any Kubernetes object can be" in result["stderr"]
    assert CANARY not in result["stderr"]
    assert result["max_rss_mib"] < 300, result["max_rss_mib"]
    source.write_text(f"kind: ConfigMap\nmetadata: {{name: c}}\ndata:\n  x: '{filler}'\n")
    passed = run_plugin(["generate", str(source)], env)
    assert passed.code == 0, passed.stderr
    assert len(passed.stdout) > 20 * 1000 * 1000


# ------------------------------------------------------------------------------ counts


def test_a_hundred_thousand_placeholders(tmp_path: Path, env: dict[str, str]) -> None:
    lines = "".join(f"  k{i}: <path:kv/data/app#password>\n" for i in range(100_000))
    source = tmp_path / "many.yaml"
    source.write_text(f"kind: Secret\nmetadata: {{name: s}}\nstringData:\n{lines}")
    run = run_plugin(["generate", str(source)], env)
    assert run.code == 0, run.stderr[-500:]
    assert run.stdout.count(CANARY) == 100_000  # speed: bench/bench_engine.py
    # a hundred thousand failures: the message stays short (Argo CD shows and caches it)
    broken = lines.replace("#password>", "#password | nope>")
    source.write_text(f"kind: Secret\nmetadata: {{name: s}}\nstringData:\n{broken}")
    failed = run_plugin(["generate", str(source)], env)
    assert_failed_cleanly(failed, "100000 placeholders could not be resolved:", "… and 99900 more")
    assert len(failed.stderr) < 30_000


# ------------------------------------------------------------------------------ modifiers


def test_jsonpath_that_would_run_for_ever_is_stopped() -> None:
    data: Any = "x"
    for _ in range(8):
        data = {"a": data, "b": data}
    template = "{range ..}" * 20 + "x" + "{end}" * 20
    with pytest.raises(JSONPathError, match="too much work"):
        execute(template, data)
    with pytest.raises(ModifierError, match="too much work"):
        apply("jsonPath", (template,), data)


def test_jsonpath_output_is_bounded() -> None:
    data = {"a": "x" * (4 * MiB)}
    with pytest.raises(JSONPathError, match="output is larger"):
        execute("{.a}{.a}{.a}{.a}{.a}", data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "recursive"),
        ("x: &x {y: *x}\n", "recursive"),
        (
            "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "more than 1000000 nodes",
        ),
    ],
)
def test_yaml_parse_refuses_recursive_values_and_alias_bombs(text: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(ModifierError, match=message):
        apply("yamlParse", (), text)
    assert time.monotonic() - started < 5


def test_yaml_parse_keeps_harmless_aliases() -> None:
    assert apply("yamlParse", (), "a: &a {x: 1}\nb: *a\n") == {"a": {"x": 1}, "b": {"x": 1}}


# ------------------------------------------------------------------------------ values as data

HOSTILE_VALUES = [
    "<path:kv/data/app#password>",
    "<password>",
    "a: b\n- c\n",
    "&x *x",
    "!!python/object/apply:os.system ['id']",
    "{{ .Values.password }}",
    "---\n...\n",
    "'\"\\",
    "key: [unclosed",
    "# not a comment",
    "yes",
    "0x1F",
    "null",
    "  leading and trailing  ",
    "\t\u2028\u00e9\U0001f600",
]


def _hostile_backend() -> FileBackend:
    return FileBackend(
        {f"kv/v{i}": {"v": value} for i, value in enumerate(HOSTILE_VALUES)}, "hostile"
    )


def test_secret_values_with_placeholders_or_yaml_syntax_land_as_plain_text() -> None:
    fields = "".join(
        f"  f{i}: <path:kv/v{i}#v>\n  g{i}: x<path:kv/v{i}#v>\n" for i in range(len(HOSTILE_VALUES))
    )
    text = f"kind: ConfigMap\nmetadata: {{name: c}}\ndata:\n{fields}"
    output = generate(
        [InputStream("t.yaml", text)], EngineOptions(skip_non_manifests=False), _hostile_backend
    )
    [document] = [doc for doc in load_all(output) if doc is not None]
    for i, value in enumerate(HOSTILE_VALUES):
        assert document["data"][f"f{i}"] == value
        assert document["data"][f"g{i}"] == "x" + value


def test_values_phase_keeps_hostile_values_as_strings() -> None:
    """Two-phase secrets: the resolved values file Helm reads holds the same strings."""
    shared = SharedReads(_hostile_backend, Rules(), time.monotonic() + 10)
    items = [("values.yaml", {f"k{i}": f"<path:kv/v{i}#v>" for i in range(len(HOSTILE_VALUES))})]
    [resolved] = shared.resolve_values(items)
    assert load_one(dump(resolved)) == {f"k{i}": v for i, v in enumerate(HOSTILE_VALUES)}


# ------------------------------------------------------------------------------ paths


def test_plain_directory_refuses_symlinked_files_leading_outside(
    tmp_path: Path, env: dict[str, str]
) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text(f"kind: ConfigMap\nmetadata: {{name: stolen}}\ndata: {{x: {CANARY}}}\n")
    repo = tmp_path / "repo"
    app = repo / "apps" / "web"
    app.mkdir(parents=True)
    (repo / ".git").mkdir()
    (app / "a.yaml").write_text("kind: ConfigMap\nmetadata: {name: a}\n")
    (repo / "shared.yaml").write_text("kind: ConfigMap\nmetadata: {name: shared}\n")
    os.symlink(repo / "shared.yaml", app / "shared.yaml")  # inside the repository: fine
    ok = run_plugin(["generate", str(app)], env)
    assert ok.code == 0, ok.stderr
    assert "name: shared" in ok.stdout
    os.symlink(outside, app / "link.yaml")
    run = run_plugin(["generate", str(app)], env)
    assert_failed_cleanly(run, "link.yaml is a symlink leading outside the repository; refused")
    os.symlink("/etc/passwd", app / "passwd.yaml")
    (app / "link.yaml").unlink()
    run = run_plugin(["generate", str(app)], env)
    assert_failed_cleanly(run, "passwd.yaml is a symlink leading outside the repository")
    assert "root:" not in run.stderr


def test_symlinked_directories_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.yaml").write_text("kind: ConfigMap\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "a.yaml").write_text("kind: ConfigMap\n")
    os.symlink(outside, app / "linked")
    assert reader.discover(app) == [app / "a.yaml"]


def test_chart_copies_refuse_symlinks_leading_outside(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text(CANARY)
    repo = tmp_path / "repo"
    (repo / "chart" / "files").mkdir(parents=True)
    os.symlink(outside, repo / "chart" / "files" / "token.txt")
    with pytest.raises(RenderError, match=r"symlink files/token.txt points outside the repository"):
        copy_tree(repo / "chart", tmp_path / "copy", repo)


def test_parameters_never_read_values_outside_the_repository(tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text(f"stolen: {CANARY}\n")
    repo = tmp_path / "repo"
    chart = repo / "chart"
    chart.mkdir(parents=True)
    (repo / ".git").mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    os.symlink(outside, chart / "values.yaml")
    run = run_plugin(["parameters", str(chart)], clean_environment({}))
    assert run.code == 0
    assert json.loads(run.stdout)[0]["map"] == {}
    assert CANARY not in run.stdout + run.stderr


def test_kustomize_keeps_its_load_restrictor() -> None:
    argv = kustomize.kustomize_command(["kustomize", "build"], Path("."), True, "/bin/helm")
    assert not any("load-restrictor" in arg or "LoadRestrictionsNone" in arg for arg in argv)


# ------------------------------------------------------------------------------ fuzzing

_TEXT_PIECES = st.sampled_from(
    [
        "<path:kv/data/app#password>",
        "<path:kv/data/app#n>",
        "<path:kv/data/app#password | base64encode>",
        "<path:kv/data/app#password | jsonPath {.a}>",
        "<path:kv/data/app#n | default 3 | sha256sum>",
        "<path:kv/data/missing#k | default x>",
        "<path:kv/data/../x#k>",
        "<path:#>",
        "<path:kv/data/app#password | indent>",
        "<password>",
        "<n>",
        "<",
        ">",
        "|",
        "#",
        "<path:",
        "{..}",
        "${x}",
        "\\",
        "\n",
        "",
    ]
)
_STRINGS = st.one_of(
    st.text(max_size=20),
    st.lists(st.one_of(_TEXT_PIECES, st.text(max_size=5)), max_size=6).map("".join),
)
_SCALARS = st.one_of(_STRINGS, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
_NODES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_STRINGS, children, max_size=4),
    ),
    max_leaves=25,
)
_ANNOTATIONS = st.dictionaries(
    st.sampled_from(
        [
            "avp.kubernetes.io/path",
            "avp.kubernetes.io/ignore",
            "avp.kubernetes.io/kv-version",
            "avp.kubernetes.io/secret-version",
            "avp.kubernetes.io/remove-missing",
            "avp.kubernetes.io/replace-keys",
        ]
    ),
    st.one_of(_STRINGS, st.sampled_from(["kv/data/app", "true", "false", "1", "2"])),
    max_size=4,
)
_DOCUMENTS = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["Secret", "ConfigMap", "Deployment", ""]),
        "metadata": st.fixed_dictionaries({"name": _STRINGS, "annotations": _ANNOTATIONS}),
        "data": _NODES,
        "spec": _NODES,
    }
)
_FUZZ_SECRETS = {
    "kv/data/app": {"password": CANARY, "n": 1, "a": {"a": "b"}},
    "kv/data/other": {"k": "v"},
}


def _refuse_dotdot(path: str) -> str | None:
    return "refused" if ".." in path else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=st.lists(_DOCUMENTS, min_size=1, max_size=3), as_json=st.booleans())
def test_walker_fuzz_raises_only_project_errors(
    documents: list[dict[str, Any]], as_json: bool
) -> None:
    if as_json:
        text = "\n".join(json.dumps(doc) for doc in documents)
    else:
        text = yaml.safe_dump_all(documents)
    rules = Rules(path_check=_refuse_dotdot, redactor=Redactor())
    try:
        parsed = load([InputStream("fuzz.yaml", text)], skip_non_manifests=True)
        outcome = resolve(
            parsed,
            EngineOptions(rules=rules),
            lambda: FileBackend(_FUZZ_SECRETS, "fuzz"),
        )
        for site in outcome.sites:
            assert CANARY not in site.message()
    except PluginError:
        pass


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="kind:Secret{}[]&*!|>-#'\"\n <path:a#b>", max_size=200))
def test_random_yaml_text_raises_only_input_errors(text: str) -> None:
    with contextlib.suppress(PluginError):
        generate(
            [InputStream("fuzz.yaml", text)],
            EngineOptions(skip_non_manifests=True),
            lambda: FileBackend(_FUZZ_SECRETS, "fuzz"),
        )


def test_invalid_utf8_in_a_file_is_a_clean_error(tmp_path: Path, env: dict[str, str]) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "a.yaml").write_bytes(b"kind: ConfigMap\ndata: {x: \xff\xfe}\n")
    run = run_plugin(["generate", str(app)], env)
    assert_failed_cleanly(run, "a.yaml is not valid UTF-8 (byte 26)")


def test_nul_byte_in_a_file_is_a_clean_error(tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "a.yaml"
    source.write_bytes(b"kind: Secret\nstringData: {p: <path:kv/data/app#password>}\x00\n")
    run = run_plugin(["generate", str(source)], env)
    assert_failed_cleanly(run, "NUL")


def test_input_error_types() -> None:
    with pytest.raises(InputError):
        load([InputStream("x", "a: [\n")], skip_non_manifests=False)


def test_a_secret_in_metadata_name_never_reaches_later_messages() -> None:
    text = (
        "kind: Secret\nmetadata:\n  name: <path:kv/data/app#password>\n"
        "stringData:\n  a: <path:kv/data/app#missing>\n"
    )
    secrets = {"kv/data/app": {"password": CANARY}}
    with pytest.raises(PluginError) as info:
        generate(
            [InputStream("t.yaml", text)],
            EngineOptions(skip_non_manifests=False),
            lambda: FileBackend(secrets, "t"),
        )
    assert "t.yaml (document 1, Secret/<path:kv/data/app#password>)" in str(info.value)
    assert CANARY not in str(info.value)


def test_the_values_phase_login_is_bounded_by_the_deadline() -> None:
    calls: list[str] = []

    class Recorder(FileBackend):
        def set_deadline(self, deadline: float) -> None:
            calls.append("deadline")

        def login(self) -> None:
            calls.append("login")

    shared = SharedReads(lambda: Recorder({}, "t"), Rules(), time.monotonic() + 5)
    shared.backend()
    assert calls == ["deadline", "login"]
