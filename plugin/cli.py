"""Command line: `plugin generate`, `plugin check`, `plugin parameters`, `plugin discover`,
`plugin version`.

`generate DIR` (and `check DIR`) run the whole pipeline: Argo CD's request -> render (Jinja2,
Helm, Kustomize or plain directory) -> plan reads -> fetch -> substitute -> emit. A single
file or `-` (stdin) goes to the placeholder engine only, exactly as AVP's `generate`.

Output discipline: stdout receives the manifests only after everything
succeeded; every failure is one clean `Error: …` block on stderr with exit
code 1 (2 for usage errors, 143 after SIGTERM). Nothing printed ever contains a secret value.
A directory render that produces no manifest at all fails unless `ALLOW_EMPTY=true` (or
`--allow-empty`): an empty render plus auto-sync prune would delete the application.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from plugin.argocd import AppRequest, announcements, app_request
from plugin.backends.base import Backend
from plugin.backends.registry import BackendOptions, make_backend
from plugin.config import Settings, load_settings
from plugin.engine import (
    BackendFactory,
    EngineOptions,
    InputStream,
    Outcome,
    ResolutionError,
    emit,
    load,
    resolve,
)
from plugin.errors import ConfigError, InputError, PluginError, RenderError, UsageError
from plugin.render import detect
from plugin.render.run import Deadline, Redactor, TerminatedError, install_signal_handlers
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
        sub.add_argument(
            "--source-type",
            choices=("helm", "kustomize", "directory"),
            help="render a directory as this type instead of detecting it",
        )
        sub.add_argument(
            "--allow-empty",
            action="store_true",
            help="accept a directory render with no manifest (also ALLOW_EMPTY=true)",
        )
        if name == "check":
            sub.add_argument("-o", "--output", choices=("table", "json"), default="table")
    params = commands.add_parser(
        "parameters",
        help="print the dynamic parameter announcement (JSON array) for Argo CD",
        description="print the dynamic parameter announcement (JSON array) for Argo CD",
    )
    params.add_argument("path", nargs="?", default=".", help="application directory")
    params.add_argument(
        "--all", action="store_true", help="include the static parameters of plugin.yaml"
    )
    disc = commands.add_parser(
        "discover",
        help="print the source type when the directory holds something renderable",
        description="exit 0 printing helm/kustomize/directory when the directory holds "
        "something this plugin can render; exit 0 with no output otherwise",
    )
    disc.add_argument("path", nargs="?", default=".", help="application directory")
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
        if args.command == "parameters":
            return _parameters(Path(args.path), bool(args.all), sys.stdout)
        if args.command == "discover":
            return _discover(Path(args.path), sys.stdout)
        _configure_logging(args)
        if argv is None:  # the real process (not a test calling main()): SIGTERM kills children
            install_signal_handlers()
        return _run(args, os.environ, sys.stdin, sys.stdout)
    except TerminatedError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 143
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
    if args.path != "-" and Path(args.path).is_dir():
        return _run_directory(args, environ, out, started)
    streams, from_directory = _read_input(args.path, stdin)
    settings = load_settings(environ, args.config_path, args.secret_name)
    options = EngineOptions(
        rules=Rules(path_validation=_path_validation(settings)),
        deadline=started + settings.get_float("PLUGIN_TIMEOUT", DEFAULT_TIMEOUT_SECONDS),
        skip_non_manifests=from_directory,
    )
    return _finish(
        args,
        streams,
        options=options,
        make=_backend_factory(args, settings),
        out=out,
        started=started,
    )


def _backend_factory(args: argparse.Namespace, settings: Settings) -> BackendFactory:
    backend_options = BackendOptions(disable_token_cache=bool(args.disable_token_cache))

    def backend() -> Backend:
        return make_backend(settings, backend_options)

    return backend


def _finish(
    args: argparse.Namespace,
    streams: Sequence[InputStream],
    *,
    options: EngineOptions,
    make: BackendFactory,
    out: TextIO,
    started: float,
    require_manifests: bool = False,
) -> int:
    documents = load(streams, options.skip_non_manifests)
    if require_manifests and not documents:
        raise RenderError(
            "the render produced no manifests; refusing to print an empty result (with "
            "auto-sync and prune it would delete every resource of the application). Set "
            "ALLOW_EMPTY=true if an empty application is intended"
        )
    if args.command == "check":
        options = dataclasses.replace(options, explain_denials=True)
    outcome = resolve(documents, options, make)
    if args.command == "check":
        _print_check(outcome, args.output, out)
        return 1 if outcome.failures else 0
    if outcome.failures:
        raise ResolutionError(outcome.failures)
    text = emit(outcome)
    out.write(text)
    out.flush()
    log.debug("generate finished in %.3f s", time.monotonic() - started)
    return 0


def _run_directory(
    args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, started: float
) -> int:
    """A directory: Argo CD's request -> renderer -> engine (both secret phases share reads)."""
    from plugin.render import pipeline
    from plugin.render.values_secrets import SharedReads

    settings = load_settings(environ, args.config_path, args.secret_name)
    timeout = settings.get_float("PLUGIN_TIMEOUT", DEFAULT_TIMEOUT_SECONDS)
    deadline = Deadline.after(timeout, started)
    rules = Rules(path_validation=_path_validation(settings))
    request: AppRequest = app_request(environ, settings)
    if args.source_type:
        request = dataclasses.replace(request, source_type=args.source_type)
    make = _backend_factory(args, settings)
    reads = SharedReads(make, rules, deadline.at) if request.resolve_values else None
    try:
        context = pipeline.RenderContext(
            request=request,
            environ=environ,
            deadline=deadline,
            redactor=Redactor(),
            reads=reads,
        )
        result = pipeline.render(Path(args.path), context)
        log.debug(
            "rendered %s source in %.3f s (%s)",
            result.source_type,
            time.monotonic() - started,
            ", ".join(f"{k} {v:.3f} s" for k, v in result.timings.items()),
        )
        options = EngineOptions(
            rules=rules, deadline=deadline.at, skip_non_manifests=not result.strict
        )
        return _finish(
            args,
            result.streams,
            options=options,
            make=reads.factory() if reads is not None else make,
            out=out,
            started=started,
            require_manifests=not (args.allow_empty or request.allow_empty),
        )
    finally:
        if reads is not None:
            reads.close()


