"""`plugin watch` on the command line: declared by the CLI, loaded only when it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from plugin.cli import build_parser, main
from plugin.config import WatchSettings, watch_settings
from plugin.errors import ConfigError

WATCH_MODULES = (
    "plugin.rotation.watch",
    "plugin.rotation.metrics",
    "plugin.rotation.poll",
    "plugin.rotation.kube",
    "plugin.rotation.lease",
)


def test_generate_never_imports_the_watcher(tmp_path: object) -> None:
    """The render path stays lean: a `generate` run loads none of the watcher's modules."""
    code = (
        "import io, sys, contextlib\n"
        "from plugin import cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    rc = cli.main(['generate', '-'])\n"
        "assert rc == 0, rc\n"
        f"print(sorted(m for m in {WATCH_MODULES!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        capture_output=True,
        text=True,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "PLUGIN_SERVE": "off",
            "AVP_TYPE": "file",
            "AVP_FILE_PATH": "/dev/null",
        },
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_watch_is_a_command_with_once() -> None:
    args = build_parser().parse_args(["watch", "--once"])
    assert args.command == "watch" and args.once


def test_watch_without_an_index_location_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("PLUGIN_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)
    assert main(["watch", "--once"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no reference index" in captured.err


def test_watch_outside_a_pod_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    monkeypatch.setenv("PLUGIN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["watch", "--once"]) == 1
    assert "KUBERNETES_SERVICE_HOST" in capsys.readouterr().err


def test_settings_defaults_and_parsing() -> None:
    assert watch_settings({}) == WatchSettings()
    parsed = watch_settings(
        {
            "PLUGIN_WATCH_INTERVAL": "2m",
            "PLUGIN_WATCH_RATE": "2.5",
            "PLUGIN_WATCH_MAX_BACKOFF": "1h",
            "PLUGIN_WATCH_REFRESH_RETRY": "90s",
            "PLUGIN_WATCH_PORT": "0",
            "PLUGIN_WATCH_BIND": "127.0.0.1",
            "PLUGIN_WATCH_ELECTION": "None",
        }
    )
    assert parsed == WatchSettings(
        interval=120,
        rate=2.5,
        max_backoff=3600,
        refresh_retry=90,
        port=0,
        bind="127.0.0.1",
        election="none",
    )


def test_an_application_cannot_tune_the_watcher() -> None:
    assert watch_settings({"ARGOCD_ENV_PLUGIN_WATCH_RATE": "100000"}).rate == 20.0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PLUGIN_WATCH_INTERVAL", "0.5", "at least 1"),
        ("PLUGIN_WATCH_INTERVAL", "soon", "duration"),
        ("PLUGIN_WATCH_RATE", "0", "positive"),
        ("PLUGIN_WATCH_PORT", "70000", "TCP port"),
        ("PLUGIN_WATCH_PORT", "-1", "at least 0"),
        ("PLUGIN_WATCH_ELECTION", "raft", "lease, none"),
    ],
)
def test_bad_settings_are_refused_naming_them(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        watch_settings({name: value})
    assert name in str(caught.value)
