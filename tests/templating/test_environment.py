"""Tests for plugin.templating.environment: Ansible-like Jinja semantics, filters and sandbox."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from plugin.errors import RenderError
from plugin.templating.environment import create_environment, render_template

CONTEXT: dict[str, Any] = {
    "dsc": {
        "global": {"platform": "openshift", "metrics": {"additionalLabels": {"release": "prom"}}},
        "proxy": None,
        "harbor": {"values": {"core": {"replicas": 1}}},
        "additionalsCA": [
            {"kind": "ConfigMap", "name": "kube-root-ca.crt"},
            {"kind": "Secret", "name": "corp-ca"},
        ],
    },
    "dsc_name": "conf-dso",
}


def render(source: str, context: dict[str, Any] | None = None, name: str = "t.j2") -> str:
    return render_template(
        create_environment(), source, name, CONTEXT if context is None else context
    )


def render_error(source: str, name: str = "values/10-proxy.j2") -> str:
    with pytest.raises(RenderError) as info:
        render(source, name=name)
    return str(info.value)


# --- Ansible template defaults ----------------------------------------------------------


def test_trim_blocks_and_no_lstrip() -> None:
    assert render("{% if true %}\nA\n{% endif %}\nB\n") == "A\nB\n"
    assert render("  {% if true %}\nA\n  {% endif %}\n") == "  A\n  "


def test_trailing_newline_is_kept() -> None:
    assert render("x\n") == "x\n"
    assert render("x\n\n") == "x\n\n"


def test_plus_opt_out_of_trim_blocks() -> None:
    assert render("{% if true +%}\nA{% endif %}") == "\nA"


def test_python_str_rendering_of_bools_dicts_none() -> None:
    assert render("{{ true }} {{ false }}") == "True False"
    assert render("{{ {'a': 1} }}") == "{'a': 1}"
    assert render("{{ none }}") == "None"
    assert (
        render("labels: {{ dsc.global.metrics.additionalLabels }}") == "labels: {'release': 'prom'}"
    )
    assert yaml.safe_load(render("labels: {{ dsc.global.metrics.additionalLabels }}")) == {
        "labels": {"release": "prom"}
    }


def test_placeholders_are_plain_text() -> None:
    source = "image: <path:{{ 'kv' }}/data/x#image | jsonPath {.repository.docker}>/goharbor/core\n"
    assert (
        render(source)
        == "image: <path:kv/data/x#image | jsonPath {.repository.docker}>/goharbor/core\n"
    )
    assert render("<path:kv/data/x#k>") == "<path:kv/data/x#k>"


def test_helm_escapes_survive() -> None:
    assert render("{{ '{{ .Release.Namespace }}' }}") == "{{ .Release.Namespace }}"
    assert render("{% raw %}{{ .Values.x }}{% endraw %}") == "{{ .Values.x }}"
    assert render('{{"{{"}} .Values.y }}') == "{{ .Values.y }}"


def test_statements_used_by_the_socle() -> None:
    source = (
        "{% set names = [] %}"
        "{% for ca in dsc.additionalsCA if ca.kind == 'Secret' %}"
        "{% set _ = names.append(ca.name) %}"
        "{% endfor %}"
        "{{ names }}|{{ 'a' ~ 1 }}|{{ 'x' if 'oci://' in 'oci://r' else 'y' }}"
    )
    assert render(source) == "['corp-ca']|a1|x"
    assert render("{%- for i in [1, 2] -%} {{ i }} {%- endfor -%}") == "12"
    assert (
        render("{% for i in range(4) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}")
        == "01"
    )


def test_context_is_not_mutated_by_a_render() -> None:
    context: dict[str, Any] = {"items": [1]}
    env = create_environment()
    assert render_template(env, "{% do items.append(2) %}{{ items }}", "a.j2", context) == "[1, 2]"
    assert render_template(env, "{{ items }}", "b.j2", context) == "[1]"
    assert context == {"items": [1]}


# --- undefined ---------------------------------------------------------------------------


def test_chainable_undefined_with_is_defined() -> None:
    assert render("{{ foo.bar.baz is defined }}") == "False"
    assert render("{{ dsc.nope.deeper is defined }}") == "False"
    assert render("{{ dsc.proxy.enabled is defined }}") == "False"
    assert render("{{ dsc['global']['nope'] is not defined }}") == "True"
    assert render("{{ dsc.global.platform is defined }}") == "True"
    assert render("{{ foo.bar is undefined }}") == "True"
    assert render("{% if dsc.x.y is defined and dsc.x.y %}A{% else %}B{% endif %}") == "B"


def test_undefined_error_names_file_line_and_path() -> None:
    assert render_error("a: 1\nb: {{ dsc.global.platform }}\nc: {{ dsc.proxyx }}\n") == (
        "values/10-proxy.j2:3: 'dsc.proxyx' is undefined"
    )
    assert render_error("\n\n{{ dsc.nope.http }}") == (
        "values/10-proxy.j2:3: 'dsc.nope.http' is undefined ('dsc.nope' is undefined)"
    )
    assert render_error("{{ missing }}", name="templates/x.yaml.j2") == (
        "templates/x.yaml.j2:1: 'missing' is undefined"
    )


def test_undefined_reason_for_null_or_scalar_parent() -> None:
    assert render_error("{{ dsc.proxy.http_proxy }}").endswith(
        "'dsc.proxy.http_proxy' is undefined ('dsc.proxy' is null)"
    )
    assert render_error("{{ dsc.global.platform.name }}").endswith(
        "('dsc.global.platform' is a string)"
    )
    assert render_error("{{ dsc['global']['x'] }}").endswith(
        """'dsc["global"]["x"]' is undefined"""
    )


@pytest.mark.parametrize(
    "source",
    [
        "{% for x in dsc.nope %}{% endfor %}",  # iterate
        "{% if dsc.nope == 'a' %}{% endif %}",  # compare
        "{% if dsc.nope %}{% endif %}",  # truth test
        "{{ dsc.nope | length }}",
        "{{ dsc.nope + 1 }}",
        "{{ dsc.nope | lower }}",
        "{{ dsc.nope() }}",
        "{{ dsc.nope | to_json }}",
        "{{ {'a': dsc.nope} | to_nice_yaml }}",
        "{{ {} | combine({'a': dsc.nope}) }}",
    ],
)
def test_using_an_undefined_value_fails(source: str) -> None:
    assert "'dsc.nope' is undefined" in render_error(source)


def test_default_filter() -> None:
    assert render("{{ dsc.proxy.enabled | default(false) }}") == "False"
    assert render("{{ dsc.nope | d('x') }}") == "x"
    assert render("{{ '' | default('{}', true) }}") == "{}"
    assert render("{{ '' | default('{}') }}") == ""
    assert render("{{ none | default('n', true) }}") == "n"
    assert render("{{ dsc_name | default('other', true) }}") == "conf-dso"


# --- filters -------------------------------------------------------------------------------


def test_quote_is_shell_quoting() -> None:
    assert render("{{ '1.1.0' | quote }}") == "1.1.0"
    assert render("{{ '>=0.0.0 <1.0.0' | quote }}") == "'>=0.0.0 <1.0.0'"
    assert render("{{ none | quote }}") == "''"
    assert render('{{ "it\'s a b" | quote }}') == "'it'\"'\"'s a b'"
    assert render("{{ 'say \"hi\"' | quote }}") == "'say \"hi\"'"


def test_to_json_and_from_json() -> None:
    assert render("{{ [{'name': 'pull'}] | to_json }}") == '[{"name": "pull"}]'
    assert render("{{ {'b': 1, 'a': 'é'} | to_json }}") == '{"b": 1, "a": "\\u00e9"}'
    assert render("{{ {'b': 1} | to_json(indent=1) }}") == '{\n "b": 1\n}'
    assert render("{{ ('{\"a\": [1, 2]}' | from_json).a[1] }}") == "2"
    assert "from_json" in render_error("{{ 'nope' | from_json }}")
    assert "unsupported argument" in render_error("{{ 1 | to_json(cls=1) }}")


def test_to_nice_json() -> None:
    assert (
        render("{{ {'b': [1], 'a': 1} | to_nice_json }}")
        == '{\n    "a": 1,\n    "b": [\n        1\n    ]\n}'
    )


def test_to_yaml_and_to_nice_yaml() -> None:
    assert render("{{ {'b': [1], 'a': 'x'} | to_yaml }}") == "a: x\nb: [1]\n"
    nice = render("{{ {'b': {'d': [1, 2]}, 'a': 'é'} | to_nice_yaml }}")
    assert nice == "a: é\nb:\n    d:\n    - 1\n    - 2\n"
    assert render("{{ {'b': {'c': 1}} | to_nice_yaml(indent=2) }}") == "b:\n  c: 1\n"
    shared = render("{% set x = {'k': 1} %}{{ {'a': x, 'b': x} | to_nice_yaml }}")
    assert "&" not in shared
    assert yaml.safe_load(shared) == {"a": {"k": 1}, "b": {"k": 1}}


def test_indent_and_to_nice_yaml_like_kyverno_template() -> None:
    source = "data:\n  x: |\n{{ {'a': {'b': 1}} | to_nice_yaml | indent(4, True) }}"
    assert yaml.safe_load(render(source)) == {"data": {"x": "a:\n    b: 1\n"}}


def test_from_yaml() -> None:
    assert render("{{ ('a: [1, 2]' | from_yaml).a }}") == "[1, 2]"
    assert render("{{ none | from_yaml }}") == "None"
    assert "from_yaml: line 1" in render_error("{{ 'a: b: c' | from_yaml }}")


def test_b64encode_b64decode() -> None:
    assert render("{{ 'awx' | b64encode }}") == "YXd4"
    assert render("{{ 'YXd4' | b64decode }}") == "awx"
    assert render("{{ 'é' | b64encode }}") == base64.b64encode("é".encode()).decode()
    assert "not valid base64" in render_error("{{ 'abc' | b64decode }}")


def test_lower_string_int() -> None:
    assert render("{{ true | lower }} {{ 'ABC' | lower }}") == "true abc"
    assert render("{{ '42' | int + 1 }} {{ 'x' | int }}") == "43 0"
    assert render("{{ 5 | string }}") == "5"


def test_bool_filter_ansible_semantics() -> None:
    assert render("{{ 'yes' | bool }} {{ 'On' | bool }} {{ '1' | bool }} {{ 'TRUE' | bool }}") == (
        "True True True True"
    )
    assert render("{{ 'no' | bool }} {{ 'off' | bool }} {{ '0' | bool }} {{ 'false' | bool }}") == (
        "False False False False"
    )
    assert render("{{ 1 | bool }} {{ 0 | bool }} {{ true | bool }} {{ none | bool }}") == (
        "True False True False"
    )
    assert render("{{ 'maybe' | bool }}") == "False"


def test_combine_filter() -> None:
    assert (
        render("{{ {'a': 1, 'n': {'x': 1}} | combine({'n': {'y': 2}}) }}")
        == "{'a': 1, 'n': {'y': 2}}"
    )
    merged = render(
        "{{ {'n': {'l': [1], 'x': 1}} "
        "| combine({'n': {'l': [2]}}, recursive=True, list_merge='append') }}"
    )
    assert merged == "{'n': {'l': [1, 2], 'x': 1}}"
    assert render("{{ [{'a': 1}, {'b': 2}] | combine }}") == "{'a': 1, 'b': 2}"
    assert "list_merge must be one of" in render_error("{{ {} | combine({}, list_merge='x') }}")


def test_dict2items_items2dict() -> None:
    assert render("{{ {'a': 1} | dict2items }}") == "[{'key': 'a', 'value': 1}]"
    assert (
        render("{{ {'a': 1} | dict2items(key_name='k', value_name='v') }}")
        == "[{'k': 'a', 'v': 1}]"
    )
    assert render("{{ [{'key': 'a', 'value': 1}] | items2dict }}") == "{'a': 1}"
    assert (
        render("{{ [{'k': 'a', 'v': 1}] | items2dict(key_name='k', value_name='v') }}")
        == "{'a': 1}"
    )
    assert "requires a dictionary" in render_error("{{ [1] | dict2items }}")


def test_subelements() -> None:
    source = (
        "{{ [{'n': 'a', 'l': [1, 2]}, {'n': 'b'}] | subelements('l', skip_missing=True) | length }}"
    )
    assert render(source) == "2"
    assert "could not find 'l'" in render_error("{{ [{'n': 'b'}] | subelements('l') }}")


def test_flatten() -> None:
    assert render("{{ [1, [2, [3, [4]]], none] | flatten }}") == "[1, 2, 3, 4]"
    assert render("{{ [1, [2, [3]]] | flatten(levels=1) }}") == "[1, 2, [3]]"
    assert render("{{ ['a', ['b']] | flatten | join('/') }}") == "a/b"


def test_set_filters() -> None:
    assert render("{{ [3, 1, 3, 2] | unique }}") == "[3, 1, 2]"
    assert render("{{ ['A', 'a', 'b'] | unique }}") == "['A', 'b']"  # Ansible: case-insensitive
    assert render("{{ ['A', 'a'] | unique(case_sensitive=true) }}") == "['A', 'a']"
    assert render("{{ [{'a': 1}, {'a': 1}] | unique }}") == "[{'a': 1}]"
    assert render("{{ [3, 1, 2, 1] | difference([2]) }}") == "[3, 1]"
    assert render("{{ [3, 1, 2] | intersect([2, 3, 9]) }}") == "[3, 2]"
    assert render("{{ [3, 1] | union([1, 0]) }}") == "[3, 1, 0]"


def test_path_filters() -> None:
    assert render("{{ '/a/b/c.j2' | basename }} {{ '/a/b/c.j2' | dirname }}") == "c.j2 /a/b"


def test_regex_filters() -> None:
    assert render("{{ 'x.yaml.j2' | regex_replace('\\\\.j2$', '') }}") == "x.yaml"
    assert render("{{ 'AbA' | regex_replace('a', '-', ignorecase=true) }}") == "-b-"
    assert render("{{ 'v1.2.3' | regex_search('\\\\d+\\\\.\\\\d+') }}") == "1.2"
    assert render("{{ 'k=v' | regex_search('(\\\\w)=(\\\\w)', '\\\\2') }}") == "['v']"
    assert render("{{ 'abc' | regex_search('z') }}") == "None"
    assert render("{{ 'a1b22' | regex_findall('\\\\d+') }}") == "['1', '22']"
    assert render("{{ 'a.b' | regex_escape }}") == "a\\.b"
    assert "invalid regular expression" in render_error("{{ 'a' | regex_replace('(', '') }}")
    assert "should match 2 times" in render_error(
        "{{ 'a' | regex_replace('a', 'b', mandatory_count=2) }}"
    )


def test_ternary_and_mandatory() -> None:
    assert render("{{ true | ternary('y', 'n') }} {{ 0 | ternary('y', 'n') }}") == "y n"
    assert render("{{ none | ternary('y', 'n', 'null') }}") == "null"
    assert render("{{ dsc_name | mandatory }}") == "conf-dso"
    assert render_error("{{ dsc.nope | mandatory }}") == (
        "values/10-proxy.j2:1: Mandatory variable 'dsc.nope' not defined."
    )
    assert render_error("{{ x | mandatory('set x!') }}") == "values/10-proxy.j2:1: set x!"


def test_jinja_builtins() -> None:
    source = (
        "{{ dsc.additionalsCA | selectattr('kind', 'equalto', 'Secret') | map(attribute='name') "
        "| list }}|{{ dsc.additionalsCA | rejectattr('kind', 'equalto', 'Secret') "
        "| map(attribute='name') | first }}|{{ ['a', 'b'] | join(',') }}|{{ 'a\nb' | indent(2) }}"
    )
    assert render(source) == "['corp-ca']|kube-root-ca.crt|a,b|a\n  b"
    assert render("{% for k, v in dsc.harbor['values'].items() %}{{ k }}={{ v }}{% endfor %}") == (
        "core={'replicas': 1}"
    )


def test_tests() -> None:
    assert render(
        "{{ 'x' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ none is none }}"
    ) == ("True True True True")
    assert render(
        "{{ 'a' is truthy }} {{ '' is falsy }} {{ 'no' is truthy(convert_bool=True) }}"
    ) == ("True True False")


def test_printing_a_dict_method_is_an_error() -> None:
    message = render_error("{{ dsc.harbor.values }}")
    assert "Python callable" in message
    assert "x['values']" in message
    assert "Python callable" in render_error("{{ dsc.harbor.values | to_nice_yaml }}")


def test_subscript_on_a_mapping_never_returns_a_method() -> None:
    assert render("{{ dsc.global['values'] | default({}) }}") == "{}"
    assert render("{{ dsc.global['items'] is defined }}") == "False"
    assert render("{{ dsc.harbor['values'].core.replicas }}") == "1"
    assert render("{{ 'abc'['upper']() }}") == "ABC"  # non-mappings keep Jinja's fallback


# --- sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ ''.__class__.__mro__ }}", "'__class__'"),
        ("{{ cycler.__init__.__globals__ }}", "'__init__'"),
        ("{{ dsc._private }}", "'_private'"),
        ("{{ ''['__class__'] }}", "'__class__'"),
        ("{{ dsc | attr('__class__') }}", "'__class__'"),
        ("{{ dsc.nope.__class__ }}", "'__class__'"),
        ("{{ lookup('env', 'HOME') }}", "lookup() is not available in the sandbox"),
        ("{{ query('file', '/etc/passwd') }}", "query() is not available in the sandbox"),
        ("{{ q('fileglob', '*') }}", "q() is not available in the sandbox"),
        ("{{ now() }}", "now() is not available in the sandbox"),
        ("{{ [1, 2] | random }}", "'random' filter is not available"),
        ("{{ [1, 2] | shuffle }}", "'shuffle' filter is not available"),
        ("{{ range(10**9) | list | length }}", "Range too big"),
        ("{{ 10 ** 100000 }}", "too large"),
        ("{{ 'ab' * 100000000 }}", "too large"),
        ("{% include 'other.j2' %}", "include, import and extends are not available"),
        ("{% import 'm.j2' as m %}", "include, import and extends are not available"),
        ("{{ lipsum() }}", "'lipsum' is undefined"),
    ],
)
def test_sandbox_refusals(source: str, expected: str) -> None:
    message = render_error("ok\n" + source, name="templates/evil.yaml.j2")
    assert message.startswith("templates/evil.yaml.j2:2: ")
    assert expected in message


def test_private_keys_of_mappings_stay_readable() -> None:
    assert render("{{ x._y }} {{ x['_y'] }}", {"x": {"_y": 1}}) == "1 1"


def test_small_ranges_and_powers_still_work() -> None:
    assert render("{{ range(3) | list }} {{ 2 ** 10 }} {{ [0] * 3 }}") == "[0, 1, 2] 1024 [0, 0, 0]"


def test_syntax_errors_name_file_and_line() -> None:
    assert render_error("a\n{% if %}\n", name="values/00-main.j2").startswith(
        "values/00-main.j2:2: template syntax error:"
    )
    assert "No filter named 'nope'" in render_error("{{ 1 | nope }}")


def test_runtime_errors_name_file_and_line() -> None:
    assert (
        render_error("a\nb\n{{ 1 / 0 }}")
        == "values/10-proxy.j2:3: ZeroDivisionError: division by zero"
    )
    assert render_error("{% for i in [1] %}\n{{ i.x.y }}\n{% endfor %}").startswith(
        "values/10-proxy.j2:2:"
    )


def test_output_is_deterministic() -> None:
    source = "{{ dsc | to_json }}#{{ dsc | to_nice_yaml }}#{{ [3, 1, 2] | union([5, 4]) }}"
    outputs = {render(source) for _ in range(3)}
    assert len(outputs) == 1
    as_json, as_yaml, union = next(iter(outputs)).split("#")
    assert json.loads(as_json) == CONTEXT["dsc"]
    assert yaml.safe_load(as_yaml) == CONTEXT["dsc"]
    assert union == "[3, 1, 2, 5, 4]"
