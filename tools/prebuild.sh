#!/usr/bin/env bash
# The prebuilt Node-API binaries the package ships, made with prebuildify:
#   prebuilds/linux-x64/zivm.glibc.node     host compiler
#   prebuilds/linux-arm64/zivm.glibc.node   aarch64-linux-gnu cross compiler
# node-gyp-build loads them (a local build/ first, when there is one), and the
# install script compiles nothing when one matches.
#
# Run as `npm run build:prebuilds` (npm puts its node-gyp on PATH). The cross
# compiler comes from apt (g++-aarch64-linux-gnu) when missing. The build runs
# in a scratch copy of the sources, so the local build/ is left as it is.
# ZIVM_PREBUILD_ARCHES picks the architectures (default "x64 arm64").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
arches=${ZIVM_PREBUILD_ARCHES:-x64 arm64}

die() {
  echo "prebuild: $*" >&2
  exit 1
}

command -v node-gyp >/dev/null || die "node-gyp is not on PATH: run this as npm run build:prebuilds"
[ -x node_modules/.bin/prebuildify ] || die "prebuildify is missing: npm install first"

apt_install() {
  [ "$(id -u)" = 0 ] || die "$* missing: install it (apt-get install $*) and run again"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
command -v file >/dev/null || need+=(file)
if [[ " $arches " == *" arm64 "* ]] && ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  need+=(g++-aarch64-linux-gnu)
fi
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# Node-API headers: those of the running node when it has them (no download), else node-gyp fetches them.
prefix=$(dirname "$(dirname "$(node -p process.execPath)")")
if [ -f "$prefix/include/node/node_api.h" ]; then
  export npm_config_nodedir=$prefix
fi
target=$(node -p process.versions.node)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r binding.gyp package.json native "$scratch/"
ln -s "$root/node_modules" "$scratch/node_modules"

rm -rf prebuilds
for arch in $arches; do
  case $arch in
    x64)
      cross=()
      strip=strip
      objdump=objdump
      want='ELF 64-bit LSB shared object, x86-64'
      ;;
    arm64)
      cross=(CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar)
      strip=aarch64-linux-gnu-strip
      objdump=aarch64-linux-gnu-objdump
      want='ELF 64-bit LSB shared object, ARM aarch64'
      ;;
    *) die "no recipe for $arch" ;;
  esac
  echo "prebuild: linux-$arch"
  env "${cross[@]}" PREBUILD_STRIP_BIN=$strip \
    node_modules/.bin/prebuildify --napi --strip --tag-libc --arch "$arch" --target "node@$target" --cwd "$scratch" --out "$root" \
    >"$scratch/build-$arch.log" 2>&1 || {
    tail -40 "$scratch/build-$arch.log" >&2
    die "linux-$arch failed"
  }
  out=prebuilds/linux-$arch/zivm.glibc.node
  [ -f "$out" ] || die "prebuildify made no $out"
  desc=$(file -b "$out")
  [[ $desc == "$want"* ]] || die "$out is not what linux-$arch needs: $desc"
  # Loadable with glibc 2.28 and later, as Node's own binaries are.
  newest=$($objdump -T "$out" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  if [ "$(printf '%s\n' "$newest" GLIBC_2.28 | sort -V | tail -1)" != GLIBC_2.28 ]; then
    die "$out needs $newest: more than the glibc 2.28 Node itself needs"
  fi
  echo "prebuild: $out: $(stat -c %s "$out") bytes, $desc, newest symbol $newest"
done
