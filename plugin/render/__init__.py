"""Templating core: Jinja2 pre-rendering of app directories and values-fragment merging."""
