#!/usr/bin/env bash
# bench.sh — synod and Apache ZooKeeper side by side: the same client (synod-bench), the same
# workloads and settings, one after the other in one run on this machine — ZooKeeper (plaintext),
# synod --insecure (plaintext), the same with --audit off (so the audit trail's cost is known) and
# synod with TLS on every port (its default), so the cost of TLS is known; each also serially (one session, one request in flight: the latency of one write);
# then each holds 100,000 znodes of 100 bytes and its servers' resident memory is read from /proc,
# 2 s after the fill and again at rest (once the servers' summed RSS stops falling: freed pages
# go back to the system a few seconds after a burst).
# Last, the new connections per second one synod node accepts, with and without TLS.
# First of all, the machine's floor in the same run (synod-bench --floor: loopback round trip,
# 4 KiB append + fdatasync; and what that sync is made of: the same over blocks already
# written, and three appenders at once; and a round trip to a thread that was asleep, what each
# hop of a serial write pays), and with every workload the servers' CPU time per
# request (all servers summed, from /proc). It ends with the table of docs/design.md §10's targets: ZooKeeper
# and synod side by side, the ratios, and each target computed from this run's floor.
#
# The serial workloads go through a follower of each cluster (design §10 measures "a serial write
# through a follower"), and for the plaintext synod cluster the time of a serial set and of set
# at full load is broken into its stages on every node (synod_stage_seconds and the log and apply
# histograms of /metrics: docs/operations.md, "Where a request's time goes").
#
# `scripts/bench.sh scale` runs the scale phases instead (synod alone, plaintext): for each size
# of BENCH_SCALE (100000 and 1000000 znodes of 100 bytes, 1,000 children per parent) a fresh
# 3-node cluster is filled, then it reports the fill rate, every server's RSS, the time and size
# of a snapshot, get and set throughput at that size, the restart of a follower (snapshot load +
# log replay, until /ready), an empty node catching up as a learner (snapshot install + log) —
# each with what it started from (restart_from, catch_up_by: `snapshot`, or `log` where the node
# had no snapshot of its own or the leader still held every entry the learner needed) —
# for the snapshot, the restart and the catch-up also the node's RSS at its peak (for the
# catch-up, the learner's and the leader's, which sends the snapshot) — and
# the RSS with 10,000 more sessions holding 100,000 watches; last, how each cost grew from the
# smallest size to the largest against the growth of the tree.
#
# `scripts/bench.sh ab A B` compares two synod binaries (a change against its base: build each
# into its own CARGO_TARGET_DIR), since one run of each on this noisy machine proves nothing: a
# fresh plaintext 3-node cluster of each in turn, for several rounds (order A B, then B A, ...),
# each round the loaded workloads and a serial set through a follower; then per side the median
# and the range of throughput, CPU per request and p50, B against A, and whether the ranges
# overlap (then the runs do not tell the two apart). A side named `zookeeper` is a 3-node ZooKeeper
# ensemble (as the compare mode's): `bench.sh ab zookeeper SYNOD` gives design §10's ratios
# round by round, each pair measured minutes apart, so a drift of the machine hits both.
#
# Usage: scripts/bench.sh [seconds per workload (default 10)]
#        scripts/bench.sh scale [seconds per workload (default 10)]
#        scripts/bench.sh ab SYNOD_A SYNOD_B [rounds (default 5)] [seconds per workload (default 8)]
#          (either side may be the word `zookeeper`: a 3-node ZooKeeper ensemble instead of a binary)
# Environment: BENCH_SESSIONS (16), BENCH_INFLIGHT (256), BENCH_VALUE (256), BENCH_FILL (100000),
#              BENCH_WORKLOADS (create,set,get,mixed), BENCH_WARMUP (seconds of unrecorded load
#              before each side and before each loaded workload, 5: ZooKeeper's JIT needs it;
#              0: none); for scale: BENCH_SCALE
#              ("100000 1000000"), BENCH_HOLD_SESSIONS (10000), BENCH_HOLD_WATCHES (100000);
#              for ab: BENCH_WORKLOADS (set,create,get), BENCH_WARMUP (2; 5 with a zookeeper side),
#              BENCH_SIDE_WARMUP (seconds of mixed load on each fresh cluster: BENCH_WARMUP; 20
#              with a zookeeper side);
#              ports as in zk-ensemble.sh / cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=compare
if [ "${1:-}" = scale ]; then
    mode=scale
    shift
