"""The walker: planning, substitution rules per kind, annotations and the opt-in additions."""

from __future__ import annotations

import base64
import copy
import io
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.errors import BackendError, DeadlineError, InputError
from plugin.manifests.reader import Document, RawDocument
from plugin.manifests.yamlio import load_all
from plugin.placeholders.engine import (
    EngineOptions,
    InputStream,
    ResolutionError,
    emit,
    generate,
    load,
    resolve,
    write,
)
from plugin.placeholders.substitute import Rules, Status, field_path, plan, substitute
from plugin.secrets.base import SecretData, SecretRef
from plugin.secrets.file import FileBackend
from plugin.security.redact import Redactor
from tests import real_cmp

SECRETS: dict[str, Any] = {
    "kv/data/app": {"user": "alice", "port": 80, "tls": True, "map": {"a": 1}, "list": [1, 2]},
    "kv/data/loop": {"value": "<path:kv/data/app#user>", "generic": "<user>"},
    "kv/data/versioned": {"@versions": [{"v": "one"}, {"v": "two"}]},
}


class CountingBackend(FileBackend):
    """The file backend plus a record of every read (to prove reads are planned)."""

    def __init__(self) -> None:
        super().__init__(SECRETS, "test secrets")
        self.reads: list[SecretRef] = []

    def read(self, ref: SecretRef) -> SecretData:
        self.reads.append(ref)
        return super().read(ref)


def render(text: str, rules: Rules | None = None) -> list[Any]:
    output = generate(
        [InputStream("test.yaml", text)],
        EngineOptions(rules=rules or Rules(), skip_non_manifests=False),
        CountingBackend,
    )
    return [doc for doc in load_all(output) if doc is not None]


def failure(text: str) -> ResolutionError:
    with pytest.raises(ResolutionError) as caught:
        render(text)
    return caught.value


def test_inline_string() -> None:
    [doc] = render("kind: X\nspec:\n  user: <path:kv/data/app#user>\n")
    assert doc["spec"]["user"] == "alice"


def test_whole_value_keeps_type() -> None:
    [doc] = render("kind: X\nspec:\n  port: <path:kv/data/app#port>\n  m: <path:kv/data/app#map>\n")
    assert doc["spec"] == {"port": 80, "m": {"a": 1}}


def test_embedded_non_string_is_stringified_into_the_text() -> None:
    [doc] = render(
        "kind: X\nspec:\n  url: http://h:<path:kv/data/app#port>/<path:kv/data/app#tls>\n"
    )
    assert doc["spec"]["url"] == "http://h:80/true"


def test_embedded_map_becomes_compact_json() -> None:
    [doc] = render("kind: X\nspec:\n  s: 'x=<path:kv/data/app#map>'\n")
    assert doc["spec"]["s"] == 'x={"a":1}'


def test_generic_placeholders_need_the_annotation() -> None:
    text = (
        "kind: X\nmetadata:\n  annotations:\n    avp.kubernetes.io/path: kv/data/app\n"
        "spec:\n  u: <user>\n"
    )
    [doc] = render(text)
    assert doc["spec"]["u"] == "alice"
    [doc] = render("kind: X\nspec:\n  u: <user>\n")
    assert doc["spec"]["u"] == "<user>"


