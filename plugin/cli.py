"""Command line: `plugin generate`, `plugin check`, `plugin parameters`, `plugin discover`,
`plugin version`, `plugin serve`, `plugin refs`, `plugin watch`.

The console script is `plugin.__main__` (it hands the command line to the zygote when one
runs); this module is what runs the command, in the zygote's child or in-process.

`generate DIR` (and `check DIR`) run the whole pipeline: Argo CD's request -> render (Jinja2,
Helm, Kustomize or plain directory) -> plan reads -> fetch -> substitute -> emit. A single
file or `-` (stdin) goes to the placeholder engine only, exactly as AVP's `generate`.

Output discipline: stdout receives the manifests only after everything
succeeded; every failure is one clean `Error: …` block on stderr with exit
code 1 (2 for usage errors, 143 after SIGTERM). Nothing printed ever contains a secret value:
for the whole run stderr (error messages, log records, warnings, renderer output) goes through
one `Redactor` that learns every secret fetched, every resolved value and the credentials of
the configuration (see `plugin.security.redact`); `plugin check` output is redacted as well.
A directory render that produces no manifest at all fails unless `ALLOW_EMPTY=true` (or
`--allow-empty`): an empty render plus auto-sync prune would delete the application.

Tenant policy (`plugin.security.policy`): when the sidecar sets `PLUGIN_TENANT_POLICY`, the
application's project must have a rule, may only set the application settings the rule
allows, logs in with the rule's Vault identity and may only read the rule's paths.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from plugin import __version__
from plugin.argocd.request import AppRequest, announcements, app_request
from plugin.config import Setting, Settings, load_settings
from plugin.errors import ConfigError, InputError, PluginError, RenderError, UsageError
from plugin.manifests import reader
from plugin.manifests.inputs import (
    DEFAULT_MAX_INPUT,
    MAX_INPUT_SETTING,
    parse_size,
    read_pipe,
)
from plugin.placeholders.engine import (
    BackendFactory,
    EngineOptions,
    InputStream,
    Outcome,
    ResolutionError,
    load,
    resolve,
    write,
)
from plugin.placeholders.modifiers import FINGERPRINT_KEY_SETTING, fingerprint_context
from plugin.placeholders.prefetch import PREFETCH_SETTING, Prefetch
from plugin.placeholders.substitute import Rules, Site, Status
from plugin.render import detect
from plugin.render.copying import (
    DEFAULT_MAX_COPY_FILES,
    DEFAULT_MAX_COPY_SIZE,
    MAX_COPY_FILES_SETTING,
    MAX_COPY_SIZE_SETTING,
    CopyLimits,
)
from plugin.render.isolated import DEFAULT_MAX_TEMPLATE_MEMORY, MAX_TEMPLATE_MEMORY_SETTING
from plugin.render.process import Deadline, TerminatedError, install_signal_handlers
from plugin.rotation import index as rotation_index
from plugin.rotation import refs as refs_command
from plugin.secrets.base import Backend, BackendOptions
from plugin.secrets.registry import make_backend
from plugin.security import sandbox
from plugin.security.policy import Decision
from plugin.security.policy import apply as apply_policy
from plugin.security.redact import RedactingFormatter, RedactingStream, Redactor
from plugin.serve import server as serve_command
from plugin.serve.server import Report

log = logging.getLogger("plugin")

DEFAULT_TIMEOUT_SECONDS = 50.0

#: Credentials that may be in the configuration: known to the redactor from the start.
CREDENTIAL_SETTINGS = (
    "VAULT_TOKEN",
    "AVP_SECRET_ID",
    "AVP_PASSWORD",
    "AVP_GITHUB_TOKEN",
)


#: `plugin --help`: the settings a first run needs, and where the others are.
MAIN_SETTINGS_HELP = """main settings (environment variables; in an Application, ARGOCD_ENV_<NAME>):
  AVP_TYPE           secret backend: vault or file
  AVP_FILE_PATH      YAML file of secrets for AVP_TYPE=file (demos, tests)
  VAULT_ADDR         Vault or OpenBao address; AVP_AUTH_TYPE picks the login method
  VALUES_FILES       Helm values files; CONTEXT_FILES: Jinja2 context files
  RESOLVE_VALUES     resolve placeholders in Helm values before rendering
  PLUGIN_TIMEOUT     render deadline in seconds
