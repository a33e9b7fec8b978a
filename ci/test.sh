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
# the ssh:// host-key test's sshd (ci/setup.sh unpacks it when the machine has none)
[ -x /usr/sbin/sshd ] || export SHADOWTEST_SSHD=/var/cache/shadowtest/sshd/usr/sbin/sshd
set +e
.venv/bin/python -m pytest --run-node -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "ci/test.sh: pytest collected no tests (exit 5): failing" >&2
  exit 1
fi
exit "$rc"
