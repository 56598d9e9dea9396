#!/usr/bin/env bash
# Runs a RabbitMQ node of Herald's own (Debian's packages, as the rabbitmq user).
#
#   scripts/rabbitmq.sh start | stop | run
#
# Settings: HERALD_RABBITMQ_PORT (5672), HERALD_RABBITMQ_DIST_PORT (Erlang distribution,
# port+20000), HERALD_RABBITMQ_DATA (.data/rabbitmq). The node listens on 127.0.0.1 only
# and is named herald-<port>@localhost, so a test node and the dev node can run side by
# side. Credentials: guest/guest (loopback only, RabbitMQ's default).
#
# Every port the node and its CLI tools listen on stays below 32768, out of the kernel's
# ephemeral range (32768-60999), where an outgoing connection in TIME_WAIT can hold it:
# the distribution port, the CLI tools' distribution ports (RabbitMQ's default range lies
# in the ephemeral range; here: the ten ports above the node's distribution port) and epmd.
SERVICE=rabbitmq
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${HERALD_RABBITMQ_PORT:-5672}
DATA=${HERALD_RABBITMQ_DATA:-$HERALD_ROOT/.data/rabbitmq}
DIST_PORT=${HERALD_RABBITMQ_DIST_PORT:-$((PORT + 20000))}
EPMD_PORT=${HERALD_EPMD_PORT:-4369}
NODE="herald-$PORT@localhost"
((PORT < 32768 && DIST_PORT + 10 < 32768 && EPMD_PORT < 32768)) \
  || die "ports $PORT, $DIST_PORT-$((DIST_PORT + 10)) or $EPMD_PORT reach the ephemeral range (32768+)"

as_rabbitmq() {
  local dir=$1; shift
  runuser -u rabbitmq -- env HOME="$dir" RABBITMQ_NODENAME="$NODE" RABBITMQ_DIST_PORT="$DIST_PORT" \
    RABBITMQ_CTL_DIST_PORT_MIN=$((DIST_PORT + 1)) RABBITMQ_CTL_DIST_PORT_MAX=$((DIST_PORT + 10)) \
    ERL_EPMD_PORT="$EPMD_PORT" RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/rabbitmq.pid" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" "$@"
}

running() { as_rabbitmq "$1" /usr/lib/rabbitmq/bin/rabbitmqctl -q status >/dev/null 2>&1; }

start() {
  apt_install rabbitmq-server
  local dir
  dir=$(service_dir "$DATA" rabbitmq)
  if running "$dir"; then log "already running on 127.0.0.1:$PORT"; return 0; fi
  [[ -f $dir/enabled_plugins ]] || echo '[].' >"$dir/enabled_plugins"
  printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users.guest = true\n' "$PORT" >"$dir/rabbitmq.conf"
  chown -R rabbitmq: "$dir"
  log "starting node $NODE on 127.0.0.1:$PORT (data $dir)"
  as_rabbitmq "$dir" /usr/lib/rabbitmq/bin/rabbitmq-server >"$dir/stdout.log" 2>&1 </dev/null &
  local pid=$!
  # Ready when the AMQP port answers; give up at once if the node died while booting.
  wait_for "RabbitMQ on 127.0.0.1:$PORT" 90 bash -c "! kill -0 $pid || (exec 3<>/dev/tcp/127.0.0.1/$PORT)" \
    && kill -0 "$pid" 2>/dev/null \
    || { tail -30 "$dir/stdout.log" >&2; die "RabbitMQ did not start"; }
  log "ready: amqp://guest:guest@127.0.0.1:$PORT/"
}

stop() {
  [[ -e $DATA ]] || return 0
  local dir
  dir=$(readlink -f "$DATA")
  running "$dir" || return 0
  log "stopping"
  as_rabbitmq "$dir" /usr/lib/rabbitmq/bin/rabbitmqctl -q shutdown >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run) start; trap stop EXIT INT TERM; while running "$(readlink -f "$DATA")"; do sleep 2; done ;;
  *) echo "usage: $0 start|stop|run" >&2; exit 2 ;;
esac
