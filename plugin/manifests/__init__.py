"""Manifest text and documents: input streams, document splitting, YAML reading and writing.

Owns `inputs` (named text streams and size budgets), `reader` (find files, split streams,
decide which documents need parsing), `goresolve` (go-yaml v2's scalar typing), `yamlio`
(libyaml reading typed like Go, dumping), `fastyaml` (the fast block writer for plain
manifests) and `splice` (a document's parser events without constructing it, and new scalar
values written into its own text).
May import: `plugin.errors` only. It knows nothing of secrets, settings or renderers.
"""
