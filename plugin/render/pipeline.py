"""Render an application directory: [Jinja2] -> detect -> Helm | Kustomize | plain -> streams.

The user's tree is never modified: Helm charts (which get dependencies added to `charts/`)
and directories with `*.j2` files are rendered in a private scratch copy (`plugin.render.
scratch`: locked while the render runs, removed at the end, swept at the next start when a
SIGKILL left it). Helm receives files only through `plugin.render.staging`: copies under
generated names, and memory files for resolved and inline values, which never touch the disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugin.argocd.request import AppRequest
from plugin.errors import ConfigError, RenderError
from plugin.manifests.inputs import DEFAULT_MAX_INPUT, MAX_INPUT_SETTING, InputStream, format_size
from plugin.manifests.reader import may_hold_placeholder
from plugin.manifests.yamlio import dump, load_one
from plugin.placeholders import grammar
from plugin.render import dependencies, detect, helm, isolated, kustomize, plain
from plugin.render.copying import CopyLimits, copy_tree
from plugin.render.process import Completed, Confinement, Deadline, child_environment, run
from plugin.render.scratch import scratch_directory
from plugin.render.staging import StagedFile, Staging
from plugin.render.values_secrets import SharedReads
from plugin.security import sandbox
from plugin.security.redact import Redactor

log = logging.getLogger(__name__)


@dataclass
class RenderResult:
    """The renderer's output for the engine."""

    streams: list[InputStream]
    source_type: str
    #: Documents without `kind` are errors (renderer output) rather than skipped (plain dirs).
    strict: bool
    timings: dict[str, float] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)


@dataclass
class RenderContext:
    request: AppRequest
    #: The sidecar's own environment (tools, caches, operator credentials).
    environ: Mapping[str, str]
    deadline: Deadline
    redactor: Redactor = field(default_factory=Redactor)
    #: Set when RESOLVE_VALUES is on: phase one of the secrets.
    reads: SharedReads | None = None
    #: The most bytes read from the repository (plain directories) or from one renderer.
    max_input: int | None = DEFAULT_MAX_INPUT
    #: Landlock mode and ABI (`PLUGIN_SANDBOX`); computed from `environ` when not given.
    sandbox: sandbox.Status | None = None
    #: Budgets of the private copy of a chart or Kustomize tree (the deadline is added).
    copy_limits: CopyLimits = field(default_factory=CopyLimits)

    #: Address-space budget of the forked Jinja2 child (`PLUGIN_MAX_TEMPLATE_MEMORY`).
    template_memory: int = isolated.DEFAULT_MAX_TEMPLATE_MEMORY
    #: Called once `helm template` or `kustomize build` has started (not with
    #: RESOLVE_VALUES, whose reads happen before Helm anyway), with the files and directories
    #: the renderer will read and the texts it gets from memory: the secrets prefetch
    #: (`plugin.placeholders.prefetch`) reads their placeholders' paths while it runs.
    renderer_started: Callable[[list[Path], list[str]], None] | None = None
    #: This process is a zygote worker: its supervisor kills its process group and every
    #: orphan when it ends, so renderers start without code in the child (vfork, see
    #: `plugin.render.process`). Given by the worker's entry point (`plugin.cli.serve_entry`).
    supervised: bool = False

    def limits_for_copy(self) -> CopyLimits:
        return dataclasses.replace(self.copy_limits, deadline=self.deadline)

    def confinement(
        self,
        *,
        read: list[Path | str],
        write: list[Path | str],
        programs: list[str],
        connect_ports: list[int] | None = None,
    ) -> Confinement:
        """The Landlock policy of one renderer child (see `plugin.security.sandbox`)."""
        if self.sandbox is None:
            self.sandbox = sandbox.status(self.environ)
        policy = sandbox.Policy(
            read=[
                *sandbox.system_read_paths(self.environ),
                *sandbox.program_paths(*programs),
                *(str(path) for path in read),
            ],
            write=[str(path) for path in write],
            connect_ports=connect_ports if connect_ports is not None else None,
        )
        return Confinement(policy, self.sandbox, supervised=self.supervised)


