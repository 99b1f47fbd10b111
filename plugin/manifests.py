"""Reading input: find manifest files, split streams into documents, parse what needs it.

A document that cannot hold a placeholder is not parsed at all: its text is
copied to the output as it is (comments and formatting survive, and large
renders stay cheap). Everything else is parsed with libyaml.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plugin.errors import InputError
from plugin.inputs import InputStream
from plugin.yamlutil import has_top_level_kind, load_one

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN_NAME = "<stdin>"

# A line that starts a new YAML document: `---` then nothing, spaces, or a comment.
_SEPARATOR = re.compile(r"^---(?=[ \t\r]|$)([^\n]*)\n?", re.MULTILINE)
_COMMENT_OR_BLANK = re.compile(r"^[ \t]*(#[^\n]*)?$")
_SECRET_KIND = re.compile(r"""^kind:[ \t]*["']?Secret["']?[ \t]*(#.*)?$""", re.MULTILINE)


@dataclass(frozen=True)
class RawDocument:
    """One document's text and where it came from."""

    source: str
    index: int
    line: int
    text: str
    is_json: bool

    def where(self) -> str:
        return f"{self.source} (document {self.index}, line {self.line})"


@dataclass
class Document:
    """A document ready for the engine: parsed (`content`) or passed through (`content` None)."""

    raw: RawDocument
    content: dict[str, Any] | None

    @property
    def kind(self) -> str:
        if self.content is None:
            return ""
        kind = self.content.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def label(self) -> str:
        """`kind/name` as users know the object."""
        if self.content is None:
            return f"document {self.raw.index}"
        metadata = self.content.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        return f"{self.kind}/{name}" if isinstance(name, str) and name else self.kind

    def where(self) -> str:
        return f"{self.raw.source} (document {self.raw.index}, {self.label})"


def discover(root: Path) -> list[Path]:
    """Every manifest file under `root`, depth-first in name order; hidden entries skipped.

    Symlinked directories are not followed (as Go's filepath.Walk).
    """
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputError(f"input path {root} does not exist")
    found: list[Path] = []
    _walk(root, found)
    if not found:
        raise InputError(f"no YAML or JSON files were found in {root}")
    return found


def _walk(directory: Path, found: list[Path]) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        raise InputError(f"cannot list directory {directory}: {exc.strerror}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            _walk(path, found)
        elif entry.name.endswith(MANIFEST_SUFFIXES) and entry.is_file():
            found.append(path)


def read_files(paths: list[Path], root: Path) -> list[InputStream]:
    """Read every file (reporting all unreadable ones at once)."""
    streams: list[InputStream] = []
    problems: list[str] = []
    for path in paths:
        name = _display_name(path, root)
        try:
            data = path.read_bytes()
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
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return
        start_line = text.count("\n", 0, position) + 1
        try:
            _, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        index += 1
        yield RawDocument(name, index, start_line, text[position:end], is_json=True)
        position = end


def _split_yaml(name: str, text: str) -> Iterator[RawDocument]:
    index = 0
    start, start_line = 0, 1
    for separator in _SEPARATOR.finditer(text):
        chunk = text[start : separator.start()]
        if not _is_blank(chunk):
            index += 1
            yield RawDocument(name, index, start_line, chunk, is_json=False)
        start_line = text.count("\n", 0, separator.end()) + 1
        rest = separator.group(1)
        if rest.strip() and not rest.lstrip().startswith("#"):
            # Content on the separator line (`--- {a: 1}`): keep it, aligned.
            start = separator.start() + 3
            start_line -= 1
        else:
            start = separator.end()
    chunk = text[start:]
    if not _is_blank(chunk):
        index += 1
        yield RawDocument(name, index, start_line, chunk, is_json=False)


def _is_blank(chunk: str) -> bool:
    return all(_COMMENT_OR_BLANK.match(line) for line in chunk.split("\n"))


def needs_parsing(raw: RawDocument) -> bool:
    """False when the document can be copied through untouched.

    That is the case when it has no `<` at all (so no placeholder), no
    `avp.kubernetes.io/` annotation to check, declares a top-level `kind`, and
    is not a Secret (whose base64 values may hide placeholders).
    """
    if raw.is_json or "<" in raw.text or "avp.kubernetes.io/" in raw.text:
        return True
    if not has_top_level_kind(raw.text):
        return True
    return _SECRET_KIND.search(raw.text) is not None


def parse(raw: RawDocument) -> Any:
    """Parse one document's text; errors name the file, document and line."""
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
