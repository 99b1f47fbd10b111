"""The `plugin` launcher of the image: the console script without `site` and without `import re`.

Argo CD starts one `plugin` process per render, so what the interpreter does before the client
runs is paid on every request. The console script pip writes starts the interpreter normally
(the `site` module: site-packages, `.pth` files, user site) and its first line is `import re`
(distlib's template; `re` loads `enum`, together about 12 ms on the benchmark machine). Of the
51 ms of a one-ConfigMap render through the zygote, about 20 ms was that prologue.

`python -m plugin.serve.launcher PATH` writes, in its place, a script that the interpreter
running the command executes with `-IS` (the one argument a Linux shebang may carry). It
appends to the interpreter's own `sys.path` exactly the directories the plugin and its
dependencies were installed in, computed now (the plugin package's parent, and the
installation scheme's purelib and platlib), and calls the console script's entry point
(`ENTRY`). They go after the standard library, where `site` would put them, so that no
distribution can shadow a standard module. The file is replaced atomically, mode 0755.

Why isolated mode (-I, which implies -E, -s and -P) suits a sidecar that renders for tenants:
the interpreter reads no `PYTHON*` variable (PYTHONPATH, PYTHONHOME, PYTHONSTARTUP,
PYTHONWARNINGS, PYTHONBREAKPOINT...), no user site-packages under `$HOME` (a writable emptyDir
in the sidecar, so a file left there must never become code), and puts neither the working
directory (a tenant's checkout) nor the script's directory on `sys.path`. What is imported is
fixed when the image is built, whatever the environment of a request holds. The cost: the
image's PYTHONDONTWRITEBYTECODE and PYTHONUNBUFFERED no longer apply to `plugin`; pip compiled
the bytecode at install time and the image's files are not writable at run time anyway, and
the plugin flushes its output itself (`serve --exec` flushes before it execs; a render writes
its output once, at the end).

A command (`python -m ...`), not a `plugin` subcommand: the interpreter written into the
shebang is then, visibly, the one that runs the command, never the one of an older script or
of a running zygote (which would take a `plugin` subcommand), and writing the file needs
nothing but the standard library.

`reexec_argv` serves the same purpose for the zygote's replacement of itself (`server`): a
process started with `-IS` must start its successor with the same flags and the same
`sys.path`, since `python -m plugin` would find nothing without `site`.
"""

import os
import sys

TYPE_CHECKING = False  # typing is not imported: the zygote and the writer only need os and sys
if TYPE_CHECKING:
    from collections.abc import Sequence

#: The console script's entry point (`[project.scripts]` of pyproject.toml).
ENTRY = "plugin.__main__:main"
#: The interpreter's flags in the shebang: isolated mode, no `site`.
SHEBANG_FLAGS = "-IS"
#: Kernels before 5.1 cut a shebang line at 127 bytes, silently: the flags would be lost.
MAX_SHEBANG_BYTES = 127


class LauncherError(Exception):
    """The launcher cannot be written (the message says why)."""


def install_paths() -> list[str]:
    """Where the plugin and its dependencies were installed, for the interpreter running now."""
    import sysconfig

    import plugin

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(plugin.__file__ or "")))
    scheme = sysconfig.get_paths()
    return _unique([package_parent, scheme["purelib"], scheme["platlib"]])


def _unique(paths: "Sequence[str]") -> list[str]:
    found: list[str] = []
    for path in paths:
        if path and path not in found:
            found.append(path)
    return found


def _call_entry() -> str:
    module, function = ENTRY.split(":")
    return f"from {module} import {function}\nsys.exit({function}())\n"


def script(executable: str, paths: "Sequence[str]") -> str:
    """The launcher's text: shebang, the install paths, the entry point (no other import)."""
    shebang = f"#!{executable} {SHEBANG_FLAGS}"
    if not os.path.isabs(executable) or any(char.isspace() for char in executable):
        raise LauncherError(f"the interpreter {executable!r} cannot be named in a shebang")
    if len(os.fsencode(shebang)) > MAX_SHEBANG_BYTES:
        raise LauncherError(f"the shebang would be longer than {MAX_SHEBANG_BYTES} bytes")
    if not all(os.path.isabs(path) for path in paths):
        raise LauncherError(f"install paths must be absolute: {list(paths)!r}")
    from plugin import __version__

    return (
        f"{shebang}\n"
        f"# argocd-secrets-plugin {__version__}: `plugin` without `site` and without `import re`.\n"
        "# Written by `python -m plugin.serve.launcher PATH` (plugin/serve/launcher.py).\n"
        "import sys\n"
        f"sys.path += {list(paths)!r}\n"
        f"{_call_entry()}"
    )


def write(target: str) -> None:
    """Write the launcher for this interpreter at `target`: atomically, mode 0755."""
    from plugin import atomicfile

    atomicfile.write(target, script(sys.executable, install_paths()).encode("utf-8"), mode=0o755)


def interpreter_options() -> list[str]:
    """The command-line flags this interpreter runs with that decide what it imports."""
    flags = sys.flags
    options: list[str] = []
    if flags.isolated:
        options.append("-I")
    else:
        options += ["-E"] if flags.ignore_environment else []
        options += ["-s"] if flags.no_user_site else []
        options += ["-P"] if flags.safe_path else []
    options += ["-S"] if flags.no_site else []
    options += ["-B"] if flags.dont_write_bytecode else []
    options += ["-O"] * flags.optimize
    return options


def reexec_argv(arguments: "Sequence[str]") -> list[str]:
    """argv of a new interpreter running `plugin ARGUMENTS` with this process's flags and path.

    `-c` with this exact `sys.path` (not `-m plugin`, which needs `site` to find the package
    and would put the working directory first): the successor imports what this process did.
    """
    code = f"import sys\nsys.path[:] = {list(sys.path)!r}\n{_call_entry()}"
    return [sys.executable, *interpreter_options(), "-c", code, *arguments]


def main(argv: "Sequence[str] | None" = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m plugin.serve.launcher",
        description="Write the fast `plugin` launcher for this interpreter at PATH "
        "(replacing the console script pip wrote there).",
    )
    parser.add_argument("path", help="where to write it, e.g. /usr/local/bin/plugin")
    args = parser.parse_args(argv)
    try:
        write(args.path)
    except (LauncherError, OSError) as exc:
        sys.stderr.write(f"plugin launcher: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
