#!/usr/bin/env bash
# A local multi-process laneIM cluster: every worker and gateway in its own
# process, two comets, a real 3-master/3-replica Redis Cluster, a
# single-member etcd and the standalone Kafka-protocol broker, all on
# loopback, with state and logs in .run/cluster/.
#
#   deploy/local/cluster.sh start     build, start everything, print the addresses
#   deploy/local/cluster.sh stop      stop everything
#   deploy/local/cluster.sh status    what runs
#   deploy/local/cluster.sh kill NAME     SIGKILL one process (e.g. routing, comet-1, broker, redis-17001)
#   deploy/local/cluster.sh restart NAME  start it again with the command line it was started with
#
# Each process NAME has $run/NAME.pid (its pid) and $run/NAME.cmd (its
# command line, shell-quoted); $run/env holds the LANEIM_* environment the
# processes were started with. `laneim soak` uses kill and restart to inject
# faults.
#
# Needs redis-server and redis-cli (deploy/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
run=.run/cluster
bin=$run/laneim
export PATH="$PATH:/usr/sbin"

start_bg() { # name, command...  (APPEND=1: keep the log, for restarts)
  local name=$1; shift
  printf '%q ' "$@" >"$run/$name.cmd"
  if [ "${APPEND:-}" = 1 ]; then
    nohup "$@" >>"$run/$name.log" 2>&1 &
  else
    nohup "$@" >"$run/$name.log" 2>&1 &
  fi
  echo $! >"$run/$name.pid"
}

