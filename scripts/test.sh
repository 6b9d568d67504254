#!/usr/bin/env bash
# test.sh — the project's test command (README "Run the tests"; CI runs it through .ci/run).
#
# Installs what the tests need on a fresh Debian machine (Apache ZooKeeper 3.8 from Debian, the
# behavioural oracle the conformance suite runs against; clang for RocksDB's build; chromium,
# libnss3-tools and openssl for the dashboard test; python3-kazoo for the TLS test; strace and
# faketime for the disk and clock fault tests), builds the previous release for the
# rolling-upgrade test, then checks formatting, lints and the code's documentation and runs
# every test of the workspace. Safe to run again: nothing is installed twice.
#
# Environment:
#   CARGO_TARGET_DIR  where cargo builds (default: $HOME/.cache/synod/target, outside the clone,
#                     so fresh clones reuse earlier builds; a machine without it builds from scratch)
#   SYNOD_TEST_SERVERS  run the conformance suite against this server list instead of starting a
#                     ZooKeeper ensemble (e.g. a synod cluster)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/synod/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need_pkgs=()
[ -f /usr/share/java/zookeeper.jar ] || need_pkgs+=(zookeeper)
command -v java >/dev/null 2>&1 || need_pkgs+=(default-jre-headless)
# librocksdb-sys is compiled from source and needs clang/libclang for its bindings.
dpkg -s libclang-dev >/dev/null 2>&1 || need_pkgs+=(libclang-dev)
command -v clang >/dev/null 2>&1 || need_pkgs+=(clang)
# kazoo, a ZooKeeper client that is not synod's, over TLS (server/tests/tls.rs).
/usr/bin/python3 -c "import kazoo" >/dev/null 2>&1 || need_pkgs+=(python3-kazoo)
# the dashboard test (server/tests/dashboard.rs) loads /ui in a real headless browser, over
# HTTPS with the operator's certificate in an NSS database (certutil, pk12util; openssl makes
# the PKCS#12 file).
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v certutil >/dev/null 2>&1 || need_pkgs+=(libnss3-tools)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# disk faults (server/tests/disk.rs): strace attaches to a node and delays or fails its fsyncs.
command -v strace >/dev/null 2>&1 || need_pkgs+=(strace)
# clock faults (server/tests/clock.rs): libfaketime moves one node's clock.
dpkg -s faketime >/dev/null 2>&1 || need_pkgs+=(faketime)
# the systemd unit is checked with systemd-analyze (server/tests/service.rs).
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
# the container image is built and run with podman (server/tests/container.rs): runc (crun
# refuses this VM's hybrid cgroups), and debootstrap for a base image without a registry.
command -v podman >/dev/null 2>&1 || need_pkgs+=(podman)
command -v podman-compose >/dev/null 2>&1 || need_pkgs+=(podman-compose)
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "== installing ${need_pkgs[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }

# When the run ends, the workspace's artifacts that this checkout does not use (of earlier
# commits: cargo never removes them) go from the shared target directory
# (scripts/prune-target.sh); the run's exit status stays.
prune_stamp=$(mktemp)
trap 'rc=$?; scripts/prune-target.sh "$prune_stamp" || true; rm -f "$prune_stamp"; exit $rc' EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The code's documentation is for its developers: private items included, and a broken link,
# an ambiguous one or bad markup in a doc comment fails the run.
echo "== cargo doc (private items too, warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --locked

# The rolling-upgrade test (server/tests/upgrade.rs) runs the previous release: built once from
# its git tag into $HOME/.cache/synod/releases (about 15 minutes without that cache).
echo "== the previous release (scripts/previous-release.sh), for the rolling-upgrade test"
scripts/previous-release.sh

echo "== cargo test (unit, property, doc, conformance against a real ZooKeeper 3.8 ensemble)"
cargo test --workspace --locked
