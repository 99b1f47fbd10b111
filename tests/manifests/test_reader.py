"""Input handling: discovery, splitting, JSON, pass-through and parse errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.errors import InputError
from plugin.manifests import reader
from plugin.placeholders.engine import EngineOptions, InputStream, generate, load
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
    assert [d.raw.source for d in documents] == ["sub/cm.yml"]


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