@pytest.mark.parametrize("escape", [r"\x3c", r"\u003C", r"\U0000003c"])
def test_an_escaped_opening_in_a_quoted_value_is_a_placeholder(escape: str) -> None:
    """AVP decodes the YAML first, so `"\x3cpath:...>"` is a placeholder like any other."""
    text = f'kind: X\nspec:\n  u: "{escape}path:kv/data/app#user>"\n  m: 1\n'
    assert render(text) == [{"kind": "X", "spec": {"u": "alice", "m": 1}}]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "  a: <path:kv/data/app#map>\n  b: [<path:kv/data/app#map>]\n",
            {"a": {"a": 1}, "b": [{"a": 1}]},
        ),
        (
            "  a: <path:kv/data/app#list>\n  b: <path:kv/data/app#list>\n",
            {"a": [1, 2], "b": [1, 2]},
        ),
    ],
)
def test_a_map_or_list_placed_twice_is_written_twice_without_anchors(
    spec: str, expected: dict[str, Any]
) -> None:
    """The backend gives one object; AVP writes it out at each place, never `&id001`."""
    text = "kind: X\nmetadata:\n  name: x1\nspec:\n" + spec
    output = generate(
        [InputStream("test.yaml", text)],
        EngineOptions(rules=Rules(), skip_non_manifests=False),
        CountingBackend,
    )
    assert "&" not in output
    assert "*" not in output
    document = {"kind": "X", "metadata": {"name": "x1"}, "spec": expected}
    assert [doc for doc in load_all(output) if doc is not None] == [document]
    if real_cmp.find("goyaml-json") is not None:
        assert real_cmp.goyaml_json(output) == [document]


def test_configmap_results_become_strings() -> None:
    [doc] = render(
        "kind: ConfigMap\ndata:\n  p: <path:kv/data/app#port>\n  t: <path:kv/data/app#tls>\n"
    )
    assert doc["data"] == {"p": "80", "t": "true"}


def test_configmap_map_value_is_a_clean_error() -> None:
    error = failure("kind: ConfigMap\ndata:\n  m: <path:kv/data/app#map>\n")
    assert error.sites[0].status is Status.MODIFIER_ERROR
    assert "<path:kv/data/app#map>" in str(error)


def test_secret_base64_rule_decodes_substitutes_and_reencodes() -> None:
    encoded = base64.b64encode(b"user=<path:kv/data/app#user>\n").decode()
    [doc] = render(f"kind: Secret\ndata:\n  f: {encoded}\n")
    assert base64.b64decode(doc["data"]["f"]) == b"user=alice\n"


def test_secret_binary_data_is_left_alone() -> None:
    binary = base64.b64encode(b"\xff\xfe<path:kv/data/app#user>").decode()
    [doc] = render(f"kind: Secret\ndata:\n  f: {binary}\n")
    assert doc["data"]["f"] == binary


def test_never_re_expand_secret_values() -> None:
    text = (
        "kind: X\nmetadata:\n  annotations:\n    avp.kubernetes.io/path: kv/data/loop\n"
        "spec:\n  a: <path:kv/data/loop#value>\n  b: <generic>\n"
    )
    [doc] = render(text)
    assert doc["spec"] == {"a": "<path:kv/data/app#user>", "b": "<user>"}


def test_each_distinct_read_happens_once() -> None:
    backend = CountingBackend()
    text = "".join(
        f"---\nkind: X\nmetadata:\n  name: d{i}\nspec:\n  a: <path:kv/data/app#user>\n"
        f"  b: <path:kv/data/app#port>\n  c: <path:kv/data/versioned#v#1>\n"
        for i in range(20)
    )
    generate([InputStream("t", text)], EngineOptions(), lambda: backend)
    assert sorted(backend.reads) == [
        SecretRef("kv/data/app"),
        SecretRef("kv/data/versioned", "1"),
    ]


def test_versions_inline_and_annotation() -> None:
    text = (
        "kind: X\nmetadata:\n  annotations:\n    avp.kubernetes.io/path: kv/data/versioned\n"
        "    avp.kubernetes.io/secret-version: '1'\n"
        "spec:\n  ann: <v>\n  inline: <path:kv/data/versioned#v>\n"
        "  pinned: <path:kv/data/versioned#v#1>\n"
    )
    [doc] = render(text)
    assert doc["spec"] == {"ann": "one", "inline": "two", "pinned": "one"}


def test_ignore_annotation_skips_without_reading() -> None:
    backend = CountingBackend()
    text = (
        "kind: X\nmetadata:\n  annotations:\n    avp.kubernetes.io/ignore: 'true'\n"
        "    avp.kubernetes.io/path: does/not/exist\nspec:\n  a: <path:nope#x>\n  b: <k>\n"
    )
    output = generate([InputStream("t", text)], EngineOptions(), lambda: backend)
    assert output == text
    assert backend.reads == []


