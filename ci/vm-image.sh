#!/usr/bin/env bash
# Builds the kernel-matrix VM image: ONE raw ext4 root file system with both stock Debian
# kernels (6.1 and 6.12 from bookworm-security), booted by QEMU TCG with -kernel/-initrd
# and snapshot=on (every boot starts clean; one image serves both kernels).
#
#   bash ci/vm-image.sh [CACHE_DIR]          # default /var/cache/shadowtest/vm
#
# Produces in CACHE_DIR:
#   root.img                       raw ext4, 3G sparse; init=/sbin/shadowtest-init
#   vmlinuz-<release>, initrd.img-<release>   per kernel, for qemu -kernel/-initrd
#   id_ed25519, id_ed25519.pub     the key root in the guest accepts (authorized_keys)
#   image.json                     {kernels, built_at, inputs_sha256, ...}; written LAST
#
# Idempotent: when image.json's inputs_sha256 equals the hash of this script plus the
# package list (so any edit of this file rebuilds), nothing is done. One build per
# CACHE_DIR at a time (flock on CACHE_DIR/.lock; a second run waits, then finds the image
# current). The build runs in CACHE_DIR/.build.<pid> and the artifacts are moved into
# place only when complete, image.json removed first and written last: an interrupted
# build never leaves a manifest that matches, and the next run removes its build dir and
# builds again. Mounts for the chroot live in private mount namespaces (they vanish with
# the build, even on SIGKILL). The mirrors come from the host's apt sources (never a
# hard-coded host). Needs root and the package registries. Prints per-phase timings.
set -euo pipefail

CACHE_DIR=${1:-/var/cache/shadowtest/vm}
SUITE=bookworm
KERNELS=(6.1.0-56-amd64 6.12.117+deb12-amd64)
PACKAGES=(initramfs-tools bpftrace auditd python3 openssh-server iproute2 procps util-linux bpftool)
INIT_MODULES=(virtio_pci virtio_blk ext4 virtio_net)
IMAGE_SIZE=3G

