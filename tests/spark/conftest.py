"""Tests marked ``spark`` start a local pyspark (Java 17): slow (~30 s), run in CI."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "spark: starts pyspark local[1] (needs java); runs in CI")
