#!/usr/bin/env bash
# K geoflow (Streamlit) replicas on loopback ports behind Debian's nginx with sticky sessions.
#
#   deploy/serve.sh [--replicas K] [--port P] [--address A] [--base-port B] [--run-dir D]
#                   [--max-seconds S] [--streamlit PATH]
#
# Replica i listens on 127.0.0.1:(B + i) (B defaults to P + 1); the proxy on A:P (A defaults to
# 127.0.0.1; pass 0.0.0.0 to serve a classroom). nginx.conf is rendered from
# deploy/nginx.conf.template into the run directory (default: a fresh temporary one), beside the
# replicas' logs and nginx's access log. Everything stops on Ctrl-C, on SIGTERM, when any replica
# or nginx exits, or after S seconds (S = 0, the default: never). nginx is installed with apt-get
# when missing and running as root.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
K=2
PORT=8501
ADDRESS=127.0.0.1
BASE_PORT=""
RUN_DIR=""
MAX_SECONDS=0
STREAMLIT="${STREAMLIT:-$ROOT/.venv/bin/streamlit}"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "serve.sh: $*" >&2; exit 2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) K="${2:?}"; shift 2 ;;
    --port) PORT="${2:?}"; shift 2 ;;
    --address) ADDRESS="${2:?}"; shift 2 ;;
    --base-port) BASE_PORT="${2:?}"; shift 2 ;;
    --run-dir) RUN_DIR="${2:?}"; shift 2 ;;
    --max-seconds) MAX_SECONDS="${2:?}"; shift 2 ;;
    --streamlit) STREAMLIT="${2:?}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
is_uint "$K" && [ "$K" -ge 1 ] && [ "$K" -le 64 ] || die "--replicas must be an integer in [1, 64], got $K"
is_uint "$PORT" && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "--port must be a TCP port, got $PORT"
BASE_PORT="${BASE_PORT:-$((PORT + 1))}"
is_uint "$BASE_PORT" && [ "$((BASE_PORT + K - 1))" -le 65535 ] || die "--base-port $BASE_PORT leaves no room for $K replicas"
is_uint "$MAX_SECONDS" || die "--max-seconds must be a whole number of seconds, got $MAX_SECONDS"
[ -x "$STREAMLIT" ] || die "no streamlit at $STREAMLIT (run 'make setup', or pass --streamlit)"
STREAMLIT="$(cd "$(dirname "$STREAMLIT")" && pwd)/$(basename "$STREAMLIT")"  # absolute: we cd below

# --------------------------------------------------------------------------- nginx
find_nginx() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
NGINX="$(find_nginx)"
if [ -z "$NGINX" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "serve.sh: installing Debian's nginx ..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; } \
      || die "apt-get could not install nginx"
    NGINX="$(find_nginx)"
  fi
  [ -n "$NGINX" ] || die "nginx is not installed (as root: apt-get install nginx, or 'make nginx')"
fi

if [ -z "$RUN_DIR" ]; then RUN_DIR="$(mktemp -d -t geoflow-serve.XXXXXX)"; fi
mkdir -p "$RUN_DIR"
# nginx's workers run as 'nobody' when the master is root: they need to reach the temp paths
chmod 755 "$RUN_DIR"

SERVERS=""
for ((i = 0; i < K; i++)); do
  SERVERS+="        server 127.0.0.1:$((BASE_PORT + i)) max_fails=1 fail_timeout=10s;"$'\n'
done
CONF="$RUN_DIR/nginx.conf"
{
  while IFS= read -r line; do
    if [ "$line" = "@SERVERS@" ]; then printf '%s' "$SERVERS"; else
      line="${line//@RUN_DIR@/$RUN_DIR}"; printf '%s\n' "${line//@LISTEN@/$ADDRESS:$PORT}"; fi
  done < "$HERE/nginx.conf.template"
} > "$CONF"
"$NGINX" -t -q -p "$RUN_DIR" -e "$RUN_DIR/error.log" -c "$CONF" || die "nginx rejected $CONF"

# --------------------------------------------------------------------------- processes
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  echo "serve.sh: stopped (logs in $RUN_DIR)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$ROOT"
# one cookie secret for all replicas (a fresh one per start, passed in the environment, not argv):
# the XSRF cookie a browser got from one replica stays valid if it fails over to another
STREAMLIT_SERVER_COOKIE_SECRET="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
export STREAMLIT_SERVER_COOKIE_SECRET
for ((i = 0; i < K; i++)); do
  port=$((BASE_PORT + i))
  GEOFLOW_REPLICA="$i" "$STREAMLIT" run app/streamlit_app.py --server.headless true \
    --server.address 127.0.0.1 --server.port "$port" --browser.gatherUsageStats false \
    > "$RUN_DIR/replica-$i.log" 2>&1 &
  PIDS+=("$!")
done

# wait until every replica answers its health check (60 s at most)
PY="$(dirname "$STREAMLIT")/python"
healthy() {
  "$PY" -c "import sys, urllib.request as u; sys.exit(u.urlopen(sys.argv[1], timeout=2).read().strip() != b'ok')" \
    "http://127.0.0.1:$1/_stcore/health" 2>/dev/null
}
for ((i = 0; i < K; i++)); do
  port=$((BASE_PORT + i))
  for ((w = 0; ; w++)); do
    healthy "$port" && break
    kill -0 "${PIDS[$i]}" 2>/dev/null || die "replica $i exited; see $RUN_DIR/replica-$i.log"
    [ "$w" -lt 300 ] || die "replica $i did not become healthy in 60 s; see $RUN_DIR/replica-$i.log"
    sleep 0.2
  done
done

"$NGINX" -p "$RUN_DIR" -e "$RUN_DIR/error.log" -c "$CONF" &
PIDS+=("$!")
if [ "$MAX_SECONDS" -gt 0 ]; then sleep "$MAX_SECONDS" & PIDS+=("$!"); fi
echo "serve.sh: $K replicas on 127.0.0.1:$BASE_PORT-$((BASE_PORT + K - 1)) behind nginx on http://$ADDRESS:$PORT"
echo "serve.sh: run directory $RUN_DIR (nginx.conf, access.log, replica-*.log); Ctrl-C stops everything"
# the first child to exit (a replica, nginx, or the --max-seconds timer) ends the whole set
wait -n "${PIDS[@]}" || true
