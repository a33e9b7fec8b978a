#!/usr/bin/env bash
# The main job: install what is needed, then run the bundled scenarios against this node
# with the two embedded sensors (auditd, bpftrace) and print the verdict table.
# Exit code: shadowtest run's (0 = every verdict passed; see README "Exit codes").
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
exec .venv/bin/shadowtest run --results "${SHADOWTEST_RESULTS:-results.jsonl}" "$@"
