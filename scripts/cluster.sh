#!/usr/bin/env bash
# cluster.sh — run a local synod cluster on 127.0.0.1.
#
# Usage:
#   scripts/cluster.sh start  [3|5]     build (release) and start the nodes that are not running,
#                                       wait until a leader serves, print the connect string
#   scripts/cluster.sh join   4|5       start node 4 or 5 with --join: it waits to be added with
#                                       `synodctl cluster add-learner` / `promote` (see docs/operations.md)
#   scripts/cluster.sh status [3|5]     each node's id, role and client address
#   scripts/cluster.sh stop   [3|5] [--wipe]
#                                       stop the nodes this script started (by pid); the data is
#                                       kept (a later start resumes it) unless --wipe
#   scripts/cluster.sh env              print the SYNOD_* variables that point synodctl (and
#                                       synod-bench) at this cluster: eval "$(scripts/cluster.sh env)"
#
# Secure by default: the first start makes a CA and certificates under $SYNOD_CLUSTER_DIR/certs
# (ca.crt and ca.key, so that more can be issued with `synod certs --dir ...`; node<i>.{crt,key}
# naming 127.0.0.1, localhost and the node id; admin.{crt,key}, the operator and client
# identity x509:admin) and every port speaks TLS: the client ports (ZooKeeper protocol inside
# TLS, as ZooKeeper's secureClientPort), the peer ports (mutual TLS) and the admin ports (HTTPS).
# SYNOD_INSECURE=1 starts the nodes --insecure instead: every port plaintext, nobody
# authenticated.
#
# Environment (each base is the port of node 1; node i uses base+i-1):
#   SYNOD_CLIENT_BASE  client (ZooKeeper protocol) ports   (default 2181)
#   SYNOD_ADMIN_BASE   admin HTTP(S) ports                 (default 8081)
#   SYNOD_PEER_BASE    peer (Raft) ports                   (default 7001)
#   SYNOD_CLUSTER_DIR  data, certificates, logs, pid files (default ./target/synod-cluster)
#   SYNOD_INSECURE     1: plaintext everywhere (default: TLS)
#   SYNOD_ARGS         extra flags for every node (e.g. "--read-consistency session")
#   CARGO_TARGET_DIR   where cargo builds                  (default $HOME/.cache/synod/target)
#   SYNOD_BIN          run this synod binary instead of building one (bench.sh ab compares two)
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:-}
shift || true
n=3
wipe=0
for a in "$@"; do
    case "$a" in
        3|4|5) n=$a ;;
        --wipe) wipe=1 ;;
        *) echo "cluster.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done

CB=${SYNOD_CLIENT_BASE:-2181}
AB=${SYNOD_ADMIN_BASE:-8081}
PB=${SYNOD_PEER_BASE:-7001}
DIR=${SYNOD_CLUSTER_DIR:-./target/synod-cluster}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/synod/target}"
BIN="${SYNOD_BIN:-$CARGO_TARGET_DIR/release/synod}"
INSECURE=${SYNOD_INSECURE:-0}
CERTS="$DIR/certs"

members() {
    local m="" i
    for i in $(seq 1 "$n"); do m+="${m:+,}$i=127.0.0.1:$((PB + i - 1))"; done
    echo "$m"
}

connect_string() {
    local s="" i
    for i in $(seq 1 "$n"); do s+="${s:+,}127.0.0.1:$((CB + i - 1))"; done
    echo "$s"
}

running() { # pid file → its process exists (and is no zombie)?
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}

alive() { # pid file → running synod?
    running "$1" && grep -q synod "/proc/$(cat "$1")/cmdline" 2>/dev/null
}

http_get() { # port path → body (the open admin endpoints need no client certificate)
    local port=$1 path=$2
    if [ "$INSECURE" = 1 ]; then
        curl -fsS --max-time 2 "http://127.0.0.1:$port$path"
    else
        curl -fsS --max-time 2 --cacert "$CERTS/ca.crt" "https://127.0.0.1:$port$path"
    fi
}

