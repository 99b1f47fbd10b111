"""Two-phase secrets (`RESOLVE_VALUES=true`): placeholders in Helm values are resolved before
`helm template`, so Helm functions (`b64enc`, `sha256sum`, `tpl`, conditionals) see real
values; the rendered output is still scanned afterwards.

One read plan serves both phases: `SharedReads` keeps a single backend session and a single
result table; the second phase reads only the paths the first one did not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from plugin.errors import BackendError
from plugin.manifests.reader import Document, RawDocument
from plugin.placeholders.engine import BackendFactory, ResolutionError, remember_values
from plugin.placeholders.substitute import Rules, Site, plan, substitute
from plugin.secrets.base import Backend, SecretData, SecretRef
from plugin.secrets.fetch import Results, fetch_all

VALUES_KIND = "HelmValues"


class SharedReads:
    """A backend created and logged in at most once, and every result it returned."""

    def __init__(self, make_backend: BackendFactory, rules: Rules, deadline: float) -> None:
        self._make = make_backend
        self._backend: Backend | None = None
        self.rules = rules
        self.deadline = deadline
        self.results: Results = {}

    def backend(self) -> Backend:
        if self._backend is None:
            backend = self._make()
            set_deadline = getattr(backend, "set_deadline", None)
            if callable(set_deadline):
                set_deadline(self.deadline)  # bounds the login too, not only the reads
            backend.login()
            self._backend = backend
        return self._backend

    def read_many(self, refs: set[SecretRef]) -> Results:
        missing = {ref for ref in refs if ref not in self.results}
        if missing:
            fetched = fetch_all(self.backend(), missing, self.deadline)
            remember_values(fetched, self.rules)
            self.results.update(fetched)
        return self.results

    def factory(self) -> BackendFactory:
        """A factory for the engine's second phase, served from the shared table first."""
        return lambda: _SharedBackend(self)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def secret_strings(self) -> Iterator[str]:
        """Every string value read so far (for redacting renderer messages)."""
        for data in self.results.values():
            if not isinstance(data, BackendError):
                yield from _strings(data)

    def resolve_values(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Resolve the placeholders of several values documents with one batch of reads.

        Raises `ResolutionError` listing every failed placeholder (file and key, no value).
        """
        documents = [
            Document(RawDocument(name, 1, 1, "", is_json=False), {"kind": VALUES_KIND, "values": v})
            for name, v in items
        ]
        jobs = [plan(document, self.rules) for document in documents]
        refs: set[SecretRef] = set().union(*(job.refs for job in jobs)) if jobs else set()
        results = self.read_many(refs) if refs else self.results
        failures: list[Site] = []
        for job in jobs:
            sites = substitute(job, results, self.rules)
            failures.extend(site for site in sites if site.status.failed)
        if failures:
            raise ResolutionError(failures)
        out: list[dict[str, Any]] = []
        for document in documents:
            assert document.content is not None
            out.append(document.content["values"])
        return out


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


class _SharedBackend:
    """The `Backend` the engine sees in phase two: shared results first, then the real one."""

    def __init__(self, shared: SharedReads) -> None:
        self.shared = shared
        self.max_workers = 1

    def login(self) -> None:
        self.max_workers = int(self.shared.backend().max_workers)

    def read(self, ref: SecretRef) -> SecretData:
        known = self.shared.results.get(ref)
        if known is None:
            known = self.shared.backend().read(ref)
            self.shared.results[ref] = known
            if self.shared.rules.redactor is not None:
                self.shared.rules.redactor.add_secret(dict(known))
        if isinstance(known, BackendError):
            raise known
        return known

    def close(self) -> None:
        """The shared session is closed by its owner, once."""
