"""Secret stores, one module per store behind the small `Backend` protocol (`base`).

Owns the protocol and `SecretRef`/`SecretData` (`base`), picking the store named by
`AVP_TYPE` (`registry`), concurrent reads under the deadline (`fetch`), the file backend
(`file`) and Vault/OpenBao (`vault/`: client, TLS, token cache, one file per auth method).
May import: `plugin.security`, `plugin.manifests` (YAML reading), `plugin.config`,
`plugin.errors`. Never the placeholder engine or anything above it.
"""
