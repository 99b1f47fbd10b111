"""Walk parsed manifests once to plan every read, then substitute the fetched values.

The planning walk visits every string in document order (map values, list items, nested
lists too) and keeps the few that may hold a placeholder (`Candidate`: the container, the
key, the field path and the placeholders found); the substitution then visits only those,
so a document is traversed once however large it is. Documents that change shape while
being substituted (`avp.kubernetes.io/remove-missing` deletes entries,
`avp.kubernetes.io/replace-keys` rewrites keys) are walked a second time instead, as a whole.
Every placeholder occurrence becomes a `Site` with a status, which is what `plugin check`
prints and what `plugin generate` turns into errors. Values are never re-scanned, so a
secret that contains `<path:…>` stays as is.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from plugin.errors import BackendError, MissingPathError, ModifierError
from plugin.manifests.reader import Document
from plugin.manifests.splice import BLOCK_STYLES, Scalar, Scan
from plugin.placeholders import annotations as ann
from plugin.placeholders import grammar, modifiers
from plugin.placeholders.grammar import Placeholder
from plugin.secrets.base import SecretData, SecretRef, read_version
from plugin.security.redact import Redactor

log = logging.getLogger(__name__)

FetchResults = Mapping[SecretRef, SecretData | BackendError]
#: Resolved placeholders of one run: (text, kv-version, annotation path, kind) -> value, status.
Memo = dict[tuple[str, str | None, "SecretRef | None", str], tuple[Any, "Status"]]
#: What the scalars of scanned documents hold, by text: their placeholders (None: nothing to
#: substitute) and the reads those need.
PlanMemo = dict[str, tuple[list[grammar.Match] | None, frozenset[SecretRef]]]
#: Resolved scalars of scanned documents of one run: (text, kind) -> the new value and each
#: site's placeholder, status and detail.
ScannedMemo = dict[tuple[str, str], tuple[Any, list[tuple[str, "Status", str]]]]

SECRET = "Secret"  # noqa: S105 - a kind name, not a credential
CONFIG_MAP = "ConfigMap"


class Status(StrEnum):
    OK = "ok"
    DEFAULTED = "ok (default used)"
    REMOVED = "removed (missing, remove-missing)"
    MISSING_PATH = "missing path"
    MISSING_KEY = "missing key"
    MODIFIER_ERROR = "modifier error"
    INVALID = "invalid placeholder"
    DENIED = "path not allowed"
    BACKEND_ERROR = "backend error"
    #: `<path:` with no closing `>`: left as text (a warning; an error with PLUGIN_STRICT).
    UNTERMINATED = "unterminated placeholder"

    @property
    def failed(self) -> bool:
        return self not in (Status.OK, Status.DEFAULTED, Status.REMOVED, Status.UNTERMINATED)


@dataclass(frozen=True)
class Site:
    """One placeholder occurrence and what became of it (never its value)."""

    document: str
    field: str
    placeholder: str
    status: Status
    detail: str = ""

    def message(self) -> str:
        where = f"{self.document}: {self.field}" if self.field else self.document
        text = f"{where}: {self.placeholder}: {self.status.value}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True)
class Rules:
    """Run-wide settings of the walker."""

    #: AVP_PATH_VALIDATION: every path must match this regular expression.
    path_validation: re.Pattern[str] | None = None
    #: The tenant policy's check: why a path is refused, None when it may be read.
    path_check: Callable[[str], str | None] | None = None
    #: Learns every value fetched and every value resolved (for redacting messages).
    redactor: Redactor | None = None
    #: What context-needing modifiers (`fingerprint`) receive: the operator's key.
    modifier_context: modifiers.ModifierContext = modifiers.NO_CONTEXT


class Candidate(NamedTuple):
    """A string of a document that holds a placeholder (or an unterminated `<path:`)."""

    container: dict[Any, Any] | list[Any]
    key: Any
    path: tuple[str | int, ...]
    #: The text scanned: the value itself, or the decoded text of a Secret's base64 template.
    text: str
    #: True when `text` is the decoded base64 of the value (AVP's Secret rule).
    encoded: bool
    matches: list[grammar.Match]


@dataclass
class Job:
    """One document's plan: its annotations, the reads it needs, document-level problems."""

    document: Document
    annotations: ann.Annotations
    refs: set[SecretRef] = field(default_factory=set)
    annotation_ref: SecretRef | None = None
    problems: list[Site] = field(default_factory=list)
    #: Set by the substitution pass when some placeholder was replaced or removed.
    changed: bool = False
    #: The strings the substitution pass visits, in document order; None when the whole
    #: document must be walked again (remove-missing, replace-keys).
    candidates: list[Candidate] | None = None
    #: For a scanned document (`Document.scan`): the scalar of each candidate, whose new
    #: value the substitution writes into `spliced_values` (the candidates' container).
    spliced: list[Scalar] = field(default_factory=list)
    spliced_values: list[Any] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        document = self.document
        return (document.content is None and document.scan is None) or self.annotations.ignore


