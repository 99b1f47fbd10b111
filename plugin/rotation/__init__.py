"""Secret rotation: what each Application read at its last render, so a change can reach it.

`index` records, after every successful `plugin generate`, which secret references an
Application resolved (backend, address, path, pinned version, KV version, the version read, a
keyed fingerprint of what was read; never a value) in the sidecar's cache volume; `refs`
answers "which applications use this path?" from that index; `poll` checks one record against
the store (with the identity and tenant policy of its render) for a secret that changed since.
`watch` is `plugin watch`: the loop that polls the records through `poll` and asks Argo CD for
a hard refresh of each Application whose secrets changed (leader only, rate-limited, one
request per render); `metrics` serves its /metrics and /healthz and writes its JSON logs (see
docs/rotation.md).

`kube` is the watcher's minimal Kubernetes API client (in-cluster service account: the
hard-refresh merge patch of an Application, Lease get/create/update); `lease` is leader election
on a Lease with client-go's semantics, so one watcher of several replicas acts.

Layer: above `render` (it wraps the backend factory the renderers use), below `serve` and `cli`.
"""
