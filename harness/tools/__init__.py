"""Offline tools: ART import, catalogue, coverage, expectations check, scaffold."""