def test_non_string_annotation_does_not_disable_the_others() -> None:
    text = (
        "kind: X\nmetadata:\n  annotations:\n    avp.kubernetes.io/kv-version: 2\n"
        "    avp.kubernetes.io/path: kv/data/app\nspec:\n  u: <user>\n"
    )
    [doc] = render(text)
    assert doc["spec"]["u"] == "alice"


def test_remove_missing_in_maps_and_lists() -> None:
    text = (
        "kind: Secret\nmetadata:\n  annotations:\n    avp.kubernetes.io/path: kv/data/app\n"
        "    avp.kubernetes.io/remove-missing: 'true'\n"
        "stringData:\n  keep: <user>\n  gone: <absent>\n"
        "  items:\n  - <user>\n  - <absent>\n"
    )
    [doc] = render(text)
    assert doc["stringData"] == {"keep": "alice", "items": ["alice"]}


def test_remove_missing_only_on_secret_or_configmap() -> None:
    text = (
        "kind: Deployment\nmetadata:\n  annotations:\n"
        "    avp.kubernetes.io/remove-missing: 'true'\n"
    )
    error = failure(text)
    assert "avp.kubernetes.io/remove-missing" in str(error)


def test_default_modifier_for_missing_key_and_path() -> None:
    text = (
        "kind: X\nspec:\n  a: <path:kv/data/app#absent | default fall back>\n"
        "  b: <path:no/such/path#k | default x | base64encode>\n"
        "  c: <path:kv/data/app#user | default unused>\n"
    )
    [doc] = render(text)
    assert doc["spec"] == {"a": "fall back", "b": "eA==", "c": "alice"}


def test_placeholders_in_keys_are_opt_in() -> None:
    body = "spec:\n  <path:kv/data/app#user>: yes\n"
    [plain] = render("kind: X\n" + body)
    assert "<path:kv/data/app#user>" in plain["spec"]
    text = "kind: X\nmetadata:\n  annotations:\n    avp.kubernetes.io/replace-keys: 'true'\n" + body
    [doc] = render(text)
    assert doc["spec"] == {"alice": True}


def test_a_replaced_key_is_named_by_its_placeholder_in_errors() -> None:
    text = (
        "kind: X\nmetadata:\n  annotations:\n    avp.kubernetes.io/replace-keys: 'true'\n"
        "spec:\n  <path:kv/data/app#user>:\n    inner: <path:kv/data/app#nope>\n"
    )
    message = str(failure(text))
    assert 'spec["<path:kv/data/app#user>"].inner' in message
    assert "alice" not in message


def test_nested_lists_are_walked() -> None:
    [doc] = render("kind: X\nspec:\n  m:\n  - - <path:kv/data/app#user>\n")
    assert doc["spec"]["m"] == [["alice"]]


def test_all_errors_in_document_order_with_locations() -> None:
    text = (
        "kind: Deployment\nmetadata:\n  name: web\nspec:\n  containers:\n"
        "  - image: <path:kv/data/app#missing1>\n  - image: <path:kv/data/app#user | nope>\n"
        "---\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  x: <path:not/there#k>\n"
    )
    error = failure(text)
    assert [site.status for site in error.sites] == [
        Status.MISSING_KEY,
        Status.MODIFIER_ERROR,
        Status.MISSING_PATH,
    ]
    first = error.sites[0]
    assert first.document == "test.yaml (document 1, Deployment/web)"
    assert first.field == "spec.containers[0].image"
    assert first.placeholder == "<path:kv/data/app#missing1>"


def test_path_validation_refuses_before_reading() -> None:
    backend = CountingBackend()
    options = EngineOptions(rules=Rules(path_validation=re.compile(r"^kv/data/app$")))
    with pytest.raises(ResolutionError) as caught:
        generate(
            [InputStream("t", "kind: X\nspec:\n  a: <path:kv/data/versioned#v>\n")],
            options,
            lambda: backend,
        )
    assert caught.value.sites[0].status is Status.DENIED
    assert backend.reads == []


