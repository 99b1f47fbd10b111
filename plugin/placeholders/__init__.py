"""Placeholders: AVP's language, and replacing it in parsed manifests.

Owns the grammar (`grammar`, pure), modifiers (`modifiers`, pure), the Kubernetes JSONPath
dialect (`jsonpath`, pure), the `avp.kubernetes.io/*` annotations (`annotations`), read
planning and substitution (`substitute`) and the engine that runs parse -> plan -> fetch ->
substitute -> emit (`engine`).
May import: `plugin.secrets` (the `Backend` protocol and `fetch`), `plugin.security`,
`plugin.manifests`, `plugin.config`, `plugin.errors`. Never `render`, `argocd` or `cli`.
"""
