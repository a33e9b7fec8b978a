"""Stdlib-only programs shipped to nodes (stage runner, node probe)."""
