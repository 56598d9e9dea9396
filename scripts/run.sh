#!/usr/bin/env bash
# `make run`: the whole stack in the foreground — Kafka, PostgreSQL, RabbitMQ, the workers
# and the API on 127.0.0.1:8080. Ctrl-C stops everything this script started.
# Data lives under .data/ and survives a restart.
# HERALD_WORKERS (default: the core count) delivering processes: with 1, one worker runs every
# role; with N > 1, a router and index worker on HERALD_WORKER_PORT (8081) and N deliver
# workers on the ports after it (8082, ...). README, Scaling out. With sources configured, an
# ingest process too (README, Sources).
SERVICE=herald
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$HERALD_ROOT"

mkdir -p .data
# One `make run` per checkout: a second one started while the first is still stopping
# would find its services "already running" and then see them stopped under it.
RUN_PIDFILE=.data/run.pid
if pid_alive "$RUN_PIDFILE"; then
  log "another make run (pid $(cat "$RUN_PIDFILE")) is using .data/; waiting for it to stop"
  wait_for "the other make run to stop" 90 bash -c "! kill -0 $(cat "$RUN_PIDFILE")" \
    || die "another make run (pid $(cat "$RUN_PIDFILE")) is still running; stop it first"
fi
echo $$ >"$RUN_PIDFILE"
[[ -s .data/encryption.key ]] || { .venv/bin/herald keygen >.data/encryption.key; chmod 600 .data/encryption.key; }

export HERALD_KAFKA_BOOTSTRAP="127.0.0.1:${HERALD_KAFKA_PORT:-9092}"
export HERALD_DATABASE_URL="postgresql://herald@127.0.0.1:${HERALD_PG_PORT:-25432}/herald"
export HERALD_ENCRYPTION_KEYS="${HERALD_ENCRYPTION_KEYS:-$(cat .data/encryption.key)}"
export HERALD_DEV_API_KEY="${HERALD_DEV_API_KEY:-sk_test_dev}"
# Tenants and portal sessions: a platform key (README, Tenants) and the key that signs portal
# session tokens, kept beside the encryption key.
[[ -s .data/portal-signing.key ]] || { .venv/bin/herald keygen >.data/portal-signing.key; chmod 600 .data/portal-signing.key; }
export HERALD_PORTAL_SIGNING_KEY="${HERALD_PORTAL_SIGNING_KEY:-$(cat .data/portal-signing.key)}"
DEV_PLATFORM_KEY=sk_test_platform
if [[ -z "${HERALD_API_KEYS:-}" ]]; then
  HERALD_API_KEYS=$(.venv/bin/python -c "import hashlib, json, sys; print(json.dumps([{'key_sha256': hashlib.sha256(sys.argv[1].encode()).hexdigest(), 'role': 'platform'}]))" "$DEV_PLATFORM_KEY")
  export HERALD_API_KEYS
fi
# The dev stack delivers to receivers on this machine; production refuses internal addresses.
export HERALD_OUTBOUND_ALLOWLIST="${HERALD_OUTBOUND_ALLOWLIST:-[\"127.0.0.1/32\"]}"
API_PORT=${HERALD_API_PORT:-8080}
WORKER_PORT=${HERALD_WORKER_PORT:-8081}
WORKERS=$(.venv/bin/python -c 'from pipeline.settings import Settings; print(Settings().workers)')

# One entry per worker process: its name (and log file), its roles, its port.
worker_names=() worker_roles=() worker_ports=()
if ((WORKERS == 1)); then
  worker_names=(worker) worker_roles=(all) worker_ports=("$WORKER_PORT")
else
  worker_names=(router) worker_roles=(router,index) worker_ports=("$WORKER_PORT")
  for ((n = 1; n <= WORKERS; n++)); do
    worker_names+=("deliver-$n") worker_roles+=(deliver) worker_ports+=($((WORKER_PORT + n)))
  done
fi
# With sources configured (HERALD_SOURCES, HERALD_SOURCES_FILE: README, Sources), an ingest
# process consumes them, on the port after the last worker's.
if .venv/bin/python -c 'import sys; from pipeline.settings import Settings; sys.exit(not Settings().all_sources())'; then
  worker_names+=(ingest) worker_roles+=(ingest) worker_ports+=($((WORKER_PORT + WORKERS + 1)))
fi
worker_pids=() worker_started=()