every setting, Argo CD variable and parameter: docs/configuration.md
to see more of a failing run: add --verbose (logs each step, never a secret value)"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() owns the exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


@functools.cache
def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, built once per process (the zygote builds it for its workers).

    Building it costs more than parsing with it (gettext lookups and a terminal-size query per
    option); parsing never changes it.
    """
    parser = _Parser(
        prog="plugin",
        description="Render Argo CD application sources and replace <placeholders> with secrets.",
        epilog=MAIN_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
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
    refs_command.add_arguments(
        commands.add_parser(
            "refs",
            help="list which applications use which secret paths (from the reference index)",
            description="list which applications use which secret paths, as recorded by "
            "each application's last successful generate (see docs/rotation.md)",
        )
    )
    watch = commands.add_parser(
        "watch",
        help="poll the secrets applications read and hard-refresh those that changed",
        description="poll the references of the reference index (see docs/rotation.md) and ask "
        "Argo CD for a hard refresh of each application whose secrets changed; one replica leads "
        "(a Kubernetes Lease); /metrics and /healthz on PLUGIN_WATCH_PORT",
    )
    # Declared here, not in rotation.watch: `plugin generate` must not import the watcher.
    watch.add_argument(
        "--once",
        action="store_true",
        help="one cycle (acquire the Lease, poll, refresh, release) and print its report (JSON)",
    )
    serve_command.add_arguments(
        commands.add_parser(
            "serve",
            help="run the zygote that forks one warm process per request (see docs/cmp.md)",
            description="run the zygote that forks one warm process per request",
        )
    )
    return parser


def warm_up() -> None:
    """What the zygote does once for all its workers: build the parser and parse a typical
    command line, which compiles and caches the regular expressions argparse matches
    arguments with, and ask the machine's clock tick rate (`process_started`). Nothing of a
    request, no setting, no secret."""
    build_parser().parse_args(["generate", "."])
    _clock_ticks()


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


def main(
    argv: Sequence[str] | None = None,
    *,
    report: Report | None = None,
    supervised: bool = False,
) -> int:
    """Run the command line; `report` is the zygote worker's early status (`serve_entry`).

    `supervised`: this process is a zygote worker, whose supervisor kills its process group
    and every orphan when it ends (`plugin.serve.server`): renderers then start without code
    in the child (`plugin.render.process`). Only `serve_entry` (and benchmarks) set it.
    """
    redactor = Redactor()
    # Everything the plugin creates (scratch directories, caches, lock files) is private to
    # the sidecar's user whatever umask the container runtime set.
    previous_umask = os.umask(0o077)
    try:
        with _redacted_stderr(redactor), _scoped_logging():
            return _main(argv, redactor, report, supervised=supervised)
    finally:
        if argv is not None:  # a test calling main(): leave its process as it was
            os.umask(previous_umask)


@contextlib.contextmanager
def _scoped_logging() -> Iterator[None]:
    """Logging is configured per run and put back afterwards (tests call main() repeatedly)."""
    root = logging.getLogger()
    saved = (list(log.handlers), log.level, log.propagate, list(root.handlers))
    try:
        yield
    finally:
        log.handlers[:], root.handlers[:] = saved[0], saved[3]
        log.setLevel(saved[1])
        log.propagate = saved[2]
        logging.captureWarnings(False)


@contextlib.contextmanager
def _redacted_stderr(redactor: Redactor) -> Iterator[None]:
    """For the whole run, everything written to stderr passes through `redactor`."""
    original = sys.stderr
    stream = RedactingStream(original, redactor)
    sys.stderr = stream
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            stream.flush()
        sys.stderr = original


def serve_entry(report: Report) -> int:
    """What a zygote worker runs: this process's command line, with the worker's `report`."""
    return main(report=report, supervised=True)


def _main(
    argv: Sequence[str] | None,
    redactor: Redactor,
    report: Report | None = None,
    *,
    supervised: bool = False,
) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
        if args.version:
            print(f"plugin {__version__}")
            return 0
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
        if args.command == "serve":
            return serve_command.run(args, os.environ, sys.stdout, entry=serve_entry, warm=warm_up)
        if args.command == "refs":
            return refs_command.run(args, os.environ, sys.stdout)
        if args.command == "watch":
            return _watch(args, os.environ, redactor)
        _configure_logging(args, redactor)
        if argv is None:  # the real process (not a test calling main()): SIGTERM kills children
            install_signal_handlers()
        return _run(
            args,
            os.environ,
            sys.stdin,
            sys.stdout,
            redactor,
            report=report,
            supervised=supervised,
        )
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


def _watch(args: argparse.Namespace, environ: Mapping[str, str], redactor: Redactor) -> int:
    """`plugin watch`: imported only here, so a render never loads the watcher."""
    from plugin.rotation import watch as watch_command

    for name in CREDENTIAL_SETTINGS:
        value = environ.get(name, "")
        if value:
            redactor.add_secret(value)
    return watch_command.run(args, environ, sys.stdout, sys.stderr)


def _configure_logging(args: argparse.Namespace, redactor: Redactor) -> None:
    """Plugin log records, other libraries' warnings and Python warnings: all redacted."""
    verbose = bool(args.verbose or args.verbose_sensitive_output)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(redactor, "plugin: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False
    # Other libraries (urllib3, hvac) and Python warnings only with --verbose: their problems
    # reach the user as the plugin's own error messages.
    other = logging.StreamHandler(sys.stderr)
    other.setFormatter(RedactingFormatter(redactor, "%(name)s: %(message)s"))
    other.setLevel(logging.WARNING if verbose else logging.CRITICAL + 1)
    root = logging.getLogger()
    root.handlers[:] = [other]
    logging.captureWarnings(True)
    if args.verbose_sensitive_output:
        log.warning(
            "--verbose-sensitive-output behaves like --verbose: secret values are never printed"
        )


#: Seconds after which a process is taken to be a host that calls `main()`, not a fresh start.
_LONG_LIVED = 30.0


def process_started() -> float:
    """When this process was started, on the `time.monotonic()` clock.

    The render deadline counts from here, not from the end of the imports: Argo CD's clock
    started before the interpreter did, and on a loaded machine the start alone can take
    seconds. Falls back to now when /proc cannot tell, and when the process is older than any
    interpreter start (`_LONG_LIVED`): then `main()` runs inside a long-lived host (a test
    session, an embedding program), whose age says nothing about this render.
    """
    now = time.monotonic()
    try:
        fields = _read_proc("/proc/self/stat").rsplit(b")", 1)[1].split()
        uptime = float(_read_proc("/proc/uptime").split()[0])
        age = uptime - int(fields[19]) / _clock_ticks()
    except (OSError, ValueError, IndexError):
        return now
    if not 0.0 <= age <= _LONG_LIVED:
        return now
    return now - age


def _read_proc(path: str) -> bytes:
    """A small /proc file, without the text layer of open(): this runs in every request."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


@functools.cache
def _clock_ticks() -> int:
    """Clock ticks per second of /proc's times: a fact of the machine, asked once."""
    return os.sysconf("SC_CLK_TCK")


def _run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    stdin: TextIO,
    out: TextIO,
    redactor: Redactor | None = None,
    *,
    report: Report | None = None,
    supervised: bool = False,
) -> int:
    started = process_started()
    redactor = redactor if redactor is not None else Redactor()
    # PLUGIN_SANDBOX=required on a kernel without Landlock: fail closed before anything else.
    confinement = sandbox.require_available(environ)
    log.debug("renderer sandbox: %s", confinement.describe())
    args.sandbox_state = confinement.describe()
    decision = apply_policy(environ)
    settings = _settings(args, environ, decision, redactor)
    recorder = rotation_index.Recorder() if args.command == "generate" else None
    if args.path != "-" and os.path.isdir(args.path):
        try:
            code = _run_directory(
                args,
                environ,
                out,
                started=started,
                settings=settings,
                decision=decision,
                redactor=redactor,
                recorder=recorder,
                supervised=supervised,
            )
            _after_output(
                code,
                environ,
                settings=settings,
                decision=decision,
                recorder=recorder,
                report=report,
            )
        finally:
            _sweep_scratch()
        return code
    streams, from_directory = _read_input(args.path, stdin, _max_input(settings))
    options = EngineOptions(
        rules=_rules(settings, decision, redactor),
        deadline=started + settings.get_float("PLUGIN_TIMEOUT", DEFAULT_TIMEOUT_SECONDS),
        skip_non_manifests=from_directory,
    )
    code = _finish(
        args,
        streams,
        options=options,
        make=_backend_factory(args, settings, recorder),
        out=out,
        started=started,
        strict=settings.get_bool("PLUGIN_STRICT", False),
    )
    _after_output(
        code, environ, settings=settings, decision=decision, recorder=recorder, report=report
    )
    return code


