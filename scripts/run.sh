#!/usr/bin/env bash
# `make run`: the whole stack in the foreground — Kafka, PostgreSQL, RabbitMQ, the worker
# and the API on 127.0.0.1:8080. Ctrl-C stops everything this script started.
# Data lives under .data/ and survives a restart.
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
# The dev stack delivers to receivers on this machine; production refuses internal addresses.
export HERALD_OUTBOUND_ALLOWLIST="${HERALD_OUTBOUND_ALLOWLIST:-[\"127.0.0.1/32\"]}"
API_PORT=${HERALD_API_PORT:-8080}
WORKER_PORT=${HERALD_WORKER_PORT:-8081}

children=()
shutdown() {
  trap - INT TERM EXIT
  log "stopping"
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${children[@]}"; do wait "$pid" 2>/dev/null || true; done
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

mkdir -p .data/logs
.venv/bin/herald worker >>.data/logs/worker.log 2>&1 &
children+=($!)
.venv/bin/herald api >>.data/logs/api.log 2>&1 &
children+=($!)

ready() { curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null; }
wait_for "the worker" 120 ready "$WORKER_PORT" || exit 1
wait_for "the API" 60 ready "$API_PORT" || exit 1

cat <<BANNER

  Herald is running.
    API        http://127.0.0.1:$API_PORT
    metrics    http://127.0.0.1:$API_PORT/metrics  and  http://127.0.0.1:$WORKER_PORT/metrics
    dev key    $HERALD_DEV_API_KEY   (tenant "dev", role manage)
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

tail -n0 -F .data/logs/worker.log .data/logs/api.log 2>/dev/null \
  | grep --line-buffered -E "WARNING|ERROR|CRITICAL|delivery summary" &
children+=($!)

# Stay in the foreground until Ctrl-C or until the API or the worker dies. `wait` (unlike a
# foreground sleep) returns as soon as a trapped signal arrives. A worker that exits
# non-zero after running a while (75: the broker would not take its deliveries; 1: a
# consume loop could not go on) is restarted, as a production supervisor would; one that
# fails within its first 30 s (a bad setting) is not, so the error stays on screen.
worker_started=$SECONDS
while kill -0 "${children[1]}" 2>/dev/null; do
  if ! kill -0 "${children[0]}" 2>/dev/null; then
    status=0
    wait "${children[0]}" || status=$?
    (( status != 0 && SECONDS - worker_started >= 30 )) || break
    log "the worker exited ($status); restarting it"
    .venv/bin/herald worker >>.data/logs/worker.log 2>&1 &
    children[0]=$!
    worker_started=$SECONDS
  fi
  sleep 1 &
  wait $! || true
done
log "a Herald process exited; see .data/logs/"
exit 1
