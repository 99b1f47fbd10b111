"""Command line: `plugin generate`, `plugin check`, `plugin version`.

Output discipline: stdout receives the manifests only after everything
succeeded; every failure is one clean `Error: …` block on stderr with exit
code 1 (2 for usage errors). Nothing printed ever contains a secret value.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from plugin import __version__, manifests
from plugin.backends.base import Backend
from plugin.backends.registry import BackendOptions, make_backend
from plugin.config import Settings, load_settings
from plugin.engine import EngineOptions, InputStream, Outcome, generate, load, resolve
from plugin.errors import ConfigError, PluginError, UsageError
from plugin.substitute import Rules, Site

log = logging.getLogger("plugin")

DEFAULT_TIMEOUT_SECONDS = 50.0


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() owns the exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="plugin",
        description="Render Argo CD application sources and replace <placeholders> with secrets.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.add_parser("version", help="print the version")
    for name, summary in (
        ("generate", "print manifests with every placeholder resolved"),
        ("check", "resolve every placeholder and report its status, never its value"),
    ):
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.add_argument("path", nargs="?", default=".", help="file, directory or - for stdin")
        _add_config_flags(sub)
        if name == "check":
            sub.add_argument("-o", "--output", choices=("table", "json"), default="table")
    return parser


def _add_config_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-c", "--config-path", help="YAML or JSON file with configuration")
    sub.add_argument("-s", "--secret-name", help="Kubernetes Secret [namespace:]name")
    sub.add_argument("--verbose", action="store_true", help="log steps to stderr (no values)")
    sub.add_argument(
        "--verbose-sensitive-output",
        action="store_true",
        help="accepted for AVP compatibility; same as --verbose (values stay hidden)",
    )
    sub.add_argument("--disable-token-cache", action="store_true", help="never cache tokens")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
        if args.command is None:
            build_parser().print_help(sys.stdout)
            return 0
        if args.command == "version":
            print(f"plugin {__version__}")
            return 0
        _configure_logging(args)
        return _run(args, os.environ, sys.stdin, sys.stdout)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except PluginError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"Error: internal error ({type(exc).__name__}); this is a bug", file=sys.stderr)
        return 1


def _configure_logging(args: argparse.Namespace) -> None:
    verbose = bool(args.verbose or args.verbose_sensitive_output)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("plugin: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False
    if args.verbose_sensitive_output:
        log.warning(
            "--verbose-sensitive-output behaves like --verbose: secret values are never printed"
        )


def _run(args: argparse.Namespace, environ: Mapping[str, str], stdin: TextIO, out: TextIO) -> int:
    started = time.monotonic()
    streams, from_directory = _read_input(args.path, stdin)
    settings = load_settings(environ, args.config_path, args.secret_name)
    options = EngineOptions(
        rules=Rules(path_validation=_path_validation(settings)),
        deadline=started + settings.get_float("PLUGIN_TIMEOUT", DEFAULT_TIMEOUT_SECONDS),
        skip_non_manifests=from_directory,
    )
    backend_options = BackendOptions(disable_token_cache=bool(args.disable_token_cache))

    def backend() -> Backend:
        return make_backend(settings, backend_options)

    if args.command == "check":
        outcome = resolve(load(streams, options.skip_non_manifests), options, backend)
        _print_check(outcome, args.output, out)
        return 1 if outcome.failures else 0
    text = generate(streams, options, backend)
    out.write(text)
    out.flush()
    log.debug("generate finished in %.3f s", time.monotonic() - started)
    return 0


def _read_input(path: str, stdin: TextIO) -> tuple[list[InputStream], bool]:
    """The input streams, and whether they come from walking a directory or file."""
    if path == "-":
        return [InputStream(manifests.STDIN_NAME, stdin.read())], False
    root = Path(path)
    files = manifests.discover(root)
    return manifests.read_files(files, root), True


def _path_validation(settings: Settings) -> re.Pattern[str] | None:
    found = settings.lookup("AVP_PATH_VALIDATION")
    if found is None:
        return None
    try:
        return re.compile(found.value)
    except re.error as exc:
        raise ConfigError(
            f"AVP_PATH_VALIDATION ({found.origin}) is not a valid regular expression: "
            f"{found.value}: {exc}"
        ) from None


def _print_check(outcome: Outcome, output: str, out: TextIO) -> None:
    if output == "json":
        rows = [_site_row(site) for site in outcome.sites]
        json.dump({"placeholders": rows, "failed": len(outcome.failures)}, out, indent=2)
        out.write("\n")
        return
    header = ("DOCUMENT", "FIELD", "PLACEHOLDER", "STATUS", "DETAIL")
    rows_text = [header] + [
        (site.document, site.field, site.placeholder, site.status.value, site.detail)
        for site in outcome.sites
    ]
    widths = [max(len(row[i]) for row in rows_text) for i in range(len(header) - 1)]
    for row in rows_text:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    total, failed = len(outcome.sites), len(outcome.failures)
    out.write(f"\n{total} placeholders, {total - failed} ok, {failed} failed\n")


def _site_row(site: Site) -> dict[str, str]:
    return {
        "document": site.document,
        "field": site.field,
        "placeholder": site.placeholder,
        "status": site.status.value,
        "detail": site.detail,
    }
