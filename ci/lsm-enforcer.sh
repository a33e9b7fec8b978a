#!/usr/bin/env bash
# Builds the shadowtest LSM enforcer (sensor type "lsm"): the CO-RE BPF object and its
# libbpf loader, from harness/sensors/lsm/ (and libbpf/emit.h). See ci/bpf-build.sh.
#
#   bash ci/lsm-enforcer.sh [CACHE_DIR]      # default /var/cache/shadowtest/lsm
exec bash "$(dirname "$0")/bpf-build.sh" lsm "$@"
