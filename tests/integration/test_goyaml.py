"""The plugin's YAML against the real Go reader Argo CD uses (goyaml-json, tests/toolchain).

Argo CD parses the plugin's stdout with Go: `sigs.k8s.io/yaml`, which types scalars like
go-yaml v2. Two properties, each checked on batches of generated documents in one Go process:

* writing: a Python value written by either writer (the fast one and PyYAML's) reads back in
  Go as exactly that value, types included, and Argo CD's own splitter accepts it;
* reading: for YAML text with every scalar shape go-yaml v2 knows (YAML 1.1 booleans, base
  prefixes, underscores, special floats, `=`, `<<` merges, explicit tags), the plugin's reader
  gives each value the type and value Go gives it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin.manifests import fastyaml
from plugin.manifests.yamlio import Dumper, dump, load_all
from tests.conftest import unavailable

pytestmark = pytest.mark.integration

TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"
EXAMPLES = int(os.environ.get("GOYAML_EXAMPLES", "60"))
BATCH = 25


@pytest.fixture(scope="module")
def goyaml() -> str:
    from_env = os.environ.get("GOYAML_JSON_BIN")
    found = shutil.which(from_env or str(TOOLS_BIN / "goyaml-json"))
    if found is None:
        unavailable(
            f"goyaml-json not found (set GOYAML_JSON_BIN or run `make tools` to install it "
            f"into {TOOLS_BIN})"
        )
        raise AssertionError("unreachable")
    return found


def go_read(binary: str, text: str, lib: str) -> list[Any]:
    """One JSON value per document, as Go reads `text`; ValueError with Go's message."""
    proc = subprocess.run(
        [binary, f"-lib={lib}"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise ValueError(proc.stderr.strip())
    return [json.loads(line) for line in proc.stdout.split("\n") if line]


# --------------------------------------------------------------- comparing typed values


def from_go(tagged: dict[str, Any]) -> Any:
    """goyaml-json's tagged value as a canonical, comparable Python value."""
    kind, value = tagged["t"], tagged.get("v")
    if kind == "map":
        return ("map", tuple(sorted((from_go(k), from_go(v)) for k, v in value)))
    if kind == "seq":
        return ("seq", tuple(from_go(item) for item in value))
    if kind == "float":
        return ("float", _float_key(float(value)))
    if kind == "int":
        return ("int", int(value))
    if kind in ("str", "timestamp"):
        return ("str", value)
    if kind == "bool":
        return ("bool", value)
    if kind == "null":
        return ("null", None)
    raise AssertionError(f"unexpected Go type {kind}")


def from_python(value: Any) -> Any:
    """The same canonical form for what the plugin's reader (or a writer's input) holds."""
    if isinstance(value, dict):
        return ("map", tuple(sorted((from_python(k), from_python(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("seq", tuple(from_python(item) for item in value))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", _float_key(value))
    if isinstance(value, str):
        return ("str", value)
    if value is None:
        return ("null", None)
    raise AssertionError(f"unexpected Python type {type(value).__name__}")


def _float_key(number: float) -> str:
    """NaN equals NaN and -0.0 differs from 0.0: compare floats by their exact text."""
    return "nan" if math.isnan(number) else repr(number)


def has_special_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(has_special_float(v) for v in value.values())
    if isinstance(value, list):
        return any(has_special_float(v) for v in value)
    return isinstance(value, float) and (math.isnan(value) or math.isinf(value))


def same_json(go: Any, expected: Any) -> bool:
    """Argo CD's JSON value equals the written one (a float compares as the float Go printed)."""
    if isinstance(expected, dict):
        return (
            isinstance(go, dict)
            and go.keys() == expected.keys()
            and all(same_json(go[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(go, list)
            and len(go) == len(expected)
            and all(same_json(g, e) for g, e in zip(go, expected, strict=True))
        )
    if isinstance(expected, float):
        return isinstance(go, int | float) and not isinstance(go, bool) and float(go) == expected
    return type(go) is type(expected) and go == expected


# --------------------------------------------------------------- generated values

_YAML11_WORDS = st.sampled_from(
    ["y", "Y", "n", "N", "yes", "No", "ON", "off", "true", "False", "~", "null", "Null", "",
     "=", "<<", ".nan", ".NaN", ".inf", "-.Inf", "+.inf", "1e3", "1e+21", "1E3", ".5", "+.5",
     "1.", "0o17", "0O17", "0x1F", "0b101", "-0b11", "0b-1", "0777", "08", "0888", "1_000",
     "1_0.5", "99999999999999999999", "18446744073709551615", "-9223372036854775809", "1e400",
     "2024-01-01", "2001-12-14t21:59:43.10-05:00", "1:20", "-", "+", ".", "0x", "_1", "-0",
     "yes please", "#x", "x #y", "x: y", "- x", "? x", "a,b", "[x]", "{x}", "&a", "*a", "!x",
     "|", ">", "%x", "@x", "`x", "'q'", '"d"', "...", "---", "--- x", "<path:kv/app#k>"]
)  # fmt: skip
_NUMBERISH = st.text(alphabet="0123456789+-._eExXoObB", min_size=1, max_size=8)
_UNICODE = st.text(
    alphabet=st.characters(exclude_categories=("Cs",)), max_size=20
)  # any code point a Go string can hold, controls and U+2028 included
_LINE = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\n"))
_MULTILINE = st.builds(
    lambda blanks, indent, lines, trailing: (
        "\n" * blanks + "\n".join(indent + line for line in lines) + "\n" * trailing
    ),
    st.integers(0, 2),
    st.sampled_from(["", " ", "  ", "\t", "    "]),
    st.lists(
        st.one_of(_LINE, st.sampled_from(["#c", "", " ", "  x", "\tx", "- y"])),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 3),
)
_LONG = st.builds(
    lambda part, n: part * n, st.sampled_from(["ab ", "é", "y", "x" * 50]), st.integers(100, 400)
)
_STRINGS = st.one_of(_YAML11_WORDS, _NUMBERISH, _UNICODE, _MULTILINE, _LONG)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    _STRINGS,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(_STRINGS, children, max_size=3)
    ),
    max_leaves=8,
)
_DOCUMENTS = st.dictionaries(_STRINGS, _VALUES, min_size=1, max_size=4)


def pyyaml_dump(document: dict[str, Any]) -> str:
    """The PyYAML path of the writer, whatever the fast writer would have done."""
    text: str = yaml.dump(
        document,
        Dumper=Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )
    return text


_WRITERS = {
    "dump": dump,
    "fastyaml": fastyaml.dump,
    "pyyaml": pyyaml_dump,
}


@pytest.mark.parametrize("writer", sorted(_WRITERS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(documents=st.lists(_DOCUMENTS, min_size=1, max_size=BATCH))
def test_what_the_writers_write_go_reads_back_unchanged(
    goyaml: str, writer: str, documents: list[dict[str, Any]]
) -> None:
    texts = [_WRITERS[writer](document) for document in documents]
    kept = [(doc, text) for doc, text in zip(documents, texts, strict=True) if text is not None]
    if not kept:
        return
    stream = "---\n".join(text for _, text in kept)
    read = go_read(goyaml, stream, "yamlv2")
    assert len(read) == len(kept)
    for (document, text), value in zip(kept, read, strict=True):
        assert from_go(value) == from_python(document), f"written as:\n{text}"
    plain = [(doc, text) for doc, text in kept if not has_special_float(doc)]
    if plain:  # Argo CD's splitter: JSON cannot hold NaN or infinities, so those are left out
        argocd = go_read(goyaml, "---\n".join(text for _, text in plain), "argocd")
        assert len(argocd) == len(plain)
        for (document, text), value in zip(plain, argocd, strict=True):
            assert same_json(value, document), f"written as:\n{text}"


# --------------------------------------------------------------- reading

_PLAIN_SCALAR = st.one_of(_YAML11_WORDS.filter(lambda t: t != ""), _NUMBERISH)
_TAGGED = st.builds(
    lambda tag, text: f"{tag} {json.dumps(text)}",
    st.sampled_from(["!!str", "!!float", "!!int", "!!bool", "!!null"]),
    st.sampled_from(["1", "0o17", "1e3", "y", "N", "", "~", "08", ".5", "0x1F"]),
)


def _entry(key: str, value: str) -> str:
    return f"{key}: {value}"


_READ_DOCUMENTS = st.builds(
    lambda pairs, flow, merge: (
        "\n".join(
            [_entry(f"k{i}", v) for i, v in enumerate(pairs)]
            + [f"flow: [{', '.join(flow)}]", f"keyed:\n  {flow[0] if flow else 'x'}: 1"]
            + (
                [
                    "base: &b {x: 1, y: 2}",
                    "merged:",
                    "  x: 0",
                    "  <<: [*b, {z: 3, x: 4}]",
                    "  y: 5",
                    "val: <<",
                ]
                if merge
                else []
            )
        )
        + "\n"
    ),
    st.lists(st.one_of(_PLAIN_SCALAR, _TAGGED), min_size=1, max_size=8),
    st.lists(_PLAIN_SCALAR.filter(lambda t: t[:1] not in "-?:[]{},#&*!|>'\"%@`"), max_size=5),
    st.booleans(),
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(texts=st.lists(_READ_DOCUMENTS, min_size=1, max_size=BATCH))
def test_the_reader_types_every_scalar_as_go_does(goyaml: str, texts: list[str]) -> None:
    stream = "---\n".join(texts)
    try:
        go_values = go_read(goyaml, stream, "yamlv2")
    except ValueError:  # some text is not YAML to Go: find it, it must not be YAML to us either
        texts = _readable_by_both(goyaml, texts)
        stream = "---\n".join(texts)
        go_values = go_read(goyaml, stream, "yamlv2") if texts else []
    ours = list(load_all(stream)) if texts else []
    assert len(ours) == len(go_values) == len(texts)
    for text, mine, go in zip(texts, ours, go_values, strict=True):
        assert from_python(mine) == from_go(go), f"read from:\n{text}"


def _readable_by_both(goyaml: str, texts: list[str]) -> list[str]:
    """The texts Go accepts; each text one reader refuses the other refuses too."""
    readable = []
    for text in texts:
        try:
            go_read(goyaml, text, "yamlv2")
            go_ok = True
        except ValueError:
            go_ok = False
        try:
            list(load_all(text))
            ours_ok = True
        except yaml.YAMLError:
            ours_ok = False
        assert go_ok == ours_ok, f"Go {'accepts' if go_ok else 'refuses'} it, we do not:\n{text}"
        if go_ok:
            readable.append(text)
    return readable
