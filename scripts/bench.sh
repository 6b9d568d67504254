#!/usr/bin/env bash
# bench.sh — synod and Apache ZooKeeper side by side: the same client (synod-bench), the same
# workloads and settings, one after the other in one run on this machine — ZooKeeper (plaintext),
# synod --insecure (plaintext), the same with --audit off (so the audit trail's cost is known) and
# synod with TLS on every port (its default), so the cost of TLS is known; each also serially (one session, one request in flight: the latency of one write);
# then each holds 100,000 znodes of 100 bytes and its servers' resident memory is read from /proc.
# Last, the new connections per second one synod node accepts, with and without TLS.
# First of all, the machine's floor in the same run (synod-bench --floor: loopback round trip,
# 4 KiB append + fdatasync), and with every workload the servers' CPU time per request (all
# servers summed, from /proc). It ends with the table of docs/design.md §10's targets: ZooKeeper
# and synod side by side, the ratios, and each target computed from this run's floor.
#
# Usage: scripts/bench.sh [seconds per workload (default 10)]
# Environment: BENCH_SESSIONS (16), BENCH_INFLIGHT (256), BENCH_VALUE (256), BENCH_FILL (100000),
#              BENCH_WORKLOADS (create,set,get,mixed); ports as in zk-ensemble.sh / cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
# The sides choose their own TLS material: nothing from the caller's shell (cluster.sh env).
unset SYNOD_TLS_CA SYNOD_TLS_CERT SYNOD_TLS_KEY SYNOD_INSECURE
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

tls=() # synod-bench's TLS flags for the side being measured

run_side() { # name connect-string pidfiles...
    local name=$1 servers=$2 f
    shift 2
    local pids=()
    for f in "$@"; do pids+=(--server-pid "$(cat "$f")"); done
    echo "== $name ($servers)"
    IFS=, read -ra ws <<<"$workloads"
    for w in "${ws[@]}"; do
        "$BENCH" "${tls[@]}" "${pids[@]}" --servers "$servers" --workload "$w" --sessions "$sessions" \
            --inflight "$inflight" --value-size "$value" --duration-secs "$secs" --warmup-secs 2 \
            | grep -o 'workload=.*' | tee -a "$out/$name.txt"
    done
    # One session, one request in flight: the latency of one write, and of one read, on its own.
    for w in set get; do
        "$BENCH" "${tls[@]}" "${pids[@]}" --servers "$servers" --workload $w --sessions 1 --inflight 1 \
            --value-size "$value" --duration-secs "$secs" --warmup-secs 1 | grep -o 'workload=.*' \
            | sed "s/^workload=$w/workload=serial_$w/" | tee -a "$out/$name.txt"
    done
    echo "rss_before_fill_mib=$(rss_mib "$@")" | tee -a "$out/$name.txt"
    "$BENCH" "${tls[@]}" --servers "$servers" --fill "$fill" --value-size 100 --inflight 256 | tee -a "$out/$name.txt"
    sleep 2
    echo "rss_after_fill_mib=$(rss_mib "$@")" | tee -a "$out/$name.txt"
}

synod_servers=127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183

# The floor, on the file system that holds the servers' data.
echo "== the machine's floor"
"$BENCH" --floor "$out" | tee "$out/floor.txt"

ZK_DIR="$out/zk" bash scripts/zk-ensemble.sh start 3 >/dev/null
run_side zookeeper 127.0.0.1:2281,127.0.0.1:2282,127.0.0.1:2283 "$out"/zk/node{1,2,3}/zookeeper.pid
ZK_DIR="$out/zk" bash scripts/zk-ensemble.sh stop --wipe >/dev/null

SYNOD_INSECURE=1 SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh start 3 >/dev/null
run_side synod_plain "$synod_servers" "$out"/synod/node{1,2,3}.pid
"$BENCH" --servers 127.0.0.1:2181 --handshakes 5 --warmup-secs 1 --inflight 8 | tee -a "$out/synod_plain.txt"
SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh stop --wipe >/dev/null

# The same plaintext cluster without its audit trail: what recording every change costs.
SYNOD_ARGS="--audit off" SYNOD_INSECURE=1 SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh start 3 >/dev/null
run_side synod_noaudit "$synod_servers" "$out"/synod/node{1,2,3}.pid
SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh stop --wipe >/dev/null

SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh start 3 >/dev/null
certs="$out/synod/certs"
tls=(--tls-ca "$certs/ca.crt" --tls-cert "$certs/admin.crt" --tls-key "$certs/admin.key")
run_side synod_tls "$synod_servers" "$out"/synod/node{1,2,3}.pid
"$BENCH" "${tls[@]}" --servers 127.0.0.1:2181 --handshakes 5 --warmup-secs 1 --inflight 8 | tee -a "$out/synod_tls.txt"
SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh stop --wipe >/dev/null