def test_backend_error_is_reported_per_placeholder() -> None:
    class Broken(FileBackend):
        def read(self, ref: SecretRef) -> SecretData:
            raise BackendError(f"permission denied reading {ref.path}")

    with pytest.raises(ResolutionError, match="permission denied reading kv/data/app"):
        generate(
            [InputStream("t", "kind: X\nspec:\n  a: <path:kv/data/app#user>\n")],
            EngineOptions(),
            lambda: Broken({}, "x"),
        )


def test_no_backend_needed_without_placeholders() -> None:
    def refuse() -> FileBackend:
        raise AssertionError("backend must not be created")

    text = "kind: X\nspec:\n  a: b\n"
    assert generate([InputStream("t", text)], EngineOptions(), refuse) == text


def test_check_outcome_lists_every_site() -> None:
    documents = load([InputStream("t", "kind: X\nspec:\n  a: <path:kv/data/app#user>\n")], False)
    outcome = resolve(documents, EngineOptions(), CountingBackend)
    assert [(s.placeholder, s.status) for s in outcome.sites] == [
        ("<path:kv/data/app#user>", Status.OK)
    ]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("spec", "containers", 0, "image"), "spec.containers[0].image"),
        (("metadata", "annotations", "a.b/c"), 'metadata.annotations["a.b/c"]'),
    ],
)
def test_field_path(path: tuple[str | int, ...], text: str) -> None:
    assert field_path(path) == text


