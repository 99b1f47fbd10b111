"""The redaction guarantee: every fetched value, in every encoding, is kept off stderr and logs.

Unit tests of `plugin.security.redact`, then whole runs: a fake `helm` that echoes the resolved
values (raw, base64, URL-encoded, JSON-escaped) on its stderr, the CLI's own logs and a stray write
to stderr from anywhere in the process.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import stat
import sys
import urllib.parse
import warnings
from pathlib import Path

import pytest

from plugin import cli
from plugin.security.redact import (
    MIN_LENGTH,
    REPLACEMENT,
    RedactingFormatter,
    RedactingStream,
    Redactor,
)
from tests.conformance import clean_environment, run_plugin

CANARY = "canary-Vx9\"q/w+e&r=t y'u"
CANARY_LINE2 = "second-line-canary-Lp4"
MULTI = f"-----BEGIN KEY-----\n{CANARY_LINE2}\n-----END KEY-----\n"


def encodings(value: str) -> list[str]:
    """The forms a secret may take in a message: all must be absent after a failure."""
    data = value.encode()
    return [
        value,
        base64.b64encode(data).decode(),
        base64.b64encode(data).decode().rstrip("="),
        base64.urlsafe_b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1]
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e"),
        urllib.parse.quote(value),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
    ]


def assert_no_canary(text: str, *values: str) -> None:
    for value in values or (CANARY, CANARY_LINE2):
        for form in encodings(value):
            assert form not in text, "a secret form leaked"


# ------------------------------------------------------------------------------ unit


def test_every_form_is_redacted() -> None:
    redactor = Redactor([CANARY])
    for form in encodings(CANARY):
        assert redactor.clean(f"before {form} after") == f"before {REPLACEMENT} after"
    assert redactor.clean("it''s " + CANARY.replace("'", "''")) == "it''s " + REPLACEMENT


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:", b"a much longer prefix: "])
def test_base64_of_a_longer_text_is_redacted(prefix: bytes) -> None:
    """`user:password` in a basic-auth header, or a value inside a base64 Secret payload."""
    redactor = Redactor([CANARY])
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        blob = encode(prefix + CANARY.encode() + b" trailing").decode()
        assert redactor.leaks(blob)
        cleaned = redactor.clean(blob)
        assert REPLACEMENT in cleaned
        for form in encodings(CANARY):
            assert form not in cleaned


def test_multi_line_values_are_redacted_line_by_line() -> None:
    redactor = Redactor([MULTI])
    text = f"Error: bad key at line 2: {CANARY_LINE2}\n  {CANARY_LINE2}  \n"
    assert CANARY_LINE2 not in redactor.clean(text)
    assert redactor.clean(MULTI) == REPLACEMENT


def test_short_values_are_not_redacted() -> None:
    redactor = Redactor(["abc", "ab", "", "   ", 80, True, None, 1.5])
    text = "abc ab 80 True 1.5 None"
    assert redactor.clean(text) == text
    assert MIN_LENGTH == 4
    assert Redactor(["abcd"]).clean("xabcdx") == f"x{REPLACEMENT}x"


def test_numbers_and_containers() -> None:
    redactor = Redactor([{"password": "hunter2-secret", "port": 65432, "tags": ["tag-one"]}])
    assert redactor.clean("port 65432") == f"port {REPLACEMENT}"
    assert redactor.clean("tag-one hunter2-secret") == f"{REPLACEMENT} {REPLACEMENT}"
    # key names are not secrets
    assert redactor.clean("key 'password' not found") == "key 'password' not found"
    compact = json.dumps({"password": "x-secret-x"}, separators=(",", ":"))
    assert REPLACEMENT in Redactor([{"password": "x-secret-x"}]).clean(compact)


def test_longest_form_wins_and_overlaps() -> None:
    redactor = Redactor(["secret", "secret-longer"])
    assert redactor.clean("a secret-longer b secret c") == (f"a {REPLACEMENT} b {REPLACEMENT} c")


def test_public_placeholder_text_is_kept_whole() -> None:
    """A secret equal to a common word does not garble the placeholder an error names."""
    redactor = Redactor(["string"])
    redactor.add_public("<path:kv/app#string>")
    text = "stringData.x: <path:kv/app#string>: missing key: key 'string' not found"
    assert redactor.clean(text) == (
        f"{REPLACEMENT}Data.x: <path:kv/app#string>: missing key: key '{REPLACEMENT}' not found"
    )


def test_public_text_never_shields_a_secret_running_past_it() -> None:
    redactor = Redactor(["#string>SECRET-TAIL"])
    redactor.add_public("<path:kv/app#string>")
    assert redactor.clean("x <path:kv/app#string>SECRET-TAIL y") == f"x <path:kv/app{REPLACEMENT} y"
    redactor = Redactor(["<path:kv/app#string>-and-more"])
    redactor.add_public("<path:kv/app#string>")
    assert redactor.clean("<path:kv/app#string>-and-more") == REPLACEMENT


def test_cleaning_with_many_secrets_keeps_public_text() -> None:
    # Speed with many secrets is measured in bench/, not here.
    redactor = Redactor(f"secret-value-number-{n:05d}" for n in range(5000))
    text = "a line of an error message naming kv/data/app and a field\n" * 200
    assert redactor.clean(text) == text
    assert redactor.clean(text + "secret-value-number-04999") == text + "<redacted>"


def test_stream_redacts_values_split_across_writes() -> None:
    target = io.StringIO()
    stream = RedactingStream(target, Redactor([CANARY]))
    half = len(CANARY) // 2
    stream.write("Error: " + CANARY[:half])
    stream.write(CANARY[half:] + " end\nnext ")
    assert target.getvalue() == f"Error: {REPLACEMENT} end\n"
    stream.write(CANARY)
    stream.flush()
    assert target.getvalue() == f"Error: {REPLACEMENT} end\nnext {REPLACEMENT}"


def test_formatter_redacts_arguments_and_tracebacks() -> None:
    redactor = Redactor([CANARY])
    formatter = RedactingFormatter(redactor, "%(message)s")
    try:
        raise ValueError(CANARY)
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "value %s", (CANARY,), sys.exc_info()
        )
    text = formatter.format(record)
    assert "ValueError" in text
    assert_no_canary(text, CANARY)


# ------------------------------------------------------------------------------ whole runs


FAKE_HELM = """#!/bin/sh
# A stand-in for helm that fails after echoing every values file it was given, raw and encoded
# (as Helm does in some errors), plus a plain line.
echo "Error: template: demo/templates/x.yaml:1:3: executing: bad value" >&2
for arg in "$@"; do
  case "$arg" in
    --values=*)
      cat "${arg#--values=}" values.yaml >&2
      base64 -w0 "${arg#--values=}" >&2; echo >&2
      ;;
  esac