def _parameters(app_dir: Path, include_static: bool, out: TextIO) -> int:
    """Argo CD's dynamic announcement: always a JSON array, never empty output.

    For a Helm chart: `helm-parameters` as a map whose defaults are the chart's values
    flattened to `--set` keys (as Argo CD's own Helm plugin example does).
    """
    from plugin.render import helm

    items: list[dict[str, object]] = []
    if detect.detect(app_dir) == detect.HELM:
        flat: dict[str, str] = {}
        values_file = app_dir / "values.yaml"
        try:
            if values_file.is_file():
                from plugin.yamlutil import load_one

                flat = helm.flatten_values(load_one(values_file.read_text(encoding="utf-8")))
        except Exception:  # an announcement must not fail on a bad values.yaml
            print("plugin: values.yaml could not be read; no defaults announced", file=sys.stderr)
        items.append(
            {
                "name": "helm-parameters",
                "title": "Helm parameters",
                "tooltip": "Helm --set parameters; defaults are the chart's values.yaml",
                "collectionType": "map",
                "map": flat,
            }
        )
    if include_static:
        items.extend(a for a in announcements() if a["name"] != "helm-parameters")
    out.write(json.dumps(items) + "\n")
    return 0


def _discover(app_dir: Path, out: TextIO) -> int:
    kind = detect.renderable(app_dir)
    if kind:
        out.write(kind + "\n")
    return 0


def _read_input(path: str, stdin: TextIO) -> tuple[list[InputStream], bool]:
    """The input streams, and whether they come from walking a directory or file."""
    if path == "-":
        data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode()
        try:
            return [InputStream(manifests.STDIN_NAME, data.decode("utf-8"))], False
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{manifests.STDIN_NAME} is not valid UTF-8 (byte {exc.start})"
            ) from None
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
