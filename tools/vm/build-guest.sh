#!/usr/bin/env bash
# Builds (once) what a zivm test guest boots: Debian's kernel as an uncompressed
# vmlinux (QEMU boots it through PVH, much faster than the bzImage path) and a
# busybox initramfs whose /init mounts the host's root read-only over 9p and runs
# a command with the host's own node inside it (see INIT below).
#
#   tools/vm/build-guest.sh            build if needed, print KEY=VALUE lines
#   tools/vm/build-guest.sh --force    rebuild the kernel part too
#
# Installs what it needs with apt-get (Debian): qemu-system-x86 cpio kmod
# busybox-static xz-utils iproute2 (the VM tests set addresses with ip).
# Artefacts go to $ZIVM_VM_CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/zivm-vm)/<kernel version>/; a second run only
# checks them. Output, last lines on stdout (everything else goes to stderr):
#   KVER=6.1.0-NN-amd64
#   KERNEL=/path/vmlinux
#   INITRD=/path/initrd-<hash>.cpio
#   QEMU=/usr/bin/qemu-system-x86_64
set -euo pipefail

FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { echo "build-guest: $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

CACHE="${ZIVM_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zivm-vm}"
mkdir -p "$CACHE"

# ---- tools ------------------------------------------------------------------
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null && SUDO="sudo" || true
fi

need_tools() {
  command -v qemu-system-x86_64 >/dev/null || return 0
  command -v cpio >/dev/null || return 0
  command -v depmod >/dev/null || [[ -x /sbin/depmod ]] || return 0
  command -v xz >/dev/null || return 0
  command -v ip >/dev/null || [[ -x /sbin/ip ]] || return 0
  [[ -x /bin/busybox ]] && file_is_static /bin/busybox || return 0
  return 1
}
file_is_static() {
  # busybox-static's binary has no PT_INTERP: ldd says "not a dynamic executable"
  ! ldd "$1" >/dev/null 2>&1
}

PKGS=(qemu-system-x86 cpio kmod busybox-static xz-utils iproute2)
if need_tools; then
  log "installing ${PKGS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y --no-install-recommends "${PKGS[@]}" >&2; then
    log "install failed; apt-get update and retry"
    $SUDO apt-get update >&2
    $SUDO apt-get install -y --no-install-recommends "${PKGS[@]}" >&2
  fi
fi
PATH="$PATH:/sbin:/usr/sbin"
QEMU=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 missing after install"

# ---- which kernel -------------------------------------------------------------
# The candidate of the linux-image-amd64 metapackage depends on the real image
# package, linux-image-<KVER>. apt-cache answers from the local lists (no
# network); the downloaded metapackage's Depends is the fallback.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zivm-vm-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# apt-get download drops privileges to _apt where it can: let it write here
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$WORK"; fi

kpkg_from_cache() {
  apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1
}
kpkg_from_deb() {
  (cd "$WORK" && apt-get download linux-image-amd64 >&2) || return 1
  dpkg-deb -f "$WORK"/linux-image-amd64_*.deb Depends | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1
}

KPKG="${ZIVM_VM_KERNEL_PKG:-}"
[[ -n "$KPKG" ]] || KPKG=$(kpkg_from_cache || true)
if [[ -z "$KPKG" ]]; then
  KPKG=$(kpkg_from_deb || true)
fi
if [[ -z "$KPKG" ]]; then
  log "no linux-image-amd64 in the package lists; apt-get update"
  $SUDO apt-get update >&2
  KPKG=$(kpkg_from_cache || true)
  [[ -n "$KPKG" ]] || KPKG=$(kpkg_from_deb)
fi
[[ -n "$KPKG" ]] || die "could not tell which kernel package linux-image-amd64 depends on"
KVER=${KPKG#linux-image-}
DIR="$CACHE/$KVER"

# Modules the guest loads (and their dependencies, from modules.dep). kernel.done
# records this list: a different one fetches the package again.
WANT=(virtio_pci 9pnet_virtio 9p virtio_net irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio_pci_core vfio_pci)

# ---- kernel: vmlinux + modules -----------------------------------------------
if [[ $FORCE -eq 1 || ! -f "$DIR/kernel.done" || "$(cat "$DIR/kernel.done")" != "${WANT[*]}" ]]; then
  log "fetching $KPKG"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  if ! (cd "$WORK" && apt-get download "$KPKG" >&2); then
    log "download failed; apt-get update and retry"
    $SUDO apt-get update >&2
    (cd "$WORK" && apt-get download "$KPKG" >&2)
  fi
  DEB=$(ls "$WORK"/"$KPKG"_*.deb | head -n1)
  X="$WORK/x"
  mkdir -p "$X"
  dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$X" ./boot ./lib/modules
  VMLINUZ="$X/boot/vmlinuz-$KVER"
  [[ -f "$VMLINUZ" ]] || die "no vmlinuz in $DEB"
  cp "$VMLINUZ" "$DIR/vmlinuz"
  cp "$X/boot/config-$KVER" "$DIR/config"

  # vmlinux: the bzImage carries the kernel as an xz stream; find its magic
  # (FD 37 7A 58 5A 00) and decompress. Trailing data after the stream is fine.
  OFF=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$VMLINUZ" | head -n1 | cut -d: -f1)
  [[ -n "$OFF" ]] || die "no xz stream in $VMLINUZ"
  tail -c +$((OFF + 1)) "$VMLINUZ" | xz -dc --single-stream > "$DIR/vmlinux" 2>/dev/null || true
  head -c 4 "$DIR/vmlinux" | grep -q 'ELF' || die "decompressed kernel is not an ELF file"

  # Module dependencies: the package has no modules.dep (depmod runs at install).
  MODROOT="$X/lib/modules/$KVER"
  depmod -b "$X" "$KVER"
  : > "$WORK/pairs"
  declare -A SEEN=()
  add_mod() { # $1: module name (- or _)
    local n=${1//-/_} path deps d
    [[ -n "${SEEN[$n]:-}" ]] && return 0
    SEEN[$n]=1
    if grep -q "/${n}.ko\$" <(tr '-' '_' < "$MODROOT/modules.builtin"); then
      log "  $n is built in"
      return 0
    fi
    path=$(awk -F: -v n="$n" '{ p=$1; b=p; sub(/.*\//, "", b); sub(/\.ko.*$/, "", b); gsub(/-/, "_", b); if (b == n) { print p; exit } }' "$MODROOT/modules.dep")
    [[ -n "$path" ]] || die "module $n not found"
    echo "$path $path" >> "$WORK/pairs"
    deps=$(awk -F: -v p="$path" '$1 == p { print $2; exit }' "$MODROOT/modules.dep")
    for d in $deps; do
      echo "$d $path" >> "$WORK/pairs"
      local b=${d##*/}
      add_mod "${b%%.ko*}"
    done
  }
  for m in "${WANT[@]}"; do add_mod "$m"; done
  mkdir -p "$DIR/modules"
  tsort "$WORK/pairs" > "$DIR/modules.order"
  while read -r p; do
    mkdir -p "$DIR/modules/$(dirname "$p")"
    cp "$MODROOT/$p" "$DIR/modules/$p"
  done < "$DIR/modules.order"
  cp "$MODROOT/modules.builtin" "$MODROOT/modules.order" "$MODROOT/modules.builtin.modinfo" "$DIR/modules/" 2>/dev/null || true
  log "modules: $(tr '\n' ' ' < "$DIR/modules.order")"
  echo "${WANT[*]}" > "$DIR/kernel.done"
fi

# ---- initramfs ------------------------------------------------------------------
# The /init script. Kernel command line (read from /proc/cmdline):
#   zivm.node=PATH   node binary on the host (default /usr/bin/node)
#   zivm.cwd=DIR     working directory inside the host root (default /)
#   zivm.env=K=V     an environment variable for the command (repeatable; no spaces)
#   zivm.shell=1     drop to a shell on the console instead of powering off
#   -- ARGS...       the command: node ARGS... (kernel passes them to /init)
# It prints "ZIVM-GUEST-START" before and "ZIVM-GUEST-EXIT <code>" after the
# command, then powers off (QEMU exits with -no-reboot).
read -r -d '' INIT <<'EOF' || true
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /host /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
KVER=$(uname -r)
while read -r m; do
  insmod "/lib/modules/$KVER/$m" 2>/dev/null || echo "zivm-init: insmod $m failed" >&2
done < /etc/zivm-modules
NODE=/usr/bin/node
CWD=/
SHELL_AFTER=0
ENVS=""
for a in $(cat /proc/cmdline); do
  case "$a" in
    zivm.node=*) NODE=${a#zivm.node=} ;;
    zivm.cwd=*) CWD=${a#zivm.cwd=} ;;
    zivm.env=*) ENVS="$ENVS ${a#zivm.env=}" ;;
    zivm.shell=1) SHELL_AFTER=1 ;;
  esac
done
rc=0
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /host; then
  mount -t proc proc /host/proc
  mount -t sysfs sysfs /host/sys
  mount -t devtmpfs devtmpfs /host/dev
  mkdir -p /host/dev/shm 2>/dev/null; mount -t tmpfs tmpfs /host/dev/shm 2>/dev/null
  # The host root is read-only: a writable, guest-private /run (zivm's agent
  # socket goes to /run/zivm). /tmp stays the host's (read-only): a checkout
  # there must stay visible; TMPDIR is /dev/shm.
  mount -t tmpfs -o mode=0755 tmpfs /host/run 2>/dev/null || echo "zivm-init: no tmpfs on /run" >&2
  echo "ZIVM-GUEST-START"
  if [ $# -gt 0 ]; then
    chroot /host /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/ TMPDIR=/dev/shm ZIVM_GUEST=1 $ENVS \
      /bin/sh -c 'cd "$0" && exec "$@"' "$CWD" "$NODE" "$@"
    rc=$?
  fi
else
  echo "zivm-init: cannot mount the host root over 9p" >&2
  rc=125
fi
echo "ZIVM-GUEST-EXIT $rc"
if [ "$SHELL_AFTER" = 1 ]; then setsid cttyhack sh; fi
sync
poweroff -f
EOF

HASH=$( { echo "$INIT"; sha256sum /bin/busybox; cat "$DIR/modules.order"; } | sha256sum | cut -c1-16)
INITRD="$DIR/initrd-$HASH.cpio"
if [[ $FORCE -eq 1 || ! -f "$INITRD" ]]; then
  log "building initramfs"
  R="$WORK/root"
  rm -rf "$R"
  mkdir -p "$R"/{bin,dev,proc,sys,host,tmp,etc} "$R/lib/modules/$KVER"
  cp /bin/busybox "$R/bin/busybox"
  printf '%s\n' "$INIT" > "$R/init"
  chmod 755 "$R/init"
  cp -r "$DIR/modules/." "$R/lib/modules/$KVER/"
  depmod -b "$R" "$KVER"
  cp "$DIR/modules.order" "$R/etc/zivm-modules"
  # Uncompressed: unpacking is cheaper than decompressing under TCG.
  (cd "$R" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  find "$DIR" -maxdepth 1 -name 'initrd-*.cpio' ! -name "initrd-$HASH.cpio" -delete
fi

echo "KVER=$KVER"
echo "KERNEL=$DIR/vmlinux"
echo "INITRD=$INITRD"
echo "QEMU=$QEMU"
exit 0
