#!/usr/bin/env bash
# Runs a single-node Apache Kafka broker (KRaft) from the Maven Central jars, no Docker.
#
#   scripts/kafka/kafka.sh fetch    download the jars once into $HERALD_KAFKA_JARS
#   scripts/kafka/kafka.sh start    fetch, format the log dir once, start, wait for metadata
#   scripts/kafka/kafka.sh stop     stop the broker started from $HERALD_KAFKA_DATA
#   scripts/kafka/kafka.sh run      like start, but in the foreground
#
# Settings (environment): HERALD_KAFKA_PORT (9092), HERALD_KAFKA_CONTROLLER_PORT (port+1),
# HERALD_KAFKA_DATA (.data/kafka), HERALD_KAFKA_JARS (.cache/kafka-jars), HERALD_KAFKA_HEAP (512m).
# An optional SASL_SSL listener besides (the integration tests' TLS sources; none unless
# HERALD_KAFKA_SASL_SSL_PORT is set): HERALD_KAFKA_SSL_KEYSTORE (a PEM file: the broker's
# unencrypted PKCS#8 key, then its certificate chain) and one user, HERALD_KAFKA_SASL_USER
# and HERALD_KAFKA_SASL_PASSWORD (no quotes, commas or brackets), for PLAIN, SCRAM-SHA-256
# and SCRAM-SHA-512 (the SCRAM credentials are stored when the log dir is formatted).
SERVICE=kafka
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PORT=${HERALD_KAFKA_PORT:-9092}
CONTROLLER_PORT=${HERALD_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
DATA=${HERALD_KAFKA_DATA:-$HERALD_ROOT/.data/kafka}
JARS=${HERALD_KAFKA_JARS:-$HERALD_ROOT/.cache/kafka-jars}
HEAP=${HERALD_KAFKA_HEAP:-512m}
POM="$HERALD_ROOT/scripts/kafka/pom.xml"
PIDFILE="$DATA/kafka.pid"
# A fixed cluster id: the log dir is formatted once and then reused across restarts.
CLUSTER_ID=${HERALD_KAFKA_CLUSTER_ID:-hEraLdKafkaLocal0000Aw}
SASL_SSL_PORT=${HERALD_KAFKA_SASL_SSL_PORT:-}

fetch() {
  local stamp="$JARS/.complete-$(sha1sum "$POM" | cut -c1-12)"
  [[ -f $stamp ]] && return 0
  command -v mvn >/dev/null || apt_install maven
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  log "fetching Kafka jars from Maven Central into $JARS"
  rm -rf "$JARS"; mkdir -p "$JARS"
  mvn -q -B -f "$POM" dependency:copy-dependencies \
    -DoutputDirectory="$JARS" -DincludeScope=runtime >"$JARS/mvn.log" 2>&1 \
    || { cat "$JARS/mvn.log" >&2; die "Maven could not fetch the Kafka jars"; }
  touch "$stamp"
}

write_config() {
  local sasl_ssl_listener="" sasl_ssl_protocol=""
  if [[ -n $SASL_SSL_PORT ]]; then
    sasl_ssl_listener=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT" sasl_ssl_protocol=",SASL_SSL:SASL_SSL"
  fi
  mkdir -p "$DATA/logs"
  cat >"$DATA/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT$sasl_ssl_listener
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT$sasl_ssl_listener
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT$sasl_ssl_protocol
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/logs
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.check.interval.ms=60000
PROPS
  [[ -z $SASL_SSL_PORT ]] || sasl_ssl_config >>"$DATA/server.properties"
  cat >"$DATA/log4j.properties" <<PROPS
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$DATA/server.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
PROPS
}

# The SASL_SSL listener's TLS and users; the broker itself still talks PLAINTEXT to itself.
sasl_ssl_config() {
  [[ -f ${HERALD_KAFKA_SSL_KEYSTORE:-} ]] || die "HERALD_KAFKA_SSL_KEYSTORE names no file"
  local user=${HERALD_KAFKA_SASL_USER:?} password=${HERALD_KAFKA_SASL_PASSWORD:?}
  local module=org.apache.kafka.common.security
  cat <<PROPS
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$HERALD_KAFKA_SSL_KEYSTORE
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=$module.plain.PlainLoginModule required user_$user="$password";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=$module.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$module.scram.ScramLoginModule required;
PROPS
}

# run_java HEAP CLASS ARGS...: the JVM with Kafka's jars on the class path (java expands the *).
run_java() {
  local heap=$1; shift
  exec java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$DATA/log4j.properties" -cp "$JARS/*" "$@"
}

format() {
  local scram=()
  if [[ -n $SASL_SSL_PORT ]]; then
    local credential="name=$HERALD_KAFKA_SASL_USER,password=$HERALD_KAFKA_SASL_PASSWORD"
    scram=(--add-scram "SCRAM-SHA-256=[$credential]" --add-scram "SCRAM-SHA-512=[$credential]")
  fi
  # --ignore-formatted makes this a no-op on an already formatted log dir.
  (run_java 256m kafka.tools.StorageTool format --ignore-formatted \
    -t "$CLUSTER_ID" -c "$DATA/server.properties" "${scram[@]}") >"$DATA/format.log" 2>&1 \
    || { cat "$DATA/format.log" >&2; die "formatting $DATA/logs failed"; }
}

answers_metadata() {
  [[ -x $HERALD_ROOT/.venv/bin/python ]] || { port_open "$PORT"; return; }
  "$HERALD_ROOT/.venv/bin/python" - "$PORT" <<'PY' 2>/dev/null
import sys
from kafka import KafkaAdminClient
KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}", request_timeout_ms=3000).list_topics()
PY
}

start() {
  if pid_alive "$PIDFILE"; then
    if wait_for "the running broker on 127.0.0.1:$PORT" 30 answers_metadata; then
      log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
      return 0
    fi
    # Alive but not answering: a broker still shutting down (say, a restart right after
    # Ctrl-C). Let it finish, then start a fresh one.
    log "pid $(cat "$PIDFILE") does not answer; stopping it before starting anew"
    stop_pidfile "$PIDFILE" 60
  fi
  fetch; write_config; format
  log "starting broker on 127.0.0.1:$PORT (data $DATA)"
  (run_java "$HEAP" kafka.Kafka "$DATA/server.properties") >"$DATA/stdout.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_for "the broker on 127.0.0.1:$PORT" 90 answers_metadata \
    || { tail -30 "$DATA/server.log" "$DATA/stdout.log" >&2; die "broker did not start"; }
  log "ready on 127.0.0.1:$PORT"
}

stop() {
  pid_alive "$PIDFILE" || { rm -f "$PIDFILE"; return 0; }
  log "stopping broker (pid $(cat "$PIDFILE"))"
  stop_pidfile "$PIDFILE" 60
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  run) start; trap stop EXIT INT TERM; while pid_alive "$PIDFILE"; do sleep 1; done ;;
  *) echo "usage: $0 fetch|start|stop|run" >&2; exit 2 ;;
esac
