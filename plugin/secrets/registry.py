"""Pick the secret store named by `AVP_TYPE`."""

from __future__ import annotations

from plugin.config import Settings
from plugin.errors import ConfigError
from plugin.secrets.base import Backend, BackendOptions

SUPPORTED_TYPES = ("file", "vault")


def make_backend(settings: Settings, options: BackendOptions) -> Backend:
    """Build the backend for `AVP_TYPE`; configuration errors name the variable and its origin."""
    found = settings.lookup("AVP_TYPE")
    kind = found.value.strip() if found is not None else ""
    if kind == "file":
        from plugin.secrets.file import FileBackend

        return FileBackend.from_settings(settings)
    if kind == "vault":
        from plugin.secrets.vault.backend import make_vault_backend

        return make_vault_backend(settings, options)
    origin = f" (from {found.origin})" if found is not None else ""
    raise ConfigError(
        f"AVP_TYPE must be one of {', '.join(SUPPORTED_TYPES)}, received {kind!r}{origin}"
    )
