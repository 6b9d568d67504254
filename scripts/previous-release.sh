#!/usr/bin/env bash
# previous-release.sh — builds the previous tagged release's binaries (synod, synodctl) for the
# rolling-upgrade test (server/tests/upgrade.rs) and prints the directory that holds them as its
# last line.
#
# The release is built from the git history of this clone (`git archive`), in a target directory
# of its own (two trees sharing one target directory overwrite each other's binaries), and the
# binaries are kept under $HOME/.cache/synod/releases/<tag>/ so that a second run costs nothing.
# The first run compiles RocksDB again: about 15 minutes on 2 cores.
#
# Usage: scripts/previous-release.sh [TAG]      (default: v0.4.0)
# Environment:
#   SYNOD_RELEASES_DIR  where built releases are kept (default: $HOME/.cache/synod/releases)
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-v0.4.0}"
# The commit each known tag names, so that a clone without tags still builds the same tree.
case "$tag" in
    v0.1.0) commit=289fcaa ;;
    v0.2.0) commit=3afabe7 ;;
    v0.3.0) commit=9adfedf ;;
    v0.4.0) commit=96b2df0 ;;
    *) commit="$tag" ;;
esac
releases="${SYNOD_RELEASES_DIR:-$HOME/.cache/synod/releases}"
out="$releases/$tag"
if [ -x "$out/synod" ] && [ -x "$out/synodctl" ]; then
    echo "$out"
    exit 0
fi

git rev-parse --verify -q "$commit^{commit}" >/dev/null ||
    { echo "previous-release.sh: $tag ($commit) is not in this clone's history" >&2; exit 2; }
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
git archive --format=tar "$commit" | tar -x -C "$src"
echo "== building $tag ($commit) in $src (its own target directory)" >&2
target="$releases/target"
mkdir -p "$target"
(cd "$src" && CARGO_TARGET_DIR="$target" cargo build --locked --quiet \
    -p synod-server --bin synod -p synod-client --bin synodctl) >&2
mkdir -p "$out.tmp"
cp "$target/debug/synod" "$target/debug/synodctl" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
