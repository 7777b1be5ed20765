#!/usr/bin/env bash
# The package as a user gets it: `npm pack`, then installed into fresh projects.
#   1. What the tarball holds: what runs, and nothing else.
#   2. A machine with no compiler, make or python (PATH holds only node, npm and sh):
#      installs, runs its install script without compiling, and two processes connect
#      over shared memory (with each tested Node line), from CommonJS, from an ES module
#      and through the preload hook; zivm --version and zivm doctor; the declarations
#      type a user's TypeScript.
#   3. A machine with a compiler and no matching prebuild: the install script compiles the
#      addon, which then loads.
#   4. The linux-arm64 prebuild: what `file` says, and, under qemu-user with the arm64 Node
#      from the registry, two arm64 processes connected over shared memory.
# Needs prebuilds/ (npm run build:prebuilds). qemu-user is installed from apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
lines=${ZIVM_NODE_LINES:-22 24 26}
arm_line=${ZIVM_ARM64_LINE:-24}

die() {
  echo "pack-check: FAIL: $*" >&2
  exit 1
}
say() { echo "pack-check: $*"; }

for a in x64 arm64; do
  [ -f "prebuilds/linux-$a/zivm.glibc.node" ] || die "prebuilds/linux-$a/zivm.glibc.node is missing: npm run build:prebuilds first"
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# -- 1. the tarball --------------------------------------------------------------------------
npm pack --silent --pack-destination "$work" >"$work/pack.out" 2>"$work/pack.err" || { cat "$work/pack.err" >&2; die "npm pack failed"; }
tgz=$(ls "$work"/zivm-*.tgz)
version=$(node -p "require('./package.json').version")
tar -tzf "$tgz" | sed 's|^package/||' | sort >"$work/files"
for f in package.json README.md CHANGELOG.md binding.gyp dist/src/bundle/zivm.js dist/src/bundle/register.js dist/src/index.js dist/src/index.d.ts dist/src/register.js dist/src/cli/main.js \
  dist/src/cli/doctor.js dist/bench/run.js dist/tools/kit/proc.js esm/index.mjs native/addon.cc prebuilds/linux-x64/zivm.glibc.node prebuilds/linux-arm64/zivm.glibc.node; do
  grep -qx "$f" "$work/files" || die "the package lacks $f"
done
if grep -E '^(dist/test/|test/|src/|bench/|tools/|\.ci/)|\.map$|\.ts$|^dist/bench/vm(-peer)?\.js$|^build/' "$work/files" | grep -v '\.d\.ts$' >"$work/extra"; then
  die "the package ships what does not run: $(tr '\n' ' ' <"$work/extra")"
fi
say "tarball $(basename "$tgz"): $(stat -c %s "$tgz") bytes, $(wc -l <"$work/files") files"

# -- the programs a user would write -----------------------------------------------------------
mkdir -p "$work/prog"
cat >"$work/prog/server.js" <<'EOF'
// An echo server that tells each client which transport it sees, then exits.
const net = require('zivm');
const server = net.createServer((s) => {
  s.end(`${s.transport}\n`);
  s.on('close', () => server.close());
});
server.listen(0, '127.0.0.1', () => {
  require('fs').writeFileSync(process.argv[2], String(server.address().port));
});
EOF
cat >"$work/prog/client.js" <<'EOF'
const net = require('zivm');
const s = net.connect(Number(process.argv[2]), '127.0.0.1');
let got = '';
s.on('data', (d) => (got += d));
s.on('end', () => console.log(`client=${s.transport} server=${got.trim()}`));
EOF
cat >"$work/prog/esm.mjs" <<'EOF'
import net from 'zivm';
import { createServer, connect } from 'zivm';
if (net.createServer !== createServer) throw new Error('default and named exports differ');
const server = createServer((s) => s.end(s.transport));
server.listen(0, '127.0.0.1', () => {
  const c = connect(server.address().port, '127.0.0.1');
  let got = '';
  c.on('data', (d) => (got += d));
  c.on('end', () => {
    console.log(`client=${c.transport} server=${got}`);
    server.close();
  });
});
EOF
cat >"$work/prog/plain.js" <<'EOF'
// Plain node:net, unmodified: the preload hook makes it zivm.
const net = require('node:net');
const server = net.createServer((s) => s.end(String(s.transport)));
server.listen(0, '127.0.0.1', () => {
  const c = net.connect(server.address().port, '127.0.0.1');
  let got = '';
  c.on('data', (d) => (got += d));
  c.on('end', () => {
    console.log(`client=${c.transport} server=${got}`);
    server.close();
  });
});
EOF

