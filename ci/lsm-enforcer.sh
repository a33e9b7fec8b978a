#!/usr/bin/env bash
# Builds the shadowtest LSM enforcer (sensor type "lsm"): the CO-RE BPF object and its
# libbpf loader, from harness/sensors/lsm/{enforcer.bpf.c,enforcer.c,enforcer.h}.
#
#   bash ci/lsm-enforcer.sh [CACHE_DIR]      # default /var/cache/shadowtest/lsm
#
# Prints the artefacts' directory (CACHE_DIR/<inputs hash>) as its only stdout line:
#   enforcer.bpf.o     clang -O2 -g -target bpf, DWARF stripped (BTF kept: CO-RE)
#   shadowtest-lsm     gcc, dynamically linked against libbpf.so.1 (Debian bookworm's
#                      libbpf1; the VM image has it as bpftrace's dependency)
#   build.json         {inputs_sha256, seconds, clang, ...}; written LAST
#
# Idempotent: the directory is keyed by the hash of this script and both sources; when
# build.json is there, nothing is done. vmlinux.h comes from this machine's kernel BTF
# (/sys/kernel/btf/vmlinux): CO-RE relocates every field access on the node's kernel, so
# one object serves 6.1, 6.12 and newer. Installs clang, llvm, libbpf-dev, bpftool,
# libelf-dev, gcc with apt when missing (root; run `apt-get update` first on a fresh
# machine, or set SHADOWTEST_APT_UPDATE=1). One build per CACHE_DIR at a time (flock).
set -euo pipefail

CACHE_DIR=${1:-/var/cache/shadowtest/lsm}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SRC=$HERE/harness/sensors/lsm
SELF=$(readlink -f "$0")
log() { printf '%s lsm-enforcer: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for f in enforcer.bpf.c enforcer.c enforcer.h; do
  [ -f "$SRC/$f" ] || die "$SRC/$f not found (run this script from a shadowtest checkout)"
done
inputs_sha256=$(cat "$SELF" "$SRC/enforcer.bpf.c" "$SRC/enforcer.c" "$SRC/enforcer.h" | sha256sum | cut -d' ' -f1)
OUT=$CACHE_DIR/${inputs_sha256:0:16}
if [ -f "$OUT/build.json" ]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
flock 9
if [ -f "$OUT/build.json" ]; then  # another build finished while we waited
  echo "$OUT"
  exit 0
fi
t0=$(date +%s.%N)

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v llvm-strip >/dev/null 2>&1 || need+=(llvm)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
[ -x /usr/sbin/bpftool ] || command -v bpftool >/dev/null 2>&1 || need+=(bpftool)
[ -f /usr/include/bpf/libbpf.h ] || need+=(libbpf-dev)
[ -f /usr/include/libelf.h ] || need+=(libelf-dev)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing build tools (${need[*]}); install them: apt-get install -y ${need[*]}"
  log "installing build tools: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  [ -z "${SHADOWTEST_APT_UPDATE:-}" ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 \
    || die "apt-get install ${need[*]} failed (run apt-get update first?)"
fi
BPFTOOL=$(command -v bpftool || echo /usr/sbin/bpftool)
[ -r /sys/kernel/btf/vmlinux ] || die "/sys/kernel/btf/vmlinux missing: vmlinux.h is generated from this machine's kernel BTF"

BUILD=$CACHE_DIR/.build.$$
rm -rf "$BUILD"
mkdir -p "$BUILD"
trap 'rm -rf "$BUILD"' EXIT
"$BPFTOOL" btf dump file /sys/kernel/btf/vmlinux format c >"$BUILD/vmlinux.h"
clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I"$BUILD" -Wall -Werror \
  -c "$SRC/enforcer.bpf.c" -o "$BUILD/enforcer.full.o"
llvm-strip -g "$BUILD/enforcer.full.o" -o "$BUILD/enforcer.bpf.o"  # DWARF out, .BTF stays
gcc -O2 -Wall -Wextra -Werror -o "$BUILD/shadowtest-lsm" "$SRC/enforcer.c" -lbpf
strip "$BUILD/shadowtest-lsm"
seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
cat >"$BUILD/build.json" <<EOF
{"inputs_sha256": "$inputs_sha256", "seconds": $seconds, "clang": "$(clang --version | head -n 1)", "btf_from": "$(uname -r)", "libbpf": "$(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null || true)"}
EOF
rm -rf "$OUT"
mkdir -p "$OUT"
mv "$BUILD/enforcer.bpf.o" "$BUILD/shadowtest-lsm" "$OUT/"
mv "$BUILD/build.json" "$OUT/build.json"
log "built $OUT in ${seconds} s"
echo "$OUT"
