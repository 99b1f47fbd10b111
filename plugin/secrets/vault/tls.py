"""TLS for the Vault client, configured like the Vault CLI/Go client from `VAULT_*` settings.

`VAULT_CACERT_BYTES` (PEM text) > `VAULT_CACERT` (file) > `VAULT_CAPATH` (every file in a
directory, no `c_rehash` needed) > the system trust store (certifi when the system has none);
`VAULT_CLIENT_CERT` + `VAULT_CLIENT_KEY` present a client certificate; `VAULT_SKIP_VERIFY`
turns verification off; `VAULT_TLS_SERVER_NAME` sets the SNI name and the name the server
certificate is checked against (as Go's `tls.Config.ServerName`).

`VaultTLSAdapter` is a requests `HTTPAdapter` that hands urllib3 this one `SSLContext` plus
`server_hostname`/`assert_hostname`, and ignores requests' own `verify`/`cert` handling (and
thus `REQUESTS_CA_BUNDLE`), so the Vault settings are the only TLS configuration.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from typing import Any

from requests import PreparedRequest
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from plugin.config import Settings
from plugin.errors import ConfigError


@dataclass(frozen=True)
class TLSSettings:
    """The TLS-related `VAULT_*` settings (paths and flags, no key material)."""

    ca_cert_bytes: str | None = None
    ca_cert: str | None = None
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    skip_verify: bool = False
    server_name: str | None = None
    #: Origins of the settings above, for error messages.
    origins: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> TLSSettings:
        origins: list[tuple[str, str]] = []

        def get(name: str) -> str | None:
            found = settings.lookup(name)
            if found is None:
                return None
            origins.append((name, found.origin))
            return found.value

        skip = settings.get_go_bool("VAULT_SKIP_VERIFY", False)
        cert, key = get("VAULT_CLIENT_CERT"), get("VAULT_CLIENT_KEY")
        if (cert is None) != (key is None):
            given, absent = ("VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY")[:: 1 if cert else -1]
            raise ConfigError(
                f"{given} is set but {absent} is not: a client certificate needs both"
            )
        server_name = get("VAULT_TLS_SERVER_NAME")
        return cls(
            ca_cert_bytes=get("VAULT_CACERT_BYTES"),
            ca_cert=get("VAULT_CACERT"),
            ca_path=get("VAULT_CAPATH"),
            client_cert=cert,
            client_key=key,
            skip_verify=skip,
            server_name=server_name.strip() if server_name else None,
            origins=tuple(origins),
        )

    def origin(self, name: str) -> str:
        for known, origin in self.origins:
            if known == name:
                return f"{name} from {origin}"
        return name

    def build_context(self) -> ssl.SSLContext:
        """An `SSLContext` implementing these settings; ConfigError names a bad variable.

        With the system's trust store and no client certificate (the usual case) the context
        is `default_trust_context()`: loading the store costs tens of milliseconds of every
        HTTPS render, and the zygote loads it once for all its workers.
        """
        if not (
            self.skip_verify
            or self.ca_cert_bytes
            or self.ca_cert
            or self.ca_path
            or self.client_cert
            or self.client_key
        ):
            return default_trust_context(self.server_name)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            self._load_trust(context)
        if self.client_cert and self.client_key:
            try:
                context.load_cert_chain(self.client_cert, self.client_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"cannot load the client certificate ({self.origin('VAULT_CLIENT_CERT')}, "
                    f"{self.origin('VAULT_CLIENT_KEY')}): {_reason(exc)}"
                ) from None
        return context

    def _load_trust(self, context: ssl.SSLContext) -> None:
        if self.ca_cert_bytes:
            try:
                context.load_verify_locations(cadata=self.ca_cert_bytes)
            except (ValueError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"{self.origin('VAULT_CACERT_BYTES')} holds no usable PEM certificate: "
                    f"{_reason(exc)}"
                ) from None
            return
        if self.ca_cert:
            try:
                context.load_verify_locations(cafile=self.ca_cert)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"cannot load CA certificates from {self.ca_cert} "
                    f"({self.origin('VAULT_CACERT')}): {_reason(exc)}"
                ) from None
            return
        if self.ca_path:
            self._load_ca_path(context, self.ca_path)
            return
        _load_default_trust(context)

    def _load_ca_path(self, context: ssl.SSLContext, directory: str) -> None:
        where = self.origin("VAULT_CAPATH")
        if not os.path.isdir(directory):
            raise ConfigError(f"{directory} ({where}) is not a directory")
        paths: list[str] = []
        for parent, _dirs, files in os.walk(directory):
            paths.extend(os.path.join(parent, name) for name in files)
        loaded = 0
        # Like Go's rootcerts.LoadCAPath: every file in the tree must hold a PEM certificate.
        for path in sorted(paths):
            try:
                context.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"cannot load CA certificate {path} ({where}): {_reason(exc)}"
                ) from None
            loaded += 1
        if not loaded:
            raise ConfigError(f"no CA certificate files in {directory} ({where})")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _load_default_trust(context: ssl.SSLContext) -> None:
    """The system's trust store (OpenSSL's default paths), else requests' CA bundle."""
    context.load_default_certs()
    if not context.cert_store_stats().get("x509_ca"):
        context.load_verify_locations(cafile=DEFAULT_CA_BUNDLE_PATH)


