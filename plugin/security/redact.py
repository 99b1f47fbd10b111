"""Redaction: every secret value this run has seen, in every spelling it may take in a message.

One `Redactor` per run. The engine registers each fetched secret (and each resolved value)
with `add_secret`; the CLI routes everything written to stderr through it (`RedactingStream`),
including log records and the output of Helm and Kustomize, and redacts `plugin check`
output too. What is known for a value `v`:

- `v` itself, `v` without surrounding whitespace, and each line of a multi-line `v`;
- base64 of `v` (standard and URL-safe alphabets, with and without `=` padding), and the three
  "inner" base64 runs that appear when `v` is encoded as part of a longer text (for example
  `user:password` in a basic-auth header or a Secret's `data`);
- the JSON-escaped text (`json.dumps(v)[1:-1]`, ASCII and UTF-8, and Go's HTML-safe flavour
  that Helm's `toJson` and `fail` messages use: `&` as `\u0026`), the YAML single-quoted text
  (`'` doubled) and the URL-encoded forms (`quote`, `quote(safe="")`, `quote_plus`);
- for numbers their text; for maps and lists every leaf value (not the keys: key names such
  as `password` are not secrets) plus the compact and default JSON of the whole;
- for a string that is itself a JSON or YAML map or list (a service-account key, a
  `config.json`), every string leaf of at least `MIN_LEAF_LENGTH` (6) characters, with all its
  spellings: a chart that prints one field (`fromJson`, `fromYaml`) is redacted too.

Forms shorter than `MIN_LENGTH` (4) characters are ignored: redacting `80`, `yes` or `a` would
garble every message, and such values are not secrets in practice. Inner base64 runs shorter
than `MIN_INNER_B64` (8) characters are ignored for the same reason.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

MIN_LENGTH = 4
MIN_INNER_B64 = 8
#: Leaves of a structured (JSON/YAML) secret shorter than this are not learnt: `true`,
#: `admin` or `5432` inside a document are not secrets and would garble every message.
MIN_LEAF_LENGTH = 6
#: Structured secrets larger than this, or with more leaves, are learnt as a whole only.
MAX_STRUCTURED_CHARS = 1024 * 1024
MAX_STRUCTURED_LEAVES = 10_000
#: More brackets than this and YAML is not tried (libyaml recurses per level).
MAX_STRUCTURED_BRACKETS = 256
REPLACEMENT = "<redacted>"


class Redactor:
    """Replaces every known secret form in text meant for people (thread-safe).

    Forms are indexed by their first `MIN_LENGTH` characters, so cleaning costs one dict
    look-up per character of the text whatever the number of secrets; at each position the
    longest known form wins.

    Public texts (`add_public`: the placeholders as written in the manifests, which only hold
    paths, keys and modifiers) are copied through untouched where they appear whole, so that a
    secret whose value happens to be a common word (`string`) does not garble the placeholder
    an error message names. Everything outside them is redacted, and a secret that begins
    inside a public text and runs past its end is redacted whole.
    """

    def __init__(self, values: Iterable[object] = ()) -> None:
        self._forms: set[str] = set()
        self._index: dict[str, list[str]] = {}
        self._public: dict[str, list[str]] = {}
        self._public_seen: set[str] = set()
        self._learnt: set[str] = set()
        self._lock = threading.Lock()
        self.add(values)

    # -- learning

    def add(self, values: Iterable[object]) -> None:
        """Learn each value (strings, numbers, maps and lists: see the module docstring)."""
        for value in values:
            self.add_secret(value)

    def add_secret(self, value: object) -> None:
        """Learn one value and, for maps and lists, everything inside it."""
        if isinstance(value, str):
            if value in self._learnt:
                return
            self._learnt.add(value)
        forms = set(_forms_of(value))
        for leaf in _structured_leaves(value):
            if leaf not in self._learnt:
                self._learnt.add(leaf)
                forms.update(string_forms(leaf))
        with self._lock:
            for form in forms - self._forms:
                self._forms.add(form)
                _insert(self._index, form)

    def add_public(self, text: str) -> None:
        """Declare `text` non-secret (a placeholder as written in a manifest)."""
        if len(text) < MIN_LENGTH or text in self._public_seen:
            return
        with self._lock:
            self._public_seen.add(text)
            _insert(self._public, text)

    @property
    def values(self) -> frozenset[str]:
        """Every form known (for tests and diagnostics; never print it)."""
        with self._lock:
            return frozenset(self._forms)

    # -- cleaning

    def clean(self, text: str) -> str:
        """`text` with every known form replaced by `<redacted>`."""
        index = self._index
        if not index or len(text) < MIN_LENGTH:
            return text
        public = self._public
        pieces: list[str] = []
        start = position = 0
        end = len(text) - MIN_LENGTH
        while position <= end:
            prefix = text[position : position + MIN_LENGTH]
            kept = public.get(prefix) if public else None
            if kept:
                whole = next((item for item in kept if text.startswith(item, position)), "")
                if whole and not _straddles(index, text, position, position + len(whole)):
                    position += len(whole)
                    continue
            candidates = index.get(prefix)
            if candidates:
                for form in candidates:
                    if text.startswith(form, position):
                        pieces.append(text[start:position])
                        pieces.append(REPLACEMENT)
                        position += len(form)
                        start = position
                        break
                else:
                    position += 1
            else:
                position += 1
        if not pieces:
            return text
        pieces.append(text[start:])
        return "".join(pieces)

    def leaks(self, text: str) -> bool:
        """True when `text` still contains a known form (for tests)."""
        return self.clean(text) != text


def _straddles(index: dict[str, list[str]], text: str, start: int, end: int) -> bool:
    """Does a secret form begin inside `text[start:end]` and run past its end?"""
    for position in range(start, end):
        for form in index.get(text[position : position + MIN_LENGTH], ()):
            if position + len(form) > end and text.startswith(form, position):
                return True
    return False


def _insert(index: dict[str, list[str]], form: str) -> None:
    """Add `form` (longest first in its bucket); readers in other threads see the old or the
    new bucket, never one being sorted."""
    prefix = form[:MIN_LENGTH]
    index[prefix] = sorted([*index.get(prefix, ()), form], key=len, reverse=True)


# ---------------------------------------------------------------------------- derived forms


def _forms_of(value: object) -> Iterator[str]:
    stack: list[object] = [value]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if isinstance(current, dict | list | tuple):
            if id(current) in seen:
                continue
            seen.add(id(current))
            yield from _container_forms(current)
            stack.extend(current.values() if isinstance(current, dict) else current)
        elif isinstance(current, bool):
            continue  # true/false: never a secret on their own
        elif isinstance(current, str):
            yield from string_forms(current)
        elif isinstance(current, bytes | bytearray):
            yield from _bytes_forms(bytes(current))
            try:
                text: str | None = bytes(current).decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is not None:
                yield from string_forms(text)
        elif isinstance(current, int | float):
            yield from _long_enough([str(current), json.dumps(current)])
        elif current is not None:
            yield from _long_enough([str(current)])


def _structured_leaves(value: object) -> list[str]:
    """String leaves (long enough) of the JSON or YAML documents found in `value`'s strings.

    Walked without recursion, each shared node once (a YAML alias bomb stays small), bounded
    in size, nesting and number of leaves; anything that does not parse yields nothing.
    """
    texts: list[str] = []
    stack: list[object] = [value]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            texts.append(current)
        elif isinstance(current, dict | list | tuple) and id(current) not in seen:
            seen.add(id(current))
            stack.extend(current.values() if isinstance(current, dict) else current)
    leaves: list[str] = []
    for text in texts:
        document = _parse_structured(text)
        if document is None:
            continue
        nodes: list[object] = [document]
        visited: set[int] = set()
        while nodes and len(leaves) < MAX_STRUCTURED_LEAVES:
            node = nodes.pop()
            if isinstance(node, str):
                if len(node.strip()) >= MIN_LEAF_LENGTH:
                    leaves.append(node)
            elif isinstance(node, dict | list) and id(node) not in visited:
                visited.add(id(node))
                nodes.extend(node.values() if isinstance(node, dict) else node)
    return leaves


def _parse_structured(text: str) -> object | None:
    """The map or list `text` holds as JSON or YAML, else None (never raises)."""
    stripped = text.strip()
    if len(stripped) < 2 or len(stripped) > MAX_STRUCTURED_CHARS:
        return None
    if stripped[0] not in "{[" and ":" not in stripped and "- " not in stripped:
        return None
    document: object = None
    try:
        document = json.loads(stripped)
    except (ValueError, RecursionError):
        if stripped.count("[") + stripped.count("{") > MAX_STRUCTURED_BRACKETS:
            return None
        import yaml  # only for a secret that looks like YAML: most runs never load it

        from plugin.manifests.yamlio import load_one

        try:
            document = load_one(stripped)
        except (yaml.YAMLError, RecursionError, ValueError):
            return None
    return document if isinstance(document, dict | list) else None


def _container_forms(container: object) -> Iterator[str]:
    for compact, ascii_only in ((False, True), (True, True), (False, False)):
        separators = (",", ":") if compact else None
        try:
            text = json.dumps(
                container, default=str, separators=separators, ensure_ascii=ascii_only
            )
        except (ValueError, TypeError, RecursionError):
            return
        yield from _long_enough([text])


def _long_enough(forms: Iterable[str]) -> Iterator[str]:
    for form in forms:
        if len(form) >= MIN_LENGTH and form.strip():
            yield form


def string_forms(value: str) -> Iterator[str]:
    """Every spelling of one string value that is long enough to redact."""
    candidates: list[str] = [value, value.strip()]
    if "\n" in value or "\r" in value:
        for line in value.splitlines():
            candidates.extend((line, line.strip()))
    texts = [text for text in dict.fromkeys(candidates) if len(text.strip()) >= MIN_LENGTH]
    for text in texts:
        yield text
        yield json.dumps(text)[1:-1]
        yield json.dumps(text, ensure_ascii=False)[1:-1]
        yield go_json(text)[1:-1]
        yield text.replace("'", "''")
        yield urllib.parse.quote(text)
        yield urllib.parse.quote(text, safe="")
        yield urllib.parse.quote_plus(text)
        yield from _bytes_forms(text.encode("utf-8"))


_GO_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_json(text: str) -> str:
    """Go's `json.Marshal` of a string (Helm's `toJson`): UTF-8 kept, `<>&` escaped."""
    return json.dumps(text, ensure_ascii=False).translate(_GO_HTML_ESCAPES)


def _bytes_forms(data: bytes) -> Iterator[str]:
    if len(data) < 3:
        return
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        full = encode(data).decode("ascii")
        yield full
        yield full.rstrip("=")
        for offset in (0, 1, 2):
            inner = _inner_base64(encode, data, offset)
            if len(inner) >= MIN_INNER_B64:
                yield inner


def _inner_base64(encode: Any, data: bytes, offset: int) -> str:
    """The base64 characters that depend on `data` only, when `offset` bytes precede it."""
    encoded: str = encode(b"\0" * offset + data).decode("ascii").rstrip("=")
    first = (offset * 8 + 5) // 6  # the first character holding no filler bit
    last = ((offset + len(data)) * 8) // 6  # characters before this one are complete
    return encoded[first:last]


# ---------------------------------------------------------------------------- stderr and logs


class RedactingStream(io.TextIOBase):
    """A text stream that redacts whole lines before passing them on.

    Lines are buffered until their newline (or `flush()`), so a value written in pieces is
    still recognised; anything written by any thread goes through the same redactor.
    """

    def __init__(self, target: TextIO, redactor: Redactor) -> None:
        super().__init__()
        self.target = target
        self.redactor = redactor
        self._pending = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return bool(getattr(self.target, "isatty", lambda: False)())

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a redacting stream has no file descriptor")

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            if "\n" in self._pending:
                complete, _, self._pending = self._pending.rpartition("\n")
                self.target.write(self.redactor.clean(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self.target.write(self.redactor.clean(self._pending))
                self._pending = ""
            self.target.flush()


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, arguments, exception text) is redacted."""

    def __init__(self, redactor: Redactor, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.clean(super().format(record))
