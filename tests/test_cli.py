"""The command line through a real subprocess: exit codes, all-or-nothing output, check."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin import __version__, cli
from tests.conformance import clean_environment, run_plugin

CANARY = "canary-Zq8vX2"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"app:\n  user: {CANARY}\n  port: 80\n")
    return clean_environment({"AVP_TYPE": "file", "AVP_FILE_PATH": str(secrets)})


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_version() -> None:
    run = run_plugin(["version"], clean_environment({}))
    assert run.code == 0
    assert run.stdout.strip() == f"plugin {__version__}"


def test_version_flag() -> None:
    run = run_plugin(["--version"], clean_environment({}))
    assert run.code == 0
    assert run.stdout.strip() == f"plugin {__version__}"


def test_help_names_the_main_settings_and_the_reference() -> None:
    run = run_plugin(["--help"], clean_environment({}))
    assert run.code == 0
    for name in ("AVP_TYPE", "AVP_FILE_PATH", "VAULT_ADDR", "RESOLVE_VALUES", "--verbose"):
        assert name in run.stdout
    assert "docs/configuration.md" in run.stdout


def test_usage_error_exit_2() -> None:
    run = run_plugin(["generate", "--nope"], clean_environment({}))
    assert run.code == 2
    assert run.stderr.startswith("Error: ")


def test_generate_file(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, "a.yaml", "kind: X\nspec:\n  u: <path:app#user>\n")
    run = run_plugin(["generate", str(path)], env)
    assert run.code == 0, run.stderr
    assert f"u: {CANARY}" in run.stdout


def test_generate_stdin(env: dict[str, str]) -> None:
    run = run_plugin(["generate", "-"], env, stdin=b"kind: X\nspec:\n  p: <path:app#port>\n")
    assert run.code == 0
    assert "p: 80" in run.stdout


def test_failure_prints_nothing_and_never_the_secret(tmp_path: Path, env: dict[str, str]) -> None:
    write(tmp_path, "a.yaml", "kind: X\nmetadata: {name: ok}\nspec:\n  u: <path:app#user>\n")
    write(
        tmp_path, "b.yaml", "kind: X\nmetadata: {name: bad}\nspec:\n  u: <path:app#user | nope>\n"
    )
    run = run_plugin(["generate", str(tmp_path), "--verbose"], env)
    assert run.code == 1
    assert run.stdout == ""
    assert "b.yaml (document 1, X/bad): spec.u: <path:app#user | nope>" in run.stderr
    assert CANARY not in run.stderr
    assert "Traceback" not in run.stderr


def test_verbose_sensitive_output_is_accepted_and_hides_values(
    tmp_path: Path, env: dict[str, str]
) -> None:
    path = write(tmp_path, "a.yaml", "kind: X\nspec:\n  u: <path:app#user>\n")
    run = run_plugin(["generate", str(path), "--verbose-sensitive-output"], env)
    assert run.code == 0
    assert "values are never printed" in run.stderr
    assert CANARY not in run.stderr


def test_missing_backend_configuration_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "kind: X\nspec:\n  u: <path:app#user>\n")
    run = run_plugin(["generate", str(path)], clean_environment({"AVP_TYPE": "nope"}))
    assert run.code == 1
    assert "AVP_TYPE" in run.stderr
    assert "environment variable AVP_TYPE" in run.stderr


def test_argocd_env_wins_over_process_env(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, "a.yaml", "kind: X\nspec:\n  u: <path:app#user>\n")
    run = run_plugin(
        ["generate", str(path)], {**env, "AVP_TYPE": "bogus", "ARGOCD_ENV_AVP_TYPE": "file"}
    )
    assert run.code == 0, run.stderr


def test_invalid_path_validation_regex(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, "a.yaml", "kind: X\n")
    run = run_plugin(["generate", str(path)], {**env, "AVP_PATH_VALIDATION": "(unclosed"})
    assert run.code == 1
    assert "AVP_PATH_VALIDATION" in run.stderr


def test_check_table_and_json(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(
        tmp_path,
        "a.yaml",
        "kind: X\nmetadata: {name: n}\nspec:\n  a: <path:app#user>\n  b: <path:app#none>\n"
        "  c: <path:gone#k>\n",
    )
    table = run_plugin(["check", str(path)], env)
    assert table.code == 1
    assert CANARY not in table.stdout + table.stderr
    assert "missing key" in table.stdout
    assert "missing path" in table.stdout
    assert "3 placeholders, 1 ok, 2 failed" in table.stdout
    report = run_plugin(["check", str(path), "--output", "json"], env)
    data = json.loads(report.stdout)
    assert [row["status"] for row in data["placeholders"]] == ["ok", "missing key", "missing path"]
    assert data["failed"] == 2


def test_check_success_exit_0(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, "a.yaml", "kind: X\nspec:\n  a: <path:app#user>\n")
    run = run_plugin(["check", str(path)], env)
    assert run.code == 0
    assert CANARY not in run.stdout


def test_invalid_utf8_on_stdin_is_a_clean_error(env: dict[str, str]) -> None:
    run = run_plugin(["generate", "-"], env, stdin=b"kind: X\nspec:\n  a: '\xff<path:app#user>'\n")
    assert run.code == 1
    assert run.stdout == ""
    assert "<stdin> is not valid UTF-8 (byte 20)" in run.stderr


def test_outside_a_git_checkout_errors_name_the_assumed_repository_root(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    (repo / "clusters").mkdir(parents=True)
    (repo / "clusters" / "dev.yaml").write_text("name: dev\n")
    app = repo / "apps" / "web"
    app.mkdir(parents=True)
    (app / "cm.yaml.j2").write_text("kind: ConfigMap\nmetadata:\n  name: {{ name }}\n")
    env = {**env, "ARGOCD_ENV_CONTEXT_FILES": "/clusters/dev.yaml"}
    run = run_plugin(["generate", str(app)], env)
    assert run.code == 1
    assert f"repository root assumed: {app}" in run.stderr
    assert "ARGOCD_APP_SOURCE_PATH" in run.stderr
    env["ARGOCD_APP_SOURCE_PATH"] = "apps/web"
    fixed = run_plugin(["generate", str(app)], env)
    assert fixed.code == 0, fixed.stderr
    assert "name: dev" in fixed.stdout


def test_a_plain_directory_with_chart_templates_says_so(
    tmp_path: Path, env: dict[str, str]
) -> None:
    app = tmp_path / "app"
    (app / "templates").mkdir(parents=True)
    (app / "templates" / "cm.yaml").write_text(
        "kind: ConfigMap\nmetadata:\n  name: x\ndata:\n  v: '{{ .Values.v }}'\n"
    )
    run = run_plugin(["generate", str(app)], env)
    assert "read as a plain directory" in run.stderr
    assert "templates/cm.yaml holds Helm template syntax" in run.stderr
    assert "Chart.yaml" in run.stderr


def test_a_values_file_with_an_escaped_placeholder_is_resolved_before_helm(
    tmp_path: Path, env: dict[str, str], helm3_bin: str
) -> None:
    """`"\\x3cpath:...>"` in values.yaml is a placeholder once decoded, as AVP reads YAML:
    with RESOLVE_VALUES, Helm gets its value (here only its base64 reaches the output)."""
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "kind: ConfigMap\nmetadata:\n  name: x\ndata:\n  v: {{ .Values.v | b64enc }}\n"
    )
    (chart / "values.yaml").write_text('v: "\\x3cpath:app#user>"\n')
    settings = {"HELM_BIN": helm3_bin, "ARGOCD_ENV_RESOLVE_VALUES": "true"}
    run = run_plugin(["generate", str(chart)], {**env, **settings, "HOME": str(tmp_path)})
    assert run.code == 0, run.stderr
    assert f"v: {base64.b64encode(CANARY.encode()).decode()}" in run.stdout


UNTERMINATED = (
    "kind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: x-<path:app#user\n  b: <path:app#user>\n"
)


def test_an_unterminated_placeholder_warns_and_is_left_as_text(
    tmp_path: Path, env: dict[str, str]
) -> None:
    path = write(tmp_path, "cm.yaml", UNTERMINATED)
    run = run_plugin(["generate", str(path)], env)
    assert run.code == 0, run.stderr
    assert "data.a: <path:app#user: unterminated placeholder" in run.stderr
    assert "a: x-<path:app#user" in run.stdout


def test_an_unterminated_placeholder_fails_with_plugin_strict(
    tmp_path: Path, env: dict[str, str]
) -> None:
    path = write(tmp_path, "cm.yaml", UNTERMINATED)
    run = run_plugin(["generate", str(path)], {**env, "PLUGIN_STRICT": "true"})
    assert run.code == 1
    assert run.stdout == ""
    assert "PLUGIN_STRICT=true" in run.stderr
    assert "data.a" in run.stderr


def test_check_reports_an_unterminated_placeholder(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, "cm.yaml", UNTERMINATED)
    run = run_plugin(["check", str(path)], env)
    assert run.code == 0
    assert "unterminated placeholder" in run.stdout
    assert "1 unterminated" in run.stdout


def test_remove_missing_logs_each_removed_key_in_verbose(
    tmp_path: Path, env: dict[str, str]
) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        "kind: Secret\nmetadata:\n  name: s\n  annotations:\n"
        "    avp.kubernetes.io/remove-missing: 'true'\n"
        "stringData:\n  gone: <path:app#nope>\n  kept: <path:app#user>\n",
    )
    run = run_plugin(["generate", "--verbose", str(path)], env)
    assert run.code == 0, run.stderr
    assert "stringData.gone removed: <path:app#nope> has no value" in run.stderr
    assert "avp.kubernetes.io/remove-missing" in run.stderr
    assert CANARY not in run.stderr
    assert "gone" not in run.stdout


def test_the_deadline_of_a_long_lived_host_counts_from_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A test session or embedding program calling main() is older than any interpreter start:
    its age must not be taken off the render deadline (it once made every in-process render
    time out at once)."""
    monkeypatch.setattr(cli, "_LONG_LIVED", 0.0)
    before = time.monotonic()
    assert cli.process_started() >= before


