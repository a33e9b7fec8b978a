#!/usr/bin/env bash
# Refresh ci/constraints.txt, the lock that ci/setup.sh installs from: resolve the newest
# versions pyproject.toml allows (with every extra the tests use) in a scratch virtualenv
# and freeze them. Run it, then `bash ci/test.sh`, and commit the new lock when green.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --disable-pip-version-check '.[test]'
{
  echo "# The lock ci/setup.sh installs from (pip -c): every package of shadowtest[test],"
  echo "# resolved by ci/lock.sh on $(date -u +%F) with Python $("$scratch/venv/bin/python" -c 'import platform; print(platform.python_version())')."
  echo "# Users install unpinned: ci/test-newest.sh tests the newest allowed versions."
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^shadowtest' | sort -f
} > ci/constraints.txt
echo "ci/lock.sh: wrote ci/constraints.txt ($(grep -vc '^#' ci/constraints.txt) packages)"