issue_certs() { # the local CA and every certificate the cluster needs, once
    mkdir -p "$CERTS"
    [ -f "$CERTS/ca.crt" ] || "$BIN" certs --dir "$CERTS" create-ca --name "synod local CA" >/dev/null
    local i
    for i in $(seq 1 5); do
        [ -f "$CERTS/node$i.crt" ] || "$BIN" certs --dir "$CERTS" create-node --id "$i" \
            --host 127.0.0.1 --host localhost >/dev/null
    done
    [ -f "$CERTS/admin.crt" ] || "$BIN" certs --dir "$CERTS" create-client --name admin \
        --institution "local operators" >/dev/null
    # One certificate per party of the diagnosis workflow example (and its rogue institution),
    # so that each runs under an identity of its own.
    local who
    for who in workflow hospital lab imaging rogue; do
        [ -f "$CERTS/$who.crt" ] || "$BIN" certs --dir "$CERTS" create-client --name "$who" \
            --institution "$who" >/dev/null
    done
}

security_args() { # node id → the flags that make its ports secure (or plaintext)
    local i=$1
    if [ "$INSECURE" = 1 ]; then
        echo "--insecure --client-addr 127.0.0.1:$((CB + i - 1))"
    else
        echo "--secure-client-addr 127.0.0.1:$((CB + i - 1)) --tls-ca $CERTS/ca.crt" \
            "--tls-cert $CERTS/node$i.crt --tls-key $CERTS/node$i.key"
    fi
}

print_env() {
    echo "export SYNOD_SERVERS=$(connect_string)"
    echo "export SYNOD_ADMIN=$(admin_list)"
    if [ "$INSECURE" = 1 ]; then
        echo "export SYNOD_INSECURE=1; unset SYNOD_TLS_CA SYNOD_TLS_CERT SYNOD_TLS_KEY"
    else
        local abs
        abs=$(cd "$CERTS" && pwd)
        echo "unset SYNOD_INSECURE; export SYNOD_TLS_CA=$abs/ca.crt SYNOD_TLS_CERT=$abs/admin.crt SYNOD_TLS_KEY=$abs/admin.key"
    fi
}

admin_list() {
    local s="" i
    for i in $(seq 1 "$n"); do s+="${s:+,}127.0.0.1:$((AB + i - 1))"; done
    echo "$s"
}

# Builds the binaries, unless SYNOD_BIN names the one to run (then it must exist).
build() {
    if [ -n "${SYNOD_BIN:-}" ]; then
        [ -x "$SYNOD_BIN" ] || { echo "cluster.sh: SYNOD_BIN=$SYNOD_BIN is not an executable" >&2; exit 2; }
        return
    fi
    if ! command -v cargo >/dev/null; then echo "cluster.sh: cargo not found" >&2; exit 2; fi
    if ! dpkg -s libclang-dev >/dev/null 2>&1 || ! command -v curl >/dev/null; then
        echo "== installing clang/libclang-dev (needed to build RocksDB) and curl"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq clang libclang-dev curl >/dev/null
    fi
    # Every binary of the workspace (synodctl too): one feature set shared with bench.sh, so
    # RocksDB is compiled once for both.
    cargo build --release -q --workspace --bins
}

# Refuses to start node $1 on a port another process listens on: a synod of another cluster
# (another SYNOD_CLUSTER_DIR, or one whose pid file is gone) would otherwise answer on it, and
# the new cluster would run with a stranger in it ("cluster id mismatch" in the logs).
ports_free() { # node id
    local i=$1 p
    for p in $((CB + i - 1)) $((PB + i - 1)) $((AB + i - 1)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "cluster.sh: port $p of node $i is taken by another process (another cluster?" \
                "see: ss -ltnp 'sport = :$p'); stop it, or choose other ports (SYNOD_*_BASE)" >&2
            return 1
        fi
    done
}

# Fails if node $1 was started and has exited, with the end of its log.
# (Any process: SYNOD_BIN may be a wrapper that has not yet exec'd synod.)
still_running() { # node id
    local i=$1
    running "$DIR/node$i.pid" && return 0
    echo "cluster.sh: node $i exited; the end of $DIR/node$i.log:" >&2
    tail -n 5 "$DIR/node$i.log" >&2
    return 1
}

field() { # json key → value (flat JSON from /status)
    sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\)\"\{0,1\}[,}].*/\1/p"
}