def _trust_sources() -> tuple[object, ...]:
    """What the default trust store is loaded from, as it is now: OpenSSL's default CA file
    and directory (SSL_CERT_FILE / SSL_CERT_DIR move them) with their (mtime, size, inode),
    so a CA file replaced on disk is loaded again."""
    paths = ssl.get_default_verify_paths()
    sources: list[object] = []
    for path in (paths.cafile, paths.capath, DEFAULT_CA_BUNDLE_PATH):
        try:
            info = os.stat(path) if path else None
        except OSError:
            info = None
        sources.append((path, info and (info.st_mtime_ns, info.st_size, info.st_ino)))
    return tuple(sources)


def default_trust_context(server_name: str | None = None) -> ssl.SSLContext:
    """A client context trusting the system's CAs, shared while its sources are unchanged.

    It holds public certificates only (never a client key), so the zygote may build it before
    any request and each worker uses its own forked copy. `server_name` is part of the key
    because urllib3 adjusts hostname checking on the context it is given.
    """
    return _default_trust_context(_trust_sources(), server_name)


@functools.lru_cache(maxsize=8)
def _default_trust_context(sources: tuple[object, ...], server_name: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_default_trust(context)
    return context


class VaultTLSAdapter(HTTPAdapter):
    """Requests adapter using one prepared `SSLContext` (thread-safe to share, read-only)."""

    def __init__(self, tls: TLSSettings, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._tls = tls
        self._context = context
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(
        self,
        request: PreparedRequest,
        verify: bool | str | None,
        cert: Any = None,
    ) -> tuple[Any, Any]:
        # urllib3 takes server_hostname/assert_hostname pool keys the stubs do not list.
        host_params, _ignored = super().build_connection_pool_key_attributes(request, True, None)
        pool_kwargs: dict[str, Any] = {}
        if host_params.get("scheme") == "https":
            pool_kwargs["ssl_context"] = self._context
            if self._tls.skip_verify:
                pool_kwargs["cert_reqs"] = "CERT_NONE"
                pool_kwargs["assert_hostname"] = False
            else:
                pool_kwargs["cert_reqs"] = "CERT_REQUIRED"
                if self._tls.server_name:
                    pool_kwargs["assert_hostname"] = self._tls.server_name
            if self._tls.server_name:
                pool_kwargs["server_hostname"] = self._tls.server_name
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """TLS is fully described by the context: keep requests from adding CA bundles."""
        return None
