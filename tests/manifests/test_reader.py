"""Input handling: discovery, splitting, JSON, pass-through and parse errors."""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.errors import InputError
from plugin.manifests import inputs, reader
from plugin.placeholders.engine import (
    EngineOptions,
    InputStream,
    emit,
    generate,
    load,
    resolve,
    write,
)
from plugin.secrets.file import FileBackend


def split(text: str) -> list[reader.RawDocument]:
    return list(reader.split(InputStream("s.yaml", text)))


def test_split_skips_empty_and_comment_only_documents() -> None:
    docs = split("---\n# only a comment\n---\n\n---\nkind: A\n--- # trailing comment\nkind: B\n")
    assert [d.text.rstrip("\n") for d in docs] == ["kind: A", "kind: B"]
    assert [d.index for d in docs] == [1, 2]
    assert [d.line for d in docs] == [6, 8]


def test_split_keeps_content_on_the_separator_line() -> None:
    [doc] = split("--- {kind: A}\n")
    assert reader.parse(doc) == {"kind": "A"}


def test_dashes_inside_a_line_are_not_separators() -> None:
    assert len(split("kind: A\ndata:\n  x: '---'\n  y: |\n    ---x\n")) == 1


def test_json_stream_of_objects() -> None:
    docs = split('{"kind": "A"}\n{"kind": "B"}')
    assert [reader.parse(d) for d in docs] == [{"kind": "A"}, {"kind": "B"}]


def test_invalid_json_names_the_place() -> None:
    with pytest.raises(InputError, match=r"s.yaml: invalid JSON at line 1"):
        split('{"kind": ')


def test_invalid_yaml_names_file_document_and_line() -> None:
    [_, bad] = split("kind: A\n---\nkind: B\nmetadata:\n  name: x\n bad: y\n")
    with pytest.raises(InputError, match=r"s.yaml \(document 2, line 3\): invalid YAML: .* line 6"):
        reader.parse(bad)


def test_nul_byte_is_refused() -> None:
    with pytest.raises(InputError, match="NUL"):
        split("kind: A\x00\n")


def test_pass_through_needs_no_parse() -> None:
    [doc] = split("kind: A\nmetadata: {name: x}  # comment\n")
    assert not reader.needs_parsing(doc)
    [secret] = split("kind: Secret\ndata: {}\n")
    assert reader.needs_parsing(secret)
    [placeholder] = split("kind: A\nx: <k>\n")
    assert reader.needs_parsing(placeholder)


@pytest.mark.parametrize(
    "value", [r"\x3cpath:a#b>", r"\x3Cpath:a#b>", r"\u003cpath:a#b>", r"\U0000003Cpath:a#b>"]
)
def test_an_escaped_opening_needs_parsing(value: str) -> None:
    """AVP finds placeholders in the decoded values, where the escape is a `<`."""
    [doc] = split(f'kind: A\nx: "{value}"\n')
    assert "<" not in doc.text
    assert reader.needs_parsing(doc)
    [plain] = split('kind: A\nx: "\\t and \\x3d"\n')
    assert not reader.needs_parsing(plain)


def test_untouched_documents_are_copied_byte_for_byte() -> None:
    text = "kind: A  # keep\nmetadata:\n  name: 'quoted'\n---\nkind: Secret\ndata:\n  k: dmFsdWU=\n"

    def no_backend() -> FileBackend:
        raise AssertionError("no read is needed")

    assert generate([InputStream("s", text)], EngineOptions(), no_backend) == text


