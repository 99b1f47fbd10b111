"""`plugin.config`: precedence, config files (-c), Kubernetes Secrets (-s / AVP_SECRET).

The Secret tests talk HTTPS to a loopback stand-in of the Kubernetes API's
`GET /api/v1/namespaces/NS/secrets/NAME` (there is no cluster here); everything
else is plain file and environment handling.
"""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin.config import (
    Settings,
    get_duration,
    load_settings,
    parse_duration_seconds,
    parse_secret_name,
    settings_where,
)
from plugin.errors import ConfigError
from tests.integration.test_vault_support import Pki, make_pki

CANARY = "canary-Zq8v-do-not-print"


# --- precedence ----------------------------------------------------------------------------


def test_precedence_argocd_env_then_env_then_file_then_default(tmp_path: Path) -> None:
    config = tmp_path / "avp.yaml"
    config.write_text("AVP_TYPE: file-type\nVAULT_ADDR: http://file\nAVP_KV_VERSION: 1\n")
    env = {"ARGOCD_ENV_AVP_TYPE": "argocd-type", "AVP_TYPE": "env-type", "VAULT_ADDR": "http://env"}
    settings = load_settings(env, str(config), None)
    assert settings.lookup("AVP_TYPE") is not None
    assert settings.get("AVP_TYPE") == "argocd-type"
    assert settings.get("VAULT_ADDR") == "http://env"
    assert settings.get("AVP_KV_VERSION") == "1"
    found = settings.lookup("AVP_KV_VERSION")
    assert found is not None and found.origin == f"config file {config} key AVP_KV_VERSION"
    assert load_settings({}, None, None).get("AVP_KV_VERSION") == "2"


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"AVP_TYPE": "vault"}))
    settings = load_settings({"ARGOCD_ENV_AVP_TYPE": "", "AVP_TYPE": ""}, str(config), None)
    assert settings.get("AVP_TYPE") == "vault"


# --- config files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.yaml", "avp_type: vault\nVAULT_MAX_RETRIES: 3\nAVP_DEBUG: true\nRATIO: 1.5\nX: null\n"),
        ("c.yml", "AVP_TYPE: vault\nvault_max_retries: 3\nAVP_DEBUG: yes\nRATIO: 1.5\n"),
        ("c", "AVP_TYPE: vault\nVAULT_MAX_RETRIES: 3\nAVP_DEBUG: true\nRATIO: 1.5\n"),
        (
            "c.json",
            '{"AVP_TYPE": "vault", "VAULT_MAX_RETRIES": 3, "AVP_DEBUG": true, "RATIO": 1.5}',
        ),
        ("c.toml", 'AVP_TYPE = "vault"\nVAULT_MAX_RETRIES = 3\nAVP_DEBUG = true\nRATIO = 1.5\n'),
        ("c.env", "AVP_TYPE=vault\nexport VAULT_MAX_RETRIES=3\nAVP_DEBUG='true'\n# c\nRATIO=1.5\n"),
    ],
)
def test_config_file_formats_and_non_string_values(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    settings = load_settings({}, str(path), None)
    assert settings.get("AVP_TYPE") == "vault"
    assert settings.get("VAULT_MAX_RETRIES") == "3"
    assert settings.get_int("VAULT_MAX_RETRIES", 0) == 3
    assert settings.get("AVP_DEBUG") == "true"
    assert settings.get("RATIO") == "1.5"
    assert settings.get("X") is None


def test_nested_value_names_key_not_value(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"AVP_ROLE_ID:\n  nested: {CANARY}\n")
    with pytest.raises(ConfigError, match="AVP_ROLE_ID must be a single value") as info:
        load_settings({}, str(path), None)
    assert CANARY not in str(info.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.yaml", f"AVP_SECRET_ID: [{CANARY}\n"),
        ("bad.json", f'{{"AVP_SECRET_ID": "{CANARY}" "x"}}'),
        ("bad.toml", f'AVP_SECRET_ID = "{CANARY}\n'),
        ("bad.env", f"{CANARY}\n"),
    ],
)
def test_parse_errors_never_echo_content(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings({}, str(path), None)
    assert CANARY not in str(info.value)
    assert str(path) in str(info.value)


def test_top_level_must_be_mapping_and_file_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings({}, str(path), None)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({}, str(tmp_path / "missing.yaml"), None)
    other = tmp_path / "c.ini"
    other.write_text("[x]\n")
    with pytest.raises(ConfigError, match=r"unsupported config file type '\.ini'"):
        load_settings({}, str(other), None)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_settings({}, str(empty), None).file_values == {}


# --- durations and helpers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60", 60.0), ("1.5", 1.5), ("30s", 30.0), ("1m", 60.0), ("1m30s", 90.0), ("250ms", 0.25),
     ("1h", 3600.0), ("bad", None), ("", None), ("1x", None), ("s", None)],
)  # fmt: skip
def test_parse_duration_seconds(text: str, seconds: float | None) -> None:
    assert parse_duration_seconds(text) == seconds


