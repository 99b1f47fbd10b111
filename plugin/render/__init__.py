"""Source -> manifest text: what `plugin generate DIR` runs before placeholders.

Owns source detection (`detect`), the render pipeline (`pipeline`), `helm template` as Argo CD
runs it (`helm`), chart dependencies and their caches (`dependencies`, `semver`), Kustomize
(`kustomize`), plain directories (`plain`), child processes under the render deadline
(`process`) and two-phase secrets in Helm values (`values_secrets`).
May import every lower package: `argocd` (the request), `templating`, `placeholders`,
`secrets`, `security`, `manifests`, `config`, `errors`. Only `plugin.cli` imports it.
"""
