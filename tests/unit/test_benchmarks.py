"""benchmarks/ keeps up with harness/: every harness name a benchmark imports (lazy imports
too) exists, and every step bench_skeleton's traced runs wrap is there to wrap. The
benchmarks themselves need root and real sensors; this runs none of them."""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def harness_imports() -> Iterator[tuple[str, int, str, str | None]]:
    """(file, line, module, name or None) of every ``harness`` import in benchmarks/."""
    for file in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
                for alias in node.names:
                    yield file.name, node.lineno, node.module or "", alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("harness"):
                        yield file.name, node.lineno, alias.name, None


def test_every_harness_name_a_benchmark_imports_exists() -> None:
    missing = []
    for file, line, module, name in harness_imports():
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"benchmarks/{file}:{line}: {module}: {exc}")
            continue
        if name is not None and name not in vars(mod):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"benchmarks/{file}:{line}: {module} has no {name}")
    assert not missing, "benchmarks import names harness no longer has (fix the import):\n" \
        + "\n".join(missing)


@pytest.fixture
def on_path() -> Iterator[None]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.usefixtures("on_path")
def test_every_step_the_traced_runs_wrap_exists() -> None:
    trace = importlib.import_module("skeleton_trace")
    steps = trace.instrumented()
    missing = [f"{getattr(owner, '__name__', owner)}.{attr}" for owner, attr, _ in steps
               if not callable(vars(owner).get(attr) if isinstance(owner, type(sys)) else
                               getattr(owner, attr, None))]
    assert len(steps) > 10
    assert not missing, f"benchmarks/skeleton_trace.py wraps what harness no longer has: {missing}"