def test_alias_bomb_is_walked_once_per_shared_node() -> None:
    levels = ['a: &a ["<path:kv/data/app#user>", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    [doc] = render("kind: X\n" + "\n".join(levels) + "\n")
    assert doc["a"][0] == "alice"
    assert doc["i"][0][0][0][0][0][0][0][0][0] == "alice"


SECRETS["kv/data/blobs"] = {
    "binary": base64.b64encode(b"\xff\xfe-bytes").decode(),
    "null-json": "null",
}


def test_non_utf8_bytes_survive_base64decode_and_base64encode() -> None:
    [doc] = render(
        "kind: Secret\ndata:\n  b: <path:kv/data/blobs#binary | base64decode | base64encode>\n"
    )
    assert doc["data"]["b"] == SECRETS["kv/data/blobs"]["binary"]


def test_non_utf8_bytes_in_a_base64_secret_template_are_kept() -> None:
    template = base64.b64encode(b"<path:kv/data/blobs#binary | base64decode>").decode()
    [doc] = render(f"kind: Secret\ndata:\n  b: {template}\n")
    assert base64.b64decode(doc["data"]["b"]) == b"\xff\xfe-bytes"


def test_non_utf8_bytes_written_as_text_become_replacement_characters() -> None:
    [doc] = render("kind: X\nv: <path:kv/data/blobs#binary | base64decode>\n")
    assert doc["v"] == "\ufffd\ufffd-bytes"


def test_a_modifier_chain_yielding_null_is_an_error_naming_the_placeholder() -> None:
    error = failure("kind: X\nv: x-<path:kv/data/blobs#null-json | jsonParse>\n")
    assert "<path:kv/data/blobs#null-json | jsonParse>" in str(error)
    assert "turn the value into null" in str(error)
    assert "list" not in str(error)


def test_a_modifier_chain_yielding_null_takes_the_default() -> None:
    [doc] = render("kind: X\nv: <path:kv/data/blobs#null-json | jsonParse | default none>\n")
    assert doc["v"] == "none"


# ------------------------------------------------------------------------------ the deadline


def test_parsing_many_documents_stops_at_the_deadline() -> None:
    text = "".join(
        f"kind: X\nmetadata: {{name: n{i}}}\nspec: <path:kv/data/app#user>\n---\n"
        for i in range(3000)
    )
    passed = time.monotonic() - 1
    with pytest.raises(DeadlineError, match=r"PLUGIN_TIMEOUT\) passed while reading manifests"):
        load([InputStream("test.yaml", text)], skip_non_manifests=False, deadline=passed)
    assert len(load([InputStream("test.yaml", text)], skip_non_manifests=False)) == 3000


def test_walking_many_documents_stops_at_the_deadline() -> None:
    text = "".join(
        f"kind: X\nmetadata: {{name: n{i}}}\nspec: <path:kv/data/app#user>\n---\n"
        for i in range(3000)
    )
    documents = load([InputStream("test.yaml", text)], skip_non_manifests=False)
    options = EngineOptions(deadline=time.monotonic() - 1)
    with pytest.raises(DeadlineError, match="looking for placeholders"):
        resolve(documents, options, CountingBackend)


# ---------------------------------------------------------------- one walk


def _job(text: str, kind_rules: Rules | None = None) -> Any:
    [document] = load([InputStream("t.yaml", text)], skip_non_manifests=False)
    return plan(document, kind_rules or Rules())


def test_plan_keeps_only_the_strings_with_placeholders_in_document_order() -> None:
    job = _job(
        "kind: X\nspec:\n  a: plain\n  b:\n  - <path:kv/data/app#user>\n  - 3\n"
        "  - {c: 'x <path:kv/data/app#port> y', d: no}\n  e: <path:open\n  f: <not one>\n"
    )
    assert job.candidates is not None
    assert [c.path for c in job.candidates] == [
        ("spec", "b", 0),
        ("spec", "b", 2, "c"),
        ("spec", "e"),  # unterminated: reported, so visited
    ]
    assert job.refs == {SecretRef("kv/data/app", None, None)}


def test_documents_that_change_shape_are_walked_whole() -> None:
    removing = _job(
        "kind: ConfigMap\nmetadata:\n  annotations:\n    avp.kubernetes.io/remove-missing: 'true'\n"
        "data:\n  a: <path:kv/data/app#user>\n"
    )
    keys = _job(
        "kind: X\nmetadata:\n  annotations:\n    avp.kubernetes.io/replace-keys: 'true'\n"
        "data:\n  <path:kv/data/app#user>: a\n"
    )
    assert removing.candidates is None
    assert keys.candidates is None


class _CountingRedactor(Redactor):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def add_secret(self, value: object) -> None:
        self.calls += 1
        super().add_secret(value)


def test_each_fetched_value_is_registered_once_not_once_per_placeholder() -> None:
    redactor = _CountingRedactor()
    text = "".join(
        f"---\nkind: ConfigMap\nmetadata:\n  name: c{i}\ndata:\n  u: <path:kv/data/app#user>\n"
        f"  b: <path:kv/data/app#user | base64encode>\n"
        for i in range(50)
    )
    [one, *_] = render(text, Rules(redactor=redactor))
    assert one["data"]["u"] == "alice"
    # One read (kv/data/app) and one value made by a modifier (the base64 text), learnt once
    # each, whatever the number of placeholders.
    assert redactor.calls <= 2 + 1
    assert redactor.leaks("x alice x")
    assert redactor.leaks(base64.b64encode(b"alice").decode())


_STRINGS = st.sampled_from(
    [
        "plain",
        "<path:kv/data/app#user>",
        "<path:kv/data/app#port>",
        "<path:kv/data/app#map>",
        "pre <path:kv/data/app#user> post <path:kv/data/app#tls>",
        "<path:kv/data/app#nokey>",
        "<path:kv/data/none#user>",
        "<path:kv/data/app#user | base64encode>",
        "<path:kv/data/app#user | bogus>",
        "<path:kv/data/app#user",
        "<user>",
        "<not a placeholder>",
        "naïve",
        "\ud800x",
        base64.b64encode(b"<path:kv/data/app#user>").decode(),
        base64.b64encode(b"just text").decode(),
    ]
)
_LEAVES = _STRINGS | st.integers(-5, 5) | st.booleans() | st.none()
_TREES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "c d", "e"]), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["ConfigMap", "Secret", "X"]),
    annotated=st.booleans(),
    body=st.dictionaries(st.sampled_from(["data", "spec", "x"]), _TREES, max_size=3),
    share=st.booleans(),
)
def test_one_walk_substitutes_exactly_as_the_full_walk(
    kind: str, annotated: bool, body: dict[str, Any], share: bool
) -> None:
    """The candidates of the planning walk give the sites and the document of a full walk."""

    def build() -> Document:
        metadata: dict[str, Any] = {"name": "n"}
        if annotated:
            metadata["annotations"] = {"avp.kubernetes.io/path": "kv/data/app"}
        content: dict[str, Any] = {"kind": kind, "metadata": metadata, **copy.deepcopy(body)}
        if share and body:  # a YAML alias: one object reached twice
            content["alias"] = content[next(iter(body))]
        return Document(RawDocument("t.yaml", 1, 1, "", is_json=False), content)

    backend = FileBackend(SECRETS, "test secrets")
    outcomes = []
    for one_walk in (True, False):
        document = build()
        job = plan(document, Rules())
        assert (job.candidates is not None) is True
        if not one_walk:
            job.candidates = None
        results = {ref: _read(backend, ref) for ref in job.refs}
        sites = substitute(job, results, Rules())
        outcomes.append((sites, job.changed, job.refs, repr(document.content)))
    assert outcomes[0] == outcomes[1]


