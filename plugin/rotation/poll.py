"""One poll of one Application's recorded references: did a secret change since its render?

Why a separate primitive: the watcher (`plugin watch`) decides *when* to poll and what to do
about a change (ask Argo CD for a hard refresh); this module decides *whether* something
changed, with the same walls as the render that produced the record:

- **Same identity.** The settings are rebuilt from the watcher's own (operator) environment,
  the tenant policy's rule for `record.project` and the non-secret identity settings the
  render recorded (`Record.identity`). A recorded setting that differs from the operator's is
  applied as the Application's own setting (`ARGOCD_ENV_<NAME>`), so the policy judges it as
  it judged the render: a setting the project may no longer set fails the poll, never falls
  back to another identity. The policy's `vault` settings win, as in a render. Logins go
  through the same backends and on-disk token cache as renders (a watcher sharing the cache
  volume reuses the renders' tokens).
- **Same paths.** With a tenant policy, every reference is checked against the project's
  rule before anything is sent: a refused reference is reported in `PollResult.refused` and
  never polled. A reference recorded for another backend type or Vault address than the one
  the rebuilt settings name is an error, never sent (a token never goes to an address the
  settings do not name).
- **No secret material where avoidable.** KV v2: only the metadata endpoint
  (`<mount>/metadata/<name>`), compared with the version the render read
  (`Reference.read_version`). KV v1 and the file backend have no versions: the secret is read
  and its keyed fingerprint (the index's volume key) compared with the recorded one; the
  values are dropped at once. Pinned references (`#version`) never change and are never sent.
- **Each path once.** References are grouped by (backend, address, path, KV-version hint);
  `Sessions` also remembers each answer per identity for the current cycle, so a path shared
  by many Applications of one identity costs one request per cycle.

Nothing here prints: errors are returned as text naming the path, never a value or a token
(the backends' errors are written that way).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from plugin.config import ARGOCD_ENV_PREFIX, Settings, load_settings
from plugin.errors import BackendError, ConfigError, MissingPathError, PluginError
from plugin.rotation.index import (
    APPLICATION_CREDENTIALS,
    IDENTITY_SETTINGS,
    Record,
    Reference,
    fingerprint,
    volume_key,
)
from plugin.rotation.index import index_root as _index_root
from plugin.secrets.base import Backend, BackendOptions, SecretRef
from plugin.secrets.registry import make_backend
from plugin.security.policy import PROJECT_ENV, Decision, PolicyDeniedError, decide, load_for

#: Seconds a logged-in backend is reused before it is closed and built again (a fresh
#: backend may log in again once after a revoked token; mount lookups are redone).
DEFAULT_SESSION_AGE = 300.0

#: Kinds of answer.
VERSION = "version"
FINGERPRINT = "fingerprint"


@dataclass(frozen=True)
class PollError:
    """A reference (or the whole record, `path` "") that could not be polled, and why."""

    path: str
    message: str


@dataclass(frozen=True)
class PollResult:
    """What one `check_record` found; references appear in record order."""

    #: Unpinned references whose secret changed since the render (the Application is stale).
    changed: tuple[Reference, ...] = ()
    #: References polled and found as the render read them.
    unchanged: tuple[Reference, ...] = ()
    #: Pinned references (`#version`): never polled, never changed.
    pinned: tuple[Reference, ...] = ()
    #: References the tenant policy refuses for the record's project: never polled.
    refused: tuple[Reference, ...] = ()
    errors: tuple[PollError, ...] = ()
    #: HTTP requests sent to Vault by this check (logins, lookups, metadata, reads).
    requests: int = 0
    #: Distinct paths asked of a backend (answers reused from this cycle not counted).
    polled: int = 0

    @property
    def stale(self) -> bool:
        """True when the Application should be re-rendered."""
        return bool(self.changed)


@dataclass(frozen=True)
class _Answer:
    """The state of one path now: a version or a keyed fingerprint; None when missing."""

    kind: str
    value: str | None
    #: KV v2: when the current version was written (RFC 3339, UTC); "" when unknown.
    created: str = ""


@dataclass
class _Session:
    backend: Backend
    created: float


@dataclass
class Sessions:
    """Logged-in backends per identity, and this cycle's answers per (identity, path).

    Reusing a backend keeps its token, its connections and its mount lookups between polls;
    `max_age` bounds how long (a new backend re-reads the token cache and may log in again
    after a revoked token, which a backend does only once in its life). Vault backends are
    kept; file backends are built for every check so that an edited file is seen.

    Not thread-safe: one `Sessions` per polling thread.
    """

    max_age: float = DEFAULT_SESSION_AGE
    options: BackendOptions = field(default_factory=BackendOptions)
    _sessions: dict[str, _Session] = field(default_factory=dict, repr=False)
    _answers: dict[tuple[str, tuple[str, ...]], _Answer] = field(default_factory=dict, repr=False)

    def start_cycle(self) -> None:
        """Forget the previous cycle's answers: every path is asked again."""
        self._answers.clear()

    def close(self) -> None:
        """Close every kept backend."""
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            session.backend.close()

    def remembered(self, identity: str, group: tuple[str, ...]) -> _Answer | None:
        """This cycle's answer for a path asked with `identity`, if any."""
        return self._answers.get((identity, group))

    def remember(self, identity: str, group: tuple[str, ...], answer: _Answer) -> None:
        self._answers[(identity, group)] = answer

    def backend(
        self, identity: str, settings: Settings, deadline: float
    ) -> tuple[Backend, bool, int]:
        """A logged-in backend for `identity`, whether it is kept (closed by `close`), and the
        requests its login took (0 when reused)."""
        now = time.monotonic()
        kept = self._sessions.get(identity)
        if kept is not None and now - kept.created <= self.max_age:
            _set_deadline(kept.backend, deadline)
            return kept.backend, True, 0
        if kept is not None:
            del self._sessions[identity]
            kept.backend.close()
        backend = make_backend(settings, self.options)
        _set_deadline(backend, deadline)
        try:
            backend.login()
        except BaseException:
            backend.close()
            raise
        keep = callable(getattr(backend, "kv2_state", None))
        if keep:
            self._sessions[identity] = _Session(backend, now)
        return backend, keep, _request_count(backend)


