"""The request from Argo CD: its environment, `ARGOCD_APP_PARAMETERS`, the parameter
announcement and discovery.

Owns turning what the cmp-server hands the plugin (contract §2) into a typed `AppRequest`.
May import: `plugin.errors`, `plugin.config`, `plugin.manifests`. Nothing here renders,
reads secrets or writes output.
"""
