#!/usr/bin/env bash
# bench.sh — synod and Apache ZooKeeper side by side: the same client (synod-bench), the same
# workloads and settings, one after the other in one run on this machine; then each holds 100,000
# znodes of 100 bytes and its servers' resident memory is read from /proc.
#
# Usage: scripts/bench.sh [seconds per workload (default 10)]
# Environment: BENCH_SESSIONS (16), BENCH_INFLIGHT (256), BENCH_VALUE (256), BENCH_FILL (100000),
#              BENCH_WORKLOADS (create,set,get,mixed); ports as in zk-ensemble.sh / cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/synod/target}"
sessions=${BENCH_SESSIONS:-16}
inflight=${BENCH_INFLIGHT:-256}
value=${BENCH_VALUE:-256}
fill=${BENCH_FILL:-100000}
workloads=${BENCH_WORKLOADS:-create,set,get,mixed}
BENCH="$CARGO_TARGET_DIR/release/synod-bench"
out=$(mktemp -d)
trap 'ZK_DIR=$out/zk bash scripts/zk-ensemble.sh stop --wipe >/dev/null 2>&1 || true; SYNOD_CLUSTER_DIR=$out/synod bash scripts/cluster.sh stop --wipe >/dev/null 2>&1 || true; rm -rf "$out"' EXIT

# The whole workspace's binaries: one feature set, so this, cluster.sh and the tests' release
# builds share one RocksDB build (a `-p` build resolves other features and compiles it again).
cargo build --release -q --workspace --bins

rss_mib() { # pid files... → "a b c" MiB
    local f pid kb s=""
    for f in "$@"; do
        pid=$(cat "$f" 2>/dev/null || true)
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        s+="${s:+ }$((kb / 1024))"
    done
    echo "$s"
}

run_side() { # name connect-string pidfiles...
    local name=$1 servers=$2
    shift 2
    echo "== $name ($servers)"
    IFS=, read -ra ws <<<"$workloads"
    for w in "${ws[@]}"; do
        "$BENCH" --servers "$servers" --workload "$w" --sessions "$sessions" --inflight "$inflight" \
            --value-size "$value" --duration-secs "$secs" --warmup-secs 2 | grep -o 'workload=.*errors=[0-9]*' \
            | tee -a "$out/$name.txt"
    done
    echo "rss_before_fill_mib=$(rss_mib "$@")" | tee -a "$out/$name.txt"
    "$BENCH" --servers "$servers" --fill "$fill" --value-size 100 --inflight 256 | tee -a "$out/$name.txt"
    sleep 2
    echo "rss_after_fill_mib=$(rss_mib "$@")" | tee -a "$out/$name.txt"
}

ZK_DIR="$out/zk" bash scripts/zk-ensemble.sh start 3 >/dev/null
run_side zookeeper 127.0.0.1:2281,127.0.0.1:2282,127.0.0.1:2283 "$out"/zk/node{1,2,3}/zookeeper.pid
ZK_DIR="$out/zk" bash scripts/zk-ensemble.sh stop --wipe >/dev/null

SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh start 3 >/dev/null
run_side synod 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183 "$out"/synod/node{1,2,3}.pid
SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh stop --wipe >/dev/null

echo
echo "== side by side ($secs s per workload, $sessions sessions, $inflight in flight, ${value}-byte values)"
printf '%-10s %14s %10s %14s %10s\n' workload zk_ops/s zk_p99_ms synod_ops/s synod_p99_ms
field() { grep "workload=$1 " "$out/$2.txt" | sed -n "s|.* $3=\([0-9.]*\).*|\1|p"; }
IFS=, read -ra ws <<<"$workloads"
for w in "${ws[@]}"; do
    zo=$(field "$w" zookeeper ops/s); zp=$(field "$w" zookeeper p99_us)
    so=$(field "$w" synod ops/s); sp=$(field "$w" synod p99_us)
    printf '%-10s %14s %10s %14s %10s\n' "$w" "$zo" "$(awk "BEGIN{printf \"%.1f\", ${zp:-0}/1000}")" \
        "$so" "$(awk "BEGIN{printf \"%.1f\", ${sp:-0}/1000}")"
done
echo "rss after $fill znodes of 100 bytes (MiB per server): zookeeper=[$(sed -n 's/rss_after_fill_mib=//p' "$out/zookeeper.txt")] synod=[$(sed -n 's/rss_after_fill_mib=//p' "$out/synod.txt")]"