def _after_output(
    code: int,
    environ: Mapping[str, str],
    *,
    settings: Settings,
    decision: Decision | None,
    recorder: rotation_index.Recorder | None,
    report: Report | None,
) -> None:
    """What a successful generate does once its manifests are out: the early status, then
    the reference index record."""
    if code == 0 and recorder is not None:
        if report is not None and not log.isEnabledFor(logging.INFO):
            # Through the zygote, the client may exit now: the manifests are out and the
            # record cannot change the exit status or print anything below --verbose (it
            # catches every error and logs it at INFO; warnings go to logging, which then
            # shows nothing of other libraries). With --verbose it logs: the status waits.
            report(code)
        _record_references(recorder, environ, settings, decision)


def _sweep_scratch() -> None:
    """Remove the scratch directories of renders that were SIGKILLed (never a live render's).

    After the render, not before it: nothing of this render depends on it, so the output (and,
    through the zygote, the client's status) does not wait for a listing of the temporary
    directory. Also after a failed render; best effort (it only tidies up).
    """
    from plugin.render.scratch import sweep

    with contextlib.suppress(OSError):
        sweep()


def _record_references(
    recorder: rotation_index.Recorder,
    environ: Mapping[str, str],
    settings: Settings,
    decision: Decision | None,
) -> None:
    """After a successful generate (manifests already printed): update the reference index.

    Best effort by design: the render succeeded, so an index problem is only reported with
    --verbose (docs/rotation.md).
    """
    try:
        written = rotation_index.record_render(recorder, environ, settings, decision)
    except Exception as exc:
        log.info("reference index not updated: %s", exc)
        return
    if written is not None:
        log.debug("reference index: %d references recorded", len(recorder.reads))


