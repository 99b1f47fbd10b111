"""HashiCorp Vault / OpenBao KV backend (`AVP_TYPE=vault`), built on hvac's HTTP adapter.

Paths and KV versions
---------------------
AVP reads the path as a raw API path: KV v2 paths must contain `/data/`. This backend keeps
that working exactly and also accepts "friendly" paths as the `vault kv` CLI does:

1. The KV version hint is the manifest's `avp.kubernetes.io/kv-version` annotation
   (`SecretRef.kv_version`), else `AVP_KV_VERSION` (default `2`). Other values are errors.
2. Hint `1` forces KV v1 semantics: the path is read as written, versions are ignored and the
   response's `data` is the secret (what AVP does, even on a v2 mount).
3. Hint `2` (the default) asks Vault which mount the path is on, once per mount and run
   (`GET sys/internal/ui/mounts/<path>`, as the CLI's preflight check):
   - a KV v2 mount: a path whose remainder after the mount starts with `data/` is an AVP-style
     API path and is used as it is; any other path gets `data/` inserted right after the mount
     (`kv/app` -> `kv/data/app`), so `/data/` is never inserted twice;
   - a KV v1 mount (or `generic`, `cubbyhole`, any other engine): v1 semantics, as written;
   - no answer (the token may not see the mount, an old server): AVP semantics, the path is
     used as written with KV v2 response handling.
4. Versions (`#V`, `avp.kubernetes.io/secret-version`) are sent as `?version=V` on KV v2 and
   ignored on v1. A soft-deleted or destroyed version is an error saying so.

Errors: 404 -> `MissingPathError("no secret at path P[ version V]")`; 403 ->
`BackendError("permission denied reading P as <identity>")`, never with a token; other HTTP
errors carry Vault's error strings with every credential of this run scrubbed out.

Tokens and concurrency
----------------------
`login()` obtains a token once (through the per-identity on-disk cache unless disabled or
`token` auth). `read()` may be called from many threads: each thread has its own hvac adapter
and requests session (`threading.local`), and the token is shared under a lock. When Vault
answers 403 the token is checked with `auth/token/lookup-self`; if it was revoked or expired
(typically a cached token), the backend logs in again once per run, through the cache lock so
that concurrent processes agree on the new token, and retries the request.

Retries and deadline
--------------------
429, 5xx other than 501 and connection errors are retried with exponential backoff and jitter,
at most `VAULT_MAX_RETRIES` (default 2) times, and never beyond the deadline passed to
`set_deadline()`; each request's timeout is `VAULT_CLIENT_TIMEOUT` (default 60 s) or the time
left before the deadline, whichever is shorter.
"""

from __future__ import annotations

import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import hvac.adapters
import requests
import urllib3

from plugin.config import Settings, get_duration
from plugin.errors import BackendError, ConfigError, MissingPathError
from plugin.secrets.base import BackendOptions, SecretData, SecretRef, VersionedData
from plugin.secrets.vault.auth import AuthMethod, LoginResult, make_auth_method
from plugin.secrets.vault.tls import TLSSettings, VaultTLSAdapter
from plugin.secrets.vault.token_cache import (
    DEFAULT_LOCK_TIMEOUT,
    CachedLogin,
    TokenCache,
    cache_key,
    default_cache_dir,
    fresh_login,
)

log = logging.getLogger(__name__)

DEFAULT_ADDR = "https://127.0.0.1:8200"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_WORKERS = 8
RETRY_BASE_DELAY = 0.25
RETRY_MAX_DELAY = 4.0
RETRY_AFTER_CAP = 10.0
PATH_SAFE = "/:@!$&'()*+,;=-._~"
KV_ENGINE_TYPES = frozenset({"kv", "generic"})
MAX_ERROR_TEXT = 300


