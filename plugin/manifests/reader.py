"""Reading input: find manifest files, split streams into documents, parse what needs it.

A document that cannot hold a placeholder is not parsed at all: its text is
copied to the output as it is (comments and formatting survive, and large
renders stay cheap). Everything else is parsed with libyaml.

PyYAML (and `yamlio`, which builds its loaders at import) is imported by the functions that
parse, not with the module: a render whose documents are all copied through never loads it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugin.errors import InputError
from plugin.manifests.inputs import MAX_INPUT_SETTING, InputStream, format_size
from plugin.manifests.splice import Scan, join_batch

if TYPE_CHECKING:
    import yaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN_NAME = "<stdin>"

# `kind:` at column 0 and its value (block-style YAML only; anything else is parsed).
_TOP_LEVEL_KIND = re.compile(r"^kind:[ \t]*([^ \t\r\n#]+)", re.MULTILINE)
# Helm starts each rendered document with `# Source: <chart>/templates/<file>`.
_HELM_SOURCE = re.compile(r"\A\s*# Source: ([^\n]+?)\s*$", re.MULTILINE)
_SECRET_SPELLINGS = frozenset({"Secret", '"Secret"', "'Secret'"})


@dataclass(frozen=True)
class RawDocument:
    """One document's text and where it came from."""

    source: str
    index: int
    line: int
    text: str
    is_json: bool

    def where(self) -> str:
        return f"{self.origin()} (document {self.index}, line {self.line})"

    def origin(self) -> str:
        """The stream's name, plus the template Helm says the document came from."""
        found = _HELM_SOURCE.match(self.text)
        return f"{self.source} {found.group(1)}" if found else self.source


@dataclass
class Document:
    """A document ready for the engine: parsed (`content`), scanned for in-place changes
    (`scan`, `content` None), or passed through (both None)."""

    raw: RawDocument
    content: dict[str, Any] | None
    #: libyaml's events read without constructing the document (`manifests.splice`).
    scan: Scan | None = None
    #: `where()` as it was when the document was read: substituting a placeholder in
    #: `metadata.name` must never put a secret value into later messages.
    _where: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._where = f"{self.raw.origin()} (document {self.raw.index}, {self.label})"

    @property
    def kind(self) -> str:
        if self.content is None:
            return (self.scan.kind or "") if self.scan is not None else ""
        kind = self.content.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def label(self) -> str:
        """`kind/name` as users know the object."""
        name: Any
        if self.content is not None:
            metadata = self.content.get("metadata")
            name = metadata.get("name") if isinstance(metadata, Mapping) else None
        elif self.scan is not None:
            name = self.scan.name
        else:
            return f"document {self.raw.index}"
        return f"{self.kind}/{name}" if isinstance(name, str) and name else self.kind

    def where(self) -> str:
        return self._where


def discover(root: Path, confine: Path | None = None) -> list[Path]:
    """Every manifest file under `root`, depth-first in name order; hidden entries skipped.

    Symlinked directories are not followed (as Go's filepath.Walk). A symlinked file is read
    only when its target stays inside `confine` (default: `root` itself); one that leads
    outside (`/etc/...`, `../../other-repo`) is refused.
    """
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputError(f"input path {root} does not exist")
    found: list[Path] = []
    _walk(root, found, os.path.realpath(confine if confine is not None else root), root)
    if not found:
        raise InputError(f"no YAML or JSON files were found in {root}")
    return found


def _walk(directory: Path, found: list[Path], confine_real: str, root: Path) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        raise InputError(f"cannot list directory {directory}: {exc.strerror}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            _walk(path, found, confine_real, root)
        elif entry.name.endswith(MANIFEST_SUFFIXES) and entry.is_file():
            if entry.is_symlink():
                real = os.path.realpath(path)
                if os.path.commonpath([real, confine_real]) != confine_real:
                    raise InputError(
                        f"{_display_name(path, root)} is a symlink leading outside the "
                        "repository; refused"
                    )
            found.append(path)


def read_files(paths: list[Path], root: Path, max_bytes: int | None = None) -> list[InputStream]:
    """Read every file (reporting all unreadable ones at once); at most `max_bytes` in all."""
    streams: list[InputStream] = []
    problems: list[str] = []
    total = 0
    for path in paths:
        name = _display_name(path, root)
        try:
            size = path.stat().st_size
            total += size
            if max_bytes is not None and total > max_bytes:
                raise InputError(
                    f"{name}: the input files are larger than {format_size(max_bytes)} in all "
                    f"({MAX_INPUT_SETTING}); refused"
                )
            data = path.read_bytes()
            if max_bytes is not None and total - size + len(data) > max_bytes:
                raise InputError(
                    f"{name}: the input files are larger than {format_size(max_bytes)} in all "
                    f"({MAX_INPUT_SETTING}); refused"
                )
        except OSError as exc:
            problems.append(f"cannot read {name}: {exc.strerror}")
            continue
        try:
            streams.append(InputStream(name, data.decode("utf-8")))
        except UnicodeDecodeError as exc:
            problems.append(f"{name} is not valid UTF-8 (byte {exc.start})")
    if problems:
        raise InputError("could not read input files:\n" + "\n".join(problems))
    return streams


def _display_name(path: Path, root: Path) -> str:
    if root.is_dir():
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)
    return str(path)


