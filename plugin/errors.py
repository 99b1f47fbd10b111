"""The project's own error types.

Every failure the program can report is a `PluginError`; anything else escaping
to the top level is a bug. Messages never contain secret values: callers build
them from locations, paths, keys and placeholder text only.
"""

from __future__ import annotations


class PluginError(Exception):
    """Base class: a clean, user-facing failure (exit code 1)."""


class UsageError(PluginError):
    """Wrong command-line usage (exit code 2)."""


class ConfigError(PluginError):
    """A configuration setting is missing or invalid."""


class InputError(PluginError):
    """An input file or stream cannot be read or parsed."""


class PlaceholderError(PluginError):
    """A placeholder or modifier statement is malformed or cannot be applied."""


class ModifierError(PlaceholderError):
    """A modifier rejected its arguments or its input value."""


class JSONPathError(ModifierError):
    """A Kubernetes JSONPath template failed to parse or evaluate."""


class BackendError(PluginError):
    """The secret store failed: missing path, permission denied, unreachable, deadline."""


class MissingPathError(BackendError):
    """The backend has no secret at the requested path (or version)."""


class RenderError(PluginError):
    """A renderer (Jinja2, Helm, Kustomize) failed."""


class DeadlineError(PluginError):
    """The render-wide deadline (`PLUGIN_TIMEOUT`) passed inside the plugin's own work."""