def test_get_duration_errors_name_variable_and_origin() -> None:
    settings = Settings(environ={"ARGOCD_ENV_VAULT_CLIENT_TIMEOUT": "soon"})
    with pytest.raises(
        ConfigError, match=r"VAULT_CLIENT_TIMEOUT .*ARGOCD_ENV_VAULT_CLIENT_TIMEOUT"
    ):
        get_duration(settings, "VAULT_CLIENT_TIMEOUT", 60)
    assert get_duration(Settings(environ={}), "VAULT_CLIENT_TIMEOUT", 60) == 60


def test_go_bool_settings_take_go_spellings_only() -> None:
    """AVP's `VAULT_*` flags: strconv.ParseBool's words, trimmed; `yes` names its origin."""
    for text, value in (("true", True), (" T ", True), ("1", True), ("FALSE", False), ("0", False)):
        assert Settings(environ={"FLAG": text}).get_go_bool("FLAG", not value) is value
    assert Settings(environ={}).get_go_bool("FLAG", True) is True
    assert Settings(environ={"FLAG": "yes"}).get_bool("FLAG", False) is True
    with pytest.raises(ConfigError) as info:
        Settings(environ={"ARGOCD_ENV_FLAG": "yes"}).get_go_bool("FLAG", False)
    assert str(info.value) == (
        "FLAG must be true or false, got 'yes' from environment variable ARGOCD_ENV_FLAG"
    )


def test_settings_where_lists_places() -> None:
    text = settings_where(Settings(environ={}, file_values={"A": "1"}, file_origin="X"), "B")
    assert text == "looked in ARGOCD_ENV_B, environment variable B, X key B"
    assert "key" not in settings_where(Settings(environ={}), "B")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("name", ("argocd", "name")), ("ns:name", ("ns", "name")), ("a-b:c.d", ("a-b", "c.d"))],
)
def test_parse_secret_name(text: str, expected: tuple[str, str]) -> None:
    assert parse_secret_name(text) == expected


@pytest.mark.parametrize("text", ["../x", "ns:../x", "NS:x", "ns:", ":x", "a/b"])
def test_parse_secret_name_rejects_bad_names(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_secret_name(text)


# --- Kubernetes Secret ---------------------------------------------------------------------


class KubeAPI:
    """Loopback HTTPS stand-in for the Secret endpoint of the Kubernetes API."""

    def __init__(self, pki: Pki, token: str) -> None:
        self.token = token
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.seen: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api.seen.append(self.path)
                parts = self.path.strip("/").split("/")
                status, body = 404, {"kind": "Status", "code": 404}
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    status, body = 401, {"kind": "Status", "code": 401}
                elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"]:
                    found = api.secrets.get((parts[3], parts[5]))
                    if parts[3] == "forbidden":
                        status, body = 403, {"kind": "Status", "code": 403}
                    elif found is not None:
                        data = {k: base64.b64encode(v.encode()).decode() for k, v in found.items()}
                        status, body = 200, {"kind": "Secret", "data": data}
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def kube(pki: Pki, tmp_path: Path) -> Iterator[tuple[KubeAPI, dict[str, str]]]:
    token_file = tmp_path / "sa-token"
    token_file.write_text(CANARY + "\n")
    api = KubeAPI(pki, CANARY)
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "KUBERNETES_SA_TOKEN_PATH": str(token_file),
        "KUBERNETES_SA_CA_PATH": str(pki.ca_cert),
    }
    yield api, env
    api.stop()


