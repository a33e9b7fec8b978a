#!/usr/bin/env bash
# The whole test suite: install what is needed, lint and type-check, then run every test,
# including the ones that attack this node with the real daemons, boot the kernel-matrix
# VMs and start the project's dockerd (--run-node, root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
bash ci/vm-image.sh          # the kernel-matrix VM image (cached: a no-op once built)
.venv/bin/ruff check harness tests benchmarks conftest.py
.venv/bin/mypy
# the architecture (ARCHITECTURE.md): layers, cycles, private names, sizes; fails in seconds
.venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_architecture.py
# the ssh:// host-key test's sshd (ci/setup.sh unpacks it when the machine has none)
[ -x /usr/sbin/sshd ] || export SHADOWTEST_SSHD=/var/cache/shadowtest/sshd/usr/sbin/sshd
run() {  # pytest, failing on "no test collected" (exit 5) too
  local rc=0
  .venv/bin/python -m pytest --run-node -p no:cacheprovider "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "ci/test.sh: pytest collected no tests (exit 5): failing" >&2
    rc=1
  fi
  return "$rc"
}
if [ $# -gt 0 ]; then  # the caller chose what to run
  run "$@"
  exit
fi
# The tests that attack nothing run on both cores (pytest-xdist); the ones that attack this
# node, boot VMs or start dockerd run one at a time (they share one auditd and the CPUs).
rc=0
run -n 2 tests/unit tests/plugin tests/bridges tests/spark || rc=$?
run tests/e2e || rc=$?
exit "$rc"