def _settings(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    decision: Decision | None,
    redactor: Redactor,
) -> Settings:
    """The configuration, with the tenant policy's identity on top; credentials redacted."""
    if decision is not None:
        log.debug(
            "tenant policy: project %s follows %s", decision.project, decision.overrides_origin
        )
        settings = load_settings(
            environ,
            args.config_path,
            args.secret_name,
            overrides=decision.overrides,
            overrides_origin=decision.overrides_origin,
        )
    else:
        settings = load_settings(environ, args.config_path, args.secret_name)
    for name in CREDENTIAL_SETTINGS:
        value = settings.get(name)
        if value:
            redactor.add_secret(value)
    return settings


def _rules(settings: Settings, decision: Decision | None, redactor: Redactor) -> Rules:
    context = fingerprint_context(settings.environ)
    key_text = settings.environ.get(FINGERPRINT_KEY_SETTING, "")
    if key_text:  # a credential even when too short to be used
        redactor.add_secret(key_text)
    return Rules(
        path_validation=_path_validation(settings),
        path_check=decision.path_refusal if decision is not None else None,
        redactor=redactor,
        modifier_context=context,
    )


def _max_input(settings: Settings) -> int:
    return _size_setting(settings.lookup(MAX_INPUT_SETTING), MAX_INPUT_SETTING, DEFAULT_MAX_INPUT)


