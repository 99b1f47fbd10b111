"""The Vault client's TLS context: the system trust store is loaded once, not per render."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from plugin.secrets.vault.tls import TLSSettings


def test_the_system_trust_store_is_loaded_once() -> None:
    """Loading it costs tens of milliseconds per HTTPS render; the zygote does it once."""
    first = TLSSettings().build_context()
    assert TLSSettings().build_context() is first
    assert first.cert_store_stats()["x509_ca"] > 0


def test_a_replaced_ca_file_is_loaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    shutil.copyfile(DEFAULT_CA_BUNDLE_PATH, bundle)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    before = TLSSettings().build_context()
    text = bundle.read_text()
    bundle.write_text(text[: text.index("-----END CERTIFICATE-----") + 26])  # one certificate
    after = TLSSettings().build_context()
    assert after is not before
    assert after.cert_store_stats()["x509_ca"] == 1


def test_own_trust_or_a_client_certificate_gets_its_own_context() -> None:
    shared = TLSSettings().build_context()
    assert TLSSettings(ca_cert=DEFAULT_CA_BUNDLE_PATH).build_context() is not shared
    assert TLSSettings(skip_verify=True).build_context() is not shared
    assert TLSSettings(server_name="vault.internal").build_context() is not shared