done
python3 - "$@" >&2 <<'PY'
import sys, urllib.parse, json, yaml
args = sys.argv[1:]
for a in args:
    if a.startswith("--values="):
        data = yaml.safe_load(open(a.removeprefix("--values="))) or {}
        for v in data.values():
            if isinstance(v, str):
                print("url:", urllib.parse.quote_plus(v), "json:", json.dumps(v))
PY
exit 1
"""


@pytest.fixture
def fake_helm_env(tmp_path: Path) -> dict[str, str]:
    helm = tmp_path / "bin" / "helm"
    helm.parent.mkdir()
    helm.write_text(FAKE_HELM)
    helm.chmod(helm.stat().st_mode | stat.S_IXUSR)
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(json.dumps({"kv/data/app": {"password": CANARY, "key": MULTI}}))
    return clean_environment(
        {
            "AVP_TYPE": "file",
            "AVP_FILE_PATH": str(secrets),
            "HELM_BIN": str(helm),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            # The fake helm runs the test's Python, which the renderer sandbox does not grant.
            "PLUGIN_SANDBOX": "off",
        }
    )


def chart(tmp_path: Path) -> Path:
    app = tmp_path / "chart"
    (app / "templates").mkdir(parents=True)
    (app / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (app / "values.yaml").write_text(
        "password: <path:kv/data/app#password>\nkey: <path:kv/data/app#key>\n"
    )
    (app / "templates" / "x.yaml").write_text("kind: ConfigMap\n")
    return app


def test_helm_echoing_resolved_values_is_redacted(
    tmp_path: Path, fake_helm_env: dict[str, str]
) -> None:
    app = chart(tmp_path)
    env = {
        **fake_helm_env,
        "ARGOCD_ENV_RESOLVE_VALUES": "true",
        "ARGOCD_ENV_HELM_VALUES": "inline: <path:kv/data/app#password>\n",
    }
    run = run_plugin(["generate", str(app), "--verbose"], env)
    assert run.code == 1
    assert run.stdout == ""
    assert "helm template failed (exit status 1)" in run.stderr
    # Secrets were resolved into the values: only the error class and location are shown.
    assert "template error at demo/templates/x.yaml:1:3" in run.stderr
    assert "message withheld" in run.stderr
    assert "bad value" not in run.stderr
    assert_no_canary(run.stderr)


def test_a_stray_write_anywhere_is_redacted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Log records of other libraries, Python warnings, raw writes and the final error."""
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(json.dumps({"kv/data/app": {"password": CANARY}}))
    source = tmp_path / "a.yaml"
    source.write_text(
        "kind: Secret\nmetadata: {name: s}\nstringData:\n  p: <path:kv/data/app#password>\n"
    )
    for key in [k for k in os.environ if k.startswith(("AVP_", "ARGOCD_ENV_", "VAULT_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AVP_TYPE", "file")
    monkeypatch.setenv("AVP_FILE_PATH", str(secrets))

    def leaky_write(outcome: object, out: object) -> None:
        logging.getLogger("urllib3.connectionpool").warning("retrying with %s", CANARY)
        logging.getLogger("plugin.placeholders.engine").warning("value %s", CANARY)
        warnings.warn(f"insecure {CANARY}", UserWarning, stacklevel=1)
        sys.stderr.write(f"raw {base64.b64encode(CANARY.encode()).decode()}\n")
        print(urllib.parse.quote(CANARY), file=sys.stderr)
        raise RuntimeError(CANARY)

    monkeypatch.setattr(cli, "write", leaky_write)
    try:
        code = cli.main(["generate", str(source), "--verbose"])
    finally:
        logging.captureWarnings(False)
        logging.getLogger().handlers.clear()
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "internal error (RuntimeError)" in captured.err
    assert captured.err.count(REPLACEMENT) >= 5
    assert_no_canary(captured.err, CANARY)


def test_check_output_is_redacted(tmp_path: Path) -> None:
    """`plugin check` prints details (Vault's error strings, modifier errors): redacted too."""
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(json.dumps({"kv/data/app": {"json": '{"a": "' + CANARY_LINE2 + '"'}}))
    source = tmp_path / "a.yaml"
    source.write_text(
        "kind: Secret\nmetadata: {name: s}\nstringData:\n"
        "  p: <path:kv/data/app#json | jsonPath {.a}>\n"
    )
    env = clean_environment({"AVP_TYPE": "file", "AVP_FILE_PATH": str(secrets)})
    for output in ("table", "json"):
        run = run_plugin(["check", str(source), "-o", output], env)
        assert run.code == 1
        assert "modifier error" in run.stdout
        assert_no_canary(run.stdout + run.stderr, CANARY_LINE2)


def test_credentials_of_the_configuration_are_redacted(tmp_path: Path) -> None:
    token = "s.canary-token-Hd83kq0"
    source = tmp_path / "a.yaml"
    source.write_text("kind: Secret\nmetadata: {name: s}\nstringData:\n  p: <path:kv/app#k>\n")
    env = clean_environment(
        {
            "AVP_TYPE": "vault",
            "AVP_AUTH_TYPE": "token",
            "VAULT_TOKEN": token,
            # the address quotes the token: a mistake an error message would repeat
            "VAULT_ADDR": f"not-a-url-{token}",
        }
    )
    run = run_plugin(["generate", str(source)], env)
    assert run.code == 1 and run.stdout == ""
    assert "VAULT_ADDR must be an http:// or https:// URL" in run.stderr
    assert_no_canary(run.stderr, token)


def test_fields_of_a_json_or_yaml_secret_are_redacted() -> None:
    """A chart printing one field of a structured secret (`fromJson`, `fromYaml`)."""
    redactor = Redactor()
    redactor.add_secret({"sa": '{"type": "service_account", "private_key": "json-leaf-Zt81"}'})
    redactor.add_secret("user: admin\npassword: yaml-leaf-Qp42\nnested:\n  - deep-leaf-Lm07\n")
    for leaf in ("json-leaf-Zt81", "yaml-leaf-Qp42", "deep-leaf-Lm07"):
        assert redactor.clean(f"error: {leaf}!") == f"error: {REPLACEMENT}!"
        encoded = base64.b64encode(leaf.encode()).decode()
        assert REPLACEMENT in redactor.clean(f"x {encoded}")
    # short leaves, keys and plain words stay readable
    assert redactor.clean("admin type private_key") == "admin type private_key"
    # hostile structured secrets: alias bombs and deep nesting are learnt in bounded time
    bomb = "a: &a [x-leaf-bomb1, x-leaf-bomb1]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefghij", "bcdefghijk", strict=True)
    )
    redactor.add_secret(bomb)
    assert redactor.clean("x-leaf-bomb1") == REPLACEMENT
    redactor.add_secret("[" * 100_000)
    redactor.add_secret("{" * 50_000 + "}" * 50_000)
