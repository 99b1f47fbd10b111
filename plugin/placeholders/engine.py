"""The placeholder engine: parse -> plan -> fetch -> substitute -> emit.

Renderers (Helm, Kustomize, plain directories, Jinja2) produce `InputStream`s
of YAML/JSON text; the engine turns them into one output YAML stream in which
every placeholder is resolved, or raises `PluginError` and produces nothing.
The backend is created (and logs in) only when some placeholder needs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from plugin.errors import BackendError, DeadlineError, InputError, PluginError
from plugin.manifests import reader, splice
from plugin.manifests.inputs import MAX_PARSED_DOCUMENT, InputStream, format_size
from plugin.manifests.reader import Document
from plugin.manifests.splice import Scan
from plugin.placeholders.substitute import (
    Job,
    Memo,
    PlanMemo,
    Rules,
    ScannedMemo,
    Site,
    plan,
    spliceable,
    substitute,
)
from plugin.secrets.base import Backend, SecretRef
from plugin.secrets.fetch import Results, fetch_all

log = logging.getLogger(__name__)

BackendFactory = Callable[[], Backend]

__all__ = [
    "EngineOptions",
    "InputStream",
    "Outcome",
    "ResolutionError",
    "generate",
    "resolve",
    "write",
]


class ResolutionError(PluginError):
    """Some placeholders could not be resolved; `sites` lists them in document order."""

    #: At most this many sites are listed in the message (Argo CD shows and caches it).
    MAX_LISTED = 100

    def __init__(self, sites: Sequence[Site]) -> None:
        self.sites = list(sites)
        count = len(self.sites)
        noun = "placeholder" if count == 1 else "placeholders"
        lines = [f"{count} {noun} could not be resolved:"]
        lines.extend(f"  {site.message()}" for site in self.sites[: self.MAX_LISTED])
        if count > self.MAX_LISTED:
            lines.append(f"  … and {count - self.MAX_LISTED} more (run `plugin check` for all)")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class EngineOptions:
    rules: Rules = field(default_factory=Rules)
    #: `time.monotonic()` instant after which reads fail.
    deadline: float = float("inf")
    #: Documents that are not Kubernetes objects: skip (directories) or fail (streams).
    skip_non_manifests: bool = True
    #: Ask the backend why a read was refused (`plugin check`).
    explain_denials: bool = False


@dataclass
class Outcome:
    """Everything one run found: the documents (resolved in place) and every placeholder site."""

    #: Parsed documents, and the text of those copied through as they are.
    documents: list[Document | str]
    jobs: list[Job]
    sites: list[Site]

    @property
    def failures(self) -> list[Site]:
        return [site for site in self.sites if site.status.failed]


#: Documents handled between two looks at the clock, and parsed per libyaml batch: the
#: deadline is honoured within one batch however many documents a tenant renders.
_DEADLINE_EVERY = 512
_PARSE_BATCH = 2048
#: Small documents are written together, about this many characters a call (a call per
#: document costs more than copying them into one string).
_WRITE_CHUNK = 65536


def check_deadline(deadline: float, doing: str) -> None:
    """Raise `DeadlineError` once the render deadline (a `time.monotonic()` instant) passed."""
    if time.monotonic() >= deadline:
        raise DeadlineError(f"the render deadline (PLUGIN_TIMEOUT) passed while {doing}")


def load(
    streams: Sequence[InputStream], skip_non_manifests: bool, deadline: float = float("inf")
) -> list[Document | str]:
    """Split and (where needed) parse every stream; all input errors are reported together.

    A document that needs no parsing is kept as its text only (a `str`, copied to the output
    as it is): a large render costs its text and little more. One whose placeholders can be
    resolved in its text (`substitute.spliceable`) is only scanned (`Document.scan`), the
    rest is constructed (`Document.content`).
    """
    documents: list[Document | str] = []
    problems: list[str] = []
    for stream in streams:
        check_deadline(deadline, "reading manifests")
        try:
            slots: list[reader.RawDocument | str] = []
            to_parse: list[reader.RawDocument] = []
            for number, raw in enumerate(reader.split(stream)):
                if number % _DEADLINE_EVERY == _DEADLINE_EVERY - 1:
                    check_deadline(deadline, f"reading {stream.name} (document {number + 1})")
                if not reader.needs_parsing(raw):
                    slots.append(raw.text)
                    continue
                if len(raw.text) > MAX_PARSED_DOCUMENT:
                    raise InputError(
                        f"{raw.where()}: the document is {format_size(len(raw.text))}, larger "
                        f"than any Kubernetes object can be ({format_size(MAX_PARSED_DOCUMENT)} "
                        "at most); refused"
                    )
                slots.append(raw)
                to_parse.append(raw)
            parsed: dict[int, Any] = {}
            scanned: dict[int, Scan] = {}
            for first in range(0, len(to_parse), _PARSE_BATCH):
                check_deadline(deadline, f"parsing {stream.name} (document {first + 1})")
                batch = to_parse[first : first + _PARSE_BATCH]
                scanned.update(_scan(batch))
                batch = [raw for raw in batch if id(raw) not in scanned]
                parsed.update(zip(map(id, batch), reader.parse_many(batch), strict=True))
            for slot in slots:
                if isinstance(slot, str):
                    documents.append(slot)
                    continue
                scan = scanned.get(id(slot))
                if scan is not None:
                    documents.append(Document(slot, None, scan))
                    continue
                document = _checked_document(slot, parsed[id(slot)], skip_non_manifests)
                if document is not None:
                    documents.append(document)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError("\n".join(problems))
    return documents


def _scan(batch: list[reader.RawDocument]) -> dict[int, Scan]:
    """The documents of `batch` that can be resolved in their text, by `id` of the raw."""
    if not splice.available():
        return {}
    candidates = [raw for raw in batch if reader.may_splice(raw)]
    for raw in candidates:
        reader.check_nesting(raw)  # before libyaml sees it
    scans = splice.scan_many([raw.text for raw in candidates])
    return {
        id(raw): scan
        for raw, scan in zip(candidates, scans, strict=True)
        if scan is not None and spliceable(scan)
    }


def _checked_document(
    raw: reader.RawDocument, content: Any, skip_non_manifests: bool
) -> Document | None:
    """Keep Kubernetes objects; skip or refuse anything else."""
    if content is None:
        return None
    if isinstance(content, dict) and isinstance(content.get("kind"), str) and content["kind"]:
        return Document(raw, content)
    if skip_non_manifests:
        log.debug("%s: not a Kubernetes object (no kind), skipped", raw.where())
        return None
    if isinstance(content, dict):
        raise InputError(f"{raw.where()}: the document has no 'kind', so it is not a manifest")
    raise InputError(f"{raw.where()}: the document is a {type(content).__name__}, not a manifest")


def resolve(
    documents: list[Document | str], options: EngineOptions, make_backend: BackendFactory
) -> Outcome:
    """Plan all reads, fetch each distinct one once, then substitute in every document."""
    jobs: list[Job] = []
    planned: PlanMemo = {}
    for number, document in enumerate(documents):
        if number % _DEADLINE_EVERY == 0:
            check_deadline(options.deadline, f"looking for placeholders (document {number + 1})")
        if not isinstance(document, str):
            with _depth_guard(document):
                jobs.append(plan(document, options.rules, planned))
    refs: set[SecretRef] = set().union(*(job.refs for job in jobs)) if jobs else set()
    results: Results = {}
    if refs:
        results = _fetch(refs, options, make_backend)
    sites: list[Site] = []
    memo: Memo = {}
    scanned: ScannedMemo = {}
    # No deadline check here: reads that ran out of time are reported per placeholder (path
    # and all), and substituting touches only what planning already walked in time.
    for job in jobs:
        with _depth_guard(job.document):
            sites.extend(substitute(job, results, options.rules, memo, scanned))
    return Outcome(documents, jobs, sites)


class _depth_guard:  # noqa: N801 - used as a context manager, like contextlib's
    """Deeply nested block YAML parses fine but exhausts Python's recursion: report it.

    A class rather than a generator: it guards every document twice per run, and a
    generator-based context manager costs several times more per use.
    """

    __slots__ = ("document",)

    def __init__(self, document: Document) -> None:
        self.document = document

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and issubclass(kind, RecursionError):
            raise InputError(
                f"{self.document.where()}: the document is nested too deeply"
            ) from None


def _fetch(refs: set[SecretRef], options: EngineOptions, make_backend: BackendFactory) -> Results:
    started = time.monotonic()
    backend = make_backend()
    try:
        set_deadline = getattr(backend, "set_deadline", None)
        if callable(set_deadline):
            set_deadline(options.deadline)  # bounds the login too, not only the reads
        backend.login()
        log.debug("backend ready in %.3f s", time.monotonic() - started)
        results = fetch_all(backend, refs, options.deadline)
        prefetched = getattr(backend, "prefetched", None)
        remember_values(results, options.rules, prefetched if callable(prefetched) else None)
        if options.explain_denials:
            _explain_denials(backend, results)
        return results
    finally:
        backend.close()


def remember_values(
    results: Results, rules: Rules, registered: Callable[[SecretRef], bool] | None = None
) -> None:
    """Teach the run's redactor every value just fetched (before anything can print it).

    `registered` (a backend's optional `prefetched`) names reads whose data the redactor has
    already learnt (the prefetch registers what it reads as it arrives): learning a map again
    costs as much as the first time, on the path between the renderer and the output.
    """
    if rules.redactor is None:
        return
    for ref, data in results.items():
        if isinstance(data, BackendError) or (registered is not None and registered(ref)):
            continue
        rules.redactor.add_secret(dict(data))


def _explain_denials(backend: Backend, results: Results) -> None:
    """For `plugin check`: add what the identity may do where a read was refused."""
    describe = getattr(backend, "describe_access", None)
    if not callable(describe):
        return
    for ref, result in list(results.items()):
        if isinstance(result, BackendError) and "permission denied" in str(result):
            try:
                results[ref] = BackendError(f"{result}; {describe(ref)}")
            except BackendError as exc:
                log.debug("could not check capabilities: %s", exc)


def emit(outcome: Outcome) -> str:
    """The output stream: untouched documents byte for byte, changed ones re-serialised."""
    return "---\n".join(_texts(outcome))


def write(outcome: Outcome, out: TextIO) -> None:
    """`emit` written piece by piece: a large output is never built as one more string
    (small documents are joined into pieces of about `_WRITE_CHUNK` characters).

    Every changed document is serialised before the first byte is written, so a failure
    there still leaves stdout empty.
    """
    batch: list[str] = []
    size = 0
    started = False
    for text in _texts(outcome):
        batch.append(text)
        size += len(text)
        if size >= _WRITE_CHUNK:
            out.write("---\n" + "---\n".join(batch) if started else "---\n".join(batch))
            started, batch, size = True, [], 0
    if batch:
        out.write("---\n" + "---\n".join(batch) if started else "---\n".join(batch))


def _texts(outcome: Outcome) -> list[str]:
    """Each document's output text, ending with a line break."""
    touched = {id(job.document): job for job in outcome.jobs if job.changed}
    if touched:  # PyYAML is loaded only when a document changed (the others are copied)
        from plugin.manifests.yamlio import dump
    parts: list[str] = []
    for document in outcome.documents:
        if isinstance(document, str):
            text = document
        elif id(document) not in touched:
            text = document.raw.text
        elif document.content is None:
            text = _spliced(touched[id(document)])
        else:
            with _depth_guard(document):
                text = dump(document.content)
        parts.append(text if text.endswith("\n") else text + "\n")
    return parts


def _spliced(job: Job) -> str:
    """A scanned document's text with its new values in place of the changed scalars.

    When one of them cannot be written as a scalar in place (a map, a list or a float a
    modifier or the store gave), the document is constructed after all, the same values are
    set at the same paths, and it is written as every constructed document is.
    """
    document = job.document
    edits = [
        (scalar, value)
        for scalar, value in zip(job.spliced, job.spliced_values, strict=True)
        if not (isinstance(value, str) and value == scalar.value)
    ]
    text = splice.splice(document.raw.text, edits)
    if text is not None:
        return text
    from plugin.manifests.yamlio import dump

    content = reader.parse(document.raw)
    for scalar, value in zip(job.spliced, job.spliced_values, strict=True):
        _put(content, scalar.path, value)
    with _depth_guard(document):
        return dump(content)


def _put(content: Any, path: tuple[str | int, ...], value: Any) -> None:
    """Set the value at `path` (a scan's path: text keys, no aliases, no duplicate keys)."""
    node = content
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def generate(
    streams: Sequence[InputStream], options: EngineOptions, make_backend: BackendFactory
) -> str:
    """Resolve every placeholder of `streams`; return the YAML stream or raise."""
    documents = load(streams, options.skip_non_manifests, options.deadline)
    outcome = resolve(documents, options, make_backend)
    if outcome.failures:
        raise ResolutionError(outcome.failures)
    return emit(outcome)


def summary(outcome: Outcome) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for site in outcome.sites:
        counts[site.status.value] = counts.get(site.status.value, 0) + 1
    return counts