def test_documents_without_kind_are_skipped_in_directories(tmp_path: Path) -> None:
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.1.0\n")
    (tmp_path / "values.yaml").write_text("replicas: 2\n")
    (tmp_path / "notes.txt").write_text("not yaml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cm.yml").write_text("kind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "ci.yaml").write_text("kind: Broken\n")
    files = reader.discover(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "Chart.yaml",
        "sub/cm.yml",
        "values.yaml",
    ]
    documents = load(reader.read_files(files, tmp_path), skip_non_manifests=True)
    # A manifest with nothing to replace is kept as its text (copied through).
    assert documents == ["kind: ConfigMap\nmetadata: {name: a}\n"]


def test_documents_without_kind_fail_on_streams() -> None:
    with pytest.raises(InputError, match="no 'kind'"):
        load([InputStream("<stdin>", "replicas: 2\n")], skip_non_manifests=False)


def test_empty_directory_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=str(tmp_path)):
        reader.discover(tmp_path)


def test_missing_path() -> None:
    with pytest.raises(InputError, match="does not exist"):
        reader.discover(Path("/no/such/dir"))


def test_unreadable_files_are_all_reported(tmp_path: Path) -> None:
    bad = tmp_path / "a.yaml"
    bad.write_bytes(b"kind: A\nx: \xff\n")
    worse = tmp_path / "b.yaml"
    worse.write_bytes(b"\xfe")
    with pytest.raises(InputError) as caught:
        reader.read_files([bad, worse], tmp_path)
    assert "a.yaml" in str(caught.value)
    assert "b.yaml" in str(caught.value)


def test_timestamps_stay_strings() -> None:
    [doc] = split("kind: A\nwhen: 2024-01-01\n<x>: 1\n")
    assert reader.parse(doc)["when"] == "2024-01-01"


@pytest.mark.parametrize("ending", ["\n", "\n\n", "\n\n\n"])
def test_a_batch_reads_a_keep_chomped_block_at_a_documents_end_as_alone(ending: str) -> None:
    """`|+` keeps the empty lines after it: the batch must not add one between documents
    (it did: "x\n" became "x\n\n", found by the splice's go-yaml property test in CI)."""
    raws = list(split(f"kind: A\nb: |+\n  x{ending}---\nkind: B\nc: |+\n  y"))
    assert len(raws) == 2
    alone = [reader.parse(raw) for raw in raws]
    assert reader.parse_many(raws) == alone
    assert alone[0]["b"] == "x" + ending
    assert alone[1]["c"] == "y"  # the stream's end, without a line break


def test_a_batch_never_adds_a_line_break_to_a_document() -> None:
    """A document without a final line break (a file's last) can only end a batch."""
    first, second = split("kind: A\nb: |+\n  x")[0], split("kind: B\nc: |+\n  y\n")[0]
    assert reader.parse_many([first, second]) == [
        {"kind": "A", "b": "x"},
        {"kind": "B", "c": "y\n"},
    ]


def test_flow_nesting_bomb_is_refused_before_libyaml_sees_it() -> None:
    deep = "kind: X\nspec: " + "[" * 100_000 + '"<k>"' + "]" * 100_000 + "\n"
    [raw] = split(deep)
    with pytest.raises(InputError, match="nested deeper than 256 levels"):
        reader.parse_many([raw])


def test_deep_block_nesting_is_a_clean_error() -> None:
    lines = ["kind: X", "spec:"] + ["  " * i + "k:" for i in range(1, 1500)]
    [raw] = split("\n".join(lines) + "\n" + "  " * 1500 + "v: <k>\n")
    with pytest.raises(InputError, match="nesting depth"):
        reader.parse(raw)


def test_keep_chomped_block_ending_a_copied_document_keeps_its_blank_line() -> None:
    text = "kind: A\ndata:\n  k: |+\n    x\n\n---\nkind: B\n"

    def no_backend() -> FileBackend:
        raise AssertionError("no read is needed")

    out = generate([InputStream("s", text)], EngineOptions(), no_backend)
    assert out == text
    assert reader.parse(split(out)[0])["data"]["k"] == "x\n\n"


def test_a_value_is_typed_the_same_whether_or_not_the_document_is_rewritten() -> None:
    copied = "kind: A\nv: [y, 0o17, 1e3, =]\n"
    rewritten = "kind: A\nv: [y, 0o17, 1e3, =]\nw: <path:kv/data/x#k>\n"
    [plain] = split(copied)
    [with_placeholder] = split(rewritten)
    assert (
        reader.parse(plain)["v"] == reader.parse(with_placeholder)["v"] == [True, 15, 1000.0, "="]
    )