def split(stream: InputStream) -> Iterator[RawDocument]:
    """Split a stream into documents: a JSON object sequence or `---`-separated YAML."""
    if stream.chunks is not None:
        yield from _split_chunks(stream.name, stream.chunks)
        return
    text = stream.text.removeprefix("\ufeff")
    if "\x00" in text:
        raise InputError(f"{stream.name} contains a NUL byte")
    if text.lstrip()[:1] == "{":
        yield from _split_json(stream.name, text)
        return
    yield from _split_yaml(stream.name, text.replace("\r\n", "\n"))


def _split_json(name: str, text: str) -> Iterator[RawDocument]:
    decoder = json.JSONDecoder()
    position, index = 0, 0
    counted_to, lines_before = 0, 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return
        lines_before += text.count("\n", counted_to, position)
        counted_to = position
        start_line = lines_before + 1
        try:
            _, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        index += 1
        yield RawDocument(name, index, start_line, text[position:end], is_json=True)
        position = end


def _split_chunks(name: str, chunks: Iterator[str]) -> Iterator[RawDocument]:
    """`split` for an input arriving in pieces: the same documents, never the whole text.

    JSON (rare, and parsed anyway) is joined and split as a whole.
    """
    checked = _checked_chunks(name, chunks)
    head: list[str] = []
    for chunk in checked:
        head.append(chunk)
        if chunk.strip():
            break
    if "".join(head).lstrip()[:1] == "{":
        yield from _split_json(name, "".join([*head, *checked]))
        return
    yield from _split_pieces(name, _pieces(_unix_newlines(itertools.chain(head, checked))))


def _checked_chunks(name: str, chunks: Iterator[str]) -> Iterator[str]:
    first = True
    for chunk in chunks:
        text = chunk.removeprefix("\ufeff") if first else chunk
        first = False
        if "\x00" in text:
            raise InputError(f"{name} contains a NUL byte")
        yield text


def _unix_newlines(chunks: Iterable[str]) -> Iterator[str]:
    """`text.replace("\\r\\n", "\\n")` over pieces (a CR ending one piece waits for the next)."""
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        carry = ""
        if text.endswith("\r"):
            text, carry = text[:-1], "\r"
        yield text.replace("\r\n", "\n")
    if carry:
        yield carry


_SEPARATOR = "\n---"


def _pieces(chunks: Iterable[str]) -> Iterator[str]:
    """`("\\n" + text).split("\\n---")` for a text given in pieces, in linear time.

    A piece is joined only once a separator ends it; a separator cut between two chunks is
    found through the last three characters kept from the previous one.
    """
    held: list[str] = ["\n"]
    tail = "\n"
    for chunk in chunks:
        if _SEPARATOR not in tail + chunk:
            held.append(chunk)
            tail = (tail + chunk)[-3:]
            continue
        parts = ("".join(held) + chunk).split(_SEPARATOR)
        yield from parts[:-1]
        held = [parts[-1]]
        tail = parts[-1][-3:]
    yield "".join(held)


def _split_yaml(name: str, text: str) -> Iterator[RawDocument]:
    """Split on lines starting with `---`; linear, with C-level string operations."""
    yield from _split_pieces(name, iter(("\n" + text).split(_SEPARATOR)))


def _split_pieces(name: str, pieces: Iterator[str]) -> Iterator[RawDocument]:
    """Documents from the text between `\\n---` (the first piece starts with a `\\n`)."""
    index = 0
    first = next(pieces)
    chunk, chunk_line = first[1:], 1
    separator_line = 1 + first.count("\n")
    for piece in pieces:
        head, _, body = piece.partition("\n")
        if head and head[0] not in " \t\r#":
            # `----` or `---x`: not a separator; it belongs to the current document.
            chunk += "\n---" + piece
        else:
            if _has_content(chunk):
                index += 1
                # The line break before `---` ends the document's last line: a `|+` block
                # there keeps it as part of its value.
                yield RawDocument(name, index, chunk_line, chunk + "\n", is_json=False)
            if head.strip() and not head.lstrip().startswith("#"):
                chunk, chunk_line = "   " + piece, separator_line  # `--- {a: 1}`
            else:
                chunk, chunk_line = body, separator_line + 1
        separator_line += piece.count("\n") + 1
    if _has_content(chunk):
        index += 1
        yield RawDocument(name, index, chunk_line, chunk, is_json=False)