def test_a_fresh_process_counts_its_deadline_from_its_start() -> None:
    """Argo CD's clock started before the interpreter: the time the process lived before
    main() (here a sleep standing for a slow start) is taken off the render deadline."""
    code = (
        "import time\n"
        "time.sleep(0.5)\n"
        "from plugin import cli\n"
        "print(time.monotonic() - cli.process_started())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        check=True,
    )
    age = float(done.stdout)
    assert 0.4 <= age < cli._LONG_LIVED


def test_the_parser_is_built_once_per_process() -> None:
    """The zygote builds it once for all its workers (gettext and terminal-size lookups)."""
    assert cli.build_parser() is cli.build_parser()


#: Libraries that only some stages need (issue 14 §2): a command loads them when such a stage
#: runs, never at start-up.
STAGE_LIBRARIES = ("yaml", "jinja2", "hvac", "requests")

#: The console script's entry, run in a fresh interpreter with the zygote off; at exit (after
#: argparse's own SystemExit for --help too) the stage libraries loaded go to the first argument.
LOADED_AT_EXIT = f"""
import atexit, json, sys
out, sys.argv = sys.argv[1], ["plugin", *sys.argv[2:]]
def record():
    loaded = sorted(name for name in {STAGE_LIBRARIES!r} if name in sys.modules)
    with open(out, "w") as handle:
        json.dump(loaded, handle)
atexit.register(record)
from plugin.__main__ import main
sys.exit(main())
"""