def _size_setting(found: Setting | None, name: str, default: int) -> int:
    """A size setting (`67108864`, `64Mi`, `50M`); ConfigError naming its origin when invalid."""
    if found is None:
        return default
    size = parse_size(found.value)
    if size is None or size < 1:
        raise ConfigError(
            f"{name} must be a size such as 67108864, 64Mi or 50M, got "
            f"{found.value!r} from {found.origin}"
        )
    return size


def _copy_limits(settings: Settings) -> CopyLimits:
    """Budgets of the private copy of a chart or Kustomize tree (files, bytes)."""
    return CopyLimits(
        max_files=settings.get_int(MAX_COPY_FILES_SETTING, DEFAULT_MAX_COPY_FILES, minimum=1),
        max_bytes=_size_setting(
            settings.lookup(MAX_COPY_SIZE_SETTING), MAX_COPY_SIZE_SETTING, DEFAULT_MAX_COPY_SIZE
        ),
    )


def _backend_factory(
    args: argparse.Namespace,
    settings: Settings,
    recorder: rotation_index.Recorder | None = None,
) -> BackendFactory:
    backend_options = BackendOptions(disable_token_cache=bool(args.disable_token_cache))

    def backend() -> Backend:
        return make_backend(settings, backend_options)

    return recorder.wrap(backend) if recorder is not None else backend


def _prefetch(
    args: argparse.Namespace, settings: Settings, rules: Rules, deadline: float
) -> Prefetch | None:
    """The read-ahead of secrets while the renderer runs, when it is worth it.

    Only for `generate` with the Vault backend (a file store is local: reading it later costs
    nothing) and unless `PLUGIN_PREFETCH=false`. It gets the factory *without* the reference
    index's recorder: the engine's view of it is wrapped instead, so only what the output
    used is recorded.
    """
    if args.command != "generate" or not settings.get_bool(PREFETCH_SETTING, True):
        return None
    if (settings.get("AVP_TYPE") or "").strip() != "vault":
        return None
    return Prefetch(
        _backend_factory(args, settings),
        rules,
        deadline,
        max_bytes=_max_input(settings),
        max_files=_copy_limits(settings).max_files,
    )


def _finish(
    args: argparse.Namespace,
    streams: Sequence[InputStream],
    *,
    options: EngineOptions,
    make: BackendFactory,
    out: TextIO,
    started: float,
    require_manifests: bool = False,
    strict: bool = False,
) -> int:
    documents = load(streams, options.skip_non_manifests, options.deadline)
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
        report = io.StringIO()
        _print_check(outcome, args.output, report, getattr(args, "sandbox_state", ""))
        redactor = options.rules.redactor
        text = report.getvalue()
        out.write(redactor.clean(text) if redactor is not None else text)
        out.flush()
        return 1 if outcome.failures else 0
    if outcome.failures:
        raise ResolutionError(outcome.failures)
    unterminated = [site for site in outcome.sites if site.status is Status.UNTERMINATED]
    if unterminated and strict:
        raise InputError(
            "unterminated placeholders (PLUGIN_STRICT=true):\n"
            + "\n".join(f"  {site.message()}" for site in unterminated)
        )
    for site in unterminated:
        log.warning("%s", site.message())
    write(outcome, out)
    out.flush()
    log.debug("generate finished in %.3f s", time.monotonic() - started)
    return 0