@dataclass(frozen=True)
class VaultConfig:
    """Everything the backend reads from `Settings`, validated."""

    addr: str
    namespace: str | None
    tls: TLSSettings
    timeout: float
    max_retries: int
    kv_version: str
    kv_version_origin: str
    max_workers: int
    proxy: str | None = None
    follow_redirects: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> VaultConfig:
        addr = _address(settings)
        namespace = settings.get("VAULT_NAMESPACE")
        namespace = namespace.strip().strip("/") if namespace else None
        kv = settings.lookup("AVP_KV_VERSION")
        kv_version, kv_origin = (kv.value.strip(), kv.origin) if kv else ("2", "default")
        if kv_version not in {"1", "2"}:
            raise ConfigError(
                f"AVP_KV_VERSION must be 1 or 2, got {kv_version!r} from {kv_origin} "
                "(Unsupported kvVersion specified)"
            )
        redirects = not settings.get_go_bool("VAULT_DISABLE_REDIRECTS", False)
        return cls(
            addr=addr,
            namespace=namespace or None,
            tls=TLSSettings.from_settings(settings),
            timeout=get_duration(settings, "VAULT_CLIENT_TIMEOUT", DEFAULT_TIMEOUT, minimum=0.001),
            max_retries=settings.get_int("VAULT_MAX_RETRIES", DEFAULT_MAX_RETRIES, minimum=0),
            kv_version=kv_version,
            kv_version_origin=kv_origin,
            max_workers=settings.get_int("AVP_MAX_CONCURRENCY", DEFAULT_MAX_WORKERS, minimum=1),
            proxy=settings.get("VAULT_HTTP_PROXY") or settings.get("VAULT_PROXY_ADDR"),
            follow_redirects=redirects,
        )


def _address(settings: Settings) -> str:
    found = settings.lookup("VAULT_AGENT_ADDR") or settings.lookup("VAULT_ADDR")
    if found is None:
        return DEFAULT_ADDR
    addr = found.value.strip().rstrip("/")
    parts = urlsplit(addr)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        variable = "VAULT_AGENT_ADDR" if settings.lookup("VAULT_AGENT_ADDR") else "VAULT_ADDR"
        raise ConfigError(
            f"{variable} must be an http:// or https:// URL, got {found.value!r} "
            f"from {found.origin}"
        )
    return addr


# ---------------------------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------------------------


def _scrub(text: str, secrets: Sequence[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
    return text


def _error_text(response: requests.Response, secrets: Sequence[str | None]) -> str:
    """Vault's `errors` strings (or a short body), scrubbed and shortened."""
    text = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        text = "; ".join(" ".join(str(item).split()) for item in body["errors"])
    elif body is None:
        text = " ".join(response.text.split())[:MAX_ERROR_TEXT]
    text = _scrub(text, secrets)
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT] + "…"
    return text


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _connection_reason(exc: BaseException) -> str:
    """A short reason for a connection failure: "Connection refused", "timed out"..."""
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError) and current.verify_message:
            return f"TLS error: certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return f"TLS error: {current.reason or type(current).__name__}"
        if type(current).__name__ == "CertificateError":  # urllib3's hostname check
            return f"TLS error: {current}"
        match = _ERRNO_TEXT.search(str(current))
        if match:
            return match.group(1).strip()
        nested = [arg for arg in current.args if isinstance(arg, BaseException)]
        reason = getattr(current, "reason", None)
        current = (
            reason
            if isinstance(reason, BaseException)
            else (nested[0] if nested else current.__cause__ or current.__context__)
        )
    return type(exc).__name__


