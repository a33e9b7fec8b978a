#!/usr/bin/env bash
# Installs what shadowtest needs on a fresh Debian 12 machine (root): the two embedded
# sensors' daemons (auditd, bpftrace), util-linux tools, and a virtualenv in .venv with
# shadowtest and its test tools at the locked versions of ci/constraints.txt (refreshed by
# ci/lock.sh; ci/test-newest.sh tests the newest allowed ones). Idempotent: re-running
# installs nothing twice.
#
#   bash ci/setup.sh                 # system packages, kernel file systems, .venv
#   bash ci/setup.sh --system-only   # system packages and kernel file systems only
set -euo pipefail
cd "$(dirname "$0")/.."
system_only=0
[ "${1:-}" = "--system-only" ] && system_only=1

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

# an sshd binary for the ssh:// host-key test (tests/unit/test_ssh_target.py), unpacked from
# Debian's package into the cache and never started as a service (installing the package
# would start sshd on port 22 of every interface)
sshd_dir=/var/cache/shadowtest/sshd
if [ ! -x "$sshd_dir/usr/sbin/sshd" ] && [ ! -x /usr/sbin/sshd ]; then
  mkdir -p "$sshd_dir/.deb"
  ( cd "$sshd_dir/.deb" && { apt-get download openssh-server 2>/dev/null \
      || { apt-get update -qq && apt-get download openssh-server; }; } ) >/dev/null
  dpkg-deb -x "$sshd_dir"/.deb/openssh-server_*.deb "$sshd_dir"
  rm -rf "$sshd_dir/.deb"
fi

# kernel filesystems the sensors and node facts read (a fresh machine mounts neither)
mountpoint -q /sys/kernel/tracing  || mount -t tracefs none /sys/kernel/tracing || true
mountpoint -q /sys/kernel/security || mount -t securityfs none /sys/kernel/security || true

[ "$system_only" = 1 ] && exit 0

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.shadowtest-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ ci/constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -c ci/constraints.txt -e '.[test]'
  touch "$stamp"
fi