def _set_deadline(backend: Backend, deadline: float) -> None:
    set_deadline = getattr(backend, "set_deadline", None)
    if callable(set_deadline):
        set_deadline(deadline)


def _request_count(backend: Backend) -> int:
    transport = getattr(backend, "transport", None)
    count = getattr(transport, "request_count", 0)
    return count if isinstance(count, int) else 0


# ------------------------------------------------------------------ settings of a record


@dataclass(frozen=True)
class RecordSettings:
    """The settings a record's render used, rebuilt, and the policy decision for its project."""

    settings: Settings
    decision: Decision | None
    #: A digest of everything that distinguishes this identity from another record's.
    identity: str


def settings_for(record: Record, environ: Mapping[str, str]) -> RecordSettings:
    """Rebuild the settings of `record`'s render from the operator environment `environ`.

    Raises `ConfigError` (including `PolicyDeniedError`) when the policy refuses the project or
    a recorded identity setting, when the render used credentials the Application supplied
    (nobody else can log in as that identity), or when the configuration is invalid.
    """
    supplied = str(record.identity.get(APPLICATION_CREDENTIALS, ""))
    if supplied:
        raise ConfigError(
            f"the render logged in with credentials the Application supplied ({supplied}); "
            "the watcher cannot log in as that identity and uses no other"
        )
    env = {k: v for k, v in environ.items() if not k.startswith(ARGOCD_ENV_PREFIX)}
    env[PROJECT_ENV] = record.project
    env["ARGOCD_APP_NAME"] = record.name
    env["ARGOCD_APP_NAMESPACE"] = record.namespace
    policy = load_for(env)
    decision = decide(policy, env) if policy is not None else None
    overrides = dict(decision.overrides) if decision is not None else {}
    # The operator's layers (environment, AVP_SECRET's Kubernetes Secret) and the policy's:
    # what a render of this project gets before any Application setting. Read once.
    settings = load_settings(
        env,
        overrides=overrides,
        overrides_origin=decision.overrides_origin if decision is not None else "tenant policy",
    )
    app_layer: dict[str, str] = {}
    for name in IDENTITY_SETTINGS:
        recorded = str(record.identity.get(name, "")).strip()
        if not recorded or name in overrides:
            continue  # the policy's identity wins, as in a render
        if recorded != (settings.get(name) or "").strip():
            app_layer[ARGOCD_ENV_PREFIX + name] = recorded
    if app_layer:
        env.update(app_layer)
        if policy is not None:
            decision = decide(policy, env)  # judges the recorded settings as the render's
        settings = dataclasses.replace(settings, environ=dict(env))
    # Everything the backend is built from, minus the Application's name: Applications of one
    # identity share a backend and this cycle's answers, whatever environment a caller passes.
    basis = {k: v for k, v in env.items() if k not in ("ARGOCD_APP_NAME", "ARGOCD_APP_NAMESPACE")}
    basis.pop(PROJECT_ENV, None)
    identity = hashlib.sha256(
        json.dumps([sorted(basis.items()), sorted(overrides.items())]).encode("utf-8")
    ).hexdigest()
    return RecordSettings(settings, decision, identity)


