"""The plugin's markers and collection, through pytester (no attack: no scenario runs)."""

from __future__ import annotations

import os

import pytest
import yaml

from harness.builtin import BUILTIN

# in-process runs: the plugin is imported already, which pytest may warn about
QUIET = ("--shadowtest", "-W", "ignore::pytest.PytestAssertRewriteWarning")
CONFIG = """
[tool.shadowtest]
allowed_nodes = ["local"]
[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"
"""


def test_shadowtest_kernel_marker_skips_users_test_at_setup(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", shadowtest=CONFIG)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.shadowtest_kernel(">=999.0")
        def test_future_kernel():
            pass

        @pytest.mark.shadowtest_kernel(">=2.6")
        def test_any_kernel():
            pass
    """)
    result = pytester.runpytest("-rs", "--strict-markers", *QUIET)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([f"*kernel {os.uname().release} on local does not satisfy >=999.0*"])


def test_shadowtest_requires_unknown_feature_skips_with_reason(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", shadowtest=CONFIG)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.shadowtest_requires("no_such_feature")
        def test_needs_feature():
            pass
    """)
    result = pytester.runpytest("-rs", *QUIET)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no_such_feature not usable on local*"])


def test_collection_is_deterministic_and_offline(pytester: pytest.Pytester) -> None:
    """Collect-only the bundled catalogue twice: same ids, same order, nothing run."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ("--collect-only", "-q", "-p", "no:cacheprovider", *QUIET,
            str(BUILTIN / "scenarios"), "--shadowtest-config",
            os.path.join(repo, "pyproject.toml"))
    first = pytester.runpytest(*args)
    second = pytester.runpytest(*args)
    ids = [ln for ln in first.outlines if "::" in ln]
    assert ids == [ln for ln in second.outlines if "::" in ln]
    assert "scenarios/privilege-escalation/ptrace-pid1.yaml::ptrace-pid1[namespace-local]" in "\n".join(ids)
    expected = sum(len(yaml.safe_load(p.read_text())["contexts"])
                   for p in (BUILTIN / "scenarios").rglob("*.yaml"))
    assert len(ids) == expected
