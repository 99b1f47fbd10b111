"""Authentication to secret stores (one sub-package per store)."""
