"""A sandboxed Jinja2 environment that behaves like the team's Ansible templates.

What it reproduces (ansible-core 2.19/2.20 ``template`` semantics):

* ``trim_blocks=True``, ``lstrip_blocks=False``, ``keep_trailing_newline=True``,
  no autoescaping; the ``do`` and ``loopcontrols`` extensions are enabled.
* Printed values use Python ``str()``: ``{{ true }}`` gives ``True`` and
  ``{{ {'a': 1} }}`` gives ``{'a': 1}`` (YAML reads that back as a flow mapping).
* Undefined values are *strict but chainable*: ``dsc.proxy.enabled is defined``
  is simply false when ``dsc.proxy`` (or ``dsc``) is missing, while printing,
  iterating, testing for truth or comparing an undefined value fails. The
  error names the full expression, e.g.
  ``values/10-proxy.j2:12: 'dsc.proxy' is undefined`` (see :func:`render_template`).
* Ansible filters: ``default``/``d`` (Jinja's, with the boolean second argument),
  ``quote``, ``to_json``, ``to_nice_json``, ``to_yaml``, ``to_nice_yaml``,
  ``from_json``, ``from_yaml``, ``b64encode``, ``b64decode``, ``combine``,
  ``dict2items``, ``items2dict``, ``subelements``, ``flatten``, ``unique``,
  ``difference``, ``union``, ``intersect``, ``basename``, ``dirname``,
  ``regex_replace``, ``regex_search``, ``regex_findall``, ``regex_escape``,
  ``ternary``, ``mandatory``, ``bool``; plus every Jinja builtin filter
  (``lower``, ``int``, ``string``, ``map``, ``selectattr``, ``join``, ``indent``...).
  Tests: Jinja's (``defined``, ``none``, ``string``, ``mapping``...) plus
  Ansible's ``truthy`` and ``falsy``.

Deliberate differences from Ansible:

* ``difference``, ``union`` and ``intersect`` always keep the order of first
  appearance (Ansible returns a set with arbitrary order for hashable inputs).
* ``to_yaml``/``to_nice_yaml`` never emit YAML anchors/aliases.
* Printing a Python callable (``{{ mydict.values }}``, which is the dict *method*
  in Jinja and Ansible alike), or passing one to ``to_json``/``to_yaml``/``combine``,
  is an error instead of printing ``<built-in method...>``; use ``mydict['values']``.
* A subscript on a mapping never falls back to an attribute: ``mydict['values']``
  without such a key is undefined (so ``| default({})`` works), not ``dict.values``.

Sandbox (the render must depend on nothing but the template and its context):

* no file, environment, network or time access, no randomness: ``lookup``,
  ``query``, ``q`` and ``now`` exist only to fail with a clear message, as do the
  ``random`` and ``shuffle`` filters; ``lipsum`` is removed; there is no template
  loader, so ``{% include %}``/``{% import %}`` fail;
* access to any attribute or item whose name starts with ``_`` and is not a key
  of a mapping (``''.__class__``, ``cycler.__init__``...) fails immediately;
* ``range()`` is limited to 100000 items (Jinja's sandbox), and the ``**`` and
  ``*`` operators refuse to build huge numbers, strings or lists. These limits are
  best effort, not a complete denial-of-service guard.
* ``<path:...>`` placeholders are ordinary text for Jinja and pass through untouched.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import json
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NoReturn

import yaml
from jinja2 import BaseLoader, nodes, pass_environment
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Environment
from jinja2.exceptions import (
    SecurityError,
    TemplateError,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.filters import do_unique
from jinja2.runtime import Context, StrictUndefined, Undefined
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from plugin.errors import ModifierError, RenderError
from plugin.placeholders.modifiers import check_expansion
from plugin.templating import merge

__all__ = [
    "ChainableStrictUndefined",
    "create_environment",
    "render_template",
]

_MAX_POWER_BITS: Final = 100_000
"""Largest integer (in bits) the ``**`` operator may produce."""

_MAX_REPEAT_ITEMS: Final = 10_000_000
"""Largest string/list the ``*`` operator may produce."""

_YAML_LOADER: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --------------------------------------------------------------------------------------
# Undefined
# --------------------------------------------------------------------------------------


class ChainableStrictUndefined(StrictUndefined):
    """Strict undefined that can be chained (``a.b.c is defined``) and knows its path.

    Attribute and item access return a new undefined value instead of failing;
    every other use (printing, iterating, ``len``, truth testing, comparison,
    arithmetic) raises :class:`jinja2.exceptions.UndefinedError`.
    """

    __slots__ = ("_path", "_reason")

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
        *,
        path: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(hint, obj, name, exc)
        if path is None and obj is missing and isinstance(name, str):
            path = name
        self._path = path
        self._reason = reason

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        if self._path is not None:
            message = f"'{self._path}' is undefined"
            return f"{message} ({self._reason})" if self._reason else message
        if self._reason:
            return self._reason
        return super()._undefined_message

    def __getattr__(self, name: str) -> ChainableStrictUndefined:
        # Unimplemented dunder probes must raise AttributeError (copy, pickle, ...).
        if name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)
        return self._chain(name, attribute=True)

    def __getitem__(self, key: Any) -> ChainableStrictUndefined:  # type: ignore[override]
        return self._chain(key, attribute=False)

    def _chain(self, key: Any, *, attribute: bool) -> ChainableStrictUndefined:
        if self._path is None:
            path = None
            reason = self._undefined_message
        else:
            path = f"{self._path}.{key}" if attribute else f"{self._path}[{_subscript(key)}]"
            reason = self._reason or f"'{self._path}' is undefined"
        return type(self)(
            hint=self._undefined_hint,
            obj=self,
            name=key,
            exc=self._undefined_exception,
            path=path,
            reason=reason,
        )

    def with_path(self, path: str, parent: str) -> ChainableStrictUndefined:
        """Return a copy reporting ``path`` as the undefined expression (``parent`` is its base)."""
        reason = self._reason
        obj = self._undefined_obj
        if self._path is None and obj is not missing and not isinstance(obj, Undefined):
            # A lookup on a real value failed: say what that value was when it helps.
            if obj is None:
                reason = f"'{parent}' is null"
            elif not isinstance(obj, Mapping):
                reason = f"'{parent}' is {_a_type(obj)}"
        return type(self)(
            hint=self._undefined_hint,
            obj=obj,
            name=self._undefined_name,
            exc=self._undefined_exception,
            path=path,
            reason=reason,
        )


def _subscript(key: Any) -> str:
    """``"name"`` for string keys (double quotes: messages wrap paths in single quotes)."""
    return json.dumps(key) if isinstance(key, str) else repr(key)


def _a_type(value: Any) -> str:
    names: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (tuple, "a list"),
    ]
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__!r} value"


# --------------------------------------------------------------------------------------
# Code generation: give undefined values the path of the expression that produced them
# --------------------------------------------------------------------------------------


def _expression_path(node: nodes.Node) -> str | None:
    """``dsc.global['platform']`` for a chain of names, attributes and constant subscripts."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _expression_path(node.node)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _expression_path(node.node)
        return None if base is None else f"{base}[{_subscript(node.arg.value)}]"
    return None