children=()
shutdown() {
  trap - INT TERM EXIT
  log "stopping"
  local pids=("${worker_pids[@]}" "${children[@]}")
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/rabbitmq.sh stop || true
  scripts/postgres.sh stop || true
  scripts/kafka/kafka.sh stop || true
  rm -f "$RUN_PIDFILE"
  log "stopped"
}
trap 'shutdown; exit 130' INT
trap 'shutdown; exit 143' TERM
trap shutdown EXIT

scripts/kafka/kafka.sh start
scripts/postgres.sh start
scripts/rabbitmq.sh start
.venv/bin/herald topics apply

# start_worker N: start worker process N of the lists above (again, after it exited).
start_worker() {
  HERALD_WORKER_PORT=${worker_ports[$1]} .venv/bin/herald worker --role "${worker_roles[$1]}" \
    >>".data/logs/${worker_names[$1]}.log" 2>&1 &
  worker_pids[$1]=$!
  worker_started[$1]=$SECONDS
}

mkdir -p .data/logs
for n in "${!worker_names[@]}"; do start_worker "$n"; done
.venv/bin/herald api >>.data/logs/api.log 2>&1 &
children+=($!)
api_pid=$!

ready() { curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null; }
for n in "${!worker_names[@]}"; do
  wait_for "the ${worker_names[$n]} worker" 120 ready "${worker_ports[$n]}" || exit 1
done
wait_for "the API" 60 ready "$API_PORT" || exit 1
metrics_urls="http://127.0.0.1:$API_PORT/metrics"
for n in "${!worker_names[@]}"; do
  metrics_urls+=$'\n'"               http://127.0.0.1:${worker_ports[$n]}/metrics  (${worker_names[$n]}: ${worker_roles[$n]})"
done

cat <<BANNER

  Herald is running.
    API        http://127.0.0.1:$API_PORT
    metrics    $metrics_urls
    dev key    $HERALD_DEV_API_KEY   (tenant "dev", role manage)
    platform   $DEV_PLATFORM_KEY   (role platform, unless HERALD_API_KEYS is set)
    Kafka      $HERALD_KAFKA_BOOTSTRAP    PostgreSQL  $HERALD_DATABASE_URL
    RabbitMQ   amqp://guest:guest@127.0.0.1:${HERALD_RABBITMQ_PORT:-5672}/   logs: .data/logs/

  Try it:
    curl -s http://127.0.0.1:$API_PORT/v2/event-destinations \\
      -H 'Authorization: Bearer $HERALD_DEV_API_KEY' -H 'Content-Type: application/json' \\
      -d '{"name": "my hook", "webhook": {"url": "http://127.0.0.1:9000/hook"}, "events": ["*"]}'
    curl -s http://127.0.0.1:$API_PORT/v2/events \\
      -H 'Authorization: Bearer $HERALD_DEV_API_KEY' -H 'Content-Type: application/json' \\
      -d '{"type": "task_run.completed", "data": {"task_run_id": "tr_123"}}'

  Delivery outcomes, warnings and errors follow; full logs are in .data/logs/.
  Ctrl-C stops everything.
BANNER

worker_logs=("${worker_names[@]/#/.data/logs/}")
tail -n0 -F .data/logs/api.log "${worker_logs[@]/%/.log}" 2>/dev/null \
  | grep --line-buffered -E "WARNING|ERROR|CRITICAL|delivery summary" &
children+=($!)

# Stay in the foreground until Ctrl-C or until the API or a worker dies. `wait` (unlike a
# foreground sleep) returns as soon as a trapped signal arrives. A worker that exits
# non-zero after running a while (75: the broker would not take its records; 1: a consume
# loop could not go on) is restarted, as a production supervisor would; one that fails
# within its first 30 s (a bad setting) is not, so the error stays on screen.
supervise() {
  while kill -0 "$api_pid" 2>/dev/null; do
    for n in "${!worker_pids[@]}"; do
      kill -0 "${worker_pids[$n]}" 2>/dev/null && continue
      local status=0
      wait "${worker_pids[$n]}" || status=$?
      ((status != 0 && SECONDS - worker_started[$n] >= 30)) || return
      log "the ${worker_names[$n]} worker exited ($status); restarting it"
      start_worker "$n"
    done
    sleep 1 &
    wait $! || true
  done
}
supervise
log "a Herald process exited; see .data/logs/"
exit 1