def _run_directory(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    out: TextIO,
    *,
    started: float,
    settings: Settings,
    decision: Decision | None,
    redactor: Redactor,
    recorder: rotation_index.Recorder | None = None,
    supervised: bool = False,
) -> int:
    """A directory: Argo CD's request -> renderer -> engine (both secret phases share reads)."""
    from plugin.render import pipeline
    from plugin.render.values_secrets import SharedReads

    timeout = settings.get_float("PLUGIN_TIMEOUT", DEFAULT_TIMEOUT_SECONDS)
    deadline = Deadline.after(timeout, started)
    rules = _rules(settings, decision, redactor)
    request: AppRequest = app_request(environ, settings)
    if args.source_type:
        request = dataclasses.replace(request, source_type=args.source_type)
    prefetch = None if request.resolve_values else _prefetch(args, settings, rules, deadline.at)
    if prefetch is not None:
        make = prefetch.factory()
        if recorder is not None:
            make = recorder.wrap(make)
    else:
        make = _backend_factory(args, settings, recorder)
    reads = SharedReads(make, rules, deadline.at) if request.resolve_values else None
    try:
        context = pipeline.RenderContext(
            request=request,
            environ=environ,
            deadline=deadline,
            redactor=redactor,
            reads=reads,
            max_input=_max_input(settings),
            copy_limits=_copy_limits(settings),
            template_memory=_size_setting(
                settings.lookup(MAX_TEMPLATE_MEMORY_SETTING),
                MAX_TEMPLATE_MEMORY_SETTING,
                DEFAULT_MAX_TEMPLATE_MEMORY,
            ),
            renderer_started=prefetch.start if prefetch is not None else None,
            supervised=supervised,
        )
        try:
            result = pipeline.render(Path(args.path), context)
        except pipeline.ConsumedPlaceholdersError as exc:
            if not request.resolve_values_auto:
                raise
            log.debug(
                "%d placeholders in the Helm values do not reach Helm's output as written "
                "(%s): rendering again with the values resolved first (RESOLVE_VALUES=auto)",
                len(exc.placeholders),
                ", ".join(exc.placeholders[:5]),
            )
            reads = SharedReads(make, rules, deadline.at)
            context = dataclasses.replace(context, reads=reads)
            result = pipeline.render(Path(args.path), context)
        log.debug(
            "rendered %s source in %.3f s%s",
            result.source_type,
            time.monotonic() - started,
            "".join(f", {k} {v:.3f} s" for k, v in result.timings.items()),
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
            strict=settings.get_bool("PLUGIN_STRICT", False),
        )
    finally:
        if reads is not None:
            reads.close()
        if prefetch is not None:
            prefetch.close()


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
        repo_root = helm.find_repo_root(app_dir, os.environ.get("ARGOCD_APP_SOURCE_PATH", ""))
        try:
            if values_file.is_file():
                # The announcement is shown in the UI: never follow a symlink out of the
                # repository (it could point at the sidecar's own files), never read a giant.
                if not helm.within(values_file, repo_root):
                    raise InputError("values.yaml leads outside the repository")
                if values_file.stat().st_size > DEFAULT_MAX_INPUT:
                    raise InputError("values.yaml is too large")
                from plugin.manifests.yamlio import load_one

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


def _read_input(
    path: str, stdin: TextIO, max_bytes: int = DEFAULT_MAX_INPUT
) -> tuple[list[InputStream], bool]:
    """The input streams, and whether they come from walking a directory or file."""
    if path == "-":
        # Read as the engine splits it (see `read_pipe`): a 50 MB render is held once.
        source = (
            stdin.buffer
            if hasattr(stdin, "buffer")
            else io.BytesIO(stdin.read(max_bytes + 1).encode())
        )
        return [read_pipe(reader.STDIN_NAME, source, max_bytes)], False
    root = Path(path)
    files = reader.discover(root)
    return reader.read_files(files, root, max_bytes), True


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


def _print_check(outcome: Outcome, output: str, out: TextIO, sandbox_state: str = "") -> None:
    if output == "json":
        rows = [_site_row(site) for site in outcome.sites]
        report = {"placeholders": rows, "failed": len(outcome.failures), "sandbox": sandbox_state}
        json.dump(report, out, indent=2)
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
    open_ended = sum(site.status is Status.UNTERMINATED for site in outcome.sites)
    total -= open_ended
    tail = f", {open_ended} unterminated (left as text)" if open_ended else ""
    out.write(f"\n{total} placeholders, {total - failed} ok, {failed} failed{tail}\n")
    if sandbox_state:
        out.write(f"renderer sandbox: {sandbox_state}\n")


def _site_row(site: Site) -> dict[str, str]:
    return {
        "document": site.document,
        "field": site.field,
        "placeholder": site.placeholder,
        "status": site.status.value,
        "detail": site.detail,
    }