@functools.lru_cache(maxsize=4096)
def field_path(path: tuple[str | int, ...]) -> str:
    """`spec.containers[0].image`; keys that are not simple names are bracket-quoted."""
    out = "".join(_segment(part) for part in path)
    return out[1:] if out.startswith(".") else out


@functools.lru_cache(maxsize=4096)
def _segment(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    if _SIMPLE_KEY.fullmatch(part):
        return f".{part}"
    return f"[{json.dumps(part)}]"


_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_OPENING = "<path:"
_FRAGMENT = 60  # characters of an unterminated placeholder shown in messages


def path_refusal(rules: Rules, path: str) -> str | None:
    """Why `path` may not be read (AVP_PATH_VALIDATION first, then the tenant policy)."""
    if rules.path_validation is not None and rules.path_validation.search(path) is None:
        pattern = rules.path_validation.pattern
        return f"the path {path} is disallowed by AVP_PATH_VALIDATION {pattern}"
    if rules.path_check is not None:
        return rules.path_check(path)
    return None


def path_allowed(rules: Rules, path: str) -> bool:
    return path_refusal(rules, path) is None


def _denied(rules: Rules, path: str) -> str:
    return path_refusal(rules, path) or f"the path {path} is not allowed"


# ---------------------------------------------------------------- planning


def spliceable(scan: Scan) -> bool:
    """Whether a scanned document can be resolved in its text (else it is constructed).

    Only documents where a placeholder's result is one scalar in place of another: a
    Kubernetes object (text `kind`) that is no Secret (base64 values are templates too), with
    no `avp.kubernetes.io/` annotation (generic placeholders, ignore, kv-version, remove-missing
    and replace-keys all need the structure), and no placeholder in a block scalar (`|`, `>`),
    whose span this module does not rewrite.
    """
    if not scan.kind or scan.kind == SECRET:
        return False
    if any(key.startswith(ann.PREFIX) for key in scan.annotation_keys):
        return False
    return not any(
        scalar.style in BLOCK_STYLES and _holds_placeholder(scalar.value) for scalar in scan.scalars
    )


def _holds_placeholder(value: str) -> bool:
    """What the planning walk keeps of a string without the path annotation."""
    return _OPENING in value or next(grammar.find(value, False), None) is not None


def plan(document: Document, rules: Rules, memo: PlanMemo | None = None) -> Job:
    """Collect the distinct reads a document needs; check its annotations.

    `memo` (one per run, with the same `rules`) keeps what the scalars of scanned documents
    hold, by their text: a large render writes the same placeholder in many documents.
    """
    if document.scan is not None and document.content is None:
        return _plan_scanned(document, document.scan, rules, {} if memo is None else memo)
    content = document.content
    job = Job(document, ann.read(content) if content is not None else ann.Annotations())
    if job.skipped or content is None:
        return job
    notes = job.annotations
    if notes.remove_missing and document.kind not in (SECRET, CONFIG_MAP):
        job.problems.append(
            Site(
                document.where(),
                field_path(("metadata", "annotations", ann.REMOVE_MISSING)),
                ann.REMOVE_MISSING,
                Status.INVALID,
                "this annotation can only be used on Secret or ConfigMap resources",
            )
        )
    if notes.path:
        if path_allowed(rules, notes.path):
            job.annotation_ref = SecretRef(notes.path, notes.secret_version, notes.kv_version)
        else:
            job.problems.append(
                Site(
                    document.where(),
                    field_path(("metadata", "annotations", ann.PATH)),
                    notes.path,
                    Status.DENIED,
                    _denied(rules, notes.path),
                )
            )
    if notes.remove_missing or notes.replace_keys:
        found_matches: Iterator[grammar.Match] = (
            match
            for text in _texts(content, document.kind == SECRET, notes)
            for match in grammar.find(text, notes.generic_enabled)
        )
    else:
        collector = _Collector(document.kind == SECRET, notes.generic_enabled)
        collector.walk_map(content, ())
        job.candidates = collector.candidates
        found_matches = (match for c in collector.candidates for match in c.matches)
    _add_refs(job, found_matches, rules)
    return job


def _plan_scanned(document: Document, scan: Scan, rules: Rules, memo: PlanMemo) -> Job:
    """`plan` for a document `spliceable` accepted: its candidates are scalars of the text.

    No annotation applies (`spliceable`), so only `<path:…>` placeholders count, and the
    new values go to `Job.spliced_values` instead of a constructed document.
    """
    job = Job(document, _NO_ANNOTATIONS, candidates=[])
    candidates = job.candidates
    assert candidates is not None
    values = job.spliced_values
    refs = job.refs
    for scalar in scan.scalars:
        value = scalar.value
        known = memo.get(value)
        if known is None:
            known = memo[value] = _scalar_plan(value, rules)
        matches, scalar_refs = known
        if matches is None:
            continue
        candidates.append(Candidate(values, len(values), scalar.path, value, False, matches))
        job.spliced.append(scalar)
        values.append(value)
        refs.update(scalar_refs)
    return job


#: What a scanned document's annotations are (none): one frozen instance for all of them.
_NO_ANNOTATIONS = ann.Annotations()


def _scalar_plan(
    value: str, rules: Rules
) -> tuple[list[grammar.Match] | None, frozenset[SecretRef]]:
    """The placeholders of a scanned scalar (None when the substitution has nothing to do
    there) and the reads they need (`_add_refs` for a document without annotations).

    A frozenset: adding it to a job's set reuses the hashes it keeps (a `SecretRef`'s own
    hash is computed in Python at every call)."""
    matches = list(grammar.find(value, False))
    if not matches and _OPENING not in value:
        return None, frozenset()
    refs = frozenset(
        SecretRef(found.path, found.version, None)
        for found in (match.placeholder for match in matches)
        if found is not None and found.path is not None and path_allowed(rules, found.path)
    )
    return matches, refs


def _add_refs(job: Job, matches: Iterator[grammar.Match], rules: Rules) -> None:
    """The reads the placeholders found need (those the rules allow)."""
    uses_annotation = False
    for match in matches:
        found = match.placeholder
        if found is None:
            continue
        if found.path is None:
            uses_annotation = True
        elif path_allowed(rules, found.path):
            job.refs.add(SecretRef(found.path, found.version, job.annotations.kv_version))
    if uses_annotation and job.annotation_ref is not None:
        job.refs.add(job.annotation_ref)


class _Collector:
    """The planning walk: keeps the strings that may hold a placeholder, in document order.

    The order is the substitution's (depth first, keys in order), so sites are reported as
    before; a container reached twice through YAML aliases is visited once (alias bombs).
    Strings that are not kept are left as they are, except text that Go would write with
    U+FFFD (lone surrogates from escapes), which is fixed here as the substitution would.
    """

    def __init__(self, is_secret: bool, generic: bool) -> None:
        self.is_secret = is_secret
        self.generic = generic
        self.candidates: list[Candidate] = []
        self.seen: set[int] = set()

    def walk_map(self, node: dict[Any, Any], path: tuple[str | int, ...]) -> None:
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        for key, value in node.items():
            if isinstance(value, str):
                self._string(node, key, value, path, str(key))
            elif isinstance(value, dict):
                self.walk_map(value, (*path, str(key)))
            elif isinstance(value, list):
                self.walk_list(value, (*path, str(key)))

    def walk_list(self, node: list[Any], path: tuple[str | int, ...]) -> None:
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        for index, value in enumerate(node):
            if isinstance(value, str):
                self._string(node, index, value, path, index)
            elif isinstance(value, dict):
                self.walk_map(value, (*path, index))
            elif isinstance(value, list):
                self.walk_list(value, (*path, index))

    def _string(
        self,
        node: dict[Any, Any] | list[Any],
        key: Any,
        value: str,
        path: tuple[str | int, ...],
        part: str | int,
    ) -> None:
        if "<" in value:
            matches = list(grammar.find(value, self.generic))
            if matches or _OPENING in value:
                self.candidates.append(Candidate(node, key, (*path, part), value, False, matches))
                return
        elif self.is_secret:
            decoded = _decode_template(value, self.generic)
            if decoded is not None:
                matches = list(grammar.find(decoded, self.generic))
                self.candidates.append(Candidate(node, key, (*path, part), decoded, True, matches))
                return
        if not value.isascii():
            node[key] = modifiers.go_text(value)


def _texts(node: Any, is_secret: bool, notes: ann.Annotations) -> Iterator[str]:
    """Every string the substitution pass will look at (decoded form for Secret base64)."""
    stack = [node]
    seen: set[int] = set()  # YAML aliases share objects: visit each once (alias bombs)
    while stack:
        current = stack.pop()
        if isinstance(current, dict | list):
            if id(current) in seen:
                continue
            seen.add(id(current))
        if isinstance(current, dict):
            if notes.replace_keys:
                yield from (key for key in current if isinstance(key, str))
            stack.extend(reversed(list(current.values())))
        elif isinstance(current, list):
            stack.extend(reversed(current))
        elif isinstance(current, str):
            decoded = _decode_template(current, notes.generic_enabled) if is_secret else None
            yield decoded if decoded is not None else current


def _decode_template(value: str, generic: bool) -> str | None:
    """AVP's Secret rule: a base64 value whose decoded text holds a placeholder."""
    if len(value) < 4 or "<" in value:
        return None
    decoded = modifiers.go_std_b64decode(value)
    if decoded is None:
        return None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None  # binary data (certificates, keystores) is never a template
    if not grammar.may_contain_placeholder(text):
        return None
    return text if next(grammar.find(text, generic), None) is not None else None


# ---------------------------------------------------------------- substitution


class _SiteError(Exception):
    def __init__(self, status: Status, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Substitution:
    """The substitution pass over one planned document (mutates its content)."""

    def __init__(
        self,
        job: Job,
        results: FetchResults,
        rules: Rules,
        memo: Memo | None = None,
        scanned: ScannedMemo | None = None,
    ) -> None:
        self.job = job
        self.results = results
        self.rules = rules
        self.memo: Memo = memo if memo is not None else {}
        #: Set for a scanned document (no annotations, values in `Job.spliced_values`).
        self.scanned = scanned if job.document.content is None else None
        self.notes = job.annotations
        self.kind = job.document.kind
        self.sites: list[Site] = []
        self.seen: set[int] = set()  # aliased containers are substituted once

    def where(self) -> str:
        return self.job.document.where()

    # -- walking

    def run(self) -> list[Site]:
        self.sites.extend(self.job.problems)
        content = self.job.document.content
        if not self.job.skipped:
            if self.job.candidates is None:
                assert content is not None
                self._walk_map(content, ())
            else:
                for candidate in self.job.candidates:
                    self._candidate(candidate)
            self.job.changed = any(
                site.status is not Status.UNTERMINATED
                for site in self.sites[len(self.job.problems) :]
            )
        return self.sites

    def _walk_map(self, node: dict[Any, Any], path: tuple[str | int, ...]) -> None:
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        # Field paths name a replaced key by its placeholder text, never by the secret it became.
        written_as: dict[Any, str] = {}
        if self.notes.replace_keys and any(
            isinstance(key, str) and grammar.may_contain_placeholder(key) for key in node
        ):
            written_as = self._replace_keys(node, path)
        removals: list[Any] = []
        for key, value in node.items():
            child = (*path, written_as.get(key, str(key)))
            if isinstance(value, str):
                new, missing = self._string(value, child)
                if missing and self.notes.remove_missing:
                    removals.append(key)
                else:
                    node[key] = new
            elif isinstance(value, dict):
                self._walk_map(value, child)
            elif isinstance(value, list):
                self._walk_list(value, child)
        for key in removals:
            del node[key]

    def _walk_list(self, node: list[Any], path: tuple[str | int, ...]) -> None:
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        removals: list[int] = []
        for index, value in enumerate(node):
            child = (*path, index)
            if isinstance(value, str):
                new, missing = self._string(value, child)
                if missing and self.notes.remove_missing:
                    removals.append(index)
                else:
                    node[index] = new
            elif isinstance(value, dict):
                self._walk_map(value, child)
            elif isinstance(value, list):
                self._walk_list(value, child)
        for index in reversed(removals):
            del node[index]

    def _replace_keys(self, node: dict[Any, Any], path: tuple[str | int, ...]) -> dict[Any, str]:
        """Resolve placeholders in the keys; returns each new key's text as written."""
        items = list(node.items())
        node.clear()
        written_as: dict[Any, str] = {}
        for key, value in items:
            new_key = key
            if isinstance(key, str):
                resolved, _ = self._text(key, (*path, key), typed=False)
                new_key = modifiers.go_text(resolved)
                if new_key != key:
                    written_as[new_key] = key
            node[new_key] = value
        return written_as

    # -- one string

    def _candidate(self, candidate: Candidate) -> None:
        """What `_string` does, for a string the planning walk kept (no removal here)."""
        node, key, path = candidate.container, candidate.key, candidate.path
        if candidate.encoded:
            text, _ = self._text(candidate.text, path, typed=False, matches=candidate.matches)
            node[key] = base64.b64encode(modifiers.go_bytes(str(text))).decode("ascii")
            return
        if self.scanned is not None:
            self._scanned_candidate(candidate, self.scanned)
            return
        typed = self.kind != CONFIG_MAP
        new, _ = self._text(candidate.text, path, typed=typed, matches=candidate.matches)
        node[key] = modifiers.go_text(new) if isinstance(new, str) else new

    def _scanned_candidate(self, candidate: Candidate, memo: ScannedMemo) -> None:
        """`_candidate` for a scanned document: the same text in documents of the same kind
        resolves alike (none has annotations), so it is resolved once and each occurrence
        only gets its sites. A map or list is made again for each (never shared)."""
        key = (candidate.text, self.kind)
        known = memo.get(key)
        if known is None:
            first = len(self.sites)
            typed = self.kind != CONFIG_MAP
            new, _ = self._text(
                candidate.text, candidate.path, typed=typed, matches=candidate.matches
            )
            new = modifiers.go_text(new) if isinstance(new, str) else new
            candidate.container[candidate.key] = new
            if new is None or isinstance(new, str | int | float):
                memo[key] = (
                    new,
                    [(site.placeholder, site.status, site.detail) for site in self.sites[first:]],
                )
            return
        new, sites = known
        candidate.container[candidate.key] = new
        where, field = self.where(), field_path(candidate.path)
        self.sites.extend(
            Site(where, field, text, status, detail) for text, status, detail in sites
        )

    def _string(self, value: str, path: tuple[str | int, ...]) -> tuple[Any, bool]:
        """Resolve one string value; returns the new value and whether a key was missing."""
        if self.kind == SECRET and "<" not in value:
            decoded = _decode_template(value, self.notes.generic_enabled)
            if decoded is not None:
                text, missing = self._text(decoded, path, typed=False)
                # Bytes from `base64decode` go back into the Secret exactly, as in AVP.
                return base64.b64encode(modifiers.go_bytes(str(text))).decode("ascii"), missing
        new, missing = self._text(value, path, typed=self.kind != CONFIG_MAP)
        return (modifiers.go_text(new) if isinstance(new, str) else new), missing

    def _text(
        self,
        value: str,
        path: tuple[str | int, ...],
        typed: bool,
        matches: list[grammar.Match] | None = None,
    ) -> tuple[Any, bool]:
        if matches is None:
            matches = list(grammar.find(value, self.notes.generic_enabled))
        if _OPENING in value:
            self._unterminated(value, matches, path)
        if not matches:
            return value, False
        where = field_path(path)
        whole = (
            typed and len(matches) == 1 and matches[0].start == 0 and matches[0].end == len(value)
        )
        pieces: list[str] = []
        position = 0
        missing = False
        result: Any = value
        for match in matches:
            pieces.append(value[position : match.start])
            position = match.end
            try:
                resolved, status = self._resolve(match)
                if whole:
                    result = resolved
                else:
                    pieces.append(self._as_text(resolved, embedded=typed))
            except _SiteError as failure:
                status = failure.status
                missing = missing or status is Status.MISSING_KEY
                if status is Status.MISSING_KEY and self.notes.remove_missing:
                    status = Status.REMOVED
                    log.debug(
                        "%s: %s removed: %s has no value (%s)",
                        self.where(),
                        where,
                        match.text,
                        ann.REMOVE_MISSING,
                    )
                self.sites.append(Site(self.where(), where, match.text, status, failure.detail))
                pieces.append(match.text)
                continue
            self.sites.append(Site(self.where(), where, match.text, status))
        if whole:
            return result, missing
        pieces.append(value[position:])
        return "".join(pieces), missing

    def _as_text(self, resolved: Any, embedded: bool) -> str:
        """Text for a value inside a longer string (or any ConfigMap / base64 Secret value)."""
        if isinstance(resolved, str):
            return resolved
        if isinstance(resolved, bool):
            return "true" if resolved else "false"
        if isinstance(resolved, int | float):
            return modifiers.go_number_text(resolved)
        if embedded and isinstance(resolved, dict | list):
            return json.dumps(resolved, separators=(",", ":"), ensure_ascii=False)
        kind = "a map" if isinstance(resolved, dict) else "a list"
        if not isinstance(resolved, dict | list):
            kind = f"a value of type {type(resolved).__name__}"
        raise _SiteError(
            Status.MODIFIER_ERROR,
            f"resolves to {kind}, but this {self.kind or 'value'} field needs text "
            "(select one field with jsonPath)",
        )

    def _unterminated(
        self, value: str, matches: list[grammar.Match], path: tuple[str | int, ...]
    ) -> None:
        """Report each `<path:` that starts no placeholder: its `>` is missing (AVP is silent)."""
        start = value.find(_OPENING)
        while start != -1:
            if not any(match.start <= start < match.end for match in matches):
                line_end = value.find("\n", start)
                fragment = value[start : line_end if line_end != -1 else len(value)]
                if len(fragment) > _FRAGMENT:
                    fragment = fragment[:_FRAGMENT] + "…"
                self.sites.append(
                    Site(
                        self.where(),
                        field_path(path),
                        fragment,
                        Status.UNTERMINATED,
                        "no closing '>', so it is left as text; close it, or set "
                        "PLUGIN_STRICT=true to make this an error",
                    )
                )
            start = value.find(_OPENING, start + 1)

    # -- one placeholder

    def _resolve(self, match: grammar.Match) -> tuple[Any, Status]:
        """The value of one placeholder; the same text in the same context is resolved once.

        Only text, numbers, booleans and null are remembered: a map or list is copied for
        each site, so that no two places of the output share one object (the value as read,
        or a part of it picked by jsonPath, is one object however often it is placed). A
        shared object would be written as a YAML anchor and alias, which AVP never writes.
        """
        key = (match.text, self.notes.kv_version, self.job.annotation_ref, self.kind)
        known = self.memo.get(key)
        if known is not None:
            return known
        value, status = self._resolve_once(match)
        if value is None or isinstance(value, str | int | float):
            self.memo[key] = (value, status)
        elif isinstance(value, dict | list):
            value = copy.deepcopy(value)
        return value, status

    def _resolve_once(self, match: grammar.Match) -> tuple[Any, Status]:
        found = match.placeholder
        if self.rules.redactor is not None:
            self.rules.redactor.add_public(match.text)
        if found is None:
            detail = str(match.error) if match.error else "invalid placeholder"
            raise _SiteError(Status.INVALID, detail)
        value, ref_text, read = self._lookup(found)
        fetched = value
        statements = found.modifiers
        status = Status.OK
        context = self.rules.modifier_context
        if any(m.name in modifiers.NEEDS_READ_VERSION for m in statements):
            context = _with_read_version(context, read, ref_text)
        if value is None:
            fallback = next(
                (i for i, m in enumerate(statements) if m.name == modifiers.DEFAULT), None
            )
            if fallback is None:
                raise _SiteError(Status.MISSING_KEY, f"key {found.key!r} not found at {ref_text}")
            value = statements[fallback].raw_argument
            statements = statements[fallback + 1 :]
            status = Status.DEFAULTED
        try:
            for statement in statements:
                value = modifiers.apply(statement.name, statement.args, value, context)
        except ModifierError as exc:
            raise _SiteError(Status.MODIFIER_ERROR, str(exc)) from None
        if value is None:
            value, status = self._null_result(found)
        # A value as fetched is known already (`engine.remember_values` registers each read,
        # with every leaf, before substituting): only what the modifiers made is new.
        if self.rules.redactor is not None and status is Status.OK and value is not fetched:
            self.rules.redactor.add_secret(value)
        if self.kind == CONFIG_MAP and not isinstance(value, str):
            return self._as_text(value, embedded=False), status
        return value, status

    @staticmethod
    def _null_result(found: Placeholder) -> tuple[Any, Status]:
        """The modifiers turned a present value into null (`jsonParse` of `null`, …).

        AVP then leaves the placeholder text in the manifest without a word; here it is an
        error, unless the placeholder has a `default`, whose text is used instead.
        """
        fallback = next((m for m in found.modifiers if m.name == modifiers.DEFAULT), None)
        if fallback is None:
            names = " | ".join(m.name for m in found.modifiers)
            raise _SiteError(
                Status.MODIFIER_ERROR,
                f"the modifiers ({names}) turn the value into null; add `| default TEXT` "
                "to use a text instead",
            )
        return fallback.raw_argument, Status.DEFAULTED

    def _lookup(self, found: Placeholder) -> tuple[Any, str, SecretData | None]:
        """The raw value of a placeholder's key (None when missing and defaultable), the
        reference as shown in messages, and the secret read (None when nothing was)."""
        if found.path is not None:
            if not path_allowed(self.rules, found.path):
                raise _SiteError(Status.DENIED, _denied(self.rules, found.path))
            ref: SecretRef | None = SecretRef(found.path, found.version, self.notes.kv_version)
        else:
            ref = self.job.annotation_ref
            if ref is None:
                if self.notes.path:  # set, but refused by AVP_PATH_VALIDATION
                    raise _SiteError(Status.DENIED, _denied(self.rules, self.notes.path))
                return None, "the empty avp.kubernetes.io/path annotation (nothing to read)", None
        assert ref is not None
        data = self.results.get(ref)
        if data is None:
            raise _SiteError(Status.BACKEND_ERROR, f"{ref.describe()} was not read")
        if isinstance(data, MissingPathError):
            if any(m.name == modifiers.DEFAULT for m in found.modifiers):
                return None, ref.describe(), None
            raise _SiteError(Status.MISSING_PATH, str(data))
        if isinstance(data, BackendError):
            raise _SiteError(Status.BACKEND_ERROR, str(data))
        return data.get(found.key), ref.describe(), data


def _with_read_version(
    context: modifiers.ModifierContext, read: SecretData | None, ref_text: str
) -> modifiers.ModifierContext:
    """The run's context plus the version of this placeholder's read (`| version`)."""
    if read is None:
        return dataclasses.replace(
            context,
            read_version=None,
            read_version_refusal=f"nothing was read from {ref_text}, so there is no version",
        )
    return dataclasses.replace(
        context,
        read_version=read_version(read),
        read_version_refusal=(
            f"{ref_text} has no version (a KV v1 secret or an unversioned file secret); "
            "`version` needs KV v2"
        ),
    )


def substitute(
    job: Job,
    results: FetchResults,
    rules: Rules,
    memo: Memo | None = None,
    scanned: ScannedMemo | None = None,
) -> list[Site]:
    """Resolve every placeholder of a planned document in place; return all its sites.

    `memo` (one per run, with the same `results` and `rules`) shares the resolved values of
    placeholders written the same way in many documents; `scanned` (likewise) the results
    of whole scalars of scanned documents.
    """
    return _Substitution(job, results, rules, memo, scanned).run()