echo
echo "== side by side ($secs s per workload, $sessions sessions, $inflight in flight, ${value}-byte values;"
echo "   serial_set: 1 session, 1 in flight; p50 is its latency)"
printf '%-11s %11s %9s %11s %9s %11s %9s %9s\n' workload zk_ops/s zk_p50ms plain_ops/s plain_p50 tls_ops/s tls_p50 tls/plain
field() { grep "workload=$1 " "$out/$2.txt" | sed -n "s|.* $3=\([0-9.]*\).*|\1|p"; }
ms() { awk "BEGIN{printf \"%.2f\", ${1:-0}/1000}"; }
IFS=, read -ra ws <<<"$workloads,serial_set,serial_get"
for w in "${ws[@]}"; do
    zo=$(field "$w" zookeeper ops/s); zp=$(field "$w" zookeeper p50_us)
    po=$(field "$w" synod_plain ops/s); pp=$(field "$w" synod_plain p50_us)
    to=$(field "$w" synod_tls ops/s); tp=$(field "$w" synod_tls p50_us)
    printf '%-11s %11s %9s %11s %9s %11s %9s %9s\n' "$w" "$zo" "$(ms "$zp")" "$po" "$(ms "$pp")" \
        "$to" "$(ms "$tp")" "$(awk "BEGIN{ if (${po:-0} > 0) printf \"%.2f\", ${to:-0}/${po}; else print \"-\" }")"
done
echo
echo "== the audit trail's cost (plaintext; audit on is the default)"
printf '%-11s %13s %13s %9s\n' workload audit_on_ops/s audit_off_ops/s on/off
for w in "${ws[@]}"; do
    po=$(field "$w" synod_plain ops/s); no=$(field "$w" synod_noaudit ops/s)
    printf '%-11s %13s %13s %9s\n' "$w" "$po" "$no" \
        "$(awk "BEGIN{ if (${no:-0} > 0) printf \"%.2f\", ${po:-0}/${no}; else print \"-\" }")"
done
echo "new connections/s one synod node accepts (8 at a time): plaintext=$(field handshake synod_plain ops/s) tls=$(field handshake synod_tls ops/s) (p50 $(ms "$(field handshake synod_tls p50_us)") ms)"

# The targets of docs/design.md §10, ZooKeeper and synod (plaintext, like ZooKeeper) side by side.
rtt=$(field floor_rtt floor p50_us); fsync=$(field floor_fsync floor p50_us)
max_of() { tr ' ' '\n' | sort -n | tail -1; }
rss_zk=$(sed -n 's/rss_after_fill_mib=//p' "$out/zookeeper.txt" | max_of)
rss_synod=$(sed -n 's/rss_after_fill_mib=//p' "$out/synod_plain.txt" | max_of)
echo
echo "== targets (docs/design.md §10); floor in this run: loopback round trip p50 ${rtt} us, 4 KiB append+fdatasync p50 ${fsync} us"
printf '%-34s %11s %11s %8s   %s\n' measure zookeeper synod ratio goal
row() { # label zk synod ratio goal
    printf '%-34s %11s %11s %8s   %s\n' "$1" "${2:--}" "${3:--}" "$4" "$5"
}
ratio() { awk "BEGIN{ if (${2:-0} > 0) printf \"%.2fx\", ${1:-0}/${2}; else print \"-\" }"; }
for w in set create get; do
    zo=$(field "$w" zookeeper ops/s); so=$(field "$w" synod_plain ops/s)
    label="$w ops/s"; [ "$w" = get ] && label="get ops/s (zk local, synod lin.)"
    row "$label" "$zo" "$so" "$(ratio "$so" "$zo")" ">= 3x zookeeper"
done
floor_us=$(awk "BEGIN{ printf \"%d\", (2*${rtt:-0} + ${fsync:-0}) * 1.25 }")
zs=$(field serial_set zookeeper p50_us); ss=$(field serial_set synod_plain p50_us)
row "serial set p50 us" "$zs" "$ss" "$(ratio "$ss" "$zs")" "<= ${floor_us} (2 round trips + 1 fdatasync + 25%)"
zg=$(field serial_get zookeeper p50_us); sg=$(field serial_get synod_plain p50_us)
row "serial get p50 us (zk local)" "$zg" "$sg" "$(ratio "$sg" "$zg")" "<= zookeeper's"
zc=$(field set zookeeper server_cpu_us_per_op); sc=$(field set synod_plain server_cpu_us_per_op)
row "server cpu per set us (3 summed)" "$zc" "$sc" "$(ratio "$sc" "$zc")" "<= 15"
row "max rss per server MiB, $fill znodes" "$rss_zk" "$rss_synod" "$(ratio "$rss_synod" "$rss_zk")" "<= 50"
echo "rss after $fill znodes of 100 bytes (MiB per server): zookeeper=[$(sed -n 's/rss_after_fill_mib=//p' "$out/zookeeper.txt")] synod_plain=[$(sed -n 's/rss_after_fill_mib=//p' "$out/synod_plain.txt")] synod_tls=[$(sed -n 's/rss_after_fill_mib=//p' "$out/synod_tls.txt")]"
