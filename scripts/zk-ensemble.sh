#!/usr/bin/env bash
# zk-ensemble.sh — run a local N-node Apache ZooKeeper ensemble on 127.0.0.1.
#
# The reference server for synod's conformance tests and benchmarks: the same protocol, run by the
# real thing. Configuration matches testkit/src/ensemble.rs (the Rust test harness).
#
# Usage:
#   scripts/zk-ensemble.sh start  [N]          start N nodes (default 3, or the size already in
#                                              $ZK_DIR), wait for a leader, print the connect string;
#                                              nodes already running are left alone, so this also
#                                              brings back nodes that were killed
#   scripts/zk-ensemble.sh status [N]          print each node's mode (leader/follower/down)
#   scripts/zk-ensemble.sh stop   [N] [--wipe] SIGTERM (then SIGKILL) every node by pid file;
#                                              --wipe also deletes $ZK_DIR
#
# Environment:
#   ZK_BASE_PORT   first client port; node i (1-based) listens on ZK_BASE_PORT+i-1   (default 2281)
#   ZK_PEER_BASE   first quorum port; node i uses ZK_PEER_BASE+i-1 for quorum traffic and
#                  ZK_PEER_BASE+1000+i-1 for leader election                         (default 3381)
#   ZK_DIR         data, config, logs and pid files                (default ./target/zk-ensemble)
#   ZK_JVM_OPTS    JVM options (heap, GC, ...)                     (default "-Xmx512m")
#   ZK_START_TIMEOUT  seconds `start` waits for a leader                             (default 60)
#
# Node i lives in $ZK_DIR/node$i: zoo.cfg, data/ (with myid), zookeeper.log, zookeeper.pid.
# `start` is idempotent for nodes that are already running (it leaves them alone).
set -euo pipefail

ZK_JAR=/usr/share/java/zookeeper.jar
JAVA=${JAVA:-/usr/bin/java}
ZK_BASE_PORT=${ZK_BASE_PORT:-2281}
ZK_PEER_BASE=${ZK_PEER_BASE:-3381}
ZK_DIR=${ZK_DIR:-./target/zk-ensemble}
ZK_JVM_OPTS=${ZK_JVM_OPTS:--Xmx512m}
ZK_START_TIMEOUT=${ZK_START_TIMEOUT:-60}

# System properties the tests depend on; not part of ZK_JVM_OPTS so overriding the heap cannot drop
# them. extendedTypesEnabled enables TTL nodes; the container check interval makes empty container
# nodes disappear within ~1 s instead of 60 s; the AdminServer (Jetty on :8080) is off because N nodes
# would fight over its port and nothing here uses it; the simpleLogger options timestamp log lines.
# With them, one JVM flag: no /tmp/hsperfdata_<user>/<pid> file, which a node killed by SIGKILL (a
# fault, or `stop` after SIGTERM was not enough) never removes.
ZK_SYS_PROPS=(
  -XX:-UsePerfData
  -Dzookeeper.extendedTypesEnabled=true
  -Dznode.container.checkIntervalMs=1000
  -Dzookeeper.admin.enableServer=false
  -Dorg.slf4j.simpleLogger.showDateTime=true
  -Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS
)

die() { echo "zk-ensemble: $*" >&2; exit 1; }

# The jar's manifest Class-Path names its Debian dependencies (netty, jackson, slf4j-api, ...). It does
# not name an SLF4J binding, so without one ZooKeeper logs nothing at all; slf4j-simple writes to
# stderr, which we redirect into the node's log file.
classpath() {
  local cp=$ZK_JAR
  if [[ -e /usr/share/java/slf4j-simple.jar ]]; then cp+=:/usr/share/java/slf4j-simple.jar; fi
  printf '%s' "$cp"
}

ensure_installed() {
  if [[ ! -e $ZK_JAR ]]; then
    echo "zk-ensemble: $ZK_JAR missing; installing the Debian zookeeper package" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper
    [[ -e $ZK_JAR ]] || die "zookeeper installed but $ZK_JAR still missing"
  fi
  [[ -x $JAVA ]] || die "no java at $JAVA"
}

client_port()   { echo $((ZK_BASE_PORT + $1 - 1)); }
quorum_port()   { echo $((ZK_PEER_BASE + $1 - 1)); }
election_port() { echo $((ZK_PEER_BASE + 1000 + $1 - 1)); }
node_dir()      { echo "$ZK_DIR/node$1"; }

# Send a four-letter word to node $1; prints the reply (empty if the node is down).
fourlw() {
  local port reply
  port=$(client_port "$1")
  reply=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf '%s' '$2' >&3 && cat <&3" 2>/dev/null) || true
  printf '%s' "$reply"
}

# Prints the node's mode (leader, follower, standalone, ...) or "down"/"not-serving".
mode() {
  local reply m
  reply=$(fourlw "$1" srvr)
  if [[ -z $reply ]]; then echo down; return; fi
  m=$(sed -n 's/^Mode: *//p' <<<"$reply" | tr -d '\r')
  echo "${m:-not-serving}"
}

# True if $1 is a live ZooKeeper process. A SIGKILLed node lingers as a zombie until init reaps it,
# and `kill -0` succeeds on zombies, so the state in /proc decides; checking the command line keeps a
# stale pid file (after a reboot) from naming some unrelated process.
proc_alive() {
  local pid=$1 stat
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q QuorumPeerMain
}

