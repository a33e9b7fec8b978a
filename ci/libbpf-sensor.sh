#!/usr/bin/env bash
# Builds the compiled reference sensor (sensor type "libbpf"): sensor.bpf.o (generated from
# the rule table) and its libbpf loader shadowtest-sensor. See ci/bpf-build.sh.
#
#   bash ci/libbpf-sensor.sh [CACHE_DIR]     # default /var/cache/shadowtest/libbpf
exec bash "$(dirname "$0")/bpf-build.sh" sensor "$@"