class _PathHintCodeGenerator(CodeGenerator):
    """Wrap attribute and item lookups so that an undefined result learns its path.

    ``dsc.proxy`` compiles to ``environment.hint_undefined(environment.getattr(...),
    'dsc', 'proxy')``; defined values pass through unchanged.
    """

    def visit_Getattr(self, node: nodes.Getattr, frame: Frame) -> None:  # noqa: N802
        base = _expression_path(node.node)
        if base is None or self.environment.is_async:
            super().visit_Getattr(node, frame)
            return
        self.write("environment.hint_undefined(")
        super().visit_Getattr(node, frame)
        self.write(f", {base!r}, {node.attr!r})")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:  # noqa: N802
        base = _expression_path(node.node)
        if base is None or self.environment.is_async or isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.hint_undefined(")
        super().visit_Getitem(node, frame)
        self.write(f", {base!r}, None)")


# --------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------


class _AnsibleLikeEnvironment(SandboxedEnvironment):
    code_generator_class = _PathHintCodeGenerator
    intercepted_binops = frozenset({"*", "**"})

    def hint_undefined(self, value: Any, base: str, attribute: str | None) -> Any:
        """Called by the generated code after every attribute/item lookup."""
        if not isinstance(value, ChainableStrictUndefined) or value._undefined_hint:
            return value
        key = value._undefined_name
        if attribute is not None:
            if key != attribute:
                return value
            return value.with_path(f"{base}.{attribute}", base)
        return value.with_path(f"{base}[{_subscript(key)}]", base)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if isinstance(obj, Undefined):
            obj._fail_with_undefined_error()
        return super().call(context, obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(attribute, str) and attribute.startswith("_"):
            _refuse_private(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, str) and argument.startswith("_"):
            _refuse_private(obj, argument)
        if isinstance(obj, Mapping):
            # Unlike Jinja, never fall back to an attribute: d['values'] on a mapping
            # without that key is undefined, not the dict.values method.
            try:
                return obj[argument]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=argument)
        return super().getitem(obj, argument)

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object "
            "is not allowed in the sandbox"
        )

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and left.bit_length() * right > _MAX_POWER_BITS:
                raise SecurityError("the result of '**' would be too large for the sandbox")
        elif operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (
                    isinstance(sequence, (str, list, tuple))
                    and isinstance(count, int)
                    and len(sequence) * count > _MAX_REPEAT_ITEMS
                ):
                    raise SecurityError("the result of '*' would be too large for the sandbox")
        return super().call_binop(context, operator, left, right)


