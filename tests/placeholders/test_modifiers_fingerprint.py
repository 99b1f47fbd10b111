"""`| fingerprint`: a keyed HMAC of the value for pod-template annotations."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from plugin.errors import ModifierError
from plugin.placeholders import modifiers
from plugin.placeholders.engine import EngineOptions, InputStream, generate
from plugin.placeholders.substitute import Rules
from plugin.secrets.file import FileBackend
from plugin.security import policy

KEY = "k" * 40
OTHER_KEY = "o" * 40
CANARY = "canary-Fp-7731"


def context(key: str = KEY) -> modifiers.ModifierContext:
    return modifiers.fingerprint_context({modifiers.FINGERPRINT_KEY_SETTING: key})


def test_format_and_openssl_compatible_digits() -> None:
    result = modifiers.apply("fingerprint", (), CANARY, context())
    expected = hmac.new(KEY.encode(), CANARY.encode(), hashlib.sha256).hexdigest()[:32]
    assert result == f"hmac-sha256:{expected}"


def test_stable_for_same_value_and_key() -> None:
    assert modifiers.apply("fingerprint", (), CANARY, context()) == modifiers.apply(
        "fingerprint", (), CANARY, context()
    )


def test_changes_with_value_or_key() -> None:
    base = modifiers.apply("fingerprint", (), CANARY, context())
    assert modifiers.apply("fingerprint", (), CANARY + "x", context()) != base
    assert modifiers.apply("fingerprint", (), CANARY, context(OTHER_KEY)) != base


def test_non_text_values_are_fingerprinted_as_canonical_json() -> None:
    first = modifiers.apply("fingerprint", (), {"b": 1, "a": [1, 2]}, context())
    assert first == modifiers.apply("fingerprint", (), {"a": [1, 2], "b": 1}, context())
    assert first != modifiers.apply("fingerprint", (), {"a": [1, 2], "b": 2}, context())
    assert modifiers.apply("fingerprint", (), 80, context()).startswith("hmac-sha256:")


def test_refused_without_key() -> None:
    with pytest.raises(ModifierError, match="fingerprint: refused: PLUGIN_FINGERPRINT_KEY is not"):
        modifiers.apply("fingerprint", (), CANARY)
    with pytest.raises(ModifierError, match="PLUGIN_FINGERPRINT_KEY is not"):
        modifiers.apply("fingerprint", (), CANARY, modifiers.fingerprint_context({}))


def test_short_key_refused() -> None:
    with pytest.raises(ModifierError, match="shorter than 32 bytes"):
        modifiers.apply("fingerprint", (), CANARY, context("short"))


def test_application_cannot_choose_the_key() -> None:
    """Argo CD prefixes an Application's variables with ARGOCD_ENV_: they never count."""
    found = modifiers.fingerprint_context({"ARGOCD_ENV_PLUGIN_FINGERPRINT_KEY": KEY})
    assert found.fingerprint_key is None
    # With a tenant policy, setting it is refused outright (an operator-only setting).
    assert policy.is_protected(modifiers.FINGERPRINT_KEY_SETTING)


def test_arguments_refused() -> None:
    with pytest.raises(ModifierError, match="invalid parameters"):
        modifiers.apply("fingerprint", ("x",), CANARY, context())


def test_through_the_engine() -> None:
    backend = FileBackend({"kv/app": {"password": CANARY}}, "test")
    text = (
        "kind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata:\n"
        "      annotations:\n        secret/fingerprint: <path:kv/app#password | fingerprint>\n"
    )
    out = generate(
        [InputStream("d.yaml", text)],
        EngineOptions(rules=Rules(modifier_context=context())),
        lambda: backend,
    )
    assert CANARY not in out
    assert modifiers.apply("fingerprint", (), CANARY, context()) in out
