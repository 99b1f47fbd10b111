"""Cross-cutting protections: tenant policy and redaction.

Owns `policy` (which Argo CD project may read which paths, as which Vault identity; checked
before any read) and `redact` (every secret value seen by a run, in every spelling, kept out
of stderr, logs and exceptions).
May import: `plugin.config`, `plugin.manifests`, `plugin.errors`.
"""
