"""HashiCorp Vault and OpenBao: everything the plugin knows about them lives here.

`backend` (KV v1/v2 reads with hvac, mount detection, retries), `tls` (`VAULT_*` TLS
settings), `token_cache` (private per-identity token cache) and `auth/` (one file per
`AVP_AUTH_TYPE`). May import what `plugin.secrets` may import.
"""
