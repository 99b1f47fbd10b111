"""`plugin serve`: a warm zygote in the sidecar, and the thin client in front of every command.

Argo CD starts a new `plugin` process for every render, and most of its cost on an ordinary
application used to be Python importing the plugin (hvac, requests, PyYAML, Jinja2...).
The zygote (`server`) imports everything once, then forks one child per request; the console
script (`client`) only imports cheap standard-library modules, hands its argv, environment,
working directory and stdin/stdout/stderr to the zygote over a private unix socket, and exits
with the child's status. The child runs exactly the in-process code (`plugin.cli.main`), so a
render through the zygote prints the same bytes and exits with the same status as one without.

Whenever the zygote cannot serve (not running, stale socket, other version or UID, protocol
error), the client renders in its own process as before: the zygote is only ever faster.

This package sits at the level of `plugin.cli` in the import order (it may import every
stage); only the command line imports it.
"""