fi
if [ "${1:-}" = ab ]; then
    mode=ab
    if [ $# -lt 3 ]; then echo "usage: scripts/bench.sh ab SYNOD_A SYNOD_B [rounds] [seconds]" >&2; exit 2; fi
    bin_a=$2; bin_b=$3; rounds=${4:-5}
    for side in a b; do
        var=bin_$side
        [ "${!var}" = zookeeper ] && continue
        printf -v "$var" '%s' "$(realpath "${!var}")"
        [ -x "${!var}" ] || { echo "bench.sh ab: ${!var} is not an executable" >&2; exit 2; }
    done
    shift 4 2>/dev/null || shift $#
    set -- "${1:-8}"
    # A fresh ZooKeeper JVM each round wants more warm-up than synod: with 5 s of mixed load before
    # its first workload, its set took twice the CPU per write it takes in the compare mode, whose
    # set comes after 20 s of load. Both sides get the same warm-up.
    side_warmup=${BENCH_SIDE_WARMUP:-}
    if [ "$bin_a" = zookeeper ] || [ "$bin_b" = zookeeper ]; then
        : "${BENCH_WARMUP:=5}" "${side_warmup:=20}"
    fi
    : "${BENCH_WORKLOADS:=set,create,get}" "${BENCH_WARMUP:=2}"
fi
secs=${1:-10}
# The sides choose their own TLS material: nothing from the caller's shell (cluster.sh env).
unset SYNOD_TLS_CA SYNOD_TLS_CERT SYNOD_TLS_KEY SYNOD_INSECURE
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/synod/target}"
sessions=${BENCH_SESSIONS:-16}
inflight=${BENCH_INFLIGHT:-256}
value=${BENCH_VALUE:-256}
fill=${BENCH_FILL:-100000}
workloads=${BENCH_WORKLOADS:-create,set,get,mixed}
warmup=${BENCH_WARMUP:-5}
BENCH="$CARGO_TARGET_DIR/release/synod-bench"
out=$(mktemp -d)
trap 'ZK_DIR=$out/zk bash scripts/zk-ensemble.sh stop --wipe >/dev/null 2>&1 || true; SYNOD_CLUSTER_DIR=$out/synod bash scripts/cluster.sh stop 5 --wipe >/dev/null 2>&1 || true; rm -rf "$out"' EXIT

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

rss_peak_reset() { # pid-file: from now on, VmHWM (rss_peak_mib) is the process's most RSS since now
    echo 5 >"/proc/$(cat "$1")/clear_refs"
}

rss_peak_mib() { # pid-file → the process's most RSS (MiB) since it started or rss_peak_reset
    awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$(cat "$1")/status"
}

rss_settle() { # pid files... : waits (at most 40 s) until the servers' summed RSS stops falling
    local before now i
    before=$(( $(rss_mib "$@" | tr ' ' '+') ))
    for i in $(seq 1 20); do
        sleep 2
        now=$(( $(rss_mib "$@" | tr ' ' '+') ))
        [ $((before - now)) -lt 2 ] && return 0
        before=$now
    done
}

tls=() # synod-bench's TLS flags for the side being measured
stages=0 # 1: break the plaintext synod side's serial set and set into stages

# The stage histograms of every node of the plaintext synod cluster (admin ports 8081…, plain
# HTTP), as "node metric{labels}_sum|_count value" lines.
stage_scrape() { # file
    local i
    for i in 1 2 3; do
        curl -fsS --max-time 5 "http://127.0.0.1:$((8080 + i))/metrics" \
            | grep -E '^synod_(stage|log_fsync|log_append|apply)_seconds_(sum|count)' | sed "s/^/$i /"
    done >"$1" || true
}