class _NoLoader(BaseLoader):
    """Templates cannot include, import or extend other templates."""

    def get_source(self, environment: Environment, template: str) -> NoReturn:
        raise SecurityError(
            f"cannot load {template!r}: include, import and extends are not available "
            "in the sandbox"
        )


def _refuse_private(obj: Any, name: str) -> None:
    if isinstance(obj, Mapping) and name in obj:
        return
    raise SecurityError(
        f"access to {name!r} (a name starting with '_') is not allowed in the sandbox"
    )


_CALLABLE_MESSAGE: Final = (
    "the expression evaluates to a Python callable ({kind}), not a value; "
    "for a mapping key named like a dict method (values, items, keys, get...) "
    "write x['values'] instead of x.values"
)


def _finalize(value: Any) -> Any:
    if callable(value) and not isinstance(value, Undefined):
        raise TemplateRuntimeError(_CALLABLE_MESSAGE.format(kind=type(value).__name__))
    return value


def create_environment() -> SandboxedEnvironment:
    """Return a new sandboxed environment configured like the team's Ansible templates."""
    env = _AnsibleLikeEnvironment(
        trim_blocks=True,
        lstrip_blocks=False,
        keep_trailing_newline=True,
        autoescape=False,
        undefined=ChainableStrictUndefined,
        loader=_NoLoader(),
        finalize=_finalize,
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
    )
    env.globals.pop("lipsum", None)
    for name in ("lookup", "query", "q"):
        env.globals[name] = _unavailable(
            f"{name}()", "it would read data from outside the template"
        )
    env.globals["now"] = _unavailable("now()", "rendering must not depend on the time")
    env.filters.update(_FILTERS)
    for name in ("random", "shuffle"):
        env.filters[name] = _unavailable(f"the {name!r} filter", "rendering must be deterministic")
    env.tests.update(_TESTS)
    return env


def _unavailable(what: str, why: str) -> Callable[..., NoReturn]:
    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise SecurityError(f"{what} is not available in the sandbox: {why}")

    return refuse


