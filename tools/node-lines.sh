#!/usr/bin/env bash
# Node.js release lines other than the machine's own, from the npm registry's
# node-linux-<arch> packages (the official binaries), cached outside the
# repository.
#
#   tools/node-lines.sh bin LINE [ARCH]   prints the bin folder of the newest LINE.x (fetching it if needed)
#   tools/node-lines.sh run CMD...        runs CMD once per line with that line's node first on PATH,
#                                          and says how each went; fails if any failed
#
# LINEs for run: ZIVM_NODE_LINES (default "22 24 26"). ARCH: x64 (default) or arm64.
# The cache: ZIVM_NODE_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/zivm-node; a line is fetched again
# when the registry has a newer release of it, and used as cached when the registry cannot be asked.
set -euo pipefail

CACHE=${ZIVM_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zivm-node}

die() {
  echo "node-lines: $*" >&2
  exit 1
}

# The newest version of a line in the registry, or nothing if it cannot be asked.
newest() {
  local line=$1 arch=$2
  npm view "node-linux-$arch@$line" version --json 2>/dev/null | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      let v;
      try { v = JSON.parse(s); } catch { return; }
      const all = (Array.isArray(v) ? v : [v]).filter((x) => /^\d+\.\d+\.\d+$/.test(x));
      const key = (x) => x.split(".").map(Number);
      all.sort((a, b) => { const [p, q] = [key(a), key(b)]; return p[0] - q[0] || p[1] - q[1] || p[2] - q[2]; });
      if (all.length) console.log(all[all.length - 1]);
    });'
}

# Prints the bin folder of a line's node, fetching it into the cache when missing or outdated.
bin_of() {
  local line=$1 arch=${2:-x64}
  [[ $line =~ ^[0-9]+$ ]] || die "a line is a major version such as 22, not '$line'"
  local version cached=""
  version=$(newest "$line" "$arch")
  for d in "$CACHE/linux-$arch-$line".*; do
    [ -x "$d/bin/node" ] && cached=$d
  done
  if [ -z "$version" ]; then
    [ -n "$cached" ] || die "cannot ask the registry for node-linux-$arch@$line and nothing is cached in $CACHE"
    echo "node-lines: registry not reachable, using ${cached##*/} as cached" >&2
    echo "$cached/bin"
    return
  fi
  local dir="$CACHE/linux-$arch-$version"
  if [ ! -x "$dir/bin/node" ]; then
    echo "node-lines: fetching node-linux-$arch@$version" >&2
    mkdir -p "$CACHE"
    local tmp
    tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
    (cd "$tmp" && npm pack --silent "node-linux-$arch@$version" >/dev/null) || { rm -rf "$tmp"; die "npm pack node-linux-$arch@$version failed"; }
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    [ -x "$tmp/package/bin/node" ] || { rm -rf "$tmp"; die "node-linux-$arch@$version has no bin/node"; }
    # Only the binary: the addon is built once, against Node-API, for every line.
    mkdir -p "$tmp/keep"
    mv "$tmp/package/bin" "$tmp/keep/"
    rm -rf "$dir"
    mv "$tmp/keep" "$dir"
    rm -rf "$tmp"
    # Older releases of the line go.
    for d in "$CACHE/linux-$arch-$line".*; do
      [ "$d" = "$dir" ] || rm -rf "$d"
    done
  fi
  echo "$dir/bin"
}

run_lines() {
  [ $# -gt 0 ] || die "run needs a command"
  local lines=${ZIVM_NODE_LINES:-22 24 26}
  local summary=() failed=0
  for line in $lines; do
    local bin
    bin=$(bin_of "$line" x64)
    local v
    v=$("$bin/node" --version)
    echo
    echo "=== Node $v: $*"
    local start=$SECONDS rc=0
    PATH="$bin:$PATH" "$@" || rc=$?
    summary+=("Node $v: exit $rc in $((SECONDS - start)) s")
    [ $rc -eq 0 ] || failed=1
  done
  echo
  printf 'node-lines: %s\n' "${summary[@]}"
  return $failed
}

case "${1:-}" in
  bin)
    shift
    [ $# -ge 1 ] || die "bin needs a LINE"
    bin_of "$@"
    ;;
  run)
    shift
    run_lines "$@"
    ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