def test_secret_read_with_default_namespace_and_precedence(
    kube: tuple[KubeAPI, dict[str, str]],
) -> None:
    api, env = kube
    api.secrets[("argocd", "avp")] = {
        "AVP_TYPE": "vault",
        "avp_auth_type": "approle",
        "VAULT_ADDR": "http://s",
    }
    settings = load_settings({**env, "VAULT_ADDR": "http://env"}, None, "avp")
    assert settings.get("AVP_TYPE") == "vault"
    assert settings.get("AVP_AUTH_TYPE") == "approle"
    assert settings.get("VAULT_ADDR") == "http://env"
    found = settings.lookup("AVP_TYPE")
    assert found is not None and found.origin == "Kubernetes Secret argocd/avp key AVP_TYPE"
    assert api.seen == ["/api/v1/namespaces/argocd/secrets/avp"]


def test_avp_secret_selects_the_secret(kube: tuple[KubeAPI, dict[str, str]]) -> None:
    api, env = kube
    api.secrets[("team", "one")] = {"AVP_TYPE": "one"}
    api.secrets[("team", "two")] = {"AVP_TYPE": "two"}
    assert load_settings({**env, "AVP_SECRET": "team:one"}, None, None).get("AVP_TYPE") == "one"
    both = {**env, "AVP_SECRET": "team:one", "ARGOCD_ENV_AVP_SECRET": "team:two"}
    assert load_settings(both, None, None).get("AVP_TYPE") == "two"
    # -s wins over AVP_SECRET
    assert load_settings(both, None, "team:one").get("AVP_TYPE") == "one"


def test_config_file_replaces_the_secret(
    kube: tuple[KubeAPI, dict[str, str]], tmp_path: Path
) -> None:
    api, env = kube
    path = tmp_path / "c.yaml"
    path.write_text("AVP_TYPE: from-file\n")
    settings = load_settings(env, str(path), "missing-secret")
    assert settings.get("AVP_TYPE") == "from-file"
    assert api.seen == []


def test_secret_errors(kube: tuple[KubeAPI, dict[str, str]], tmp_path: Path) -> None:
    _api, env = kube
    with pytest.raises(ConfigError, match='secrets "nope" not found in namespace argocd'):
        load_settings(env, None, "nope")
    with pytest.raises(ConfigError, match=r"may not read Kubernetes Secret forbidden/x \(HTTP 403"):
        load_settings(env, None, "forbidden:x")
    other_token = tmp_path / "other-token"
    other_token.write_text("not-the-token")
    wrong = {**env, "KUBERNETES_SA_TOKEN_PATH": str(other_token)}
    with pytest.raises(ConfigError, match="HTTP 401") as info:
        load_settings(wrong, None, "x")
    assert CANARY not in str(info.value)


def test_secret_outside_a_cluster() -> None:
    with pytest.raises(ConfigError, match="could not connect to local Kubernetes cluster"):
        load_settings({}, None, "avp")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SA_TOKEN_PATH": "/nonexistent/t"}
    with pytest.raises(ConfigError, match="cannot read the service-account token"):
        load_settings(env, None, "avp")


def test_secret_tls_is_verified(kube: tuple[KubeAPI, dict[str, str]], tmp_path: Path) -> None:
    api, env = kube
    api.secrets[("argocd", "avp")] = {"AVP_TYPE": "vault"}
    other = make_pki(tmp_path / "other-pki")
    with pytest.raises(ConfigError, match="could not connect") as info:
        load_settings({**env, "KUBERNETES_SA_CA_PATH": str(other.ca_cert)}, None, "avp")
    assert CANARY not in str(info.value)
