#!/usr/bin/env bash
# The project's own dockerd (never the system's) and its offline base image.
#
#   ci/dockerd.sh start  [STATE_DIR]   start it (idempotent); prints the socket url
#   ci/dockerd.sh stop   [STATE_DIR]   stop it by its pidfile's pid; unmount leftovers
#   ci/dockerd.sh status [STATE_DIR]   exit 0 when it runs and answers, 3 when not
#   ci/dockerd.sh image  [STATE_DIR]   start it, then build/import shadowtest/base:bookworm
#
# STATE_DIR (default /run/shadowtest/dockerd) holds docker.sock, dockerd.pid, dockerd.log
# and the exec root; images live in /var/lib/shadowtest/docker (kept across runs) and the
# debootstrap rootfs tarball in /var/cache/shadowtest. One implementation: harness/nodes/dockerd.py.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || { bash ci/setup.sh >&2; }
exec "$py" -m harness.nodes.dockerd "$@"