def _read(backend: FileBackend, ref: SecretRef) -> SecretData | BackendError:
    try:
        return backend.read(ref)
    except BackendError as exc:
        return exc


# ---------------------------------------------------------------- splicing into the text


def _generate(text: str) -> str:
    return generate(
        [InputStream("t.yaml", text)], EngineOptions(skip_non_manifests=False), CountingBackend
    )


def test_a_changed_document_keeps_its_comments_and_layout() -> None:
    text = (
        "# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\n"
        "metadata:\n    name: web   # the name\ndata:\n    user: <path:kv/data/app#user>  # who\n"
        "    port: '<path:kv/data/app#port>'\n    list: [a, <path:kv/data/app#user>]\n"
    )
    assert _generate(text) == (
        "# Source: chart/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\n"
        "metadata:\n    name: web   # the name\ndata:\n    user: alice  # who\n"
        '    port: "80"\n    list: [a, "alice"]\n'
    )


@pytest.mark.parametrize(
    ("text", "spliced"),
    [
        ("kind: X\na: <path:kv/data/app#user>\n", True),
        ("kind: ConfigMap\na: <path:kv/data/app#user>\n", True),
        ("kind: Secret\ndata:\n  a: <path:kv/data/app#user>\n", False),
        (
            "kind: X\nmetadata:\n  annotations:\n    avp.kubernetes.io/path: kv/data/app\n"
            "a: <user>\n",
            False,
        ),
        (
            "kind: X\nmetadata:\n  annotations:\n    \"avp.kubernetes.io\\x2Fkv-version\": '1'\n"
            "a: <path:kv/data/app#user>\n",
            False,
        ),
        ("kind: X\na: |\n  <path:kv/data/app#user>\n", False),
        ("kind: X\na: |\n  <b> no placeholder\nb: <path:kv/data/app#user>\n", True),
        ("kind: X\na: &x <path:kv/data/app#user>\n", False),
        ('{"kind": "X", "a": "<path:kv/data/app#user>"}', False),
    ],
)
def test_which_documents_are_resolved_in_their_text(text: str, spliced: bool) -> None:
    [document] = load([InputStream("t.yaml", text)], skip_non_manifests=False)
    assert (document.scan is not None) is spliced
    assert (document.content is None) is spliced


def test_a_result_that_is_no_scalar_constructs_the_document_after_all() -> None:
    text = "kind: X  # gone\nspec:\n  a: <path:kv/data/app#map>\n  b: <path:kv/data/app#user>\n"
    [document] = load([InputStream("t.yaml", text)], skip_non_manifests=False)
    assert document.scan is not None
    assert _generate(text) == "kind: X\nspec:\n  a:\n    a: 1\n  b: alice\n"


