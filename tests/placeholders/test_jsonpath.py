"""Tests for plugin.placeholders.jsonpath: client-go's JSONPath template dialect
(AllowMissingKeys false).

Most expected outputs come from k8s.io/client-go/util/jsonpath's own jsonpath_test.go and
parser_test.go (Go structs there are dicts here, so their JSON prints with sorted keys).
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.errors import JSONPathError, ModifierError, PlaceholderError, PluginError
from plugin.placeholders import jsonpath

# --------------------------------------------------------------------------- fixtures

TYPES: dict[str, Any] = {
    "bools": [True, False, True, False],
    "integers": [1, 2, 3, 4],
    "floats": [1.0, 2.2, 3.3, 4.0],
    "strings": ["one", "two", "three", "four"],
    "interfaces": [True, "one", 1, 1.1],
    "maps": [
        {"name": "one", "value": 1},
        {"name": "two", "value": 2.02},
        {"name": "three", "value": 3.03},
        {"name": "four", "value": 4.04},
    ],
}

STORE: dict[str, Any] = {
    "Book": [
        {
            "Category": "reference",
            "Author": "Nigel Rees",
            "Title": "Sayings of the Centurey",
            "Price": 8.95,
        },
        {
            "Category": "fiction",
            "Author": "Evelyn Waugh",
            "Title": "Sword of Honour",
            "Price": 12.99,
        },
        {"Category": "fiction", "Author": "Herman Melville", "Title": "Moby Dick", "Price": 8.99},
    ],
    "Bicycle": [
        {"Color": "red", "Price": 19.95, "IsNew": True},
        {"Color": "green", "Price": 20.01, "IsNew": False},
    ],
    "Name": "jsonpath",
    "Labels": {"engieer": 10, "web/html": 15, "k8s-app": 20},
    "Employees": {"jason": "manager", "dan": "clerk"},
}

POINTS: list[Any] = json.loads(
    """[
    {"id": "i1", "x":4, "y":-5},
    {"id": "i2", "x":-2, "y":-5, "z":1},
    {"id": "i3", "x":  8, "y":  3 },
    {"id": "i4", "x": -6, "y": -1 },
    {"id": "i5", "x":  0, "y":  2, "z": 1 },
    {"id": "i6", "x":  1, "y":  4 }
]"""
)

NODES: dict[str, Any] = json.loads(
    """{
  "kind": "List",
  "items":[
    {
      "kind":"None",
      "metadata":{"name":"127.0.0.1", "labels":{"kubernetes.io/hostname":"127.0.0.1"}},
      "status":{
        "capacity":{"cpu":"4"},
        "ready": true,
        "addresses":[{"type": "LegacyHostIP", "address":"127.0.0.1"}]
      }
    },
    {
      "kind":"None",
      "metadata":{"name":"127.0.0.2", "labels":{"kubernetes.io/hostname":"127.0.0.2"}},
      "status":{
        "capacity":{"cpu":"8"},
        "ready": false,
        "addresses":[
          {"type": "LegacyHostIP", "address":"127.0.0.2"},
          {"type": "another", "address":"127.0.0.3"}
        ]
      }
    }
  ],
  "users":[
    {"name": "myself", "user": {}},
    {"name": "e2e", "user": {"username": "admin", "password": "secret"}}
  ]
}"""
)

PODS: dict[str, Any] = {
    "items": [
        {
            "metadata": {"name": "pod1"},
            "spec": {
                "containers": [
                    {"name": "foo", "another": [{"name": "value1"}, {"name": "value2"}]},
                    {"name": "bar", "another": [{"name": "value1"}, {"name": "value2"}]},
                ]
            },
        },
        {
            "metadata": {"name": "pod2"},
            "spec": {
                "containers": [{"name": "baz", "another": [{"name": "value1"}, {"name": "value2"}]}]
            },
        },
    ]
}

CONTAINERS: dict[str, Any] = {
    "spec": {
        "containers": [{"image": "radial/busyboxplus:curl", "name": f"fake{i}"} for i in range(6)]
    }
}
FOUR_CONTAINERS: dict[str, Any] = {"spec": {"containers": CONTAINERS["spec"]["containers"][:4]}}

ANNOTATED: dict[str, Any] = {
    "kind": "List",
    "items": [
        {"kind": "Pod", "metadata": {"name": "pod1", "annotations": {"color": "blue"}}},
        {"kind": "Pod", "metadata": {"name": "pod2"}},
        {"kind": "Pod", "metadata": {"name": "pod3", "annotations": {"color": "green"}}},
        {"kind": "Pod", "metadata": {"name": "pod4", "annotations": {"color": "blue"}}},
    ],
}


def run(template: str, data: object) -> str:
    return jsonpath.execute(template, data)


def error_of(template: str, data: object) -> str:
    with pytest.raises(JSONPathError) as info:
        jsonpath.execute(template, data)
    return str(info.value)


# --------------------------------------------------------------------------- client-go cases


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{ .bools }", "[true,false,true,false]"),
        ("{ .bools[0] }", "true"),
        ("{ .bools[-1] }", "false"),
        ("{ .bools[0:2] }", "true false"),
        ("{ .bools[:2] }", "true false"),
        ("{ .bools[:4:2] }", "true true"),
        ("{ .integers }", "[1,2,3,4]"),
        ("{ .integers[0] }", "1"),
        ("{ .integers[-2] }", "3"),
        ("{ .integers[0:2] }", "1 2"),
        ("{ .integers[:2] }", "1 2"),
        ("{ .integers[:4:2] }", "1 3"),
        ("{ .floats }", "[1,2.2,3.3,4]"),
        ("{ .floats[0] }", "1"),
        ("{ .floats[-2] }", "3.3"),
        ("{ .floats[0:2] }", "1 2.2"),
        ("{ .floats[:2] }", "1 2.2"),
        ("{ .floats[:4:2] }", "1 3.3"),
        ("{ .strings }", '["one","two","three","four"]'),
        ("{ .strings[0] }", "one"),
        ("{ .strings[-2] }", "three"),
        ("{ .strings[0:2] }", "one two"),
        ("{ .strings[:2] }", "one two"),
        ("{ .strings[:4:2] }", "one three"),
        ("{ .interfaces }", '[true,"one",1,1.1]'),
        ("{ .interfaces[0] }", "true"),
        ("{ .interfaces[-2] }", "1"),
        ("{ .interfaces[0:2] }", "true one"),
        ("{ .interfaces[:2] }", "true one"),
        ("{ .interfaces[:4:2] }", "true 1"),
        (
            "{ .maps }",
            '[{"name":"one","value":1},{"name":"two","value":2.02},'
            '{"name":"three","value":3.03},{"name":"four","value":4.04}]',
        ),
        ("{ .maps[0] }", '{"name":"one","value":1}'),
        ("{ .maps[-2] }", '{"name":"three","value":3.03}'),
        ("{ .maps[0:2] }", '{"name":"one","value":1} {"name":"two","value":2.02}'),
        ("{ .maps[:2] }", '{"name":"one","value":1} {"name":"two","value":2.02}'),
        ("{ .maps[::2] }", '{"name":"one","value":1} {"name":"three","value":3.03}'),
        ("{ .maps[1::2] }", '{"name":"two","value":2.02} {"name":"four","value":4.04}'),
    ],
)
def test_types_input(template: str, expected: str) -> None:
    assert run(template, TYPES) == expected


@pytest.mark.parametrize(
    ("template", "data", "expected"),
    [
        ("hello jsonpath", None, "hello jsonpath"),
        ("{..}", [1, 2, 3], "[1,2,3]"),
        ("{[?(@<5)]}", [2, 6, 3, 7], "2 3"),
        ('{"{"}', None, "{"),
        ("{[1,3,4]}", [0, 1, 2, 3, 4], "1 3 4"),
        ("{[0:2]}", ["Monday", "Tudesday"], "Monday Tudesday"),
        ("hello {.Name}", STORE, "hello jsonpath"),
        ("{$.Labels.web/html}", STORE, "15"),
        ("{$.Employees.jason}", STORE, "manager"),
        ("{$.Employees.dan}", STORE, "clerk"),
        ("{.Labels.k8s-app}", STORE, "20"),
        ("{.Bicycle[*].Color}", STORE, "red green"),
        ("{.Book[*].Author}", STORE, "Nigel Rees Evelyn Waugh Herman Melville"),
        (
            '{range .Bicycle[*]}{ "{" }{ @.* }{ "} " }{end}',
            STORE,
            "{red 19.95 true} {green 20.01 false} ",
        ),
        ("{..Price}", STORE, "8.95 12.99 8.99 19.95 20.01"),
        ("{...Price}", STORE, "8.95 12.99 8.99 19.95 20.01"),
        (
            "{.Bicycle}",
            STORE,
            '[{"Color":"red","IsNew":true,"Price":19.95},{"Color":"green","IsNew":false,"Price":20.01}]',
        ),
        (
            '{range .Bicycle[*]}{ @ }{ " " }{end}',
            STORE,
            '{"Color":"red","IsNew":true,"Price":19.95} '
            '{"Color":"green","IsNew":false,"Price":20.01} ',
        ),
        (
            "{.Book[-1:]}",
            STORE,
            '{"Author":"Herman Melville","Category":"fiction","Price":8.99,"Title":"Moby Dick"}',
        ),
        (
            "{..Book[2]}",
            STORE,
            '{"Author":"Herman Melville","Category":"fiction","Price":8.99,"Title":"Moby Dick"}',
        ),
        ("{.Bicycle[?(@.IsNew==true)]}", STORE, '{"Color":"red","IsNew":true,"Price":19.95}'),
        ("{[?(@.z)].id}", POINTS, "i2 i5"),
        ("{[0]['id']}", POINTS, "i1"),
    ],
)
def test_store_and_points(template: str, data: object, expected: str) -> None:
    assert run(template, data) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{range .items[*]}{.metadata.name}, {end}{.kind}", "127.0.0.1, 127.0.0.2, List"),
        ('{range .items[*]}{.metadata.name}{"\\t"}{end}', "127.0.0.1\t127.0.0.2\t"),
        ("{.items[*].status.addresses[*].address}", "127.0.0.1 127.0.0.2 127.0.0.3"),
        (
            "{range .items[*]}{range .status.addresses[*]}{.address}, {end}{end}",
            "127.0.0.1, 127.0.0.2, 127.0.0.3, ",
        ),
        ("{.items[*].metadata.name}", "127.0.0.1 127.0.0.2"),
        (
            "{.items[*]['metadata.name', 'status.capacity']}",
            '127.0.0.1 127.0.0.2 {"cpu":"4"} {"cpu":"8"}',
        ),
        (
            "{range .items[*]}[{.metadata.name}, {.status.capacity}] {end}",
            '[127.0.0.1, {"cpu":"4"}] [127.0.0.2, {"cpu":"8"}] ',
        ),
        ('{.users[?(@.name=="e2e")].user.password}', "secret"),
        ("{.items[0].metadata.labels.kubernetes\\.io/hostname}", "127.0.0.1"),
        ('{.items[?(@.metadata.labels.kubernetes\\.io/hostname=="127.0.0.1")].kind}', "None"),
        ("{.items[?(@..ready==true)].metadata.name}", "127.0.0.1"),
        ("{..name}", "127.0.0.1 127.0.0.2 myself e2e"),
        ("kind is {.kind}", "kind is List"),
        ("{['kind']}", "List"),
        ("{.users[0].name}", "myself"),
    ],
)
def test_kubernetes(template: str, expected: str) -> None:
    assert run(template, NODES) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            '{range .items[*]}{.metadata.name}{":"}'
            '{range @.spec.containers[*]}{.name}{","}{end}{"+"}{end}',
            "pod1:foo,bar,+pod2:baz,+",
        ),
        (
            '{range .items[*]}{.metadata.name}{"~"}{range @.spec.containers[*]}{.name}{":"}'
            '{range @.another[*]}{.name}{","}{end}{"+"}{end}{"#"}{end}',
            "pod1~foo:value1,value2,+bar:value1,value2,+#pod2~baz:value1,value2,+#",
        ),
        (
            '{range .items[*]}{.metadata.name}{"\\t"}{range @.spec.containers[*]}{.name}{" "}{end}'
            '{"\\t"}{range @.spec.containers[*]}{.name}{" "}{end}{"\\n"}{end}',
            "pod1\tfoo bar \tfoo bar \npod2\tbaz \tbaz \n",
        ),
        # literal text inside range bodies repeats per element
        ("{range .items[*]}<{.metadata.name}>\n{end}", "<pod1>\n<pod2>\n"),
        ("{range .items[*]}{$.metadata.name}{end}", "pod1pod2"),
    ],
)
def test_nested_ranges(template: str, expected: str) -> None:
    assert run(template, PODS) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{.spec.containers[0].name}", "fake0"),
        ("{.spec.containers[0:0].name}", ""),
        ("{.spec.containers[0:-1].name}", "fake0 fake1 fake2"),
        ("{.spec.containers[-1].name}", "fake3"),
        ("{.spec.containers[-1:].name}", "fake3"),
        ("{.spec.containers[-2].name}", "fake2"),
        ("{.spec.containers[-2:].name}", "fake2 fake3"),
        ("{.spec.containers[-3].name}", "fake1"),
        ("{.spec.containers[-4].name}", "fake0"),
        ("{.spec.containers[-4:].name}", "fake0 fake1 fake2 fake3"),
        ("{.spec.containers[5:5].name}", ""),
        ("{.spec.containers[-5:-5].name}", ""),
    ],
)
def test_negative_index(template: str, expected: str) -> None:
    assert run(template, FOUR_CONTAINERS) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{.spec.containers[-1:0].name}", "starting index 3 is greater than ending index 0"),
        ("{.spec.containers[-5].name}", "array index out of bounds: index -1, length 4"),
        ("{.spec.containers[3:1].name}", "starting index 3 is greater than ending index 1"),
        ("{.spec.containers[-1:-2].name}", "starting index 3 is greater than ending index 2"),
        ("{.spec.containers[4].name}", "array index out of bounds: index 4, length 4"),
        ("{.spec.containers[0:5].name}", "array index out of bounds: index 4, length 4"),
    ],
)
def test_negative_index_errors(template: str, message: str) -> None:
    assert error_of(template, FOUR_CONTAINERS) == message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{.spec.containers[0:].name}", "fake0 fake1 fake2 fake3 fake4 fake5"),
        ("{.spec.containers[0:6:].name}", "fake0 fake1 fake2 fake3 fake4 fake5"),
        ("{.spec.containers[0:6:1].name}", "fake0 fake1 fake2 fake3 fake4 fake5"),
        ("{.spec.containers[1:4:2].name}", "fake1 fake3"),
        ("{.spec.containers[1:4:3].name}", "fake1"),
        ("{.spec.containers[1:4:4].name}", "fake1"),
        ("{.spec.containers[0:6:2].name}", "fake0 fake2 fake4"),
        ("{.spec.containers[0:6:3].name}", "fake0 fake3"),
        ("{.spec.containers[0:6:5].name}", "fake0 fake5"),
        ("{.spec.containers[0:6:6].name}", "fake0"),
        ("{.spec.containers[*].name}", "fake0 fake1 fake2 fake3 fake4 fake5"),
        ("{.spec.containers[:].name}", "fake0 fake1 fake2 fake3 fake4 fake5"),
    ],
)
def test_step(template: str, expected: str) -> None:
    assert run(template, CONTAINERS) == expected


@pytest.mark.parametrize(
    "template", ["{.spec.containers[0:6:0].name}", "{.spec.containers[0:6:-1].name}"]
)
def test_step_must_be_positive(template: str) -> None:
    assert error_of(template, CONTAINERS) == "step must be > 0"


def test_filter_missing_keys_are_errors() -> None:
    template = '{.items[?(@.metadata.annotations.color=="blue")].metadata.name}'
    assert error_of(template, ANNOTATED) == "annotations is not found"
    # existence filters tolerate the missing key
    assert run("{.items[?(@.metadata.annotations)].metadata.name}", ANNOTATED) == "pod1 pod3 pod4"


def test_running_pods_without_status_fail() -> None:
    data = {
        "items": [
            {"metadata": {"name": "pod1"}, "status": {"phase": "Running"}},
            {"resourceVersion": ""},
        ]
    }
    template = '{range .items[?(.status.phase=="Running")]}{.metadata.name}{" is Running\\n"}{end}'
    assert error_of(template, data) == "status is not found"
    assert run(template, {"items": data["items"][:1]}) == "pod1 is Running\n"


# --------------------------------------------------------------------------- parse errors


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{.hello", "unclosed action"),
        ("{", "unclosed action"),
        ("{.a\n}", "unclosed action"),
        ("{.a\r}", "unclosed action"),
        ("{*}", "unrecognized character in action: U+002A '*'"),
        ("{!}", "unrecognized character in action: U+0021 '!'"),
        ("{\t}", "unrecognized character in action: U+0009"),
        ("{\\\\\\}", "unrecognized character in action: U+005C '\\'"),
        ("{{}}", "unrecognized character in action: U+007B '{'"),
        ("{..*}", "unrecognized character in action: U+002A '*'"),
        ("{\u00a0}", "unrecognized character in action: U+00A0"),
        ("{\U0001f600}", "unrecognized character in action: U+1F600 '\U0001f600'"),
        ("{+12.3.0}", "cannot parse number +12.3.0"),
        ("{-}", "cannot parse number -"),
        ("{9" + "9" * 400 + "}", "cannot parse number " + "9" * 401),
        ("{\u0663}", "cannot parse number \u0663"),
        ("{[1}", "unterminated array"),
        ("{[1\n]}", "unterminated array"),
        ("{[?(.price]}", "unterminated filter"),
        ("{[?(@.a=='x)]}", "unterminated filter"),
        ("{[?(@.a)x}", "unclosed array expect ]"),
        ("{........}", "invalid multiple recursive descent"),
        ("{....a}", "invalid multiple recursive descent"),
        ("{[a]}", "invalid array index a"),
        ('{["a"]}', 'invalid array index "a"'),
        ("{[1:2:3:4]}", "invalid array index 1:2:3:4"),
        ("{[99999999999999999999]}", "array index 99999999999999999999 is not a number"),
        ("{[-]}", "array index - is not a number"),
        ("{[1:-]}", "array index - is not a number"),
        ("{['a,b']}", "invalid array index 'a"),
        ('{"abc}', "unterminated quoted string"),
        ("{'a\nb'}", "unterminated quoted string"),
        ("{'a\\\\'}", "unterminated quoted string"),
        ('{"\\q"}', 'unquote string "\\q" error invalid syntax'),
        ("{'\\\"'}", "unquote string '\\\"' error invalid syntax"),
        ('{"\\u12"}', 'unquote string "\\u12" error invalid syntax'),
        ('{"\\ud800"}', 'unquote string "\\ud800" error invalid syntax'),
        ('{"\\U00110000"}', 'unquote string "\\U00110000" error invalid syntax'),
        ('{"\\400"}', 'unquote string "\\400" error invalid syntax'),
        ('{"\\18"}', 'unquote string "\\18" error invalid syntax'),
        ("{[?(@.a=~'x')]}", "unrecognized character in action: U+007E '~'"),
        ("{[?(==1)]}", "unrecognized character in action: U+003D '='"),
        ("{[?(@.a==)]}", "unrecognized character in action: U+003D '='"),
        ("{range .items[*]}{.name}", "unclosed range"),
        ("{range .a}{range .b}{end}", "unclosed range"),
        ("{range .a end}", "an action may hold only one range or end"),
        ("{range range .a}", "an action may hold only one range or end"),
        ("{.a[?(@.b==end)]}", "end cannot be used inside a filter or union"),
        ("{['x range', 'y']}", "range cannot be used inside a filter or union"),
        ("{range @}" * 101 + "{end}" * 101, "template nested too deeply"),
    ],
)
def test_parse_errors(template: str, message: str) -> None:
    with pytest.raises(JSONPathError) as info:
        jsonpath.parse(template)
    assert str(info.value) == message


def test_deep_sub_expressions_are_bounded() -> None:
    # Sub-expressions re-enter the parser; past MAX_NESTING levels it refuses.
    with pytest.raises(JSONPathError, match="nested too deeply"):
        jsonpath._Parser("{.a}", jsonpath.MAX_NESTING + 1)


def test_error_hierarchy() -> None:
    with pytest.raises(JSONPathError) as info:
        jsonpath.parse("{")
    assert isinstance(info.value, ModifierError)
    assert isinstance(info.value, PlaceholderError)
    assert isinstance(info.value, PluginError)
    with pytest.raises(JSONPathError) as info:
        jsonpath.execute("{.x}", {})
    assert type(info.value) is JSONPathError


def test_non_string_template() -> None:
    with pytest.raises(JSONPathError):
        jsonpath.parse(b"{.a}")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- evaluation errors


@pytest.mark.parametrize(
    ("template", "data", "message"),
    [
        ("{hello}", STORE, "unrecognized identifier hello"),
        ("{.hello}", STORE, "hello is not found"),
        ("before-{.hello}after", STORE, "hello is not found"),
        ("{.Labels[0]}", STORE, "map[string]interface {} is not array or slice"),
        ("{.Name[0]}", STORE, "string is not array or slice"),
        ("{.Labels.engieer[0]}", STORE, "int64 is not array or slice"),
        ("{.Book[0].Price[0]}", STORE, "float64 is not array or slice"),
        ("{.Bicycle[0].IsNew[0]}", STORE, "bool is not array or slice"),
        ("{.Book[?(@.Price<>10)]}", STORE, "unrecognized filter operator <>"),
        ("{.Book[?(@.Price=10)]}", STORE, "unrecognized filter operator ="),
        ("{range .Labels.*}{@}{end}{end}", STORE, "not in range, nothing to end"),
        ("{end}", STORE, "not in range, nothing to end"),
        ("{.missing}{end}", STORE, "missing is not found"),
        ("{.Book[5]}", STORE, "array index out of bounds: index 5, length 3"),
        ("{.Book[-4]}", STORE, "array index out of bounds: index -1, length 3"),
        ("{.Book[0:4]}", STORE, "array index out of bounds: index 3, length 3"),
        ("{.Book[2:1]}", STORE, "starting index 2 is greater than ending index 1"),
        ("{.Book[0:3:0]}", STORE, "step must be > 0"),
        ("{.Book[?(@.Price<10)]}", STORE, "incompatible types for comparison"),
        ("{.Book[?(@.Price=='8.95')]}", STORE, "incompatible types for comparison"),
        ("{.Bicycle[?(@.IsNew<true)]}", STORE, "invalid type for comparison"),
        ("{.Book[?(@==1)]}", STORE, "invalid type for comparison"),
        ("{.Book[?(1==@)]}", STORE, "invalid type for comparison"),
        ("{.Name[?(@)]}", STORE, "string is not array or slice and cannot be filtered"),
        (
            "{.Labels[?(@)]}",
            STORE,
            "map[string]interface {} is not array or slice and cannot be filtered",
        ),
        ("{.Book[?(@.*==1)]}", STORE, "can only compare one element at a time"),
        ("{.Book[?(@.Price==@.*)]}", STORE, "can only compare one element at a time"),
        ("{.Book[?(@.Price==@.nope)]}", STORE, "nope is not found"),
        ("{.Book[*].nope}", STORE, "nope is not found"),
        ("{.Book['nope', 'Title']}", STORE, "nope is not found"),
        ("{.a.b}", {"a": None}, "b is not found"),
        ("{.a[?(@.x)]}", {"a": None}, "<nil> is not array or slice and cannot be filtered"),
        ("{[?(@)]}", None, "<invalid reflect.Value> is not array or slice and cannot be filtered"),
        ("{.a}", None, "a is not found"),
        ("{.}", {"a": 1}, " is not found"),
        ("{['']}", {"a": 1}, " is not found"),
        ("{.m}", {"m": {"x": math.nan}}, "json: unsupported value: NaN"),
        ("{.m}", {"m": [math.inf]}, "json: unsupported value: +Inf"),
        ("{.m}", {"m": [-math.inf]}, "json: unsupported value: -Inf"),
        # everything is evaluated before anything is printed
        ("{.m}{.missing}", {"m": [math.nan]}, "missing is not found"),
        ("{.n}", {"n": 10**5000}, "integer too large to print"),
        ("{[-1:]}", [], "array index out of bounds: index -1, length 0"),
        ("{[0]}", [], "array index out of bounds: index 0, length 0"),
        ("{.a[*][0]}", {"a": [[1], [], [3]]}, "array index out of bounds: index 0, length 0"),
        (
            "{.a[*][-2:0]}",
            {"a": [[3, 4, 5], [1, 2]]},
            "starting index 1 is greater than ending index 0",
        ),
        ("{..[0]}", {"x": [1]}, "map[string]interface {} is not array or slice"),
        ("{[?(@==true)]}", [True, 1], "incompatible types for comparison"),
    ],
)
def test_execution_errors(template: str, data: object, message: str) -> None:
    template_object = jsonpath.parse(template)  # these are not syntax errors
    with pytest.raises(JSONPathError) as info:
        template_object.execute(data)
    assert str(info.value) == message


# --------------------------------------------------------------------------- features & quirks


@pytest.mark.parametrize(
    ("template", "data", "expected"),
    [
        # fields, escapes and bracket keys
        ("{.a.b}", {"a": {"b": "c"}}, "c"),
        ("{.tls\\.crt}", {"tls.crt": "PEM", "tls": {"crt": "nested"}}, "PEM"),
        ("{['tls.crt']}", {"tls.crt": "PEM", "tls": {"crt": "nested"}}, "nested"),
        ("{['tls\\.crt']}", {"tls.crt": "PEM"}, "PEM"),
        ("{.a\\\\b}", {"ab": 1}, "1"),
        ("{.a\\}}", {"a}": 1}, "1"),
        ("{.a-b/c:d}", {"a-b/c:d": 1}, "1"),
        ("{['a}x']}", {"a": 1}, "1"),
        ("{['a']['b']}", {"a": {"b": 2}}, "2"),
        ("{.a['b'].c}", {"a": {"b": {"c": 3}}}, "3"),
        ("{.é}", {"é": "unicode"}, "unicode"),
        ("{.a }", {"a": 1}, "1"),
        ("{ .a  .b }", {"a": {"b": 2}}, "2"),
        ("{@.a}", {"a": 1}, "1"),
        ("{$.a}", {"a": 1}, "1"),
        ("{$}", [1, "x"], '[1,"x"]'),
        ("{@}", "plain", "plain"),
        ("{}", {"a": 1}, '{"a":1}'),
        ("{ }", 5, "5"),
        ("{.username}{':'}{.password}", {"username": "u", "password": "p"}, "u:p"),
        ("a}b", None, "a}b"),
        ("", {"a": 1}, ""),
        # wildcards
        ("{.*}", {"b": 1, "a": 2}, "1 2"),
        ("{.a.*}", {"a": [1, [2]]}, "1 [2]"),
        ("{.s.*}", {"s": "ab"}, "97 98"),
        ("{.s.*}", {"s": "é"}, "195 169"),
        ("{.n.*}", {"n": 1}, ""),
        ("{.n.*}", {"n": None}, ""),
        ("{[*]}", [1, 2], "1 2"),
        ("{.a[*]}", {"a": []}, ""),
        # indexes and slices
        ("{[]}", [5, 6], "5"),
        ("{[0]}", [5, 6], "5"),
        ("{[-1]}", [5, 6], "6"),
        ("{[1:]}", [5, 6], "6"),
        ("{[:-1]}", [5, 6, 7], "5 6"),
        ("{[::2]}", [1, 2, 3, 4, 5], "1 3 5"),
        ("{[0:0]}", [], ""),
        ("{.a[0]}", {"a": None}, ""),
        ("{[0]}", None, ""),
        ("{.a[*][-2:0]}", {"a": [[1, 2], [3, 4, 5]]}, ""),  # client-go stops at an empty selection
        ("{.a[*][0:0]}", {"a": [[1], [2]]}, ""),
        # unions
        ("{['a', 'b']}", {"a": 1, "b": 2}, "1 2"),
        ("{['b','a']}", {"a": 1, "b": 2}, "2 1"),
        ("{[0,2]}", ["x", "y", "z"], "x z"),
        ("{[0, -1]}", ["x", "y", "z"], "x z"),
        ("{[0,]}", ["x", "y"], "x x"),
        ("{[0:2,*]}", ["x", "y"], "x y x y"),
        ("{.l[1,?(@==3)]}", {"l": [1, 2, 3]}, "2 3"),
        ("{['a.b', 'c']}", {"a": {"b": 1}, "c": 2}, "1 2"),
        # recursive descent
        ("{..}", {"a": "xy", "b": {}, "c": [], "d": 1}, '{"a":"xy","b":{},"c":[],"d":1} xy'),
        ("{..a}", {"a": 1, "b": {"a": 2, "c": [{"a": 3}]}}, "1 2 3"),
        ("{..[0]}", [[1, 2], [3]], "[1,2] 1 3"),
        ("{..[*]}", [1, [2]], "1 [2] 2"),
        ("{...*}", {"x": {"y": 1}}, '{"y":1} 1'),
        ("{.a..b}", {"a": {"c": {"b": 4}}, "b": 0}, "4"),
        ("{['..a']}", {"x": {"a": 1}}, "1"),
        # literals
        ("{1}", None, "1"),
        ("{-1.50}", {}, "-1.5"),
        ("{+7}", {}, "7"),
        ("{1.}", {}, "1"),
        ("{12345678901234567890}", {}, "1.2345678901234567e+19"),
        ("{true}{false}", {}, "truefalse"),
        ("{'a'}{\"b\"}", {}, "ab"),
        ("{'x' 'y'}", {}, "y"),
        ('{"}"}', {}, "}"),
        ('{"\\t\\n\\\\ "}', {}, "\t\n\\ "),
        ("{'\\''}", {}, "'"),
        ('{"\\""}', {}, '"'),
        ("{'\"'}", {}, '"'),
        ('{"\\u00e9\\U0001F600"}', {}, "é😀"),
        ('{"\\x41\\101\\a\\b\\f\\v\\r"}', {}, "AA\a\b\f\v\r"),
        ('{"\\xc3\\xa9"}', {}, "é"),
        ('{"\\xff"}', {}, "\ufffd"),
        ("{'it''s'}", {}, "s"),  # two strings; the action yields the last
        # range
        ("{range .a}{@}{end}", {"a": [1, 2]}, "[1,2]"),
        ("{range .a[*]}{@},{end}", {"a": [1, "x", [2]]}, "1,x,[2],"),
        ("{range .m.*}{@};{end}", {"m": {"b": 1, "a": 2}}, "1;2;"),
        ("{range .a[*]}[{@}]{end}", {"a": [None, 1]}, "[<no value>][1]"),
        ("{range .a[*]}x{end}", {"a": []}, ""),
        ("{range .a[*]}{@}{end}", {"a": []}, ""),
        ("{range .a[*]}{.b} {end}done", {"a": [{"b": 1}, {"b": 2}]}, "1 2 done"),
        ("{range .a[*]}{range .b[*]}{@}{end}|{end}", {"a": [{"b": [1, 2]}, {"b": []}]}, "12||"),
        ("{range @}{@}{end}", None, "<no value>"),
        ("{range}{.a}{end}", {"a": 1}, "1"),
        ("{.a range}{@}{end}", {"a": 1}, "1"),
        ("{range .a[*]}{@}{.x end}", {"a": [{"x": 1}]}, '{"x":1}'),
        # null handling
        ("{.a}", {"a": None}, "null"),  # client-go v0.29 evalToText
        ("{.a[*]}", {"a": [None, 1]}, "null 1"),
        ("{.a}", {"a": [None]}, "[null]"),
        ("{@}", None, "<no value>"),
        ("x{@}y", None, "x<no value>y"),
    ],
)
def test_features(template: str, data: object, expected: str) -> None:
    assert run(template, data) == expected


def test_empty_range_still_evaluates_its_body() -> None:
    # client-go walks the body once against nil to find {end}; with missing keys disallowed
    # a field lookup there fails even though nothing would be printed.
    assert (
        error_of("{range .items[*]}{.metadata.name}{end}", {"items": []}) == "metadata is not found"
    )
    template = "{range .items[*]}{range .b[*]}{end}{end}"
    assert error_of(template, {"items": []}) == "b is not found"
    assert run("{range .items[*]}{@}{[0]}{end}", {"items": []}) == ""


@pytest.mark.parametrize(
    ("template", "data", "expected"),
    [
        ("{[?(@<5)]}", [2, 6, 3, 7], "2 3"),
        ("{[?(@<=3)]}", [2, 6, 3, 7], "2 3"),
        ("{[?(@>3)]}", [2, 6, 3, 7], "6 7"),
        ("{[?(@>=6)]}", [2, 6, 3, 7], "6 7"),
        ("{[?(@==3)]}", [2, 6, 3, 7], "3"),
        ("{[?(@!=3)]}", [2, 6, 3, 7], "2 6 7"),
        ("{[?(@ == -1)]}", [1, -1], "-1"),
        ("{[?(@<2.5)]}", [1.5, 3.5], "1.5"),
        ("{[?(@>1.0)]}", [math.nan, 0.5, 2.0], "NaN 2"),
        ("{[?(@<1.0)]}", [math.nan, 0.5, 2.0], "0.5"),
        ('{[?(@<"b")]}', ["a", "b", "c"], "a"),
        ("{[?(@ == 'a')]}", ["a", "b", "a"], "a a"),
        ("{[?(@==true)]}", [True, False], "true"),
        ("{[?(@!=false)]}", [True, False], "true"),
        ("{[?(@.a==@.b)].id}", [{"a": 1, "b": 1, "id": "x"}, {"a": 1, "b": 2, "id": "y"}], "x"),
        ("{[?(@.a)].a}", [{"a": 0}, {"b": 1}, {"a": None}], "0 null"),
        ("{[?(@)]}", [None, 0, ""], "null 0 "),
        ("{[?(@.t=='x')].n}", [], ""),
        # an index error inside an existence filter keeps the element (client-go returns its input)
        ("{[?(@.b[5])].n}", [{"b": [1], "n": "x"}, {"n": "y"}], "x"),
        ("{[?(@.b[0])].n}", [{"b": [1], "n": "x"}, {"b": "s", "n": "y"}], "x y"),
        # parentheses and quotes inside filter strings
        ('{[?(@.os == "()")].id}', [{"os": "()", "id": 1}], "1"),
        ('{[?(@.os == "(\\"\\")")].id}', [{"os": '("")', "id": 1}], "1"),
        ('{[?(@.os == "())(")].id}', [{"os": "())(", "id": 1}], "1"),
        ("{[?(@.os == 'Linux')].id}", [{"os": "Linux", "id": 1}, {"os": "x", "id": 2}], "1"),
        ('{[?(@.os == "{[()]}")].id}', [{"os": "{[()]}", "id": 1}], "1"),
        ("{[?(@.os == \"''\")].id}", [{"os": "''", "id": 1}], "1"),
        ("{[?(@.os == '\"\"')].id}", [{"os": '""', "id": 1}], "1"),
        ("{[?(@.os == '\\\\\\'')].id}", [{"os": "\\'", "id": 1}], "1"),
        ("{[?(.x==1)].x}", [{"x": 1}, {"x": 2}], "1"),
        ("{[?(@.x.y)]}", [{"x": {"y": 1}}], '{"x":{"y":1}}'),
    ],
)
def test_filters(template: str, data: object, expected: str) -> None:
    assert run(template, data) == expected


def test_filter_on_store_with_float_literal() -> None:
    assert run("{.Book[?(@.Price<10.0)].Title}", STORE) == "Sayings of the Centurey Moby Dick"
    assert run("{.Book[?(@.Category=='fiction')].Author}", STORE) == "Evelyn Waugh Herman Melville"
    assert run("{.Book[?(@.Price>=12.99)].Title}", STORE) == "Sword of Honour"


# --------------------------------------------------------------------------- printing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (80.0, "80"),
        (0.5, "0.5"),
        (1000000.0, "1e+06"),
        (1e21, "1e+21"),
        (1.5e-07, "1.5e-07"),
        (123456789.0, "1.23456789e+08"),
        (100.0, "100"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (100000.0, "100000"),
        (123456.7, "123456.7"),
        (1234567.0, "1.234567e+06"),
        (0.1, "0.1"),
        (3.3, "3.3"),
        (-1.5, "-1.5"),
        (2.5e-05, "2.5e-05"),
        (1e100, "1e+100"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0.0, "0"),
        (-0.0, "-0"),
        (math.nan, "NaN"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (7, "7"),
        (-7, "-7"),
        (2**64, "18446744073709551616"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ("text", "text"),
    ],
)
def test_scalar_printing(value: object, expected: str) -> None:
    assert run("{.v}", {"v": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (80.0, "80"),
        (1e6, "1000000"),
        (123456789.0, "123456789"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e-07, "1.5e-7"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (1e-100, "1e-100"),
        (0.1, "0.1"),
        (-0.0, "-0"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (7, "7"),
        (2**70, "1180591620717411303424"),
        (True, "true"),
        (None, "null"),
        (b"hi", '"aGk="'),
    ],
)
def test_json_number_printing(value: object, expected: str) -> None:
    assert run("{.v}", {"v": [value]}) == f"[{expected}]"


def test_json_string_escaping() -> None:
    value = '<b>&\u2028\u2029"\\\n\r\t\x01\x08\x0c\x1f\x7fé😀\ufffd'
    expected = (
        '["\\u003cb\\u003e\\u0026\\u2028\\u2029\\"\\\\\\n\\r\\t'
        '\\u0001\\u0008\\u000c\\u001f\x7fé😀\ufffd"]'
    )
    assert run("{.v}", {"v": [value]}) == expected
    assert run("{.v}", {"v": ["\ud800"]}) == '["\\ufffd"]'
    # outside JSON, strings print raw
    assert run("{.v[0]}", {"v": [value]}) == value


def test_json_maps_sort_keys_and_stringify_odd_keys() -> None:
    data = {"m": {"b": 1, "a": {"z": [], "y": {}}, "<": None}}
    assert run("{.m}", data) == '{"\\u003c":null,"a":{"y":{},"z":[]},"b":1}'
    assert run("{.m}", {"m": {1: "x", False: "y", None: "z"}}) == '{"1":"x","false":"y","null":"z"}'
    assert run("{.m}", {"m": {1.5: "x", "é": 1, "e": 2}}) == '{"1.5":"x","e":2,"é":1}'


def test_results_of_one_action_are_space_separated() -> None:
    assert run("{.a[*]}", {"a": ["x y", "", "z"]}) == "x y  z"
    assert run("{.a[*]}{.a[*]}", {"a": [1, 2]}) == "1 21 2"


# --------------------------------------------------------------------------- API


def test_template_is_reusable_and_immutable() -> None:
    template = jsonpath.parse("{.a}-{range .b[*]}{@}{end}")
    assert template.execute({"a": 1, "b": [1, 2]}) == "1-12"
    assert template.execute({"a": "x", "b": []}) == "x-"
    with pytest.raises(AttributeError):
        template.source = "other"  # type: ignore[misc]
    assert template == jsonpath.parse("{.a}-{range .b[*]}{@}{end}")


def test_does_not_mutate_data() -> None:
    data = {"a": [3, 1, 2], "m": {"b": 1, "a": 2}}
    snapshot = json.dumps(data)
    run("{.a[::2]}{..}{.m.*}{range .a[*]}{@}{end}", data)
    assert json.dumps(data) == snapshot


def test_tuples_and_bytes_behave_like_sequences() -> None:
    assert run("{.a[1]}", {"a": (1, 2)}) == "2"
    assert run("{.a}", {"a": (1, 2)}) == "[1,2]"
    assert run("{.b[0]}", {"b": b"A"}) == "65"
    assert run("{.b}", {"b": b"A"}) == '"QQ=="'


# --------------------------------------------------------------------------- size and depth


def test_deeply_nested_data_prints_without_recursion() -> None:
    depth = 50_000
    nested: object = []
    for _ in range(depth):
        nested = [nested]
    assert run("{.a}", {"a": nested}) == "[" * (depth + 1) + "]" * (depth + 1)


def test_recursive_descent_on_deep_data() -> None:
    depth = 50_000
    chain: dict[str, Any] = {"x": 0}
    for level in range(1, depth):
        chain = {"x": level, "c": chain}
    out = run("{..x}", chain)
    assert out.split(" ")[:3] == [str(depth - 1), str(depth - 2), str(depth - 3)]
    assert len(out.split(" ")) == depth


def test_recursive_descent_is_linear() -> None:
    data = {"items": [{"metadata": {"name": f"n{i}", "labels": {"a": "b"}}} for i in range(50_000)]}
    # Quadratic work would exceed the evaluator's step budget (2,000,000) and raise.
    out = run("{..name}", data)
    assert out.count(" ") == 49_999


def test_deep_ranges_within_the_limit() -> None:
    depth = jsonpath.MAX_NESTING
    template = "{range @}" * depth + "{@}" + "{end}" * depth
    assert run(template, [1]) == "[1]"


# --------------------------------------------------------------------------- properties

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4)
    | st.sampled_from([-(2**64), 2**64])
    | st.builds(pow, st.just(10), st.just(5000))  # too long for str()
)
_DATA = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "c", "", "a.b", "é"]) | st.text(max_size=3),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)
_JSON_DATA = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=25,
)
_TOKENS = [
    "{", "}", "[", "]", "(", ")", ".", "..", "@", "$", "*", "?", "'", '"', "\\", ",", ":", "=",
    "==", "<", ">", "!", "!=", "<=", "-", "+", "0", "1", "-1", "2.5", " ", "\t", "\n", "a", "b",
    "c", "range", "end", "true", "false", "[?(", "[*]", "é", "x", "_", "~", "{range ", "{end}",
]  # fmt: skip
_TEMPLATES = st.lists(st.sampled_from(_TOKENS), max_size=30).map("".join) | st.text(max_size=40)

_SEGMENTS = [
    ".a", ".b", ".c", ".*", "..a", "..[*]", "[0]", "[-1]", "[1:]", "[*]", "[::2]", "['a']",
    "['a', 'b']", "[0,1]", "[?(@.a)]", "[?(@.a==1)]", "[?(@<2)]", "[?(@.b=='x')]", "[?(@.a>=1.5)]",
    "[]", "@", " ",
]  # fmt: skip


@st.composite
def _valid_templates(draw: st.DrawFn) -> str:
    def path() -> str:
        return "".join(draw(st.lists(st.sampled_from(_SEGMENTS), max_size=4)))

    def body(depth: int) -> str:
        parts = []
        for _ in range(draw(st.integers(0, 3))):
            choice = draw(st.integers(0, 3 if depth < 3 else 2))
            if choice == 0:
                parts.append(draw(st.sampled_from(["x", ", ", "\n", "}"])))
            elif choice == 1:
                parts.append("{" + path() + "}")
            elif choice == 2:
                parts.append(draw(st.sampled_from(["{'q'}", '{"\\t"}', "{1}", "{true}"])))
            else:
                parts.append("{range " + path() + "}" + body(depth + 1) + "{end}")
        return "".join(parts)

    return body(0)


@settings(deadline=None, max_examples=500)
@given(template=_TEMPLATES)
def test_parse_raises_only_jsonpath_errors(template: str) -> None:
    with contextlib.suppress(JSONPathError):
        jsonpath.parse(template)


@settings(deadline=None, max_examples=500)
@given(template=_TEMPLATES, data=_DATA)
def test_execute_raises_only_jsonpath_errors(template: str, data: object) -> None:
    try:
        result = jsonpath.execute(template, data)
    except JSONPathError:
        return
    assert isinstance(result, str)


@settings(deadline=None, max_examples=500)
@given(template=_valid_templates(), data=_DATA)
def test_structured_templates_raise_only_jsonpath_errors(template: str, data: object) -> None:
    compiled = jsonpath.parse(template)  # the generator only builds valid syntax
    try:
        result = compiled.execute(data)
    except JSONPathError:
        return
    assert isinstance(result, str)


@settings(deadline=None)
@given(text=st.text().filter(lambda t: "{" not in t), data=_DATA)
def test_text_without_actions_is_printed_verbatim(text: str, data: object) -> None:
    assert jsonpath.execute(text, data) == text


def _numbers_as_floats(value: object) -> object:
    """Go prints 1e16 as 10000000000000000, which json.loads reads back as an int."""
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@settings(deadline=None)
@given(data=_JSON_DATA)
def test_container_output_is_json_of_the_same_value(data: object) -> None:
    printed = jsonpath.execute("{.v}", {"v": [data]})
    assert _numbers_as_floats(json.loads(printed)) == _numbers_as_floats([data])
    assert "<" not in printed and ">" not in printed and "&" not in printed


@settings(deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_go_float_text_round_trips(value: float) -> None:
    printed = jsonpath.execute("{.v}", {"v": value})
    assert float(printed) == value
    assert math.copysign(1, float(printed)) == math.copysign(1, value)
    mantissa = printed.lstrip("-").split("e")[0]
    assert "e" in printed or not mantissa.endswith(".")


@settings(deadline=None)
@given(value=st.text())
def test_strings_print_raw(value: str) -> None:
    assert jsonpath.execute("{.k}", {"k": value}) == value
    assert jsonpath.execute("{['k']}", {"k": value}) == value


@settings(deadline=None)
@given(items=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10))
def test_range_matches_wildcard(items: list[int]) -> None:
    data = {"a": items}
    assert jsonpath.execute("{range .a[*]}{@} {end}", data) == "".join(f"{i} " for i in items)
    assert jsonpath.execute("{.a[*]}", data) == " ".join(str(i) for i in items)