def test_bare_equals_sign_parses() -> None:
    [doc] = split("kind: CustomResourceDefinition\nenum: [=, '!=', =~]\nx: <k>\n")
    assert reader.parse(doc)["enum"] == ["=", "!=", "=~"]


# ---------------------------------------------------------------- input read in pieces


def _whole_and_chunked(text: str, cuts: list[int]) -> tuple[list[Any], list[Any]]:
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    def rows(stream: InputStream) -> list[Any]:
        try:
            return [(r.index, r.line, r.text, r.is_json) for r in reader.split(stream)]
        except InputError as exc:
            return [str(exc)]

    return rows(InputStream("s", text)), rows(InputStream("s", "", iter(chunks)))


_PIECES = st.sampled_from(
    [
        "---",
        "---\n",
        "\n",
        "\r\n",
        "\r",
        "----",
        "--- {a: 1}",
        "# c\n",
        "a: 1",
        " ",
        "-",
        "{}",
        "k: |+\n  x\n",
        "\ufeff",
        "\x00",
        "é",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=25), st.lists(st.integers(0, 200), max_size=8))
def test_an_input_split_in_pieces_gives_the_same_documents(
    pieces: list[str], cuts: list[int]
) -> None:
    whole, chunked = _whole_and_chunked("".join(pieces), cuts)
    assert chunked == whole


def test_separators_cut_between_chunks_are_found() -> None:
    text = "a: 1\n---\nb: 2\r\n---\r\nc: 3\n"
    for cut in range(len(text) + 1):
        whole, chunked = _whole_and_chunked(text, [cut, cut + 1, cut + 2])
        assert chunked == whole
        assert len(whole) == 3


def test_read_pipe_checks_size_and_utf8_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "CHUNK_SIZE", 4)
    stream = inputs.read_pipe("<stdin>", io.BytesIO("kind: é\n".encode()), 100)
    assert [r.text for r in reader.split(stream)] == ["kind: é\n"]
    bad = inputs.read_pipe("<stdin>", io.BytesIO(b"kind: \xc3\xa9\xff\n"), 100)
    with pytest.raises(InputError, match=r"<stdin> is not valid UTF-8 \(byte 8\)"):
        list(reader.split(bad))
    big = inputs.read_pipe("<stdin>", io.BytesIO(b"a: 1\n" * 10), 20)
    with pytest.raises(InputError, match=r"<stdin> is larger than 20 bytes"):
        list(reader.split(big))


def test_documents_copied_through_are_kept_as_their_text_only() -> None:
    text = "kind: A\nmetadata: {name: a}\n---\nkind: B\nx: <path:kv/data/a#b>\n"
    documents = load([InputStream("s", "", iter([text]))], skip_non_manifests=False)
    assert documents[0] == "kind: A\nmetadata: {name: a}\n"
    assert not isinstance(documents[1], str)
    # Its placeholder is a scalar value: only scanned, resolved in its text (manifests.splice).
    assert documents[1].content is None
    assert documents[1].scan is not None
    scalars = documents[1].scan.scalars
    assert [(s.path, s.value) for s in scalars] == [(("x",), "<path:kv/data/a#b>")]


def test_write_gives_emit_piece_by_piece() -> None:
    text = "kind: A\n---\nkind: B\nx: <path:kv/data/a#b>\n---\nkind: C\n"
    options = EngineOptions(skip_non_manifests=False)
    outcome = resolve(
        load([InputStream("s", text)], False),
        options,
        lambda: FileBackend({"kv/data/a": {"b": "v"}}, "t"),
    )
    out = io.StringIO()
    write(outcome, out)
    assert out.getvalue() == emit(outcome) == "kind: A\n---\nkind: B\nx: v\n---\nkind: C\n"