def helm_binary(environ: Mapping[str, str]) -> str:
    configured = environ.get("HELM_BIN", "").strip()
    found = shutil.which(configured or "helm", path=None if configured else environ.get("PATH"))
    if found is None:
        if configured:
            raise RenderError(f"HELM_BIN={configured} is not an executable program")
        raise RenderError("helm was not found on PATH (install it or set HELM_BIN)")
    # Helm runs in a scratch directory: a relative HELM_BIN (or PATH entry) must not change
    # meaning there.
    return os.path.abspath(found)


def helm_home_env(home: Path) -> dict[str, str]:
    """A private Helm home for one render: concurrent renders share no mutable Helm state.

    The directories are not created: Helm makes them when it writes something (which
    `helm template` does not), and every directory costs time to remove. Temporary files go
    to the scratch directory holding `home` (the only place a confined child may write).
    """
    env: dict[str, str] = {"HOME": str(home), "TMPDIR": str(home.parent)}
    for part in ("cache", "config", "data"):
        path = home / part
        env[f"HELM_{part.upper()}_HOME"] = str(path)
        env[f"XDG_{part.upper()}_HOME"] = str(path)
    env["HELM_REPOSITORY_CONFIG"] = str(home / "config" / "repositories.yaml")
    env["HELM_REPOSITORY_CACHE"] = str(home / "cache" / "repository")
    env["HELM_REGISTRY_CONFIG"] = str(home / "config" / "registry" / "config.json")
    env["HELM_PLUGINS"] = str(home / "plugins")
    return env


def render(app_dir: Path, ctx: RenderContext) -> RenderResult:
    """Render `app_dir` into streams for the engine; RenderError/ConfigError on failure."""
    app_dir = Path(os.path.abspath(app_dir))
    if not app_dir.is_dir():
        raise RenderError(f"application directory {app_dir} does not exist")
    repo_root = helm.find_repo_root(app_dir, ctx.request.source_path)
    note = helm.repo_root_note(app_dir, ctx.request.source_path, repo_root)
    try:
        return _render(app_dir, repo_root, ctx)
    except (ConfigError, RenderError) as exc:
        # A file "missing" or "outside the repository" may only be so because the repository
        # root was guessed: say which root was assumed and how to set it.
        if note and any(word in str(exc) for word in _ROOT_DEPENDENT):
            raise type(exc)(f"{exc}\n{note}") from None
        raise


_ROOT_DEPENDENT = ("does not exist", "outside the repository", "matches no file")


def _render(app_dir: Path, repo_root: Path, ctx: RenderContext) -> RenderResult:
    request = ctx.request
    templated = detect.has_templates(app_dir)
    kind = detect.detect(app_dir, request.source_type)
    if kind == detect.DIRECTORY and not templated:
        _warn_chart_templates(app_dir)
        streams = plain.read_directory(app_dir, confine=repo_root, max_bytes=ctx.max_input)
        return RenderResult(streams, kind, strict=False)
    if kind == detect.KUSTOMIZE and not templated and not kustomize.enable_helm(ctx.environ):
        with scratch_directory(background=True) as kustomize_scratch:
            return _kustomize(app_dir, kustomize_scratch, ctx, read=repo_root, root=repo_root)
    # Removed in the background once Helm's (or Kustomize's) output is read: the engine does
    # not wait for the copy's deletion.
    with scratch_directory(background=True) as scratch:
        started = time.monotonic()
        if kind == detect.KUSTOMIZE:
            # Relative references (`../base`) must keep working: copy the whole repository.
            # (Also with --enable-helm, which writes the charts it pulls next to the
            # kustomization.)
            work_root = scratch / "repo"
            copy_tree(repo_root, work_root, repo_root, ctx.limits_for_copy())
            work = work_root / os.path.relpath(app_dir, repo_root)
        else:
            work = work_root = scratch / "app"
            copy_tree(app_dir, work, repo_root, ctx.limits_for_copy())
        timings = {"copy": time.monotonic() - started}
        merged_values: Path | None = None
        if templated:
            merged_values = _templating(app_dir, work, repo_root, ctx)
            kind = detect.detect(work, request.source_type)
        if kind == detect.DIRECTORY:
            _warn_chart_templates(work)
            streams = plain.read_directory(work, max_bytes=ctx.max_input)
            return RenderResult(streams, kind, strict=False, timings=timings)
        if kind == detect.KUSTOMIZE:
            return _kustomize(work, scratch, ctx, read=scratch, root=work_root)
        return _helm(
            app_dir=app_dir,
            work=work,
            repo_root=repo_root,
            scratch=scratch,
            merged_values=merged_values,
            ctx=ctx,
            timings=timings,
        )