pid_alive() {
  [[ -f $1 ]] && proc_alive "$(cat "$1")"
}

write_config() {
  local n=$1 i=$2 dir j
  dir=$(node_dir "$i")
  mkdir -p "$dir/data"
  echo "$i" >"$dir/data/myid"
  {
    echo "# generated by scripts/zk-ensemble.sh — node $i of $n"
    echo "tickTime=500"
    echo "initLimit=20"
    echo "syncLimit=10"
    echo "dataDir=$(cd "$dir/data" && pwd)"
    echo "clientPort=$(client_port "$i")"
    echo "clientPortAddress=127.0.0.1"
    echo "maxClientCnxns=0"
    echo "4lw.commands.whitelist=*"
    echo "admin.enableServer=false"
    # A single server would otherwise run in standalone mode and report "Mode: standalone".
    echo "standaloneEnabled=false"
    for ((j = 1; j <= n; j++)); do
      echo "server.$j=127.0.0.1:$(quorum_port "$j"):$(election_port "$j");127.0.0.1:$(client_port "$j")"
    done
  } >"$dir/zoo.cfg"
}

start_node() {
  local i=$1 dir
  dir=$(node_dir "$i")
  if pid_alive "$dir/zookeeper.pid"; then
    echo "node $i already running (pid $(cat "$dir/zookeeper.pid"))"
    return
  fi
  # shellcheck disable=SC2086 # ZK_JVM_OPTS is deliberately word-split
  nohup "$JAVA" $ZK_JVM_OPTS "${ZK_SYS_PROPS[@]}" -cp "$(classpath)" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
    >>"$dir/zookeeper.log" 2>&1 </dev/null &
  echo $! >"$dir/zookeeper.pid"
  echo "node $i started (pid $!, client port $(client_port "$i"))"
}

connect_string() {
  local n=$1 i s=""
  for ((i = 1; i <= n; i++)); do s+="${s:+,}127.0.0.1:$(client_port "$i")"; done
  echo "$s"
}

cmd_start() {
  local n=$1 i deadline leaders serving m
  ensure_installed
  mkdir -p "$ZK_DIR"
  if [[ -f $ZK_DIR/size && $(cat "$ZK_DIR/size") != "$n" ]]; then
    die "$ZK_DIR holds a $(cat "$ZK_DIR/size")-node ensemble; run 'stop --wipe' first or use that size"
  fi
  echo "$n" >"$ZK_DIR/size"
  for ((i = 1; i <= n; i++)); do write_config "$n" "$i"; done
  for ((i = 1; i <= n; i++)); do start_node "$i"; done

  deadline=$((SECONDS + ZK_START_TIMEOUT))
  while :; do
    leaders=0 serving=0
    for ((i = 1; i <= n; i++)); do
      m=$(mode "$i")
      case $m in
        leader) leaders=$((leaders + 1)) serving=$((serving + 1)) ;;
        follower) serving=$((serving + 1)) ;;
      esac
    done
    if ((leaders == 1 && serving == n)); then break; fi
    for ((i = 1; i <= n; i++)); do
      pid_alive "$(node_dir "$i")/zookeeper.pid" ||
        die "node $i exited during start-up; see $(node_dir "$i")/zookeeper.log"
    done
    if ((SECONDS >= deadline)); then
      cmd_status "$n" >&2
      die "no leader with all $n nodes serving after ${ZK_START_TIMEOUT}s; logs in $ZK_DIR/node*/zookeeper.log"
    fi
    sleep 0.25
  done
  cmd_status "$n"
  connect_string "$n"
}

cmd_status() {
  local n=$1 i state
  for ((i = 1; i <= n; i++)); do
    if pid_alive "$(node_dir "$i")/zookeeper.pid"; then state="pid $(cat "$(node_dir "$i")/zookeeper.pid")"; else state="no process"; fi
    printf 'node %d  127.0.0.1:%d  %-11s (%s)\n' "$i" "$(client_port "$i")" "$(mode "$i")" "$state"
  done
}

cmd_stop() {
  local n=$1 wipe=$2 i pidfile pid t
  for ((i = 1; i <= n; i++)); do
    pidfile="$(node_dir "$i")/zookeeper.pid"
    if pid_alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for ((t = 0; t < 50; t++)); do proc_alive "$pid" || break; sleep 0.1; done
      if proc_alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
      echo "node $i stopped (pid $pid)"
    fi
    rm -f "$pidfile"
  done
  if [[ $wipe == 1 ]]; then
    rm -rf "$ZK_DIR"
    echo "removed $ZK_DIR"
  fi
}

main() {
  local cmd=${1:-} n="" wipe=0 arg
  [[ -n $cmd ]] && shift
  for arg in "$@"; do
    case $arg in
      --wipe) wipe=1 ;;
      '' | *[!0-9]*) die "unexpected argument '$arg'" ;;
      *) n=$arg ;;
    esac
  done
  if [[ -z $n ]]; then
    # Default to the size the ensemble in $ZK_DIR was started with, else 3.
    if [[ -f $ZK_DIR/size ]]; then n=$(cat "$ZK_DIR/size"); else n=3; fi
  fi
  ((n >= 1)) || die "N must be at least 1"
  case $cmd in
    start) cmd_start "$n" ;;
    status) cmd_status "$n" ;;
    stop) cmd_stop "$n" "$wipe" ;;
    *) die "usage: $0 start|stop|status [N] [--wipe]" ;;
  esac
}

main "$@"
