#!/usr/bin/env bash
# Installs what shadowtest needs on a fresh Debian 12 machine (root): the two embedded
# sensors' daemons (auditd, bpftrace), util-linux tools, and a virtualenv in .venv with
# shadowtest and its test tools. Idempotent: re-running installs nothing twice.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v auditctl >/dev/null 2>&1 || need+=(auditd)
command -v bpftrace >/dev/null 2>&1 || need+=(bpftrace)
command -v unshare  >/dev/null 2>&1 || need+=(util-linux)
command -v ps       >/dev/null 2>&1 || need+=(procps)
command -v java     >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)  # parity --engine spark (tests/spark)
[ -x /usr/bin/chromium ]              || need+=(chromium)   # the HTML report's browser test
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# kernel filesystems the sensors and node facts read (a fresh machine mounts neither)
mountpoint -q /sys/kernel/tracing  || mount -t tracefs none /sys/kernel/tracing || true
mountpoint -q /sys/kernel/security || mount -t securityfs none /sys/kernel/security || true

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.shadowtest-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