_HELM_SYNTAX = re.compile(r"\{\{-?\s*(?:\.Values|\.Release|\.Chart|include|template|toYaml)\b")


def _warn_chart_templates(directory: Path) -> None:
    """Say so when a directory read as plain manifests holds Helm templates.

    Without Chart.yaml (or with SOURCE_TYPE=directory) `templates/*.yaml` are not rendered:
    they fail to parse or, worse, pass through with `{{ … }}` in them.
    """
    templates = directory / "templates"
    if not templates.is_dir():
        return
    for path in sorted(templates.rglob("*")):
        if path.suffix in (".yaml", ".yml", ".tpl") and path.is_file() and not path.is_symlink():
            try:
                head = path.read_text(encoding="utf-8", errors="replace")[:65536]
            except OSError:
                continue
            if _HELM_SYNTAX.search(head):
                log.warning(
                    "the application is read as a plain directory of manifests (no Chart.yaml "
                    "or kustomization.yaml, or SOURCE_TYPE=directory), but %s holds Helm "
                    "template syntax; add a Chart.yaml (or Chart.yaml.j2) to render it with Helm",
                    path.relative_to(directory),
                )
                return


def _templating(app_dir: Path, work: Path, repo_root: Path, ctx: RenderContext) -> Path | None:
    """The Jinja2 stage, in a forked child bounded by the deadline and a memory budget.

    Tenant templates can loop for ever, allocate gigabytes or run a catastrophic regular
    expression; only a separate process can be stopped in the middle of that (see
    `plugin.render.isolated`). The child writes the rendered files into the work copy and
    sends back the report's few facts.
    """
    from plugin.templating import appdir

    started = time.monotonic()
    context_files = list(ctx.request.context_files)
    environ = _template_environ(ctx)

    def render_in_child() -> dict[str, Any]:
        context = appdir.build_context(repo_root, app_dir, context_files, environ)
        report = appdir.render_app_dir(work, context, root=work)
        merged = report.merged_values_file
        return {
            "rendered": len(report.rendered),
            "warnings": list(report.warnings),
            "merged_values": str(merged) if merged is not None else None,
        }

    outcome = isolated.run_isolated(
        "Jinja2 templating",
        render_in_child,
        deadline=ctx.deadline,
        memory=ctx.template_memory,
        max_file_size=ctx.max_input,
        child_setup=template_child_setup(ctx, work),
    )
    for warning in outcome["warnings"]:
        log.warning("%s", warning)
    took = time.monotonic() - started
    log.debug("Jinja2 rendered %d files in %.3f s", outcome["rendered"], took)
    ctx.deadline.check("Jinja2 templating")
    merged_values = outcome["merged_values"]
    if merged_values is None:
        return None
    path = Path(merged_values)
    if not path.is_relative_to(work):  # the child ran tenant code: trust no path it sends
        raise RenderError("Jinja2 templating reported a values file outside the work copy")
    return path


def template_child_setup(ctx: RenderContext, work: Path) -> Callable[[], None]:
    """What the Jinja2 child runs before rendering: it dies with the plugin.

    The hook for confining the child further (Landlock: read the work copy and the
    repository, write the work copy only).
    """
    del ctx, work
    return sandbox.child_setup(None, os.getpid())


