"""Targets: where atomics run (local host, namespaced container context, ...)."""
