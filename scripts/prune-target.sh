#!/usr/bin/env bash
# prune-target.sh — removes from $CARGO_TARGET_DIR (debug profile) the workspace's build
# artifacts that the current checkout does not use, keeping its own and every dependency's.
#
# Why: cargo gives a crate's artifacts a new name (hash) whenever its dependencies, its features,
# the workspace's version or the compiler change, and never removes the old ones; the scripts
# share one target directory across every clone and commit (CI builds each commit of `main`
# anew), so the workspace's old test binaries, libraries and incremental caches pile up. They
# had filled 53 GB of this machine's disk (19 GB of it incremental caches); the dependencies,
# RocksDB first, stay. scripts/test.sh runs this when it ends.
#
# Usage: scripts/prune-target.sh STAMP_FILE
#   What is kept of the workspace's crates: in debug/deps, exactly the files cargo names as this
#   checkout's artifacts (of `cargo test --no-run` and `cargo clippy --all-targets`, both already
#   built); in debug/incremental, a crate's caches only if none of them was used since
#   STAMP_FILE (made when the run began) or it is one that was.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=${1:?usage: prune-target.sh STAMP_FILE}
[ -f "$stamp" ] || { echo "prune-target: no stamp file $stamp" >&2; exit 2; }
target="${CARGO_TARGET_DIR:-$HOME/.cache/synod/target}"
[ -d "$target/debug/deps" ] || exit 0

artifacts=$(mktemp)
metadata=$(mktemp)
trap 'rm -f "$artifacts" "$metadata"' EXIT
# Fresh units are reported too ("fresh": true), so this lists the whole build without building.
cargo test --workspace --locked --no-run --message-format=json >>"$artifacts" 2>/dev/null
cargo clippy --workspace --all-targets --locked --message-format=json -- -D warnings >>"$artifacts" 2>/dev/null

before=$(du -sm "$target/debug" | cut -f1)
cargo metadata --format-version 1 --locked >"$metadata" 2>/dev/null
/usr/bin/python3 - "$metadata" "$artifacts" "$target/debug" "$stamp" <<'EOF'
import json, os, re, shutil, sys

metadata_file, artifacts_file, debug, stamp = sys.argv[1:5]
meta = json.load(open(metadata_file))
members = set(meta["workspace_members"])
ours, theirs = set(), set()
for p in meta["packages"]:
    names = {t["name"].replace("-", "_") for t in p["targets"]}
    (ours if p["id"] in members else theirs).update(names)
# A name a dependency also uses is never touched.
ours -= theirs

keep = set()
for line in open(artifacts_file):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact":
        for f in msg.get("filenames", []) + [msg.get("executable") or ""]:
            if f:
                keep.add(os.path.realpath(f))
if not keep:
    sys.exit("prune-target: cargo named no artifacts of this checkout; nothing removed")
kept_hashes, kept_inodes = set(), set()
for f in keep:
    m = re.search(r"-([0-9a-f]{16})(\.[a-z]+)?$", os.path.basename(f))
    if m:
        kept_hashes.add(m.group(1))
    # A binary is named by its uplifted copy (debug/synod), a hard link to its file in deps.
    try:
        st = os.stat(f)
        kept_inodes.add((st.st_dev, st.st_ino))
    except OSError:
        pass

unit = re.compile(r"^(?:lib)?(?P<name>[A-Za-z0-9_]+)-(?P<hash>[0-9a-f]{16})(?:\.[a-z]+)?$")
deps = os.path.join(debug, "deps")
for entry in os.listdir(deps):
    m = unit.match(entry)
    path = os.path.join(deps, entry)
    # A unit of ours from another checkout: its hash is none of this build's.
    if m and m["name"] in ours and m["hash"] not in kept_hashes and os.path.isfile(path):
        st = os.stat(path)
        if (st.st_dev, st.st_ino) not in kept_inodes:
            os.remove(path)

incremental = os.path.join(debug, "incremental")
if os.path.isdir(incremental):
    since = os.path.getmtime(stamp)
    by_name = {}
    for entry in os.listdir(incremental):
        m = re.match(r"^(?P<name>[A-Za-z0-9_]+)-[0-9a-z]+$", entry)
        if m and m["name"] in ours:
            by_name.setdefault(m["name"], []).append(os.path.join(incremental, entry))
    for dirs in by_name.values():
        used = [d for d in dirs if os.path.getmtime(d) > since]
        if used:
            for d in dirs:
                if d not in used:
                    shutil.rmtree(d, ignore_errors=True)
EOF
echo "prune-target: $target/debug from ${before} MB to $(du -sm "$target/debug" | cut -f1) MB"