def _template_environ(ctx: RenderContext) -> dict[str, str]:
    """Argo CD's variables and the application settings, as the templating stage reads them."""
    env = {k: v for k, v in ctx.environ.items() if k.startswith(("ARGOCD_APP_", "ARGOCD_ENV_"))}
    for key in ("KUBE_VERSION", "KUBE_API_VERSIONS"):
        if key in ctx.environ:
            env[key] = ctx.environ[key]
    return env


# ---------------------------------------------------------------------------------- kustomize


def _kustomize(
    app_dir: Path, scratch: Path, ctx: RenderContext, read: Path, root: Path
) -> RenderResult:
    """`kustomize build`, confined to reading `read` (the repository or its copy), after
    checking that no kustomization names a directory outside `root` (`kustomize.check_roots`).

    Network: TCP connect to the HTTP(S) ports (and the proxy's) only, for remote resources;
    unrestricted with `--enable-helm` (chart repositories listen on any port).
    """
    ctx.deadline.check("checking the Kustomize tree")
    roots = kustomize.kustomization_roots(app_dir, root)
    base = kustomize.kustomize_base_command(ctx.environ)
    with_helm = kustomize.enable_helm(ctx.environ)
    helm_bin = helm_binary(ctx.environ) if with_helm else ""
    env = child_environment(ctx.environ, helm_home_env(scratch / "home"))
    argv = kustomize.kustomize_command(base, Path("."), with_helm, helm_bin)
    confinement = ctx.confinement(
        read=[read],
        write=[scratch],
        programs=[base[0], helm_bin],
        connect_ports=None if with_helm else kustomize.remote_ports(ctx.environ),
    )
    done = run(
        argv,
        stage="kustomize build",
        cwd=app_dir,
        env=env,
        deadline=ctx.deadline,
        redactor=ctx.redactor,
        max_output=ctx.max_input,
        confinement=confinement,
        on_start=_announce(ctx, roots, []),
    )
    text = done.stdout.decode("utf-8", "replace")
    return RenderResult(
        [InputStream("kustomize build", text)],
        detect.KUSTOMIZE,
        strict=True,
        timings={"kustomize": done.seconds},
    )


# ---------------------------------------------------------------------------------- helm


def _helm(
    *,
    app_dir: Path,
    work: Path,
    repo_root: Path,
    scratch: Path,
    merged_values: Path | None,
    ctx: RenderContext,
    timings: dict[str, float],
) -> RenderResult:
    request = ctx.request
    helm_bin = helm_binary(ctx.environ)
    args = helm.parse_helm_args(request.helm_args)
    build_env = request.environment
    env = child_environment(ctx.environ, helm_home_env(scratch / "home"))

    # Every file Helm reads is a copy under a generated name or a memory file
    # (plugin.render.staging): Helm parses its path arguments again, so a tenant-chosen name
    # must never reach it.
    staging = Staging(scratch / "inputs", ctx.max_input)
    release = (
        helm.release_name(request.release_name, request.release_name_origin)
        if request.release_name
        else None
    )

    # Values, in order: Jinja2-merged values, values files, HELM_ARGS -f, inline values.
    values: list[StagedFile] = []
    if merged_values is not None:
        values.append(staging.copy_values(merged_values, "the Jinja2-merged values.yaml"))
    names = [*request.values_files, *args.values_files]
    value_paths: list[Path] = []
    for path, shown_as in helm.resolve_values_files(names, app_dir, repo_root, build_env, work):
        values.append(staging.copy_values(path, f"values file {shown_as}"))
        value_paths.append(path)
    set_files = [
        (key, staging.copy_set_file(path, f"--set-file {key}"))
        for key, path in helm.resolve_set_files(args.set_files, app_dir, repo_root)
    ]
    inline_data: list[tuple[str, dict[str, Any]]] = []
    for item in request.inline_values:
        inline_data.append((item.origin, helm.load_inline_values(item.text, item.origin)))

    # Dependencies, into the private copy.
    started = time.monotonic()
    cache = dependencies.ChartCache.from_environ(ctx.environ)
    dep_ctx = dependencies.DependencyContext(
        cache=cache,
        repositories=dependencies.load_repositories(ctx.environ),
        helm=helm_bin,
        helm_env=env,
        scratch=scratch,
        repo_root=repo_root,
        deadline=ctx.deadline,
        redactor=ctx.redactor,
        confinement=ctx.confinement(read=[scratch], write=[scratch], programs=[helm_bin]),
    )
    added = dependencies.ensure_dependencies(work, app_dir, dep_ctx)
    timings["dependencies"] = time.monotonic() - started
    if added:
        log.debug("dependencies added to charts/: %s", ", ".join(added))

    with staging:
        if ctx.reads is not None:
            values, inline_data = _resolve_values_phase(work, values, inline_data, staging, ctx)
        # Inline values (resolved or not) never touch the disk either.
        inline_texts = [dump(data) if data else "{}\n" for _, data in inline_data]
        values += [
            staging.in_memory(text, origin)
            for text, (origin, _) in zip(inline_texts, inline_data, strict=True)
        ]
        done = _helm_template(
            helm_bin=helm_bin,
            args=args,
            work=work,
            scratch=scratch,
            env=env,
            release=release,
            values=values,
            set_files=set_files,
            staging=staging,
            ctx=ctx,
            # Staged values first (they hold most placeholders), then the chart itself.
            on_start=_announce(
                ctx,
                [staging.directory, work],
                [*inline_texts, *request.helm_parameters.values()],
            )
            if ctx.reads is None
            else None,
        )
    timings["helm template"] = done.seconds
    text = done.stdout.decode("utf-8", "replace")
    if ctx.reads is None:
        sources = [merged_values, work / "values.yaml", *value_paths]
        _check_values_placeholders(sources, inline_data, request, text)
    return RenderResult(
        [InputStream("helm template", text)],
        detect.HELM,
        strict=True,
        timings=timings,
        fetched=list(cache.fetched),
    )


