"""Argo CD config management plugin: render a Git directory, then resolve Vault placeholders."""

__version__ = "0.1.0"