# Two processes, one connection: prints "client=<transport> server=<transport>".
# $1: the project; the rest: how to run node (e.g. qemu-aarch64 ... node).
pair() {
  local app=$1
  shift
  local portfile
  portfile=$(mktemp "$work/port.XXXXXX")
  rm -f "$portfile"
  (cd "$app" && exec "$@" server.js "$portfile") &
  local spid=$!
  pids+=("$spid")
  for _ in $(seq 1 600); do
    [ -s "$portfile" ] && break
    kill -0 "$spid" 2>/dev/null || die "the server exited before listening"
    sleep 0.1
  done
  [ -s "$portfile" ] || die "the server did not listen within 60 s"
  (cd "$app" && "$@" client.js "$(cat "$portfile")")
  wait "$spid" || die "the server failed"
}

expect_shm() {
  local what=$1 out=$2
  [ "$out" = "client=shm server=shm" ] || die "$what: expected client=shm server=shm, got '$out'"
  say "$what: $out"
}

# A fresh project with the programs above in it (they require zivm from its node_modules).
new_project() {
  mkdir -p "$1"
  (cd "$1" && npm init -y >/dev/null)
  cp "$work"/prog/* "$1/"
}

# -- 2. no compiler ----------------------------------------------------------------------------
nocc=$work/nocc
mkdir -p "$nocc"
for t in node npm npx sh; do ln -s "$(command -v $t)" "$nocc/$t"; done
for t in g++ c++ gcc cc clang make python3 python; do
  if PATH=$nocc command -v "$t" >/dev/null 2>&1; then die "$t is still on the restricted PATH"; fi
done
app=$work/app
new_project "$app"
(cd "$app" && PATH=$nocc npm install --no-audit --no-fund "$tgz" >"$work/install.log" 2>&1) || { cat "$work/install.log" >&2; die "npm install without a compiler failed"; }
# npm runs a dependency's install script only once approved; approved, it must find the prebuild and compile nothing.
(cd "$app" && PATH=$nocc npm install-scripts approve zivm >/dev/null && PATH=$nocc npm rebuild zivm --foreground-scripts >"$work/rebuild.log" 2>&1) ||
  { cat "$work/rebuild.log" >&2; die "the install script failed on a machine without a compiler"; }
grep -q 'node-gyp-build' "$work/rebuild.log" || die "the install script did not run: $(cat "$work/rebuild.log")"
[ ! -e "$app/node_modules/zivm/build" ] || die "the install script built something although a prebuild matches"
say "installed with no compiler on PATH; the install script ran and compiled nothing"

export ZIVM_DIR=$work/zivm-dir
mkdir -m 700 "$ZIVM_DIR"
v=$(cd "$app" && PATH=$nocc npx --no-install zivm --version)
[ "$v" = "$version" ] || die "zivm --version says '$v', not $version"
(cd "$app" && PATH=$nocc npx --no-install zivm doctor --json >"$work/doctor.json") || { cat "$work/doctor.json" >&2; die "zivm doctor found a problem"; }
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const rel = r.addon.file && r.addon.file.split("/node_modules/zivm/")[1];
  if (!r.addon.loaded || r.addon.kind !== "prebuild" || rel !== "prebuilds/linux-x64/zivm.glibc.node") {
    console.error(JSON.stringify(r, null, 2));
    process.exit(1);
  }' "$work/doctor.json" || die "zivm doctor does not report the linux-x64 prebuild as loaded"
say "zivm --version: $v; zivm doctor: prebuild prebuilds/linux-x64/zivm.glibc.node loaded"
(cd "$app" && PATH=$nocc npx --no-install zivm bench --help >/dev/null) || die "zivm bench --help failed"
rc=0
out=$(cd "$app" && PATH=$nocc npx --no-install zivm bench --cases http 2>&1) || rc=$?
[ $rc -eq 2 ] && [[ $out == *"needs autocannon"* ]] || die "zivm bench --cases http without autocannon: exit $rc, $out"

expect_shm "Node $(node --version), two processes" "$(pair "$app" env PATH="$nocc" node)"
for line in $lines; do
  bin=$(tools/node-lines.sh bin "$line")
  expect_shm "Node $("$bin/node" --version), two processes" "$(pair "$app" "$bin/node")"
done
expect_shm "ES module (import net from 'zivm', import { createServer } from 'zivm')" "$(cd "$app" && PATH=$nocc node esm.mjs)"
expect_shm "unmodified node:net program, NODE_OPTIONS=--require zivm/register" "$(cd "$app" && NODE_OPTIONS="--require zivm/register" PATH=$nocc node plain.js)"

# The declarations: zivm's own API, from CommonJS-style and ES module TypeScript, against the installed package.
cat >"$app/types.ts" <<'EOF'
import { connect, createServer, stats, TRANSPORT_CHANNEL, type TransportMessage, type Transport, type Stats } from 'zivm';
import 'zivm/register';
import * as nodeNet from 'node:net';
import dc from 'node:diagnostics_channel';
const s = connect(8000, 'localhost');
const t: Transport | undefined = s.transport;
const st: Stats = stats();
const n: number = st.connections.shm + st.connections.tcp;
dc.subscribe(TRANSPORT_CHANNEL, (m) => {
  const msg = m as TransportMessage;
  const why: string = msg.reason;
  const how: 'shm' | 'tcp' = msg.transport;
  return [why, how];
});
const t2: Transport | undefined = new nodeNet.Socket().transport; // typed by zivm/register
createServer((c) => c.end());
export { t, n, t2 };
EOF
cat >"$app/types.mts" <<'EOF'
import net, { createServer, connect, isIP } from 'zivm';
const srv = createServer();
const x: 'shm' | 'tcp' | 'pipe' | undefined = connect(1, 'localhost').transport;
const y: number = isIP('::1');
const z: number = net.stats().pid;
export { srv, x, y, z };
EOF
(cd "$app" && "$root/node_modules/.bin/tsc" --noEmit --strict --module node16 --moduleResolution node16 --target es2022 \
  --typeRoots "$root/node_modules/@types" --types node types.ts types.mts) || die "the package's declarations do not type a user's program"
say "declarations: transport, stats(), TRANSPORT_CHANNEL/TransportMessage, zivm/register's node:net Socket.transport, from .ts and .mts"

# -- 3. from source ----------------------------------------------------------------------------
# No prebuild matches (here: none left) and a compiler is there: the install script builds the addon.
# ZIVM=off in the environment (zivm's own off switch) must not stop it.
src=$work/src-app
new_project "$src"
(cd "$src" && npm install --no-audit --no-fund "$tgz" >/dev/null 2>&1 && npm install-scripts approve zivm >/dev/null &&
  rm -rf node_modules/zivm/prebuilds && ZIVM=off npm rebuild zivm --foreground-scripts >"$work/source.log" 2>&1) ||
  { tail -30 "$work/source.log" >&2; die "building from source failed"; }
[ -f "$src/node_modules/zivm/build/Release/zivm.node" ] || die "with no matching prebuild, the install script built nothing: $(tail -5 "$work/source.log")"
kind=$(cd "$src" && npx --no-install zivm doctor --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(r.addon.loaded?r.addon.kind:"not loaded")})')
[ "$kind" = build ] || die "after a build from source, doctor reports the addon as '$kind'"
say "no matching prebuild: the install script compiled build/Release/zivm.node, which loads"
expect_shm "built from source, two processes" "$(pair "$src" node)"

# -- 4. linux-arm64 ----------------------------------------------------------------------------
arm=$app/node_modules/zivm/prebuilds/linux-arm64/zivm.glibc.node
desc=$(file -b "$arm")
[[ $desc == "ELF 64-bit LSB shared object, ARM aarch64"* ]] || die "the arm64 prebuild is: $desc"
say "arm64 prebuild: $desc"
if ! command -v qemu-aarch64 >/dev/null; then
  [ "$(id -u)" = 0 ] || die "qemu-aarch64 is missing (apt-get install qemu-user)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user >/dev/null; }
fi
[ -f /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || die "no arm64 glibc in /usr/aarch64-linux-gnu (it comes with g++-aarch64-linux-gnu)"
armbin=$(tools/node-lines.sh bin "$arm_line" arm64)
armnode=(qemu-aarch64 -L /usr/aarch64-linux-gnu "$armbin/node")
r=$(cd "$app" && "${armnode[@]}" -p "process.arch + ' ' + process.version + ' ' + require('zivm/package.json').version" 2>&1) || die "the arm64 node does not run under qemu: $r"
say "under qemu-user: $r"
(cd "$app" && "${armnode[@]}" node_modules/zivm/dist/src/cli/main.js doctor --json >"$work/doctor-arm.json") || { cat "$work/doctor-arm.json" >&2; die "zivm doctor under arm64 found a problem"; }
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (!r.addon.loaded || !r.addon.file.endsWith("prebuilds/linux-arm64/zivm.glibc.node")) { console.error(JSON.stringify(r, null, 2)); process.exit(1); }
' "$work/doctor-arm.json" || die "the arm64 prebuild did not load"
say "arm64: prebuilds/linux-arm64/zivm.glibc.node loaded"
# An emulated process cannot start the daemon (it would exec an arm64 binary): this one runs natively.
# qemu-user cannot map the default 32 GiB region into the emulated process (mmap ENOMEM; an arm64
# host can): a smaller one.
sock=$work/arm.sock
(cd "$app" && exec node node_modules/zivm/dist/src/cli/main.js server --socket "$sock" --size 8G >/dev/null) &
pids+=("$!")
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || die "the daemon for the arm64 check did not start"
expect_shm "arm64 under qemu-user, two processes" "$(pair "$app" env ZIVM_SOCKET="$sock" ZIVM_AUTOSTART=0 "${armnode[@]}")"

say "all checks passed"
