#!/usr/bin/env bash
# faults.sh — the whole fault-injection suite (issue 4): real 3-node synod clusters (4 nodes for
# the membership change) with fault-injecting proxies on every peer link, concurrent recorded
# clients, and the checks (linearizability, lost writes, sequential names, lock holders,
# ephemeral lifetimes, recursive-watch delivery, replica digests). Prints one table row per
# scenario; exits non-zero if any scenario finds an anomaly.
#
#   scripts/faults.sh                 every scenario (about 3 minutes here)
#   scripts/faults.sh kill-leader     one scenario (names: see server/tests/faults/scenario.rs)
#
# The clusters are secure (TLS on every port), as synod is by default. The test command runs the
# short version (three scenarios) as part of `cargo test --workspace`. Builds with `--workspace`,
# as scripts/test.sh does: a `-p` build resolves other features and compiles RocksDB again (about
# 20 minutes). Uses the same CARGO_TARGET_DIR default as scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/synod/target}"
if [ $# -gt 0 ]; then
    exec cargo test --locked --workspace --test faults -- --scenario "$1"
fi
exec cargo test --locked --workspace --test faults -- --full