class VaultTransport:
    """Per-thread hvac adapters, retries with backoff, the deadline, request counting."""

    def __init__(self, config: VaultConfig) -> None:
        self.config = config
        self.deadline: float | None = None
        self.request_count = 0
        self._count_lock = threading.Lock()
        self._local = threading.local()
        self._adapters: list[Any] = []
        self._adapters_lock = threading.Lock()
        self._context: ssl.SSLContext | None = (
            config.tls.build_context() if config.addr.startswith("https:") else None
        )
        if self._context is not None and config.tls.skip_verify:
            log.info("TLS certificate verification is off (VAULT_SKIP_VERIFY)")
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._random = random.Random()  # noqa: S311 - jitter, not cryptography
        if config.proxy:
            self._proxies = {"http": config.proxy, "https": config.proxy}
        else:  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as the Vault Go client honours them
            self._proxies = requests.utils.get_environ_proxies(config.addr)

    # -- plumbing -----------------------------------------------------------------------------

    def _adapter(self) -> Any:
        adapter = getattr(self._local, "adapter", None)
        if adapter is None:
            session = requests.Session()
            # The environment is consulted once (`self._proxies`), not on every request:
            # requests' per-request proxy/netrc lookups cost a third of a loopback read.
            session.trust_env = False
            session.proxies = dict(self._proxies)
            if self._context is not None:
                session.mount("https://", VaultTLSAdapter(self.config.tls, self._context))
            adapter = hvac.adapters.RawAdapter(
                base_uri=self.config.addr,
                namespace=self.config.namespace,
                session=session,
                timeout=self.config.timeout,
                allow_redirects=self.config.follow_redirects,
            )
            self._local.adapter = adapter
            with self._adapters_lock:
                self._adapters.append(adapter)
        return adapter

    def close(self) -> None:
        with self._adapters_lock:
            adapters, self._adapters = self._adapters, []
        for adapter in adapters:
            adapter.close()
        self._local = threading.local()

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * (2.0**attempt))
        delay = delay / 2 + self._random.uniform(0, delay / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
        return delay

    # -- requests -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        what: str,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
        secrets: Sequence[str | None] = (),
    ) -> requests.Response:
        """Send one Vault API request with retries; a final non-retryable answer is returned.

        Raises `BackendError` for connection failures, TLS errors, retryable statuses that
        persist after the retries, and the deadline.
        """
        url = "v1/" + quote(path.lstrip("/"), safe=PATH_SAFE)
        attempts = self.config.max_retries + 1
        problem = ""
        response: requests.Response | None = None
        for attempt in range(attempts):
            timeout = self.config.timeout
            left = self.remaining()
            if left is not None:
                if left <= 0:
                    raise BackendError(
                        f"deadline reached before Vault at {self.config.addr} answered "
                        f"while {what}" + (f" (last error: {problem})" if problem else "")
                    )
                timeout = min(timeout, left)
            adapter = self._adapter()
            adapter.token = token
            retry_after: float | None = None
            try:
                kwargs: dict[str, Any] = {"timeout": timeout}
                if params:
                    kwargs["params"] = dict(params)
                if payload is not None:
                    kwargs["json"] = dict(payload)
                response = adapter.request(method, url, raise_exception=False, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise BackendError(
                    f"cannot talk to Vault at {self.config.addr} while {what}: "
                    f"{_connection_reason(exc)}"
                ) from None
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                response = None
                problem = _connection_reason(exc)
            except (requests.exceptions.RequestException, ValueError) as exc:
                # e.g. a token with a newline or non-ASCII text: the exception text may quote
                # the header value, so only its type is reported.
                raise BackendError(
                    f"cannot send the request to Vault at {self.config.addr} while {what}: "
                    f"{type(exc).__name__} (check VAULT_ADDR and the token for stray characters)"
                ) from None
            else:
                assert response is not None
                with self._count_lock:
                    self.request_count += 1
                status = response.status_code
                if status != 429 and (status < 500 or status == 501):
                    return response
                problem = f"HTTP {status}"
                detail = _error_text(response, [token, *secrets])
                if detail:
                    problem += f": {detail}"
                retry_after = _retry_after(response)
            if attempt + 1 >= attempts:
                break
            delay = self._backoff(attempt, retry_after)
            left = self.remaining()
            if left is not None and delay >= left:
                problem += " (no time left for another attempt before the deadline)"
                break
            log.debug("retrying Vault request (%s) in %.2fs: %s", what, delay, problem)
            time.sleep(delay)
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if response is None:
            raise BackendError(
                f"cannot reach Vault at {self.config.addr} while {what}: {problem} "
                f"(gave up after {tries})"
            )
        raise BackendError(
            f"Vault at {self.config.addr} failed while {what}: {problem} (gave up after {tries})"
        )

    def login_request(
        self,
        path: str,
        payload: Mapping[str, Any],
        *,
        identity: str,
        secrets: Sequence[str],
    ) -> LoginResult:
        """`LoginSession` for the auth methods: POST without a token, parse `auth`."""
        what = f"logging in as {identity}"
        response = self.request(
            "POST", path, token=None, what=what, payload=payload, secrets=secrets
        )
        if response.status_code != 200:
            detail = _error_text(response, secrets)
            raise BackendError(
                f"Vault login as {identity} failed: HTTP {response.status_code}"
                + (f": {detail}" if detail else "")
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        auth = body.get("auth") if isinstance(body, dict) else None
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if not isinstance(auth, dict) or not isinstance(token, str) or not token:
            raise BackendError(f"Vault login as {identity} returned no client token")
        lease = auth.get("lease_duration", 0)
        return LoginResult(
            token=token,
            lease_duration=lease if isinstance(lease, int) and lease > 0 else 0,
            renewable=bool(auth.get("renewable", False)),
        )


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    return None


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountInfo:
    path: str  # with a trailing slash, as Vault reports it: "kv/"
    type: str
    version: str

    @property
    def kv2(self) -> bool:
        return self.type in KV_ENGINE_TYPES and self.version == "2"


@dataclass(frozen=True)
class ReadPlan:
    api_path: str
    kv_version: int
    mount: MountInfo | None


@dataclass(frozen=True)
class KVState:
    """What a rotation poll learns about a KV v2 secret, never its values."""

    #: `current_version` of the metadata (text), None when nothing is stored at the path.
    current_version: str | None
    #: When that version was written (RFC 3339, UTC, as Vault reports it); "" when unknown.
    created_time: str = ""
    #: "metadata" (the metadata endpoint) or "data" (the data endpoint, metadata denied).
    source: str = "metadata"


def _metadata_version(metadata: object) -> str | None:
    """`version` of a KV v2 read's `data.metadata`, as text; None when absent."""
    if not isinstance(metadata, dict):
        return None
    number = metadata.get("version")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        return None
    return str(number)


def _state_from_metadata(data: Mapping[str, Any]) -> KVState:
    """The current version (and its creation time) from a metadata endpoint's `data`."""
    number = data.get("current_version")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        return KVState(None)
    versions = data.get("versions")
    entry = versions.get(str(number)) if isinstance(versions, dict) else None
    created = entry.get("created_time") if isinstance(entry, dict) else None
    return KVState(str(number), str(created or ""))


def _metadata_path(path: str, plan: ReadPlan) -> str:
    """`<mount>/metadata/<name>` for the KV v2 read `plan` (`<mount>/data/<name>`)."""
    if plan.mount is not None:
        rest = plan.api_path[len(plan.mount.path) :]
        return f"{plan.mount.path}metadata/{rest.removeprefix('data/')}"
    # The mount lookup gave no answer: AVP semantics, the path holds `/data/` after the mount.
    head, found, tail = plan.api_path.partition("/data/")
    if not found or not head or not tail:
        raise BackendError(
            f"cannot tell the KV v2 mount of {path} (the mount lookup gave no answer and the "
            "path has no /data/ segment)"
        )
    return f"{head}/metadata/{tail}"


class VaultBackend:
    """The `Backend` for Vault/OpenBao KV v1 and v2 (see the module docstring)."""

    def __init__(
        self,
        config: VaultConfig,
        auth: AuthMethod,
        cache: TokenCache | None,
        transport: VaultTransport | None = None,
    ) -> None:
        self.config = config
        self.auth = auth
        self.cache = cache
        self.transport = transport or VaultTransport(config)
        self.max_workers = config.max_workers
        key_parts = auth.cache_key()
        self._cache_key = (
            cache_key([config.addr, config.namespace or "", *key_parts])
            if key_parts is not None
            else None
        )
        self._token: str | None = None
        self._generation = 0
        self._token_from_cache = False
        self._relogged = False
        self._token_valid: dict[int, bool] = {}
        self._auth_lock = threading.Lock()
        self._mounts: list[MountInfo] = []
        self._unknown_mounts: set[str] = set()
        self._pending_mounts: dict[str, threading.Event] = {}
        self._mount_lock = threading.Lock()
        self._metadata_denied: set[str] = set()

    # -- Backend protocol ---------------------------------------------------------------------

    def set_deadline(self, deadline_monotonic: float) -> None:
        """Bound every request, retry and lock wait by this `time.monotonic()` value."""
        self.transport.deadline = deadline_monotonic

    def login(self) -> None:
        with self._auth_lock:
            if self._token is None:
                self._install(self._obtain(reject_token=None))

    def read(self, ref: SecretRef) -> SecretData:
        plan = self._plan(ref)
        version = ref.version.strip() if ref.version and ref.version.strip() else None
        params = {"version": version} if plan.kv_version == 2 and version else None
        if version and plan.kv_version == 1:
            log.debug("ignoring version %s of %s: KV v1 has no versions", version, ref.path)
        response = self._authed("GET", plan.api_path, what=f"reading {ref.path}", params=params)
        return self._interpret(ref, plan, version if plan.kv_version == 2 else None, response)

    def close(self) -> None:
        self.transport.close()

    # -- rotation polls ---------------------------------------------------------------------------

    def kv2_state(self, ref: SecretRef) -> KVState | None:
        """The current version of a KV v2 secret, from its metadata endpoint (no values).

        None when `ref` is not on a KV v2 mount (the caller reads it and compares keyed
        fingerprints instead). When the identity may read `<mount>/data/<path>` but not
        `<mount>/metadata/<path>` (a Vault policy written for renders only), the data endpoint
        is read once instead and only its `metadata` is kept; the denial is remembered for
        the life of this backend so later polls go straight there.
        """
        plan = self._plan(ref)
        if plan.kv_version != 2:
            return None
        metadata_path = _metadata_path(ref.path, plan)
        if metadata_path not in self._metadata_denied:
            response = self._authed(
                "GET", metadata_path, what=f"reading the metadata of {ref.path}"
            )
            status = response.status_code
            if status == 200:
                data = _json(response).get("data")
                return _state_from_metadata(data if isinstance(data, dict) else {})
            if status == 404:
                return KVState(None, source="metadata")
            if status not in {401, 403}:
                detail = _error_text(response, [self._token])
                raise BackendError(
                    f"Vault answered HTTP {status} reading the metadata of {ref.path}"
                    + (f": {detail}" if detail else "")
                )
            log.debug("metadata of %s denied; reading its data endpoint instead", ref.path)
            self._metadata_denied.add(metadata_path)
        response = self._authed("GET", plan.api_path, what=f"reading {ref.path}")
        status = response.status_code
        body = _json(response)
        data = body.get("data")
        metadata = data.get("metadata") if isinstance(data, dict) else None
        if status in {200, 404}:
            number = _metadata_version(metadata)
            if number is None:
                return KVState(None, source="data")
            created = metadata.get("created_time") if isinstance(metadata, dict) else None
            return KVState(number, str(created or ""), source="data")
        if status in {401, 403}:
            raise self._denied(f"reading {ref.path}")
        detail = _error_text(response, [self._token])
        raise BackendError(
            f"Vault answered HTTP {status} reading {ref.path}" + (f": {detail}" if detail else "")
        )

    # -- plugin check ---------------------------------------------------------------------------

    def describe_access(self, ref: SecretRef) -> str:
        """What the current token may do on `ref`'s API path (`sys/capabilities-self`)."""
        plan = self._plan(ref)
        response = self._authed(
            "POST",
            "sys/capabilities-self",
            what=f"checking capabilities on {plan.api_path}",
            payload={"paths": [plan.api_path]},
        )
        if response.status_code != 200:
            raise BackendError(
                f"cannot check capabilities on {plan.api_path} as {self.auth.identity}: "
                f"HTTP {response.status_code}"
            )
        body = _json(response)
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        caps = body.get(plan.api_path) or body.get("capabilities")
        if caps is None and isinstance(data, dict):
            caps = data.get(plan.api_path) or data.get("capabilities")
        names = [str(cap) for cap in caps] if isinstance(caps, list) else []
        return (
            f"the token ({self.auth.identity}) has capabilities [{', '.join(names)}] "
            f"on {plan.api_path}"
        )

    # -- tokens -------------------------------------------------------------------------------

    def _lock_timeout(self) -> float:
        left = self.transport.remaining()
        limit = max(DEFAULT_LOCK_TIMEOUT, self.config.timeout + 5)
        return limit if left is None else max(0.0, min(limit, left))

    def _obtain(self, reject_token: str | None) -> CachedLogin:
        def login() -> LoginResult:
            return self.auth.login(self.transport)

        if self.cache is None or self._cache_key is None:
            return fresh_login(login)
        return self.cache.obtain(
            self._cache_key,
            self.auth.identity,
            login,
            lock_timeout=self._lock_timeout(),
            reject_token=reject_token,
        )

    def _install(self, obtained: CachedLogin) -> None:
        self._token = obtained.result.token
        self._token_from_cache = obtained.from_cache
        self._generation += 1

    def _current(self) -> tuple[str, int]:
        with self._auth_lock:
            if self._token is None:
                self._install(self._obtain(reject_token=None))
            assert self._token is not None
            return self._token, self._generation

    def _token_is_valid(self, token: str) -> bool:
        response = self.transport.request(
            "GET", "auth/token/lookup-self", token=token, what="checking the Vault token"
        )
        return response.status_code == 200

    def _refresh_after_denial(self, generation: int, token: str) -> bool:
        """After a 403: True when a new token is in place and the request should be retried."""
        with self._auth_lock:
            if self._generation != generation:
                return True
            if generation not in self._token_valid:
                self._token_valid[generation] = self._token_is_valid(token)
            if self._token_valid[generation]:
                return False
            if self.auth.name == "token":
                return False  # nothing to log in with: report the denial
            if self._relogged:
                return False
            self._relogged = True
            log.info(
                "Vault rejected the token of %s (revoked or expired); logging in again",
                self.auth.identity,
            )
            self._install(self._obtain(reject_token=token))
            return True

    def _authed(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> requests.Response:
        token, generation = self._current()
        response = self.transport.request(
            method, path, token=token, what=what, params=params, payload=payload
        )
        if response.status_code in {401, 403} and self._refresh_after_denial(generation, token):
            token, generation = self._current()
            response = self.transport.request(
                method, path, token=token, what=what, params=params, payload=payload
            )
        return response

    def _denied(self, what: str) -> BackendError:
        with self._auth_lock:
            valid = self._token_valid.get(self._generation, True)
        note = "" if valid else " (the token is not valid: revoked or expired)"
        return BackendError(f"permission denied {what} as {self.auth.identity}{note}")

    # -- paths and KV versions ------------------------------------------------------------------

    def _hint(self, ref: SecretRef) -> str:
        if ref.kv_version is not None and ref.kv_version.strip():
            hint = ref.kv_version.strip()
            if hint not in {"1", "2"}:
                raise BackendError(
                    f"unsupported kv-version {ref.kv_version!r} for {ref.path} (use 1 or 2)"
                )
            return hint
        return self.config.kv_version

    def _plan(self, ref: SecretRef) -> ReadPlan:
        path = ref.path.strip().strip("/")
        if not path:
            raise BackendError("empty Vault path")
        if self._hint(ref) == "1":
            return ReadPlan(path, 1, None)
        mount = self._mount_for(path)
        if mount is None:
            return ReadPlan(path, 2, None)
        if not mount.kv2:
            return ReadPlan(path, 1, mount)
        rest = path[len(mount.path) :]
        if rest.startswith("data/"):
            return ReadPlan(path, 2, mount)
        return ReadPlan(f"{mount.path}data/{rest}", 2, mount)

    def _known_mount(self, path: str) -> MountInfo | None:
        for mount in self._mounts:
            if (path + "/").startswith(mount.path):
                return mount
        return None

    def _mount_for(self, path: str) -> MountInfo | None:
        group = path.split("/", 1)[0]
        while True:
            with self._mount_lock:
                known = self._known_mount(path)
                if known is not None:
                    return known
                if path in self._unknown_mounts:
                    return None
                pending = self._pending_mounts.get(group)
                if pending is None:
                    event = threading.Event()
                    self._pending_mounts[group] = event
                    break
            pending.wait()
        info: MountInfo | None = None
        answered = False
        try:
            info = self._detect_mount(path)
            answered = True
        finally:
            with self._mount_lock:
                if info is not None:
                    self._mounts.append(info)
                    self._mounts.sort(key=lambda mount: len(mount.path), reverse=True)
                elif answered:
                    self._unknown_mounts.add(path)
                del self._pending_mounts[group]
                event.set()
        return info

    def _detect_mount(self, path: str) -> MountInfo | None:
        response = self._authed(
            "GET", f"sys/internal/ui/mounts/{path}", what=f"looking up the mount of {path}"
        )
        if response.status_code != 200:
            log.debug(
                "mount lookup for %s answered HTTP %d; using AVP semantics",
                path,
                response.status_code,
            )
            return None
        data = _json(response).get("data")
        if not isinstance(data, dict):
            return None
        mount_path = str(data.get("path") or "")
        if mount_path and not mount_path.endswith("/"):
            mount_path += "/"
        options = data.get("options")
        version = str(options.get("version") or "1") if isinstance(options, dict) else "1"
        if not mount_path or not (path + "/").startswith(mount_path):
            log.debug("mount lookup for %s gave unrelated mount %r", path, mount_path)
            return None
        return MountInfo(mount_path, str(data.get("type") or ""), version)

    # -- responses ----------------------------------------------------------------------------

    def _interpret(
        self, ref: SecretRef, plan: ReadPlan, version: str | None, response: requests.Response
    ) -> SecretData:
        shown = (
            ref.path
            if plan.api_path == ref.path.strip().strip("/")
            else (f"{ref.path} (API path {plan.api_path})")
        )
        status = response.status_code
        body = _json(response)
        data = body.get("data")
        if status == 200:
            if plan.kv_version == 2:
                if not isinstance(data, dict):
                    raise BackendError(f"Vault returned no data for {shown}")
                inner = data.get("data")
                if inner is None:
                    self._raise_if_deleted(ref.path, data.get("metadata"))
                    raise BackendError(
                        f"{shown} holds no KV v2 data - is it a KV v2 path? "
                        "(for KV v1 set the kv-version annotation or AVP_KV_VERSION to 1)"
                    )
                if not isinstance(inner, dict):
                    raise BackendError(f"the secret at {shown} is not a key/value mapping")
                read = _metadata_version(data.get("metadata")) or version
                return VersionedData(inner, read) if read else inner
            if not isinstance(data, dict):
                raise BackendError(f"the secret at {shown} is not a key/value mapping")
            return data
        if status == 404:
            if plan.kv_version == 2 and isinstance(data, dict):
                self._raise_if_deleted(ref.path, data.get("metadata"))
            message = f"no secret at path {ref.path}"
            if version:
                message += f" version {version}"
            if plan.api_path != ref.path.strip().strip("/"):
                message += f" (API path {plan.api_path})"
            warnings = body.get("warnings")
            if isinstance(warnings, list) and any(
                "versioned K/V" in str(warning) for warning in warnings
            ):
                message += (
                    " - the path is on a KV v2 mount: write it with /data/ or drop kv-version 1"
                )
            raise MissingPathError(message)
        if status in {401, 403}:
            raise self._denied(f"reading {shown}")
        detail = _error_text(response, [self._token])
        raise BackendError(
            f"Vault answered HTTP {status} reading {shown}" + (f": {detail}" if detail else "")
        )

    @staticmethod
    def _raise_if_deleted(path: str, metadata: object) -> None:
        if not isinstance(metadata, dict):
            return
        number = metadata.get("version")
        label = f"version {number} of {path}" if number is not None else f"{path}"
        if metadata.get("destroyed") is True:
            raise BackendError(f"{label} was destroyed")
        if metadata.get("deletion_time"):
            raise BackendError(f"{label} was deleted")


def make_vault_backend(settings: Settings, options: BackendOptions) -> VaultBackend:
    """Build the Vault backend from `Settings`; `ConfigError` names a wrong variable and origin."""
    config = VaultConfig.from_settings(settings)
    auth = make_auth_method(settings)
    if auth.name == "cert" and not config.addr.startswith("https:"):
        raise ConfigError(
            f"AVP_AUTH_TYPE=cert needs an https:// VAULT_ADDR (got {config.addr}): the "
            "credential is the TLS client certificate"
        )
    cache: TokenCache | None = None
    if options.disable_token_cache:
        log.info("token cache disabled by --disable-token-cache")
    elif auth.cache_key() is not None:
        directory, reason = default_cache_dir(settings)
        if directory is None:
            log.info("token cache disabled: %s; logging in on every run", reason)
        else:
            cache = TokenCache.open(directory)
    return VaultBackend(config, auth, cache)