case "$cmd" in
start)
    build
    mkdir -p "$DIR"
    [ "$INSECURE" = 1 ] || issue_certs
    for i in $(seq 1 "$n"); do
        alive "$DIR/node$i.pid" || ports_free "$i" || exit 1
    done
    for i in $(seq 1 "$n"); do
        pidf="$DIR/node$i.pid"
        if alive "$pidf"; then continue; fi
        # shellcheck disable=SC2086
        nohup "$BIN" --id "$i" --members "$(members)" $(security_args "$i") \
            --admin-addr "127.0.0.1:$((AB + i - 1))" \
            --data-dir "$DIR/node$i" ${SYNOD_ARGS:-} >>"$DIR/node$i.log" 2>&1 &
        echo $! >"$pidf"
    done
    deadline=$((SECONDS + 60))
    while :; do
        leaders=0
        for i in $(seq 1 "$n"); do
            still_running "$i" || exit 1
            role=$(http_get $((AB + i - 1)) /status 2>/dev/null | field role || true)
            [ "$role" = leader ] && leaders=$((leaders + 1))
        done
        [ "$leaders" -eq 1 ] && break
        if [ $SECONDS -ge $deadline ]; then
            echo "cluster.sh: no leader within 60s; see $DIR/node*.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    if [ "$INSECURE" = 1 ]; then
        echo "synod cluster of $n is up, INSECURE (plaintext, no authentication); connect string:"
        connect_string
    else
        echo "synod cluster of $n is up (TLS on every port); connect string:"
        connect_string
        echo "client certificate: $CERTS/admin.crt (key admin.key, CA ca.crt): x509:admin, also the admin port's operator"
        echo "synodctl run from here finds these; elsewhere: eval \"\$(scripts/cluster.sh env)\""
    fi
    ;;
env)
    print_env
    ;;
join)
    if [ "$n" != 4 ] && [ "$n" != 5 ]; then echo "cluster.sh: join 4 or join 5" >&2; exit 2; fi
    build
    mkdir -p "$DIR"
    [ "$INSECURE" = 1 ] || issue_certs
    pidf="$DIR/node$n.pid"
    if alive "$pidf"; then echo "node $n is already running"; exit 0; fi
    # shellcheck disable=SC2086
    nohup "$BIN" --id "$n" --members "$n=127.0.0.1:$((PB + n - 1))" --join $(security_args "$n") \
        --admin-addr "127.0.0.1:$((AB + n - 1))" \
        --data-dir "$DIR/node$n" ${SYNOD_ARGS:-} >>"$DIR/node$n.log" 2>&1 &
    echo $! >"$pidf"
    echo "node $n started with --join: peer 127.0.0.1:$((PB + n - 1)), client 127.0.0.1:$((CB + n - 1)), admin 127.0.0.1:$((AB + n - 1))"
    ;;
status)
    for i in $(seq 1 "$n"); do
        body=$(http_get $((AB + i - 1)) /status 2>/dev/null || true)
        if [ -n "$body" ]; then
            echo "node $i: role=$(echo "$body" | field role) client=127.0.0.1:$((CB + i - 1)) leader=$(echo "$body" | field leader) applied=$(echo "$body" | field applied_index)"
        else
            echo "node $i: down (client=127.0.0.1:$((CB + i - 1)))"
        fi
    done
    ;;
stop)
    for i in $(seq 1 "$n"); do
        pidf="$DIR/node$i.pid"
        if alive "$pidf"; then kill -TERM "$(cat "$pidf")" 2>/dev/null || true; fi
    done
    for _ in $(seq 1 50); do
        any=0
        for i in $(seq 1 "$n"); do alive "$DIR/node$i.pid" && any=1; done
        [ $any -eq 0 ] && break
        sleep 0.1
    done
    for i in $(seq 1 "$n"); do
        pidf="$DIR/node$i.pid"
        if alive "$pidf"; then kill -KILL "$(cat "$pidf")" 2>/dev/null || true; fi
        rm -f "$pidf"
    done
    if [ $wipe -eq 1 ]; then rm -rf "$DIR"; echo "stopped; data wiped"; else echo "stopped; data kept in $DIR"; fi
    ;;
*)
    sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