# Mean time per stage between two scrapes, node by node, and how often it ran per write (the
# writes counted by write_applied on all nodes: the workload's own, its set-up's and warm-up's).
stage_table() { # before after label
    echo "-- stages of $3 (mean us per pass, passes per client write; docs/operations.md)"
    awk '
        NR == FNR { v[$1 " " $2] = $3; next }
        {
            metric = $2; kind = metric ~ /_sum($|[{])/ ? "sum" : "count"
            sub(/_(sum|count)/, "", metric)
            if (match(metric, /stage="[a-z_]+"/)) metric = "stage:" substr(metric, RSTART + 7, RLENGTH - 8)
            else { sub(/^synod_/, "", metric); sub(/_seconds.*/, "", metric) }
            k = "node" $1 " " metric
            d = $3 - v[$1 " " $2]
            if (kind == "sum") s[k] = d; else c[k] = d
            if (kind == "count" && metric == "stage:write_applied") writes += d
        }
        END {
            for (k in c) if (c[k] > 0)
                printf "%-30s mean_us=%8.0f  per_write=%6.2f\n", k, s[k] / c[k] * 1e6, (writes > 0 ? c[k] / writes : 0)
        }' "$1" "$2" | sort
}

# A follower's client address: the serial workloads go through one.
zk_follower() { # ports...
    local p mode
    for p in "$@"; do
        mode=$( (exec 3<>"/dev/tcp/127.0.0.1/$p" && printf srvr >&3 && timeout 5 cat <&3) 2>/dev/null || true)
        if grep -q 'Mode: follower' <<<"$mode"; then echo "127.0.0.1:$p"; return; fi
    done
    echo "127.0.0.1:$1"
}
synod_follower() { # admin-curl-flags...
    local i scheme=http
    [ $# -gt 0 ] && scheme=https
    for i in 1 2 3; do
        if curl -fsS --max-time 5 "$@" "$scheme://127.0.0.1:$((8080 + i))/status" 2>/dev/null \
            | grep -q '"role":"follower"'; then
            echo "127.0.0.1:$((2180 + i))"; return
        fi
    done
    echo 127.0.0.1:2181
}

run_side() { # name connect-string serial-server pidfiles...
    local name=$1 servers=$2 serial=$3 f w
    shift 3
    local pids=()
    for f in "$@"; do pids+=(--server-pid "$(cat "$f")"); done
    echo "== $name ($servers; serial workloads through the follower $serial)"
    # Unrecorded load first, so that the first workload measured does not pay for a cold JVM.
    if [ "$warmup" != 0 ]; then
        "$BENCH" "${tls[@]}" --servers "$servers" --workload mixed --sessions "$sessions" \
            --inflight "$inflight" --value-size "$value" --duration-secs "$warmup" --warmup-secs 0 \
            >/dev/null
    fi
    IFS=, read -ra ws <<<"$workloads"
    for w in "${ws[@]}"; do
        [ "$stages" = 1 ] && [ "$w" = set ] && stage_scrape "$out/stages.0"
        "$BENCH" "${tls[@]}" "${pids[@]}" --servers "$servers" --workload "$w" --sessions "$sessions" \
            --inflight "$inflight" --value-size "$value" --duration-secs "$secs" --warmup-secs "$warmup" \
            | grep -o 'workload=.*' | tee -a "$out/$name.txt"
        [ "$stages" = 1 ] && [ "$w" = set ] && stage_scrape "$out/stages.set"
    done
    # One session, one request in flight: the latency of one write, and of one read, on its own
    # (100 keys: a set-up of a few pipelined creates does not blur the stages of serial sets).
    for w in set get; do
        [ "$stages" = 1 ] && [ "$w" = set ] && stage_scrape "$out/stages.1"
        "$BENCH" "${tls[@]}" "${pids[@]}" --servers "$serial" --workload $w --sessions 1 --inflight 1 \
            --keys 100 --value-size "$value" --duration-secs "$secs" --warmup-secs 1 | grep -o 'workload=.*' \
            | sed "s/^workload=$w/workload=serial_$w/" | tee -a "$out/$name.txt"
        [ "$stages" = 1 ] && [ "$w" = set ] && stage_scrape "$out/stages.serial"
    done
    true
    echo "rss_before_fill_mib=$(rss_mib "$@")" | tee -a "$out/$name.txt"
    # The plaintext synod sides also say where the RSS goes (their admin ports are plain HTTP).
    local heap0=()
    if [[ $name == synod_plain || $name == synod_noaudit ]]; then
        mapfile -t heap0 < <(heap_allocated)
    fi
    "$BENCH" "${tls[@]}" --servers "$servers" --fill "$fill" --value-size 100 --inflight 256 | tee -a "$out/$name.txt"
    sleep 2
    echo "rss_after_fill_mib=$(rss_mib "$@")" | tee -a "$out/$name.txt"
    if [ ${#heap0[@]} = 3 ]; then
        echo "$(mem_parts "$fill" "$out/synod" "${heap0[@]}")" | tee -a "$out/$name.txt"
    fi
    rss_settle "$@"
    echo "rss_at_rest_mib=$(rss_mib "$@")" | tee -a "$out/$name.txt"
}

synod_servers=127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183

now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.1f\", $(now) - $1}"; }
metric() { # admin-port name → value
    curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

# What RocksDB holds in memory on a node (synod_rocksdb_memory_bytes summed over the log and the
# audit trail: memtables, table readers, block caches), in bytes, from its plain-HTTP admin port.
rocksdb_memory() { # admin-port
    curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk 'index($1, "synod_rocksdb_memory_bytes{") == 1 { r += $2 } END { printf "%.0f\n", r }'
}

# Each node's Rust heap in bytes: jemalloc's allocated bytes less what RocksDB reports (RocksDB's
# C++ allocates from the same jemalloc: server/src/cxx_alloc.rs), from its plain-HTTP admin port:
# "h1 h2 h3" (mem_parts' before-fill arguments).
heap_allocated() {
    local i a
    for i in 1 2 3; do
        a=$(metric $((8080 + i)) 'synod_allocator_bytes{kind="allocated"}')
        awk -v a="$a" -v k="$(rocksdb_memory $((8080 + i)))" 'BEGIN { printf "%.0f\n", a - k }'
    done
}

# kv "key=value ..." key → value.
kv() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

# The sentence for mem_parts' pairs (found in the line $1).
mem_summary() {
    echo "where that server's $(kv "$1" mem_rss_mib) MiB of RSS go: files (code, libraries) $(kv "$1" mem_files_mib)," \
        "jemalloc resident $(kv "$1" mem_jemalloc_resident_mib) (allocated $(kv "$1" mem_jemalloc_allocated_mib)," \
        "of it RocksDB's $(kv "$1" mem_rocksdb_mib) as RocksDB reports it, its memtables' blocks whole)," \
        "anonymous memory in all $(kv "$1" mem_anon_mib) (jemalloc's resident figure is an upper" \
        "bound: it counts pages handed out and not yet touched); the fill added" \
        "$(kv "$1" heap_bytes_per_znode) bytes of Rust heap per znode"
}

# Where the RSS of the largest server of a plaintext cluster goes, just after a fill of $1 znodes,
# as "key=value" pairs: the pages of files (the binary's code and the shared libraries), what
# jemalloc holds resident (the node's Rust heap and RocksDB's C++ allocations, their free pages
# and jemalloc's metadata) and how much of it is allocated, what RocksDB reports of that
# (rocksdb_memory: memtables, table readers, block caches; a memtable's blocks count whole), the
# anonymous memory in all (jemalloc's, the C library's heap, thread stacks: jemalloc's resident
# figure may exceed it, since it counts pages handed out and not yet touched), and the Rust heap
# bytes the fill added per znode (jemalloc's allocated bytes less RocksDB's, after minus before).
mem_parts() { # znodes cluster-dir rust-heap-before-fill-of-node-1 …-2 …-3
    local n=$1 dir=$2 i pid rss best=0 bi=1 alloc resident rocks
    shift 2
    for i in 1 2 3; do
        pid=$(cat "$dir/node$i.pid")
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
        [ "$rss" -gt "$best" ] && { best=$rss; bi=$i; }
    done
    pid=$(cat "$dir/node$bi.pid")
    alloc=$(metric $((8080 + bi)) 'synod_allocator_bytes{kind="allocated"}')
    resident=$(metric $((8080 + bi)) 'synod_allocator_bytes{kind="resident"}')
    rocks=$(rocksdb_memory $((8080 + bi)))
    awk -v n="$n" -v a0="${!bi}" -v a="$alloc" -v r="$resident" -v k="$rocks" '
        /^RssFile:/ { file = $2 } /^RssAnon:/ { anon = $2 } /^VmRSS:/ { rss = $2 }
        END {
            mib = 1024
            printf "mem_rss_mib=%.1f mem_files_mib=%.1f mem_jemalloc_resident_mib=%.1f mem_jemalloc_allocated_mib=%.1f mem_anon_mib=%.1f mem_rocksdb_mib=%.1f heap_bytes_per_znode=%.0f",
                rss / mib, file / mib, r / 1048576, a / 1048576, anon / mib, k / 1048576, (a - k - a0) / n
        }' "/proc/$pid/status"
}

# One scale phase: a fresh plaintext cluster holding $1 znodes; one "key=value ..." line.
scale_phase() { # znodes
    local n=$1 dir="$out/synod" i leader follower t0 line pid f rss snap_bytes
    export SYNOD_INSECURE=1 SYNOD_CLUSTER_DIR="$dir"
    # 10,000 sessions from one address: no per-address limit, room for all of them.
    export SYNOD_ARGS="--max-connections-per-ip 0 --max-connections 30000"
    bash scripts/cluster.sh start 3 >/dev/null
    for i in 1 2 3; do
        if curl -fsS --max-time 5 "http://127.0.0.1:$((8080 + i))/status" | grep -q '"role":"leader"'; then
            leader=$i
        fi
    done
    follower=$(( leader % 3 + 1 ))
    line="znodes=$n"
    local heap0=()
    mapfile -t heap0 < <(heap_allocated)
    t0=$(now)
    "$BENCH" --servers "$synod_servers" --fill "$n" --fill-fanout 1000 --value-size 100 >/dev/null
    line+=" fill_secs=$(since "$t0")"
    sleep 2
    line+=" rss_mib=$(rss_mib "$dir"/node{1,2,3}.pid | tr ' ' ,)"
    line+=" $(mem_parts "$n" "$dir" "${heap0[@]}")"
    # A snapshot of the whole tree, on the leader (POST /snapshot returns once it is persisted),
    # with the leader's RSS at its peak while it is built and written.
    rss_peak_reset "$dir/node$leader.pid"
    t0=$(now)
    curl -fsS --max-time 600 -X POST "http://127.0.0.1:$((8080 + leader))/snapshot" >/dev/null
    line+=" snapshot_secs=$(since "$t0") snapshot_peak_rss_mib=$(rss_peak_mib "$dir/node$leader.pid")"
    snap_bytes=$(metric $((8080 + leader)) synod_snapshot_bytes)
    line+=" snapshot_mib=$(awk "BEGIN{printf \"%.1f\", ${snap_bytes:-0}/1048576}")"
    for w in set get; do
        f=$("$BENCH" --servers "$synod_servers" --workload $w --sessions "$sessions" --inflight "$inflight" \
            --value-size 100 --duration-secs "$secs" --warmup-secs 2 | grep -o 'ops/s=[0-9.]*' | cut -d= -f2)
        line+=" ${w}_ops_s=$f"
    done
    # A follower restarted: its snapshot loaded and the log after it replayed, until /ready.
    pid=$(cat "$dir/node$follower.pid")
    kill -TERM "$pid"
    for _ in $(seq 1 300); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    cargo build --release -q --workspace --bins # (a no-op, so that the start below is only the node's)
    t0=$(now)
    bash scripts/cluster.sh start 3 >/dev/null
    until curl -fsS --max-time 5 "http://127.0.0.1:$((8080 + follower))/ready?timeout_ms=1000" >/dev/null 2>&1; do
        sleep 0.1
    done
    # (its peak since it started: the snapshot's load and the log's replay)
    line+=" restart_secs=$(since "$t0") restart_peak_rss_mib=$(rss_peak_mib "$dir/node$follower.pid")"
    # (its first start had no snapshot to load: a load in its log is the restart's)
    line+=" restart_from=$(grep -q 'loaded snapshot' "$dir/node$follower.log" && echo snapshot || echo log)"
    # An empty node added as a learner: the leader's snapshot installed and the log after it
    # (add-learner returns once it has caught up) — what rebuilding a wiped follower costs.
    # (the learner's peak: receiving and installing; the leader's: sending)
    bash scripts/cluster.sh join 4 >/dev/null
    rss_peak_reset "$dir/node4.pid"
    rss_peak_reset "$dir/node$leader.pid"
    t0=$(now)
    "$CARGO_TARGET_DIR/release/synodctl" --insecure cluster --admin 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 \
        add-learner --id 4 --peer-addr 127.0.0.1:7004 >/dev/null
    line+=" catch_up_secs=$(since "$t0") catch_up_peak_rss_mib=$(rss_peak_mib "$dir/node4.pid")"
    line+=" catch_up_leader_peak_rss_mib=$(rss_peak_mib "$dir/node$leader.pid")"
    line+=" catch_up_by=$(grep -q 'installed snapshot from the leader' "$dir/node4.log" && echo snapshot || echo log)"
    "$CARGO_TARGET_DIR/release/synodctl" --insecure cluster --admin 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 \
        remove --id 4 >/dev/null
    kill -TERM "$(cat "$dir/node4.pid")" 2>/dev/null || true
    # Many sessions and watches at once, spread over the three servers, held while RSS is read
    # (and read just before, since the loaded workloads above grew the servers' buffers, once
    # the allocator has given back what the catch-up freed: jemalloc purges over ~10 s).
    rss_settle "$dir"/node{1,2,3}.pid
    line+=" rss_before_hold_mib=$(rss_mib "$dir"/node{1,2,3}.pid | tr ' ' ,)"
    "$BENCH" --servers "$synod_servers" --hold-sessions "$hold_sessions" --watches "$hold_watches" \
        --inflight 64 --hold-secs 10 >"$out/hold.txt" &
    local holder=$!
    for _ in $(seq 1 1200); do grep -q hold_sessions= "$out/hold.txt" 2>/dev/null && break; sleep 0.1; done
    line+=" $(grep -o 'hold_sessions=.*' "$out/hold.txt" | sed 's/connect_secs/sessions_secs/')"
    line+=" rss_held_mib=$(rss_mib "$dir"/node{1,2,3}.pid | tr ' ' ,)"
    wait "$holder"
    bash scripts/cluster.sh stop 5 --wipe >/dev/null
    unset SYNOD_INSECURE SYNOD_CLUSTER_DIR SYNOD_ARGS
    echo "$line"
}

# A/B: both binaries in turn, $rounds rounds; then the summary.
if [ "$mode" = ab ]; then
    IFS=, read -ra ws <<<"$workloads"
    echo "== A/B, plaintext 3-node clusters: A=$bin_a B=$bin_b"
    echo "   $rounds rounds (A B, B A, ...); ${side_warmup:-$warmup} s of mixed load on each fresh cluster," \
        "then $secs s per workload after $warmup s of its load;" \
        "$sessions sessions, $inflight in flight, ${value}-byte values; serial_set: 1 in flight, through a follower"
    for r in $(seq 1 "$rounds"); do
        order="A B"
        [ $((r % 2)) = 0 ] && order="B A"
        for side in $order; do
            bin=$bin_a
            [ "$side" = B ] && bin=$bin_b
            pids=()
            if [ "$bin" = zookeeper ]; then
                ZK_DIR="$out/zk" bash scripts/zk-ensemble.sh start 3 >/dev/null
                for f in "$out"/zk/node{1,2,3}/zookeeper.pid; do pids+=(--server-pid "$(cat "$f")"); done
                servers=127.0.0.1:2281,127.0.0.1:2282,127.0.0.1:2283
                serial=$(zk_follower 2281 2282 2283)
            else
                SYNOD_BIN=$bin SYNOD_INSECURE=1 SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh start 3 >/dev/null
                for f in "$out"/synod/node{1,2,3}.pid; do pids+=(--server-pid "$(cat "$f")"); done
                servers=$synod_servers
                serial=$(synod_follower)
            fi
            # As run_side does: unrecorded load first (a fresh JVM each round for ZooKeeper).
            if [ "${side_warmup:-$warmup}" != 0 ]; then
                "$BENCH" --servers "$servers" --workload mixed --sessions "$sessions" --inflight "$inflight" \
                    --value-size "$value" --duration-secs "${side_warmup:-$warmup}" --warmup-secs 0 >/dev/null
            fi
            for w in "${ws[@]}"; do
                "$BENCH" "${pids[@]}" --servers "$servers" --workload "$w" --sessions "$sessions" \
                    --inflight "$inflight" --value-size "$value" --duration-secs "$secs" --warmup-secs "$warmup" \
                    | grep -o 'workload=.*' | sed "s/^/round=$r side=$side /" | tee -a "$out/ab.txt"
            done
            "$BENCH" "${pids[@]}" --servers "$serial" --workload set --sessions 1 --inflight 1 \
                --keys 100 --value-size "$value" --duration-secs "$secs" --warmup-secs 1 | grep -o 'workload=.*' \
                | sed "s/^workload=set/workload=serial_set/; s/^/round=$r side=$side /" | tee -a "$out/ab.txt"
            if [ "$bin" = zookeeper ]; then
                ZK_DIR="$out/zk" bash scripts/zk-ensemble.sh stop --wipe >/dev/null
            else
                SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh stop --wipe >/dev/null
            fi
        done
    done
    values() { # side workload key → one value per round
        grep " side=$1 workload=$2 " "$out/ab.txt" | sed -n "s|.* $3=\([0-9.]*\).*|\1|p"
    }
    spread() { # → "median min max" of the values on stdin
        sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "- - -"; exit }
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }'
    }
    echo
    echo "== A/B summary: median [min-max] over $rounds rounds; B/A of the medians, and its least and"
    echo "   greatest value in one round (A and B paired by round); in how many rounds B's value was"
    echo "   above A's; whether the ranges overlap"
    printf '%-11s %-21s %-28s %-28s %6s %-13s %5s  %s\n' workload measure A B B/A 'by round' 'B>A' ranges
    for w in "${ws[@]}" serial_set; do
        for key in ops/s server_cpu_us_per_op p50_us; do
            read -r am alo ahi <<<"$(values A "$w" "$key" | spread)"
            read -r bm blo bhi <<<"$(values B "$w" "$key" | spread)"
            verdict=$(awk -v alo="$alo" -v ahi="$ahi" -v blo="$blo" -v bhi="$bhi" 'BEGIN {
                if (alo == "-" || blo == "-") print "-"
                else if (blo > ahi) print "B higher in every round"
                else if (bhi < alo) print "B lower in every round"
                else print "overlap" }')
            above=$(paste <(values A "$w" "$key") <(values B "$w" "$key") \
                | awk '$1 != "" && $2 != "" { n++; if ($2 > $1) k++ } END { printf "%d/%d", k, n }')
            paired=$(paste <(values A "$w" "$key") <(values B "$w" "$key") \
                | awk '$1 + 0 > 0 && $2 != "" { r = $2 / $1; if (n++ == 0 || r < lo) lo = r; if (n == 1 || r > hi) hi = r }
                       END { if (n) printf "%.3f-%.3f", lo, hi; else print "-" }')
            printf '%-11s %-21s %-28s %-28s %6s %-13s %5s  %s\n' "$w" "$key" "$am [$alo-$ahi]" "$bm [$blo-$bhi]" \
                "$(awk -v a="$am" -v b="$bm" 'BEGIN { if (a + 0 > 0 && b != "-") printf "%.3f", b / a; else print "-" }')" \
                "$paired" "$above" "$verdict"
        done
    done
    exit 0
fi

if [ "$mode" = scale ]; then
    hold_sessions=${BENCH_HOLD_SESSIONS:-10000}
    hold_watches=${BENCH_HOLD_WATCHES:-100000}
    read -ra sizes <<<"${BENCH_SCALE:-100000 1000000}"
    echo "== scale: synod plaintext, 3 nodes; znodes of 100 bytes, 1,000 children per parent"
    for n in "${sizes[@]}"; do
        scale_phase "$n" | tee -a "$out/scale.txt"
    done
    maxof() { tr ',' '\n' | sort -n | tail -1; }
    first=$(head -1 "$out/scale.txt"); last=$(tail -1 "$out/scale.txt")
    n0=$(kv "$first" znodes); n1=$(kv "$last" znodes)
    echo
    echo "== growth from $n0 to $n1 znodes ($(awk "BEGIN{printf \"%.0fx\", $n1/$n0}") the tree; linear = the same factor)"
    printf '%-34s %12s %12s %8s\n' measure "$n0" "$n1" growth
    grow() { # label a b
        printf '%-34s %12s %12s %8s\n' "$1" "$2" "$3" "$(awk "BEGIN{ if ($2 > 0) printf \"%.1fx\", $3/$2; else print \"-\" }")"
    }
    grow "fill seconds" "$(kv "$first" fill_secs)" "$(kv "$last" fill_secs)"
    grow "max rss per server MiB" "$(kv "$first" rss_mib | maxof)" "$(kv "$last" rss_mib | maxof)"
    grow "heap bytes per znode" "$(kv "$first" heap_bytes_per_znode)" "$(kv "$last" heap_bytes_per_znode)"
    grow "snapshot seconds" "$(kv "$first" snapshot_secs)" "$(kv "$last" snapshot_secs)"
    grow "snapshot peak rss MiB (leader)" "$(kv "$first" snapshot_peak_rss_mib)" "$(kv "$last" snapshot_peak_rss_mib)"
    grow "snapshot MiB" "$(kv "$first" snapshot_mib)" "$(kv "$last" snapshot_mib)"
    grow "follower restart seconds" "$(kv "$first" restart_secs)" "$(kv "$last" restart_secs)"
    grow "restart peak rss MiB" "$(kv "$first" restart_peak_rss_mib)" "$(kv "$last" restart_peak_rss_mib)"
    grow "empty node catch-up seconds" "$(kv "$first" catch_up_secs)" "$(kv "$last" catch_up_secs)"
    grow "catch-up peak rss MiB" "$(kv "$first" catch_up_peak_rss_mib)" "$(kv "$last" catch_up_peak_rss_mib)"
    grow "catch-up peak rss MiB (leader)" "$(kv "$first" catch_up_leader_peak_rss_mib)" "$(kv "$last" catch_up_leader_peak_rss_mib)"
    grow "set ops/s" "$(kv "$first" set_ops_s)" "$(kv "$last" set_ops_s)"
    grow "get ops/s" "$(kv "$first" get_ops_s)" "$(kv "$last" get_ops_s)"
    grow "max rss with sessions+watches MiB" "$(kv "$first" rss_held_mib | maxof)" "$(kv "$last" rss_held_mib | maxof)"
    echo "restarts from: $(kv "$first" restart_from) -> $(kv "$last" restart_from); catch-ups by:" \
        "$(kv "$first" catch_up_by) -> $(kv "$last" catch_up_by)"
    if [ "$(kv "$first" restart_from) $(kv "$first" catch_up_by)" != "$(kv "$last" restart_from) $(kv "$last" catch_up_by)" ]; then
        echo "  (from the log at one size and a snapshot at the other: that growth compares two different paths)"
    fi
    sum() { tr ',' '\n' | awk '{s += $1} END {print s}'; }
    for l in "$first" "$last"; do
        held=$(( $(kv "$l" rss_held_mib | sum) - $(kv "$l" rss_before_hold_mib | sum) ))
        echo "at $(kv "$l" znodes) znodes, $(kv "$l" hold_sessions) sessions and $(kv "$l" watches) watches added ${held} MiB of RSS over the 3 servers"
    done
    for l in "$first" "$last"; do
        n=$(kv "$l" znodes)
        echo "bytes of rss per znode at $n: $(awk "BEGIN{printf \"%.0f\", $(kv "$l" rss_mib | maxof)*1048576/$n}") (whole process, largest server)"
        echo "  $(mem_summary "$l")"
    done
    exit 0
fi

# The floor, on the file system that holds the servers' data.
echo "== the machine's floor"
"$BENCH" --floor "$out" | tee "$out/floor.txt"

ZK_DIR="$out/zk" bash scripts/zk-ensemble.sh start 3 >/dev/null
run_side zookeeper 127.0.0.1:2281,127.0.0.1:2282,127.0.0.1:2283 "$(zk_follower 2281 2282 2283)" \
    "$out"/zk/node{1,2,3}/zookeeper.pid
ZK_DIR="$out/zk" bash scripts/zk-ensemble.sh stop --wipe >/dev/null

SYNOD_INSECURE=1 SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh start 3 >/dev/null
stages=1
run_side synod_plain "$synod_servers" "$(synod_follower)" "$out"/synod/node{1,2,3}.pid
stages=0
"$BENCH" --servers 127.0.0.1:2181 --handshakes 5 --warmup-secs 1 --inflight 8 | tee -a "$out/synod_plain.txt"
SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh stop --wipe >/dev/null

# The same plaintext cluster without its audit trail: what recording every change costs.
SYNOD_ARGS="--audit off" SYNOD_INSECURE=1 SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh start 3 >/dev/null
run_side synod_noaudit "$synod_servers" "$(synod_follower)" "$out"/synod/node{1,2,3}.pid
SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh stop --wipe >/dev/null

SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh start 3 >/dev/null
certs="$out/synod/certs"
tls=(--tls-ca "$certs/ca.crt" --tls-cert "$certs/admin.crt" --tls-key "$certs/admin.key")
run_side synod_tls "$synod_servers" \
    "$(synod_follower --cacert "$certs/ca.crt" --cert "$certs/admin.crt" --key "$certs/admin.key")" \
    "$out"/synod/node{1,2,3}.pid
"$BENCH" "${tls[@]}" --servers 127.0.0.1:2181 --handshakes 5 --warmup-secs 1 --inflight 8 | tee -a "$out/synod_tls.txt"
SYNOD_CLUSTER_DIR="$out/synod" bash scripts/cluster.sh stop --wipe >/dev/null

echo
echo "== side by side ($secs s per workload, $sessions sessions, $inflight in flight, ${value}-byte values;"
echo "   serial_set: 1 session, 1 in flight; p50 is its latency)"
printf '%-11s %11s %9s %11s %9s %11s %9s %9s\n' workload zk_ops/s zk_p50ms plain_ops/s plain_p50 tls_ops/s tls_p50 tls/plain
field() { grep "workload=$1 " "$out/$2.txt" | sed -n "s|.* $3=\([0-9.]*\).*|\1|p" || true; } # (empty: not run)
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

echo
echo "== where the time goes: synod plaintext, node by node"
stage_table "$out/stages.1" "$out/stages.serial" "serial_set"
stage_table "$out/stages.0" "$out/stages.set" "set ($sessions sessions, $inflight in flight)"

# The targets of docs/design.md §10, ZooKeeper and synod (plaintext, like ZooKeeper) side by side.
rtt=$(field floor_rtt floor p50_us); fsync=$(field floor_fsync floor p50_us)
fsync_over=$(field floor_fsync_overwrite floor p50_us); fsync_3=$(field floor_fsync_3way floor p50_us)
rtt_idle=$(field floor_rtt_idle floor p50_us)
max_of() { tr ' ' '\n' | sort -n | tail -1; }
rss_zk=$(sed -n 's/rss_after_fill_mib=//p' "$out/zookeeper.txt" | max_of)
rss_synod=$(sed -n 's/rss_after_fill_mib=//p' "$out/synod_plain.txt" | max_of)
echo
echo "== targets (docs/design.md §10); floor in this run: loopback round trip p50 ${rtt} us, 4 KiB append+fdatasync p50 ${fsync} us"
echo "   (the same sync over blocks already written, as a log in pre-written segments would: ${fsync_over:--} us;"
echo "   three appenders syncing at once, as three nodes on one disk do: ${fsync_3:--} us;"
echo "   a round trip to a thread asleep 1 ms, as each hop of a serial write wakes one: ${rtt_idle:--} us)"
printf '%-34s %11s %11s %8s   %s\n' measure zookeeper synod ratio goal
row() { # label zk synod ratio goal
    printf '%-34s %11s %11s %8s   %s\n' "$1" "${2:--}" "${3:--}" "$4" "$5"
}
ratio() { awk "BEGIN{ if (${2:-0} > 0) printf \"%.2fx\", ${1:-0}/${2:-1}; else print \"-\" }"; }
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
rest_zk=$(sed -n 's/rss_at_rest_mib=//p' "$out/zookeeper.txt" | max_of)
rest_synod=$(sed -n 's/rss_at_rest_mib=//p' "$out/synod_plain.txt" | max_of)
row "  the same at rest" "$rest_zk" "$rest_synod" "$(ratio "$rest_synod" "$rest_zk")" "<= 50"
echo "rss after $fill znodes of 100 bytes (MiB per server): zookeeper=[$(sed -n 's/rss_after_fill_mib=//p' "$out/zookeeper.txt")] synod_plain=[$(sed -n 's/rss_after_fill_mib=//p' "$out/synod_plain.txt")] synod_tls=[$(sed -n 's/rss_after_fill_mib=//p' "$out/synod_tls.txt")]"
parts=$(grep '^mem_rss_mib=' "$out/synod_plain.txt" || true)
if [ -n "$parts" ]; then
    echo "largest synod_plain server after the fill: $(mem_summary "$parts")"
fi
