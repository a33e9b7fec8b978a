#!/usr/bin/env bash
# One job of the kernel matrix: run the bundled scenarios with auditd and the bundled
# bpftrace sensor on one kernel image and write results-<kernel>.jsonl.
#
#   bash ci/kernel-job.sh host      # this machine's kernel
#   bash ci/kernel-job.sh 6.1       # a QEMU VM with Debian's 6.1 kernel (image cached)
#   bash ci/kernel-job.sh 6.12
#   bash ci/kernel-job.sh enforce-host   # the enforcement scenarios under the bpftrace kill policy
#   bash ci/kernel-job.sh enforce-6.1    # ... under the BPF LSM deny enforcer (enforce-6.12 too)
#
# Extra arguments go to `shadowtest run` (e.g. -- -k ptrace). Exit code: shadowtest run's.
# Merge the jobs' results with `shadowtest report results-*.jsonl` (see ci/pipelines/).
set -euo pipefail
cd "$(dirname "$0")/.."
kernel="${1:?usage: ci/kernel-job.sh host|6.1|6.12|enforce-host|enforce-6.1|enforce-6.12 [shadowtest run args]}"
shift
config="ci/kernels/${kernel}.toml"
[ -f "$config" ] || { echo "ci/kernel-job.sh: no kernel image '$kernel' (ci/kernels/*.toml)" >&2; exit 2; }
bash ci/setup.sh
case "$kernel" in
  host|*-host) ;;
  *) bash ci/vm-image.sh ;;
esac
out="${SHADOWTEST_RESULTS_DIR:-.}/results-${kernel}.jsonl"
rm -f "$out"
exec .venv/bin/shadowtest run --config "$config" --results "$out" "$@"
