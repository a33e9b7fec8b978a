#!/usr/bin/env bash
# The newest allowed dependencies: users install shadowtest unpinned, so a separate CI job
# (ci/pipelines/*-newest-deps.yml, nightly and on pull requests) runs the tests against the
# newest versions pyproject.toml allows, in a virtualenv of its own (.venv-newest), while
# `bash ci/test.sh` (and .ci/run) installs the locked versions of ci/constraints.txt.
#
#   bash ci/test-newest.sh            # unit and plugin tests (attack nothing; ~2 min)
#   bash ci/test-newest.sh --all      # the whole suite, as ci/test.sh runs it (root)
#
# When it fails while ci/test.sh passes, a new upstream release broke shadowtest: fix the
# code (or cap the version in pyproject.toml), then refresh the lock: bash ci/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
all=0
if [ "${1:-}" = "--all" ]; then all=1; shift; fi
bash ci/setup.sh --system-only
venv=.venv-newest
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade \
  --upgrade-strategy eager -e '.[test]'
"$venv/bin/python" -m pip list --format=freeze > "$venv/versions.txt"
echo "ci/test-newest.sh: testing against $(wc -l < "$venv/versions.txt") packages, newest allowed:"
grep -iE '^(pytest|pytest-xdist|msgspec|pyyaml|jsonschema|aiohttp|httpx|duckdb|numpy|pyarrow|docker|kubernetes|rich|allure-pytest)==' \
  "$venv/versions.txt" | tr '\n' ' '; echo
"$venv/bin/ruff" check harness tests benchmarks conftest.py
"$venv/bin/mypy"
if [ "$all" = 1 ]; then
  exec "$venv/bin/python" -m pytest --run-node -p no:cacheprovider "$@"
fi
exec "$venv/bin/python" -m pytest tests/unit tests/plugin -p no:cacheprovider -n 2 "$@"