def test_spliced_and_constructed_documents_give_the_same_sites() -> None:
    text = (
        "kind: X\nmetadata: {name: n}\nspec:\n  a: <path:kv/data/app#nokey>\n"
        "  b: [x, 'y <path:kv/data/none#user>']\n  c: <path:kv/data/app#user | bogus>\n"
    )
    [spliced] = load([InputStream("t.yaml", text)], skip_non_manifests=False)
    constructed = Document(spliced.raw, load_all(text).__next__())
    assert spliced.scan is not None
    messages = []
    for document in (spliced, constructed):
        job = plan(document, Rules())
        backend = FileBackend(SECRETS, "test secrets")
        results = {ref: _read(backend, ref) for ref in job.refs}
        messages.append([site.message() for site in substitute(job, results, Rules())])
    assert messages[0] == messages[1]
    assert len(messages[0]) == 3


def test_a_text_repeated_in_scanned_documents_is_resolved_once_and_reported_for_each() -> None:
    documents = "---\n".join(
        f"kind: {kind}\nmetadata:\n  name: n{i}\ndata:\n  a: <path:kv/data/app#port>\n"
        f"  b: <path:kv/data/app#nokey>\n  c: <path:kv/data/app#user>\n"
        for i, kind in enumerate(["X", "ConfigMap", "X", "ConfigMap"])
    )
    loaded = load([InputStream("t.yaml", documents)], skip_non_manifests=False)
    assert all(document.scan is not None for document in loaded)
    outcome = resolve(loaded, EngineOptions(skip_non_manifests=False), CountingBackend)
    # Each document has its own sites, and each kind its own typing (a ConfigMap's is text).
    assert [site.message() for site in outcome.sites if site.status is Status.OK] == [
        f"t.yaml (document {i + 1}, {kind}/n{i}): data.{key}: <path:kv/data/app#{name}>: ok"
        for i, kind in enumerate(["X", "ConfigMap", "X", "ConfigMap"])
        for key, name in (("a", "port"), ("c", "user"))
    ]
    assert [site.field for site in outcome.failures] == ["data.b"] * 4
    assert [job.spliced_values for job in outcome.jobs] == [
        [80, "<path:kv/data/app#nokey>", "alice"],
        ["80", "<path:kv/data/app#nokey>", "alice"],
    ] * 2


def test_documents_resolved_together_are_written_as_each_alone() -> None:
    texts = [
        "kind: X\nspec:\n  a: <path:kv/data/app#map>\n  b: <path:kv/data/app#port>\n",
        "kind: X\nspec:\n  a: <path:kv/data/app#map>\n  c: x<path:kv/data/app#port>\n",
        "kind: ConfigMap\nspec:\n  b: <path:kv/data/app#port>\n",
        "kind: X\nspec:\n  b: <path:kv/data/app#port>\n",
    ]
    assert _generate("---\n".join(texts)) == "---\n".join(_generate(text) for text in texts)


def test_many_small_documents_are_written_in_pieces_as_emit_joins_them() -> None:
    texts = [f"kind: X\nn: {i}\na: <path:kv/data/app#user>\n" for i in range(3000)]
    texts[5] = "kind: X\nplain: " + "x" * 70000 + "\n"  # one alone is larger than a piece
    options = EngineOptions(skip_non_manifests=False)
    outcome = resolve(
        load([InputStream("t.yaml", "---\n".join(texts))], False), options, CountingBackend
    )
    out = io.StringIO()
    write(outcome, out)
    assert out.getvalue() == emit(outcome)
    assert out.getvalue().count("---\n") == 2999
    empty = io.StringIO()
    write(resolve([], options, CountingBackend), empty)
    assert empty.getvalue() == ""


def test_a_document_nested_deeper_than_python_recurses_names_itself() -> None:
    text = (
        "kind: X\nmetadata:\n  name: deep\n  annotations:\n"
        "    avp.kubernetes.io/path: kv/data/app\nx:\n"
        + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(900))
        + " " * 901
        + "v: <user>\n"
    )
    with pytest.raises(
        InputError, match=r"document 1, X/deep\): the document is nested too deeply"
    ):
        _generate(text)