# --------------------------------------------------------------------------------------
# Rendering with file:line errors
# --------------------------------------------------------------------------------------


def render_template(env: Environment, source: str, name: str, context: Mapping[str, Any]) -> str:
    """Render template text; any failure becomes ``RenderError('<name>:<line>: <what>')``.

    ``name`` is how the template is named in messages (e.g. ``values/10-proxy.j2``).
    The context is deep-copied, so a template that mutates a list or a dict
    (``{% do x.append(1) %}``) cannot influence the next render.
    """
    try:
        code = env.compile(source, name=name, filename=name)
    except TemplateSyntaxError as exc:
        raise RenderError(f"{name}:{exc.lineno}: template syntax error: {exc.message}") from None
    template = env.template_class.from_code(env, code, env.make_globals(None))
    try:
        return template.render(copy.deepcopy(dict(context)))
    except RecursionError:
        raise RenderError(f"{name}: recursion too deep while rendering the template") from None
    except MemoryError as exc:
        # Kept a MemoryError (the stage's memory budget names it), with the location only.
        line = _template_line(exc)
        raise MemoryError(f"{name}:{line}" if line is not None else name) from None
    except Exception as exc:
        line = _template_line(exc)
        where = f"{name}:{line}" if line is not None else name
        raise RenderError(f"{where}: {_describe(exc)}") from exc


