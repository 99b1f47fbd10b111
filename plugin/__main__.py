"""The `plugin` console script and `python -m plugin`: the zygote when it serves, else in-process.

Everything imported before the decision is cheap (`plugin.serve.client`: os, sys and the C
modules `_socket` and `_signal`). When the zygote takes the request this process only waits
for its exit status; when it cannot (none running, stale socket, other version or UID,
protocol error, `PLUGIN_SERVE=off`) the command runs here through `plugin.cli`, exactly as
before the zygote existed, with one line on stderr under `--verbose` saying why.
"""

import os
import sys

from plugin.serve import client


def main() -> int:
    """Console-script entry: the zygote when it can serve, this process otherwise."""
    argv = sys.argv[1:]
    environ = os.environ
    wanted = environ.get("PLUGIN_SERVE", "").strip().lower() not in client.OFF
    if wanted and not (argv and argv[0] == "serve"):
        try:
            return client.run_in_zygote(argv, environ)
        except client.UnavailableError as exc:
            if client.verbose(argv):
                os.write(2, f"plugin: serve: {exc}; rendering in this process\n".encode())
    from plugin.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