class ConsumedPlaceholdersError(RenderError):
    """Placeholders in Helm's values that Helm did not copy into its output as written.

    A Helm function consumed them (`b64enc`, `sha256sum`, `htpasswd`, `tpl`, `printf`…): the
    output holds something computed from the placeholder text, which no later substitution
    can repair. With RESOLVE_VALUES=auto the render is done again in two phases.
    """

    def __init__(self, placeholders: list[str]) -> None:
        self.placeholders = placeholders
        listed = ", ".join(placeholders[:5]) + (" …" if len(placeholders) > 5 else "")
        super().__init__(
            f"placeholders in the Helm values do not reach Helm's output as written (a Helm "
            f"function such as b64enc, sha256sum, htpasswd or tpl uses them): {listed}; set "
            "RESOLVE_VALUES=true or auto to resolve them before helm template (it is false)"
        )


def _check_values_placeholders(
    paths: Sequence[Path | None],
    inline: Sequence[tuple[str, dict[str, Any]]],
    request: AppRequest,
    output: str,
) -> None:
    """Raise ConsumedPlaceholdersError when a `<path:…>` of the values is not in `output`."""
    texts: list[str] = []
    for path in paths:
        if path is not None and path.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                texts.append(path.read_text(encoding="utf-8"))
    texts.extend(dump(data) for _, data in inline if data)
    texts.extend(request.helm_parameters.values())
    found: dict[str, None] = {}
    for text in texts:
        if "<path:" in text:
            for match in grammar.find(text, False):
                found.setdefault(match.text)
    consumed = [text for text in found if text not in output]
    if consumed:
        raise ConsumedPlaceholdersError(consumed)


