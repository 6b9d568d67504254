#!/usr/bin/env bash
# faults.sh — the whole fault-injection suite (issues 4 and 16): real 3-node synod clusters (4-5
# nodes for the membership change) with fault-injecting proxies on every peer link (and, for the
# client partition, on the clients' links), concurrent recorded clients, and the checks
# (linearizability, lost writes, sequential names, lock holders, ephemeral lifetimes,
# recursive-watch delivery, replica digests, audit trails). Process, network, disk (strace:
# slow and failing fsync; a full tmpfs; a flipped byte) and clock (libfaketime) faults. Prints
# one table row per scenario; exits non-zero if any scenario finds an anomaly.
#
#   scripts/faults.sh                       every scenario, debug build (about 8 minutes here)
#   scripts/faults.sh --release             every scenario, release build
#   scripts/faults.sh [--release] NAME      one scenario (names: server/tests/faults/scenario.rs)
#
# Needs root (ptrace, mount) and strace + faketime (scripts/test.sh installs them). The clusters
# are secure (TLS on every port), as synod is by default. The test command runs the short
# version (five scenarios) as part of `cargo test --workspace`. Builds with `--workspace`, as
# scripts/test.sh does: a `-p` build resolves other features and compiles RocksDB again (about
# 20 minutes; a first release build takes as long). Uses the same CARGO_TARGET_DIR default as
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/synod/target}"
profile=()
if [ "${1:-}" = "--release" ]; then
    profile=(--release)
    shift
fi
if [ $# -gt 0 ]; then
    exec cargo test "${profile[@]}" --locked --workspace --test faults -- --scenario "$1"
fi
exec cargo test "${profile[@]}" --locked --workspace --test faults -- --full
