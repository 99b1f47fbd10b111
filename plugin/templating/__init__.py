"""The Jinja2 stage: multi-cluster pre-rendering of an application directory.

Owns the sandboxed Ansible-like environment (`environment`), the values-fragment merge
rules (`merge`, pure) and app-directory rendering with its context files (`appdir`).
May import: `plugin.errors`, `plugin.config`, `plugin.manifests` (YAML I/O). It never runs
helm or kustomize and never reads secrets: its output is a directory the `render` stage takes.
"""