SELF=$(readlink -f "$0")
log() { printf '%s vm-image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mkfs); got uid $(id -u)"

t_start=$(date +%s)
phase_start=$t_start
timing() {  # timing NAME: prints the seconds since the previous phase
  local now; now=$(date +%s)
  log "timing: $1 $((now - phase_start)) s"
  phase_start=$now
}

# ------------------------------------------------------------------ cache check
inputs_sha256=$( { cat "$SELF"; printf '%s\n' "${PACKAGES[@]}" "${KERNELS[@]}"; } | sha256sum | cut -d' ' -f1)
manifest=$CACHE_DIR/image.json
up_to_date() {  # the manifest matches these inputs and every artifact is there
  [ -f "$manifest" ] && grep -q "\"inputs_sha256\": \"$inputs_sha256\"" "$manifest" || return 1
  local f k
  for f in root.img id_ed25519 id_ed25519.pub; do [ -s "$CACHE_DIR/$f" ] || return 1; done
  for k in "${KERNELS[@]}"; do
    for f in "vmlinuz-$k" "initrd.img-$k"; do [ -s "$CACHE_DIR/$f" ] || return 1; done
  done
}
if up_to_date; then
  log "up to date: $manifest (inputs $inputs_sha256); nothing to do"
  exit 0
fi

# one builder per cache dir: the lock fd is inherited by every child (debootstrap, apt),
# so it stays held until the last process of an earlier (even SIGKILLed) build is gone
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
if ! flock -n 9; then
  log "another build of $CACHE_DIR is running; waiting for it"
  flock 9
  if up_to_date; then
    log "up to date after the other build: $manifest; nothing to do"
    exit 0
  fi
fi
t_start=$(date +%s)  # the build's own time, not the wait for another one
phase_start=$t_start

# ------------------------------------------------------------------ host dependencies
need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  log "installing host packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
timing host-deps

# ------------------------------------------------------------------ mirrors from apt sources
# mirror_for SUITE: the first URI of a host apt source that lists exactly that suite.
mirror_for() {
  local suite=$1 uri=""
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: paragraphs separated by blank lines; comment lines start with '#'
    uri=$(awk -v want="$suite" 'BEGIN { RS = ""; FS = "\n" }
      { uris = ""; suites = ""; types = ""
        for (i = 1; i <= NF; i++) {
          line = $i; if (line ~ /^[ \t]*#/) continue
          if (line ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", line); uris = line }
          if (line ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", line); suites = " " line " " }
          if (line ~ /^Types:/)  { types = " " line " " }
        }
        if (types ~ / deb / && index(suites, " " want " ") > 0) { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      uri=$(awk -v want="$suite" '$1 == "deb" {
          i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
          if ($(i + 1) == want) { print $i; exit } }' "$f")
      [ -n "$uri" ] && break
    done
  fi
  printf '%s' "${uri%/}"
}
MIRROR=$(mirror_for "$SUITE")
SECURITY_MIRROR=$(mirror_for "$SUITE-security")
[ -n "$MIRROR" ] || die "no apt source for suite '$SUITE' in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; add one (the image is built from the host's mirror)"
[ -n "$SECURITY_MIRROR" ] || die "no apt source for suite '$SUITE-security' (the kernels ${KERNELS[*]} come from it) in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; add one"
log "mirror $MIRROR, security mirror $SECURITY_MIRROR"

# ------------------------------------------------------------------ build dir
# build dirs of interrupted builds (we hold the lock: none of their processes is left)
for old in "$CACHE_DIR"/.build.*; do
  [ -d "$old" ] || continue
  log "removing the build dir of an interrupted build: $old"
  rm -rf --one-file-system "$old"
done
BUILD=$CACHE_DIR/.build.$$
rm -rf --one-file-system "$BUILD"
mkdir -p "$BUILD"
cleanup() { rm -rf --one-file-system "$BUILD"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ROOT=$BUILD/root

# everything with mounts runs in a private mount namespace: the mounts vanish with it,
# even when this script is killed
in_chroot() {
  unshare --mount --propagation private -- sh -ec '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount -t sysfs -o ro sysfs "$root/sys"
    mount -t tmpfs -o mode=755 tmpfs "$root/dev"      # not the host /dev: only what apt needs
    for d in null zero full random urandom tty; do
      : >"$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"
    done
    mkdir -p "$root/dev/pts"; ln -s pts/ptmx "$root/dev/ptmx"
    mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666 2>/dev/null || true
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"' in_chroot "$ROOT" "$@"
}

# ------------------------------------------------------------------ debootstrap
log "debootstrap --variant=minbase $SUITE"
unshare --mount --propagation private -- \
  debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1 \
  || { tail -n 30 "$BUILD/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
timing debootstrap

cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
# no service starts inside the chroot
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$ROOT/etc/apt/apt.conf.d/90shadowtest"

log "apt: initramfs-tools"
in_chroot apt-get update -qq
in_chroot apt-get install -y -qq initramfs-tools >"$BUILD/apt.log" 2>&1 \
  || { tail -n 30 "$BUILD/apt.log" >&2; die "installing initramfs-tools failed"; }
printf '%s\n' "${INIT_MODULES[@]}" >>"$ROOT/etc/initramfs-tools/modules"

kernel_pkgs=()
for k in "${KERNELS[@]}"; do kernel_pkgs+=("linux-image-$k"); done
log "apt: ${kernel_pkgs[*]} ${PACKAGES[*]}"
in_chroot apt-get install -y -qq "${kernel_pkgs[@]}" "${PACKAGES[@]}" >>"$BUILD/apt.log" 2>&1 \
  || { tail -n 40 "$BUILD/apt.log" >&2; die "installing the kernels and packages failed"; }
in_chroot apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT/usr/sbin/policy-rc.d"
timing apt

# ------------------------------------------------------------------ guest configuration
echo shadowtest-vm >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 shadowtest-vm\n::1 localhost\n' >"$ROOT/etc/hosts"
: >"$ROOT/etc/fstab"

# the key pair root logs in with: kept across rebuilds (VMs booted from the previous image
# stay reachable with CACHE_DIR/id_ed25519); sshd host keys made now, not at first boot
if [ -s "$CACHE_DIR/id_ed25519" ] && [ -s "$CACHE_DIR/id_ed25519.pub" ]; then
  cp -p "$CACHE_DIR/id_ed25519" "$CACHE_DIR/id_ed25519.pub" "$BUILD/"
else
  ssh-keygen -q -t ed25519 -N '' -C shadowtest-vm -f "$BUILD/id_ed25519"
fi
install -d -m 700 "$ROOT/root/.ssh"
install -m 600 "$BUILD/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
rm -f "$ROOT"/etc/ssh/ssh_host_*
in_chroot ssh-keygen -A >/dev/null
cat >"$ROOT/etc/ssh/sshd_config.d/shadowtest.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF

cat >"$ROOT/sbin/shadowtest-init" <<'EOF'
#!/bin/sh
# PID 1 of the shadowtest kernel-matrix VM: mounts the kernel file systems the sensors
# need, brings up the network (QEMU user net), starts sshd, then becomes a reaper that
# never exits (PID 1 exiting panics the kernel).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
say() { echo "shadowtest-init: $*" >/dev/console 2>/dev/null || echo "shadowtest-init: $*"; }
mnt() {  # mnt TYPE DIR [OPTIONS]
  mkdir -p "$2"
  mountpoint -q "$2" || mount -t "$1" ${3:+-o "$3"} "$1" "$2" || say "mount $1 on $2 failed"
}
mnt proc /proc
mnt sysfs /sys
mnt devtmpfs /dev
mnt devpts /dev/pts gid=5,mode=620,ptmxmode=666
mnt tmpfs /run mode=755
mnt tmpfs /tmp mode=1777
mnt tracefs /sys/kernel/tracing
mnt securityfs /sys/kernel/security
mnt bpf /sys/fs/bpf
# cgroups: pure v2 unless the kernel command line says shadowtest.cgroup=hybrid (the harness
# adds cgroup_no_v1=all for v2, so no v1 controller can be mounted at all). hybrid is
# systemd's older layout: v1 controllers under /sys/fs/cgroup/<name>, cgroup2 at
# /sys/fs/cgroup/unified.
cgroup_mode=v2
for arg in $(cat /proc/cmdline); do
  case $arg in shadowtest.cgroup=*) cgroup_mode=${arg#shadowtest.cgroup=} ;; esac
done
if [ "$cgroup_mode" = hybrid ]; then
  mnt tmpfs /sys/fs/cgroup mode=755
  for c in $(awk 'NR > 1 && $4 == 1 { print $1 }' /proc/cgroups); do
    mkdir -p "/sys/fs/cgroup/$c"
    mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" 2>/dev/null || rmdir "/sys/fs/cgroup/$c"
  done
  mkdir -p /sys/fs/cgroup/systemd
  mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd || say "mount name=systemd failed"
  mnt cgroup2 /sys/fs/cgroup/unified
else
  mnt cgroup2 /sys/fs/cgroup
fi
say "cgroup layout: $cgroup_mode"
mount -o remount,rw / 2>/dev/null
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx

hostname "$(cat /etc/hostname)"
ip link set lo up
nic=ens3
[ -e /sys/class/net/$nic ] || nic=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
if [ -n "$nic" ]; then
  ip addr add 10.0.2.15/24 dev "$nic"
  ip link set "$nic" up
  ip route add default via 10.0.2.2
else
  say "no network interface"
fi
mkdir -p /run/sshd /var/log/audit
chmod 755 /run/sshd
if /usr/sbin/sshd -E /var/log/sshd.log; then
  say "sshd started on $nic ($(uname -r))"
else
  say "sshd failed to start: $(tail -n 5 /var/log/sshd.log 2>/dev/null)"
fi
# reap orphans forever; exec only if the interpreter is there (a failed exec would exit)
if [ -x /usr/bin/python3 ]; then
  exec /usr/bin/python3 -c '
import os, time
while True:
    try:
        os.waitpid(-1, 0)
    except OSError:  # no child right now
        time.sleep(1)
'
fi
say "no python3: falling back to a shell loop"
while :; do wait; sleep 1; done
EOF
chmod 755 "$ROOT/sbin/shadowtest-init"

for k in "${KERNELS[@]}"; do
  [ -s "$ROOT/boot/vmlinuz-$k" ] || die "kernel $k: $ROOT/boot/vmlinuz-$k missing after install"
  [ -s "$ROOT/boot/initrd.img-$k" ] || die "kernel $k: $ROOT/boot/initrd.img-$k missing (update-initramfs failed? see $BUILD/apt.log)"
  cp "$ROOT/boot/vmlinuz-$k" "$ROOT/boot/initrd.img-$k" "$BUILD/"
done
timing configure

# ------------------------------------------------------------------ file system image
log "mkfs.ext4 -d root ($IMAGE_SIZE)"
mkfs.ext4 -q -F -L shadowtest-root -d "$ROOT" "$BUILD/root.img" "$IMAGE_SIZE"
rm -rf --one-file-system "$ROOT"
timing mkfs

built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kernels_json=$(printf '"%s", ' "${KERNELS[@]}"); kernels_json=${kernels_json%, }
packages_json=$(printf '"%s", ' "${PACKAGES[@]}"); packages_json=${packages_json%, }
cat >"$BUILD/image.json" <<EOF
{
  "kernels": [$kernels_json],
  "built_at": "$built_at",
  "inputs_sha256": "$inputs_sha256",
  "packages": [$packages_json],
  "mirror": "$MIRROR",
  "security_mirror": "$SECURITY_MIRROR",
  "init": "/sbin/shadowtest-init",
  "build_seconds": $(( $(date +%s) - t_start ))
}
EOF

# ------------------------------------------------------------------ move into place
# image.json goes first out and last in: a half-moved cache has no manifest, so it never
# looks complete. Each rename is atomic (same file system); a running VM keeps its inode.
rm -f "$manifest"
for f in root.img id_ed25519 id_ed25519.pub; do mv -f "$BUILD/$f" "$CACHE_DIR/$f"; done
for k in "${KERNELS[@]}"; do
  mv -f "$BUILD/vmlinuz-$k" "$BUILD/initrd.img-$k" "$CACHE_DIR/"
done
sync -f "$CACHE_DIR/root.img" 2>/dev/null || true
mv -f "$BUILD/image.json" "$manifest"
phase_start=$t_start
timing total
log "built $CACHE_DIR (kernels ${KERNELS[*]})"