def _template_line(exc: BaseException) -> int | None:
    """Line of the innermost template frame in a traceback rewritten by Jinja."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"template syntax error: {exc.message}"
    if isinstance(exc, TemplateError):
        return exc.message or type(exc).__name__
    if isinstance(exc, RenderError):
        return str(exc)
    if isinstance(exc, OverflowError) and "MAX_RANGE" in str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------


def _check_defined(value: Any) -> None:
    """Fail on the first undefined value (or Python callable) nested anywhere in ``value``."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if callable(value):
        raise RenderError(_CALLABLE_MESSAGE.format(kind=type(value).__name__))
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_defined(key)
            _check_defined(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_defined(item)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return str(value)


def _to_bytes(value: Any, encoding: str = "utf-8") -> bytes:
    if isinstance(value, bytes):
        return value
    return _to_text(value).encode(encoding, errors="surrogateescape")


def _pick(kwargs: Mapping[str, Any], allowed: Iterable[str], what: str) -> dict[str, Any]:
    allowed = tuple(allowed)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise RenderError(
            f"{what}: unsupported argument(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    return dict(kwargs)


# --- JSON / YAML ----------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"a {type(value).__name__!r} value cannot be serialized to JSON")


_JSON_ARGS: Final = ("indent", "sort_keys", "ensure_ascii", "separators")


def _to_json(value: Any, *_args: Any, **kwargs: Any) -> str:
    _check_defined(value)
    kwargs.pop("vault_to_text", None)
    kwargs.pop("preprocess_unsafe", None)
    options = _pick(kwargs, _JSON_ARGS, "to_json")
    return json.dumps(value, default=_json_default, **options)


def _to_nice_json(
    value: Any, indent: int = 4, sort_keys: bool = True, *_args: Any, **kwargs: Any
) -> str:
    kwargs.pop("separators", None)
    return _to_json(value, indent=indent, sort_keys=sort_keys, separators=(",", ": "), **kwargs)


def _from_json(value: Any, *_args: Any, **_kwargs: Any) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError) as exc:
        raise RenderError(f"from_json: {exc}") from None


class _FilterDumper(yaml.SafeDumper):
    """PyYAML's safe dumper (Ansible's is a subclass of it) without anchors/aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_FilterDumper.add_representer(tuple, yaml.SafeDumper.represent_list)


_YAML_ARGS: Final = ("indent", "width", "sort_keys", "explicit_start", "explicit_end")


def _to_yaml(value: Any, *_args: Any, default_flow_style: bool | None = None, **kwargs: Any) -> str:
    _check_defined(value)
    kwargs.pop("vault_behavior", None)
    options = _pick(kwargs, _YAML_ARGS, "to_yaml")
    try:
        text: str = yaml.dump(
            value,
            Dumper=_FilterDumper,
            allow_unicode=True,
            default_flow_style=default_flow_style,
            **options,
        )
    except yaml.YAMLError as exc:
        raise RenderError(f"to_yaml: {exc}") from None
    return text


def _to_nice_yaml(value: Any, indent: int = 4, *_args: Any, **kwargs: Any) -> str:
    kwargs.setdefault("default_flow_style", False)
    return _to_yaml(value, indent=indent, **kwargs)


def _from_yaml(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        return value
    try:
        parsed = yaml.load(value, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise RenderError(f"from_yaml: {_yaml_problem(exc)}") from None
    try:
        # The same alias-bomb and recursion check as the yamlParse modifier: later filters
        # and the YAML/JSON writers walk the value as a tree.
        check_expansion(parsed)
    except ModifierError as exc:
        raise RenderError(f"from_yaml: {exc}") from None
    return parsed


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        return f"{where}{exc.problem or exc.context or 'invalid YAML'}"
    return str(exc)


# --- strings --------------------------------------------------------------------------


def _quote(value: Any) -> str:
    """Shell quoting exactly as Ansible's ``quote`` (``shlex.quote``; None gives '')."""
    return shlex.quote("" if value is None else _to_text(value))


def _b64encode(value: Any, encoding: str = "utf-8", urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(_to_bytes(value, encoding)).decode("ascii")


def _b64decode(value: Any, encoding: str = "utf-8", urlsafe: bool = False) -> str:
    decode = base64.urlsafe_b64decode if urlsafe else base64.b64decode
    try:
        return decode(_to_bytes(value)).decode(encoding)
    except (binascii.Error, ValueError) as exc:
        raise RenderError(f"b64decode: the input is not valid base64 ({exc})") from None


def _basename(value: Any) -> str:
    return posixpath.basename(_to_text(value))


def _dirname(value: Any) -> str:
    return posixpath.dirname(_to_text(value))


def _regex_flags(ignorecase: bool, multiline: bool) -> int:
    return (re.IGNORECASE if ignorecase else 0) | (re.MULTILINE if multiline else 0)


#: The longest text a regex filter runs on. Python's `re` backtracks and has no timeout: a
#: catastrophic pattern is stopped by the render deadline (the Jinja2 stage runs in a child
#: killed at the deadline, `plugin.render.isolated`); this bound keeps ordinary patterns on
#: hostile inputs from using the whole time and names the problem instead.
MAX_REGEX_INPUT = 1024 * 1024


def _regex_text(value: Any, what: str) -> str:
    text = _to_text(value)
    if len(text) > MAX_REGEX_INPUT:
        raise RenderError(f"{what}: the text is longer than {MAX_REGEX_INPUT} characters; refused")
    return text


def _compile(pattern: str, flags: int, what: str) -> re.Pattern[str]:
    if len(pattern) > MAX_REGEX_INPUT:
        raise RenderError(f"{what}: the pattern is longer than {MAX_REGEX_INPUT} characters")
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise RenderError(f"{what}: invalid regular expression {pattern!r}: {exc}") from None


def _regex_replace(  # noqa: PLR0917 - Ansible's signature
    value: Any = "",
    pattern: str = "",
    replacement: str = "",
    ignorecase: bool = False,
    multiline: bool = False,
    count: int = 0,
    mandatory_count: int = 0,
) -> str:
    regex = _compile(pattern, _regex_flags(ignorecase, multiline), "regex_replace")
    output, substitutions = regex.subn(
        replacement, _regex_text(value, "regex_replace"), count=count
    )
    if mandatory_count and mandatory_count != substitutions:
        raise RenderError(
            f"regex_replace: {pattern!r} should match {mandatory_count} times, "
            f"but matches {substitutions} times"
        )
    return output


def _regex_search(
    value: Any, regex: str, *groups: str, ignorecase: bool = False, multiline: bool = False
) -> Any:
    wanted: list[str | int] = []
    for group in groups:
        named = re.fullmatch(r"\\g<(\S+)>", group)
        numbered = re.fullmatch(r"\\(\d+)", group)
        if named:
            wanted.append(named.group(1))
        elif numbered:
            wanted.append(int(numbered.group(1)))
        else:
            raise RenderError(f"regex_search: unknown argument {group!r}")
    match = _compile(regex, _regex_flags(ignorecase, multiline), "regex_search").search(
        _regex_text(value, "regex_search")
    )
    if match is None:
        return None
    if not wanted:
        return match.group()
    return [match.group(group) for group in wanted]


def _regex_findall(
    value: Any, regex: str, multiline: bool = False, ignorecase: bool = False
) -> list[Any]:
    return _compile(regex, _regex_flags(ignorecase, multiline), "regex_findall").findall(
        _regex_text(value, "regex_findall")
    )


def _regex_escape(value: Any, re_type: str = "python") -> str:
    if re_type != "python":
        raise RenderError(f"regex_escape: only re_type='python' is supported, got {re_type!r}")
    return re.escape(_to_text(value))


# --- logic ----------------------------------------------------------------------------

_TRUE_STRINGS: Final = frozenset({"yes", "on", "true", "1"})
_FALSE_STRINGS: Final = frozenset({"no", "off", "false", "0"})


def _to_bool(value: Any) -> bool:
    """Ansible's ``bool`` filter: 'yes'/'on'/'true'/'1' (any case) and 1 are true."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, bool):
        return value
    candidate = value.lower() if isinstance(value, str) else value
    if isinstance(value, int):
        candidate = str(value)
    if isinstance(candidate, str):
        if candidate in _TRUE_STRINGS:
            return True
        if candidate in _FALSE_STRINGS:
            return False
        return False
    try:
        return bool(candidate == 1)
    except TypeError:
        return False


def _ternary(value: Any, true_val: Any, false_val: Any, none_val: Any = None) -> Any:
    if value is None and none_val is not None:
        return none_val
    return true_val if bool(value) else false_val


def _mandatory(value: Any, msg: str | None = None) -> Any:
    if isinstance(value, Undefined):
        if msg is not None:
            raise RenderError(_to_text(msg))
        path = value._path if isinstance(value, ChainableStrictUndefined) else None
        name = path or value._undefined_name
        shown = f"{name!r} " if name is not None else ""
        raise RenderError(f"Mandatory variable {shown}not defined.")
    return value


def _truthy(value: Any, convert_bool: bool = False) -> bool:
    if convert_bool:
        value = _to_bool(value)
    return bool(value)


def _falsy(value: Any, convert_bool: bool = False) -> bool:
    return not _truthy(value, convert_bool)


# --- data structures ------------------------------------------------------------------


def _combine(*terms: Any, **kwargs: Any) -> dict[str, Any]:
    options = _pick(kwargs, ("recursive", "list_merge"), "combine")
    _check_defined(terms)
    return merge.combine(*terms, **options)


def _dict2items(
    value: Any, key_name: str = "key", value_name: str = "value"
) -> list[dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise RenderError(f"dict2items requires a dictionary, got {_a_type(value)}")
    return [{key_name: key, value_name: item} for key, item in value.items()]


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _items2dict(value: Any, key_name: str = "key", value_name: str = "value") -> dict[Any, Any]:
    if not _is_sequence(value):
        raise RenderError(f"items2dict requires a list, got {_a_type(value)}")
    try:
        return {item[key_name]: item[value_name] for item in value}
    except KeyError:
        raise RenderError(
            f"items2dict requires each item to have the keys {key_name!r} and {value_name!r}"
        ) from None
    except TypeError:
        raise RenderError("items2dict requires a list of dictionaries") from None


def _subelements(obj: Any, subelement: Any, skip_missing: bool = False) -> list[tuple[Any, Any]]:
    if isinstance(obj, Mapping):
        elements = list(obj.values())
    elif isinstance(obj, list):
        elements = list(obj)
    else:
        raise RenderError("subelements: obj must be a list of dicts or a nested dict")
    if isinstance(subelement, list):
        keys = list(subelement)
    elif isinstance(subelement, str):
        keys = subelement.split(".")
    else:
        raise RenderError("subelements: the subelement must be a list or a string")
    results: list[tuple[Any, Any]] = []
    for element in elements:
        values = element
        for key in keys:
            try:
                values = values[key]
            except KeyError:
                if skip_missing:
                    values = []
                    break
                raise RenderError(f"subelements: could not find {key!r} key in an item") from None
            except TypeError:
                raise RenderError(
                    f"subelements: the key {key!r} should point to a dictionary"
                ) from None
        if not isinstance(values, list):
            raise RenderError(f"subelements: the key {keys[-1]!r} should point to a list")
        results.extend((element, value) for value in values)
    return results


def _flatten(value: Any, levels: int | None = None, skip_nulls: bool = True) -> list[Any]:
    """Ansible's ``flatten``: nested lists are flattened (up to ``levels``)."""
    flat: list[Any] = []
    for element in value:
        if skip_nulls and (
            element is None or (isinstance(element, str) and element in ("None", "null"))
        ):
            continue
        if _is_sequence(element):
            if levels is None:
                flat.extend(_flatten(element, skip_nulls=skip_nulls))
            elif levels >= 1:
                flat.extend(_flatten(element, levels=int(levels) - 1, skip_nulls=skip_nulls))
            else:
                flat.append(element)
        else:
            flat.append(element)
    return flat


def _ordered_unique(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


@pass_environment
def _unique(
    environment: Environment,
    value: Any,
    case_sensitive: bool | None = None,
    attribute: str | int | None = None,
) -> list[Any]:
    """Ansible's ``unique``: Jinja's (case-insensitive unless asked), list fallback."""
    try:
        return list(
            do_unique(environment, value, case_sensitive=bool(case_sensitive), attribute=attribute)
        )
    except TypeError:
        if case_sensitive is False or attribute is not None:
            raise RenderError(
                "unique: the items are not hashable, so case_sensitive=False and attribute= "
                "cannot be used"
            ) from None
        return _ordered_unique(value)


def _difference(a: Any, b: Any) -> list[Any]:
    b_items = list(b)
    return _ordered_unique(x for x in a if x not in b_items)


def _intersect(a: Any, b: Any) -> list[Any]:
    b_items = list(b)
    return _ordered_unique(x for x in a if x in b_items)


def _union(a: Any, b: Any) -> list[Any]:
    return _ordered_unique([*a, *b])


_FILTERS: Final[dict[str, Callable[..., Any]]] = {
    "quote": _quote,
    "to_json": _to_json,
    "to_nice_json": _to_nice_json,
    "from_json": _from_json,
    "to_yaml": _to_yaml,
    "to_nice_yaml": _to_nice_yaml,
    "from_yaml": _from_yaml,
    "b64encode": _b64encode,
    "b64decode": _b64decode,
    "basename": _basename,
    "dirname": _dirname,
    "regex_replace": _regex_replace,
    "regex_search": _regex_search,
    "regex_findall": _regex_findall,
    "regex_escape": _regex_escape,
    "bool": _to_bool,
    "ternary": _ternary,
    "mandatory": _mandatory,
    "combine": _combine,
    "dict2items": _dict2items,
    "items2dict": _items2dict,
    "subelements": _subelements,
    "flatten": _flatten,
    "unique": _unique,
    "difference": _difference,
    "intersect": _intersect,
    "union": _union,
}

_TESTS: Final[dict[str, Callable[..., bool]]] = {
    "truthy": _truthy,
    "falsy": _falsy,
}
