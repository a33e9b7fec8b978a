#!/usr/bin/env bash
# Builds one of shadowtest's CO-RE BPF objects and its libbpf loader:
#
#   bash ci/bpf-build.sh lsm    [CACHE_DIR]   # the LSM enforcer (sensor type "lsm")
#                                             #   default /var/cache/shadowtest/lsm
#   bash ci/bpf-build.sh sensor [CACHE_DIR]   # the compiled reference sensor (type "libbpf")
#                                             #   default /var/cache/shadowtest/libbpf
# (ci/lsm-enforcer.sh and ci/libbpf-sensor.sh are these two.)
#
# Prints the artefacts' directory (CACHE_DIR/<inputs hash>) as its only stdout line:
#   <object>.bpf.o     clang -O2 -g -target bpf, DWARF stripped (BTF kept: CO-RE)
#   <loader>           gcc, dynamically linked against libbpf.so.1 (Debian bookworm's
#                      libbpf1; the VM image has it as bpftrace's dependency)
#   build.json         {inputs_sha256, seconds, clang, ...}; written LAST
#
# Idempotent: the directory is keyed by the hash of this script and every source; when
# build.json is there, nothing is done. vmlinux.h comes from this machine's kernel BTF
# (/sys/kernel/btf/vmlinux): CO-RE relocates every field access on the node's kernel, so
# one object serves 6.1, 6.12 and newer. Installs clang, llvm, libbpf-dev, bpftool,
# libelf-dev, gcc with apt when missing (root; run `apt-get update` first on a fresh
# machine, or set SHADOWTEST_APT_UPDATE=1). One build per CACHE_DIR at a time (flock).
set -euo pipefail

KIND=${1:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SELF=$(readlink -f "$0")
SENSORS=$HERE/harness/sensors
case "$KIND" in
  lsm)
    CACHE_DIR=${2:-/var/cache/shadowtest/lsm}
    SRC=$SENSORS/lsm; BPF_C=enforcer.bpf.c; LOADER_C=enforcer.c
    OBJECT=enforcer.bpf.o; LOADER=shadowtest-lsm
    INPUTS=("$SRC/enforcer.bpf.c" "$SRC/enforcer.c" "$SRC/enforcer.h" "$SENSORS/libbpf/emit.h") ;;
  sensor)
    CACHE_DIR=${2:-/var/cache/shadowtest/libbpf}
    SRC=$SENSORS/libbpf; BPF_C=sensor.bpf.c; LOADER_C=loader.c
    OBJECT=sensor.bpf.o; LOADER=shadowtest-sensor
    INPUTS=("$SRC/sensor.bpf.c" "$SRC/prelude.bpf.h" "$SRC/event.h" "$SRC/rules.h"
            "$SRC/emit.h" "$SRC/loader.c") ;;
  *)
    echo "usage: bash ci/bpf-build.sh lsm|sensor [CACHE_DIR]" >&2
    exit 64 ;;
esac
log() { printf '%s bpf-build %s: %s\n' "$(date +%H:%M:%S)" "$KIND" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for f in "${INPUTS[@]}"; do
  [ -f "$f" ] || die "$f not found (run this script from a shadowtest checkout)"
done
inputs_sha256=$(cat "$SELF" "${INPUTS[@]}" | sha256sum | cut -d' ' -f1)
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
clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I"$BUILD" -I"$SRC" -I"$SENSORS/libbpf" -Wall -Werror \
  -c "$SRC/$BPF_C" -o "$BUILD/object.full.o"
llvm-strip -g "$BUILD/object.full.o" -o "$BUILD/$OBJECT"  # DWARF out, .BTF stays
gcc -O2 -Wall -Wextra -Werror -I"$SRC" -I"$SENSORS/libbpf" -o "$BUILD/$LOADER" "$SRC/$LOADER_C" -lbpf
strip "$BUILD/$LOADER"
seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
cat >"$BUILD/build.json" <<JSON
{"kind": "$KIND", "inputs_sha256": "$inputs_sha256", "seconds": $seconds, "clang": "$(clang --version | head -n 1)", "btf_from": "$(uname -r)", "libbpf": "$(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null || true)"}
JSON
rm -rf "$OUT"
mkdir -p "$OUT"
mv "$BUILD/$OBJECT" "$BUILD/$LOADER" "$OUT/"
mv "$BUILD/build.json" "$OUT/build.json"
log "built $OUT in ${seconds} s"
echo "$OUT"