def _address(settings: Settings) -> str:
    return (settings.get("VAULT_AGENT_ADDR") or settings.get("VAULT_ADDR") or "").strip()


# ------------------------------------------------------------------ the poll


def check_record(
    record: Record,
    environ: Mapping[str, str],
    *,
    deadline: float,
    sessions: Sessions,
    key: bytes | None = None,
) -> PollResult:
    """Poll every unpinned reference of `record`; see the module docstring for the walls.

    `environ` is the watcher's own (operator) environment; `deadline` a `time.monotonic()`
    instant bounding logins and requests; `key` the index's volume key (read from the index
    under `environ`'s cache directory when None and a fingerprint must be compared).
    """
    pinned = tuple(reference for reference in record.references if reference.version is not None)
    candidates = [reference for reference in record.references if reference.version is None]
    if not candidates:
        return PollResult(pinned=pinned)
    try:
        built = settings_for(record, environ)
    except ConfigError as exc:
        # A project (or a recorded identity setting) the policy refuses: nothing is polled.
        refused = tuple(candidates) if isinstance(exc, PolicyDeniedError) else ()
        return PollResult(pinned=pinned, refused=refused, errors=(PollError("", str(exc)),))
    refused_list: list[Reference] = []
    errors: list[PollError] = []
    allowed: list[Reference] = []
    backend_type = (built.settings.get("AVP_TYPE") or "").strip()
    address = _address(built.settings) if backend_type == "vault" else ""
    for reference in candidates:
        if built.decision is not None and built.decision.path_refusal(reference.path) is not None:
            refused_list.append(reference)
        elif reference.backend != backend_type:
            errors.append(
                PollError(
                    reference.path,
                    f"recorded for backend {reference.backend or '(none)'}, but AVP_TYPE is "
                    f"{backend_type or '(unset)'}; not polled",
                )
            )
        elif reference.address != address:
            errors.append(
                PollError(
                    reference.path,
                    f"recorded for Vault at {reference.address or '(none)'}, but the settings "
                    f"name {address or '(none)'}; not polled",
                )
            )
        else:
            allowed.append(reference)
    poller = _Poller(built, sessions=sessions, deadline=deadline, key=key, environ=environ)
    answers: dict[tuple[str, ...], _Answer | PollError] = {}
    try:
        for reference in allowed:
            group = _group(reference)
            if group not in answers:
                answers[group] = poller.answer(reference, group)
    finally:
        poller.close()
    changed: list[Reference] = []
    unchanged: list[Reference] = []
    for reference in allowed:
        answer = answers[_group(reference)]
        if isinstance(answer, PollError):
            errors.append(PollError(reference.path, answer.message))
        elif _changed(record, reference, answer):
            changed.append(reference)
        else:
            unchanged.append(reference)
    return PollResult(
        changed=tuple(changed),
        unchanged=tuple(unchanged),
        pinned=pinned,
        refused=tuple(refused_list),
        errors=tuple(errors),
        requests=poller.requests,
        polled=poller.polled,
    )