# alive NAME: whether NAME's recorded process runs.
alive() { [ -s "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

kill_one() { # name: SIGKILL, wait until it is gone (5s at most)
  local name=$1
  [ -s "$run/$name.pid" ] || { echo "cluster.sh: no process $name" >&2; return 1; }
  local pid; pid=$(cat "$run/$name.pid")
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  echo "killed $name (pid $pid)"
}

restart_one() { # name: start again with its recorded command line and environment
  local name=$1
  [ -s "$run/$name.cmd" ] || { echo "cluster.sh: no recorded command for $name" >&2; return 1; }
  if alive "$name"; then echo "cluster.sh: $name still runs (pid $(cat "$run/$name.pid"))" >&2; return 1; fi
  # shellcheck disable=SC1091
  [ -e "$run/env" ] && . "$run/env"
  local -a cmd
  eval "cmd=($(cat "$run/$name.cmd"))"
  echo "=== cluster.sh restart $name at $(date -u +%FT%TZ)" >>"$run/$name.log"
  APPEND=1 start_bg "$name" "${cmd[@]}"
  echo "restarted $name (pid $(cat "$run/$name.pid"))"
}

wait_port() {
  for _ in $(seq 300); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cluster.sh: nothing listens on $1" >&2
  return 1
}

start() {
  mkdir -p "$run"
  go build -o "$bin" .
  start_bg broker "$bin" broker --addr 127.0.0.1:19092 --data "$run/kafka"
  wait_port 19092
  start_bg etcd "$bin" etcd --addr 127.0.0.1:12379 --peer-addr 127.0.0.1:12380 --data "$run/etcd"
  wait_port 12379
  nodes=()
  for port in 17001 17002 17003 17004 17005 17006; do
    mkdir -p "$run/redis-$port"
    start_bg "redis-$port" redis-server --port "$port" --bind 127.0.0.1 --dir "$run/redis-$port" \
      --cluster-enabled yes --cluster-config-file nodes.conf --save "" --appendonly no
    wait_port "$port"
    nodes+=("127.0.0.1:$port")
  done
  if [ -s "$run/redis-17001/nodes.conf" ] && grep -q master "$run/redis-17001/nodes.conf"; then
    # A restart: the nodes remember their cluster; wait for it to form.
    for _ in $(seq 600); do redis-cli -p 17001 cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
  fi
  if ! redis-cli -p 17001 cluster info | grep -q cluster_state:ok; then
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$run/redis-create.log"
    for _ in $(seq 100); do redis-cli -p 17001 cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
  fi
  export LANEIM_KAFKA=127.0.0.1:19092 LANEIM_REDIS=$(IFS=,; echo "${nodes[*]}") LANEIM_ETCD=127.0.0.1:12379
  # Every process gets the secret; the comets verify login tokens with it.
  export LANEIM_SECRET=${LANEIM_SECRET:-laneim-dev-secret-public-do-not-deploy} LANEIM_API_TOKEN=${LANEIM_API_TOKEN:-laneim-dev-api-token}
  # Recorded for restart (the worker and gateway processes read them).
  for v in LANEIM_KAFKA LANEIM_REDIS LANEIM_ETCD LANEIM_SECRET LANEIM_API_TOKEN; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done >"$run/env"
  # Every node must see the cluster up (a restarted one can report ok
  # while another still fails over), and seeding retries meanwhile.
  for _ in $(seq 600); do
    down=0
    for n in "${nodes[@]}"; do redis-cli -p "${n##*:}" cluster info | grep -q cluster_state:ok || down=1; done
    [ "$down" = 0 ] && break
    sleep 0.1
  done
  for attempt in $(seq 10); do
    "$bin" seed --seed testdata/seed.json && break
    [ "$attempt" = 10 ] && exit 1
    sleep 1
  done
  start_bg login-presence "$bin" worker login presence --admin-addr 127.0.0.1:19101
  start_bg routing "$bin" worker routing --admin-addr 127.0.0.1:19102
  start_bg fanout "$bin" worker fanout --admin-addr 127.0.0.1:19103
  start_bg history "$bin" worker persist history --history "$run/history.db" --admin-addr 127.0.0.1:19104
  start_bg comet-1 "$bin" comet --comet-id comet-1 --comet-addr 127.0.0.1:18081 --admin-addr 127.0.0.1:19105
  start_bg comet-2 "$bin" comet --comet-id comet-2 --comet-addr 127.0.0.1:18082 --admin-addr 127.0.0.1:19106
  start_bg api "$bin" api --api-addr 127.0.0.1:19090 --admin-addr 127.0.0.1:19107
  for port in 18081 18082 19090; do wait_port "$port"; done
  cat <<MSG
laneIM local cluster is up (logs and state in $run/):
  comets      ws://127.0.0.1:18081/ws  ws://127.0.0.1:18082/ws
  api         127.0.0.1:19090 (Bearer $LANEIM_API_TOKEN)
  kafka       127.0.0.1:19092   etcd 127.0.0.1:12379   redis cluster ${nodes[*]}
  metrics     http://127.0.0.1:19101/metrics ... :19107
Try: $bin chat --user alice --url ws://127.0.0.1:18081/ws   and   $bin chat --user bob --url ws://127.0.0.1:18082/ws
Stop: deploy/local/cluster.sh stop
MSG
}

stop() {
  [ -d "$run" ] || return 0
  pids=()
  for f in "$run"/*.pid; do
    [ -e "$f" ] || continue
    pids+=("$(cat "$f")")
    kill -CONT "${pids[-1]}" 2>/dev/null || true # a process frozen by a soak must hear SIGTERM
    kill "${pids[-1]}" 2>/dev/null || true
    rm -f "$f" "${f%.pid}.cmd"
  done
  # Wait for them to exit (30s at most, then SIGKILL), so that a start
  # right after finds the ports free.
  for pid in "${pids[@]}"; do
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  echo "laneIM local cluster stopped"
}

status() {
  for f in "$run"/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid)
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "up    $name"; else echo "down  $name"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  kill) [ -n "${2:-}" ] || { echo "usage: $0 kill NAME" >&2; exit 2; }; kill_one "$2" ;;
  restart) [ -n "${2:-}" ] || { echo "usage: $0 restart NAME" >&2; exit 2; }; restart_one "$2" ;;
  *) echo "usage: $0 start|stop|status|kill NAME|restart NAME" >&2; exit 2 ;;
esac
