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
# Ports (all on 127.0.0.1), from the environment of `start`:
#   LANEIM_CLUSTER_KAFKA_PORT   the broker (19092)
#   LANEIM_CLUSTER_ETCD_PORT    etcd's client port (12479; its peer port is the next one).
#                               Not dev mode's 12379, so that both can run at once.
#   LANEIM_CLUSTER_REDIS_PORT   the first of the six Redis Cluster nodes (17001: 17001-17006;
#                               their cluster bus ports are 10000 above, 27001-27006)
#   LANEIM_CLUSTER_COMET_PORT   comet-1's WebSocket port (18081; comet-2 the next one)
#   LANEIM_CLUSTER_API_PORT     the api gateway's gRPC port (19090)
#   LANEIM_CLUSTER_API_HTTP_PORT its HTTP/JSON port (19091)
#   LANEIM_CLUSTER_ADMIN_PORT   the first of the seven processes' admin ports (19101: 19101-19107)
# `laneim soak` assumes the defaults unless given --targets and --redis.
#
# `start` refuses to run while a process of the cluster runs; `stop` sends
# SIGTERM to every process and returns once they have exited (SIGKILL for
# those still running after LANEIM_CLUSTER_STOP_SECONDS, 10).
#
# Needs redis-server and redis-cli (deploy/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
run=.run/cluster
bin=$run/laneim
export PATH="$PATH:/usr/sbin"
kafka_port=${LANEIM_CLUSTER_KAFKA_PORT:-19092}
etcd_port=${LANEIM_CLUSTER_ETCD_PORT:-12479}
redis_port=${LANEIM_CLUSTER_REDIS_PORT:-17001}
comet_port=${LANEIM_CLUSTER_COMET_PORT:-18081}
api_port=${LANEIM_CLUSTER_API_PORT:-19090}
api_http_port=${LANEIM_CLUSTER_API_HTTP_PORT:-19091}
admin_port=${LANEIM_CLUSTER_ADMIN_PORT:-19101}
stop_seconds=${LANEIM_CLUSTER_STOP_SECONDS:-10}

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
  for f in "$run"/*.pid; do
    [ -e "$f" ] || continue
    if alive "$(basename "$f" .pid)"; then
      echo "cluster.sh: a cluster runs already ($(basename "$f" .pid) is pid $(cat "$f")): deploy/local/cluster.sh stop first" >&2
      return 1
    fi
  done
  go build -o "$bin" .
  start_bg broker "$bin" broker --addr "127.0.0.1:$kafka_port" --data "$run/kafka"
  wait_port "$kafka_port"
  start_bg etcd "$bin" etcd --addr "127.0.0.1:$etcd_port" --peer-addr "127.0.0.1:$((etcd_port + 1))" --data "$run/etcd"
  wait_port "$etcd_port"
  # A node writes its nodes.conf as it starts: one there before is a
  # restart's, and the nodes remember their cluster.
  restart=0
  [ -s "$run/redis-$redis_port/nodes.conf" ] && restart=1
  nodes=()
  for port in $(seq "$redis_port" $((redis_port + 5))); do
    mkdir -p "$run/redis-$port"
    start_bg "redis-$port" redis-server --port "$port" --bind 127.0.0.1 --dir "$run/redis-$port" \
      --cluster-enabled yes --cluster-config-file nodes.conf --save "" --appendonly yes --appendfsync everysec
    wait_port "$port"
    nodes+=("127.0.0.1:$port")
  done
  if [ "$restart" = 1 ]; then
    # Wait for the remembered cluster to form.
    for _ in $(seq 600); do redis-cli -p "$redis_port" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
  fi
  if ! redis-cli -p "$redis_port" cluster info | grep -q cluster_state:ok; then
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$run/redis-create.log"
    for _ in $(seq 100); do redis-cli -p "$redis_port" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
  fi
  export LANEIM_KAFKA=127.0.0.1:$kafka_port LANEIM_REDIS=$(IFS=,; echo "${nodes[*]}") LANEIM_ETCD=127.0.0.1:$etcd_port
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
    "$bin" seed && break
    [ "$attempt" = 10 ] && exit 1
    sleep 1
  done
  local c1=$comet_port c2=$((comet_port + 1)) a=$admin_port
  start_bg login-presence "$bin" worker login presence --admin-addr "127.0.0.1:$a"
  start_bg routing "$bin" worker routing --admin-addr "127.0.0.1:$((a + 1))"
  start_bg fanout "$bin" worker fanout --admin-addr "127.0.0.1:$((a + 2))"
  start_bg history "$bin" worker persist history --history "$run/history.db" --admin-addr "127.0.0.1:$((a + 3))"
  start_bg comet-1 "$bin" comet --comet-id comet-1 --comet-addr "127.0.0.1:$c1" --admin-addr "127.0.0.1:$((a + 4))"
  start_bg comet-2 "$bin" comet --comet-id comet-2 --comet-addr "127.0.0.1:$c2" --admin-addr "127.0.0.1:$((a + 5))"
  start_bg api "$bin" api --api-addr "127.0.0.1:$api_port" --api-http-addr "127.0.0.1:$api_http_port" --admin-addr "127.0.0.1:$((a + 6))"
  for port in "$c1" "$c2" "$api_port" "$api_http_port"; do wait_port "$port"; done
  cat <<MSG
laneIM local cluster is up (logs and state in $run/):
  comets      ws://127.0.0.1:$c1/ws  ws://127.0.0.1:$c2/ws
  api         127.0.0.1:$api_port (Bearer $LANEIM_API_TOKEN)   HTTP/JSON http://127.0.0.1:$api_http_port/v1/
  kafka       127.0.0.1:$kafka_port   etcd 127.0.0.1:$etcd_port   redis cluster ${nodes[*]}
  metrics     http://127.0.0.1:$a/metrics ... :$((a + 6))
Try: $bin chat --user alice --url ws://127.0.0.1:$c1/ws   and   $bin chat --user bob --url ws://127.0.0.1:$c2/ws
Stop: deploy/local/cluster.sh stop
MSG
}

# stop_pids PID...: SIGTERM, then wait for them all to exit ($stop_seconds
# at most, then SIGKILL and wait again).
stop_pids() {
  [ $# = 0 ] && return 0
  local pid deadline=$((SECONDS + stop_seconds)) left
  for pid in "$@"; do
    kill -CONT "$pid" 2>/dev/null || true # a process frozen by a soak must hear SIGTERM
    kill "$pid" 2>/dev/null || true
  done
  while :; do
    left=()
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    [ ${#left[@]} = 0 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "cluster.sh: SIGKILL for pids ${left[*]}, still running ${stop_seconds}s after SIGTERM" >&2
      kill -9 "${left[@]}" 2>/dev/null || true
      for pid in "${left[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; done
      return 0
    fi
    sleep 0.1
  done
}

stop() {
  [ -d "$run" ] || return 0
  # The workers and gateways first, while what they stop against (Kafka,
  # etcd, Redis) still answers; then the infrastructure. stop returns
  # once every process has exited, so that a start right after finds the
  # ports free.
  local f name laneim=() infra=()
  for f in "$run"/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid)
    case "$name" in
      broker|etcd|redis-*) infra+=("$(cat "$f")") ;;
      *) laneim+=("$(cat "$f")") ;;
    esac
  done
  stop_pids ${laneim[@]+"${laneim[@]}"}
  stop_pids ${infra[@]+"${infra[@]}"}
  for f in "$run"/*.pid; do
    [ -e "$f" ] || continue
    rm -f "$f" "${f%.pid}.cmd"
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