def _group(reference: Reference) -> tuple[str, ...]:
    return (
        reference.backend,
        reference.address,
        reference.path.strip().strip("/"),
        (reference.kv_version or "").strip(),
    )


def _changed(record: Record, reference: Reference, answer: _Answer) -> bool:
    if reference.status == "missing" or answer.value is None:
        # Appeared since a render that used a default, or gone since a render that read it.
        return (reference.status == "missing") != (answer.value is None)
    if answer.kind == FINGERPRINT:
        return answer.value != reference.fingerprint
    if reference.read_version is not None:
        return answer.value != reference.read_version
    # A record without the version read (format 1): a version written after the render is a
    # change. Both times are UTC; Vault's has sub-seconds, the render's has none.
    return bool(answer.created and record.rendered_at) and (
        answer.created[:19] > record.rendered_at[:19]
    )


class _Poller:
    """Asks the backend of one record for the state of each group, once."""

    def __init__(
        self,
        built: RecordSettings,
        *,
        sessions: Sessions,
        deadline: float,
        key: bytes | None,
        environ: Mapping[str, str],
    ) -> None:
        self.built = built
        self.sessions = sessions
        self.deadline = deadline
        self.key = key
        self.environ = environ
        self.requests = 0
        self.polled = 0
        self._backend: Backend | None = None
        self._kept = False
        self._failure: PollError | None = None

    def answer(self, reference: Reference, group: tuple[str, ...]) -> _Answer | PollError:
        memo = self.sessions.remembered(self.built.identity, group)
        if memo is not None:
            return memo
        if time.monotonic() >= self.deadline:
            return PollError(reference.path, "the poll deadline passed before it was polled")
        backend = self._backend_or_error()
        if isinstance(backend, PollError):
            return backend
        before = _request_count(backend)
        try:
            found = self._ask(backend, reference)
        except BackendError as exc:
            return PollError(reference.path, str(exc))
        except OSError as exc:
            return PollError(reference.path, f"the index key cannot be read: {exc.strerror}")
        finally:
            self.requests += _request_count(backend) - before
        self.polled += 1
        self.sessions.remember(self.built.identity, group, found)
        return found

    def close(self) -> None:
        """Close a backend that `Sessions` does not keep (the file backend)."""
        if self._backend is not None and not self._kept:
            self._backend.close()
        self._backend = None

    def _backend_or_error(self) -> Backend | PollError:
        if self._backend is not None:
            return self._backend
        if self._failure is not None:
            return self._failure
        try:
            backend, kept, used = self.sessions.backend(
                self.built.identity, self.built.settings, self.deadline
            )
        except PluginError as exc:
            self._failure = PollError("", str(exc))
            return self._failure
        self._backend, self._kept = backend, kept
        self.requests += used
        return backend

    def _ask(self, backend: Backend, reference: Reference) -> _Answer:
        ref = SecretRef(reference.path, None, reference.kv_version)
        kv2_state = getattr(backend, "kv2_state", None)
        if callable(kv2_state) and (reference.kv_version or "").strip() != "1":
            state = kv2_state(ref)
            if state is not None:
                return _Answer(VERSION, state.current_version, state.created_time)
        try:
            data = backend.read(ref)
        except MissingPathError:
            return _Answer(FINGERPRINT, None)
        return _Answer(FINGERPRINT, fingerprint(self._key(), data))

    def _key(self) -> bytes:
        if self.key is None:
            root = _index_root(self.environ)
            if root is None:
                raise BackendError("no cache directory: the index key cannot be read")
            self.key = volume_key(root)
        return self.key


__all__ = [
    "DEFAULT_SESSION_AGE",
    "PollError",
    "PollResult",
    "RecordSettings",
    "Sessions",
    "check_record",
    "settings_for",
]