def stage_libraries_loaded(tmp_path: Path, *argv: str, **extra: str) -> tuple[list[str], str]:
    """The stage libraries a run of `plugin *argv` in its own interpreter loaded, and stdout."""
    out = tmp_path / "loaded.json"
    env = clean_environment(
        {
            "PLUGIN_SERVE": "off",
            "PLUGIN_SERVE_SOCKET": str(tmp_path / "run" / "serve.sock"),
            "PLUGIN_CACHE_DIR": str(tmp_path / "cache"),
            "HOME": str(tmp_path),
            **extra,
        }
    )
    run = run_plugin(argv, env, entry=("-c", LOADED_AT_EXIT, str(out)))
    assert out.is_file(), run.stderr
    return json.loads(out.read_text()), run.stdout


@pytest.mark.parametrize(
    "argv", [("version",), ("--version",), ("--help",), ("serve", "--status")], ids=" ".join
)
def test_commands_that_render_nothing_load_no_stage_library(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    loaded, stdout = stage_libraries_loaded(tmp_path, *argv)
    assert stdout or argv == ("serve", "--status")  # the command did run
    assert loaded == []


def test_a_file_copied_through_loads_no_stage_library(tmp_path: Path) -> None:
    """No placeholder, Vault configured: nothing is parsed, emitted again or read."""
    path = write(tmp_path, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    vault = {"AVP_TYPE": "vault", "AVP_AUTH_TYPE": "token", "VAULT_ADDR": "http://127.0.0.1:9"}
    loaded, stdout = stage_libraries_loaded(tmp_path, "generate", str(path), **vault)
    assert stdout == path.read_text()
    assert loaded == []


def test_yaml_is_loaded_when_a_stage_parses_yaml(tmp_path: Path, env: dict[str, str]) -> None:
    """The counterpart: a placeholder to substitute, or a YAML configuration file."""
    path = write(tmp_path, "cm.yaml", "kind: ConfigMap\ndata:\n  u: <path:app#user>\n")
    files = {"AVP_TYPE": "file", "AVP_FILE_PATH": env["AVP_FILE_PATH"]}
    loaded, stdout = stage_libraries_loaded(tmp_path, "generate", str(path), **files)
    assert CANARY in stdout
    assert loaded == ["yaml"]
    plain = write(tmp_path, "plain.yaml", "kind: ConfigMap\ndata:\n  u: x\n")
    config = write(tmp_path, "config.yaml", "AVP_TYPE: file\n")
    loaded, stdout = stage_libraries_loaded(tmp_path, "generate", "-c", str(config), str(plain))
    assert stdout == plain.read_text()
    assert loaded == ["yaml"]


@pytest.mark.parametrize("fails", [False, True], ids=["rendered", "failed"])
def test_scratch_left_by_a_killed_render_is_swept_after_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """The sweep tidies up after the render instead of delaying it: when the manifests are
    out and the status reported (the zygote's client may exit then), a killed render's
    directory is still there; when main() returns it is gone, also after a failed render."""
    import tempfile

    from plugin.render import scratch

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    dead = temp / f"{scratch.PREFIX}dead"  # unlocked: its render was SIGKILLed
    dead.mkdir()
    app = tmp_path / "app"
    app.mkdir()
    text = "kind: X\nmetadata:\n  name: <path:app#user>\n"
    (app / "a.yaml").write_text(text.replace("app#user", "app#missing") if fails else text)
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("app:\n  user: u\n")
    for name, value in clean_environment(
        {"AVP_TYPE": "file", "AVP_FILE_PATH": str(secrets), "PLUGIN_CACHE_DIR": str(tmp_path)}
    ).items():
        monkeypatch.setenv(name, value)
    seen: list[bool] = []
    code = cli.main(["generate", str(app)], report=lambda code: seen.append(dead.exists()))
    assert code == (1 if fails else 0)
    assert seen == ([] if fails else [True])
    assert not dead.exists()