def _helm_template(
    *,
    helm_bin: str,
    args: helm.HelmArgs,
    work: Path,
    scratch: Path,
    env: Mapping[str, str],
    release: helm.ReleaseName | None,
    values: list[StagedFile],
    set_files: list[tuple[str, StagedFile]],
    staging: Staging,
    ctx: RenderContext,
    on_start: Callable[[], None] | None = None,
) -> Completed:
    """`helm template` itself: flags in Argo CD's order, files only as staged copies and memory
    files, confined (no network: dependencies are already in the work copy; nothing from the
    repository: values files are staged copies in the scratch directory)."""
    request = ctx.request
    build_env = request.environment

    sets: list[tuple[str, str]] = helm.parameter_sets(request.helm_parameters, build_env)
    sets += args.sets
    include_crds = not request.skip_crds
    if args.include_crds is not None:
        include_crds = args.include_crds
    inputs = helm.TemplateInputs(
        release_name=release,
        namespace=request.namespace,
        kube_version=args.kube_version or request.kube_version,
        sets=sets,
        set_files=set_files,
        values_files=values,
        api_versions=helm.dedupe([*request.api_versions, *args.api_versions]),
        include_crds=include_crds,
        skip_tests=request.skip_tests or args.skip_tests,
    )
    argv = helm.template_command(helm_bin, inputs)
    confinement = ctx.confinement(
        read=[work], write=[scratch], programs=[helm_bin], connect_ports=[]
    )
    return run(
        argv,
        stage="helm template",
        cwd=work,
        env=env,
        deadline=ctx.deadline,
        redactor=ctx.redactor,
        max_output=ctx.max_input,
        confinement=confinement,
        pass_fds=staging.fds,
        # Secrets in the values: Helm's messages may echo parts of them, show locations only.
        withhold_messages=ctx.reads is not None and bool(ctx.reads.results),
        on_start=on_start,
    )


def _announce(ctx: RenderContext, roots: list[Path], texts: list[str]) -> Callable[[], None] | None:
    """What `run` calls once the renderer started: `ctx.renderer_started` with its inputs."""
    hook = ctx.renderer_started
    if hook is None:
        return None
    return lambda: hook(roots, texts)


def _resolve_values_phase(
    work: Path,
    values: list[StagedFile],
    inline: list[tuple[str, dict[str, Any]]],
    staging: Staging,
    ctx: RenderContext,
) -> tuple[list[StagedFile], list[tuple[str, dict[str, Any]]]]:
    """Phase one: resolve placeholders in the chart's values.yaml, in every values file and in
    inline values. The resolved documents live in memory files only: never on disk.

    The chart's own values.yaml stays as it is in the work copy (placeholders); its resolved
    form is given to Helm as the first `--values`, which overrides every key it sets.
    """
    assert ctx.reads is not None
    ctx.deadline.check("resolving secrets in values")
    chart_values = work / "values.yaml"
    candidates: list[tuple[str, Path, StagedFile | None]] = [
        ("values.yaml", chart_values, None),
        *((p.label, p.path, p) for p in values),
    ]
    targets: list[StagedFile | None] = []
    loaded: list[tuple[str, dict[str, Any]]] = []
    for name, path, staged in candidates:
        if not path.is_file():
            continue
        if ctx.max_input is not None and path.stat().st_size > ctx.max_input:
            raise RenderError(
                f"{name} is larger than {format_size(ctx.max_input)} ({MAX_INPUT_SETTING}); refused"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RenderError(f"{name} is not valid UTF-8") from None
        if not may_hold_placeholder(text):
            continue
        data = _load_values_file(text, name)
        if data is None:
            continue
        targets.append(staged)
        loaded.append((name, data))
    resolved = ctx.reads.resolve_values([*loaded, *inline])
    ctx.redactor.add(ctx.reads.secret_strings())
    first: list[StagedFile] = []
    replaced: dict[StagedFile, StagedFile] = {}
    for (name, _), staged, data in zip(loaded, targets, resolved, strict=False):
        if staged is None:
            first.append(staging.in_memory(dump(data), name))
        else:
            replaced[staged] = staging.in_memory(dump(data), staged.label)
    new_inline = [
        (origin, data) for (origin, _), data in zip(inline, resolved[len(targets) :], strict=True)
    ]
    return [*first, *(replaced.get(staged, staged) for staged in values)], new_inline


def _load_values_file(text: str, name: str) -> dict[str, Any] | None:
    import yaml

    try:
        data = load_one(text)
    except yaml.YAMLError:
        raise RenderError(f"{name} is not valid YAML") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise RenderError(f"{name} must hold a YAML mapping")
    return data