_CONTENT_LINE = re.compile(r"^[ \t]*[^ \t#\n\r]", re.MULTILINE)


def _has_content(chunk: str) -> bool:
    """True unless every line is blank or a comment."""
    return _CONTENT_LINE.search(chunk) is not None


# A double-quoted scalar may spell `<` as an escape; AVP looks for placeholders in the
# decoded values, so such a document may hold one. Any case: over-matching costs only speed.
_ESCAPED_OPENING = re.compile(r"\\(?:x3c|u003c|U0000003c)", re.IGNORECASE)


def may_hold_placeholder(text: str) -> bool:
    """False only when no value decoded from `text` can contain `<`: neither a `<` nor
    an escape that decodes to one (`\\x3c`, `\\u003c`, `\\U0000003c`) is in it."""
    return "<" in text or ("\\" in text and _ESCAPED_OPENING.search(text) is not None)


def needs_parsing(raw: RawDocument) -> bool:
    """False when the document can be copied through untouched.

    That is the case when it has no `<` at all, not even escaped (so no placeholder), no
    `avp.kubernetes.io/` annotation to check, declares a top-level `kind`, and
    is not a Secret (whose base64 values may hide placeholders).
    """
    text = raw.text
    if raw.is_json or may_hold_placeholder(text) or "avp.kubernetes.io/" in text:
        return True
    kind = _TOP_LEVEL_KIND.search(text)
    return kind is None or kind.group(1) in _SECRET_SPELLINGS


def may_splice(raw: RawDocument) -> bool:
    """False for documents that certainly need constructing: JSON (rewritten as YAML), a
    Secret (base64 templates) or any `avp.kubernetes.io/` text (annotations). The rest is
    decided on the document's parser events (`manifests.splice`, `placeholders.substitute`).
    """
    if raw.is_json or "avp.kubernetes.io/" in raw.text:
        return False
    kind = _TOP_LEVEL_KIND.search(raw.text)
    return kind is None or kind.group(1) not in _SECRET_SPELLINGS


MAX_FLOW_DEPTH = 256
_BRACKETS = re.compile(r"[\[\]{}]")


def check_nesting(raw: RawDocument) -> None:
    """Refuse flow collections nested absurdly deep: libyaml would overflow the C stack."""
    text = raw.text
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:
        return
    depth = 0
    for bracket in _BRACKETS.finditer(text):
        depth = depth + 1 if bracket.group() in "[{" else max(depth - 1, 0)
        if depth > MAX_FLOW_DEPTH:
            raise InputError(
                f"{raw.where()}: collections nested deeper than {MAX_FLOW_DEPTH} levels"
            )


def parse_many(raws: list[RawDocument]) -> list[Any]:
    """Parse many YAML documents with one libyaml run (much cheaper than one run each).

    When anything goes wrong, each document is parsed on its own so that the
    error names the right file, document and line.
    """
    for raw in raws:
        check_nesting(raw)
    if len(raws) < 2 or any(raw.is_json for raw in raws):
        return [parse(raw) for raw in raws]
    import yaml

    from plugin.manifests.yamlio import load_all

    stream = join_batch([raw.text for raw in raws])
    if stream is None:
        return [parse(raw) for raw in raws]
    try:
        parsed = list(load_all(stream))
    except (yaml.YAMLError, RecursionError):
        parsed = []
    if len(parsed) != len(raws):
        return [parse(raw) for raw in raws]
    return parsed


def parse(raw: RawDocument) -> Any:
    """Parse one document's text; errors name the file, document and line."""
    import yaml

    from plugin.manifests.yamlio import load_one

    check_nesting(raw)
    try:
        if raw.is_json:
            return json.loads(raw.text)
        return load_one(raw.text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{raw.where()}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{raw.where()}: invalid YAML: {_describe_yaml_error(exc, raw)}") from None
    except RecursionError:
        raise InputError(f"{raw.where()}: document is nested too deeply") from None


def _describe_yaml_error(exc: yaml.YAMLError, raw: RawDocument) -> str:
    problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} at line {raw.line + mark.line}, column {mark.column + 1}"
