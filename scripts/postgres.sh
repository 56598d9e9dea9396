#!/usr/bin/env bash
# Runs a PostgreSQL server of Herald's own (Debian's packages, as the postgres user).
#
#   scripts/postgres.sh start | stop | run
#
# Settings: HERALD_PG_PORT (25432: below the kernel's ephemeral range, 32768-60999),
# HERALD_PG_DATA (.data/postgres). The server listens on 127.0.0.1 only, trusts loopback
# connections (a development server) and has a database and role named herald:
# postgresql://herald@127.0.0.1:$HERALD_PG_PORT/herald
SERVICE=postgres
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${HERALD_PG_PORT:-25432}
DATA=${HERALD_PG_DATA:-$HERALD_ROOT/.data/postgres}

bindir() {
  local version
  version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)
  [[ -n $version ]] || die "no PostgreSQL server under /usr/lib/postgresql"
  printf '/usr/lib/postgresql/%s/bin\n' "$version"
}

as_postgres() { runuser -u postgres -- "$@"; }

start() {
  apt_install postgresql
  local bin dir
  bin=$(bindir)
  dir=$(service_dir "$DATA" postgres)
  if [[ ! -f $dir/cluster/PG_VERSION ]]; then
    log "creating a cluster in $dir/cluster"
    as_postgres "$bin/initdb" -D "$dir/cluster" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi
  if as_postgres "$bin/pg_ctl" -D "$dir/cluster" status >/dev/null 2>&1; then
    log "already running on 127.0.0.1:$PORT"
  else
    log "starting on 127.0.0.1:$PORT (data $dir/cluster)"
    as_postgres "$bin/pg_ctl" -D "$dir/cluster" -l "$dir/server.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $PORT -k $dir -c fsync=on -c max_connections=200" start >/dev/null \
      || { tail -20 "$dir/server.log" >&2; die "PostgreSQL did not start"; }
  fi
  local psql=("$bin/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qtA)
  if [[ -z $(as_postgres "${psql[@]}" -c "select 1 from pg_roles where rolname='herald'") ]]; then
    as_postgres "${psql[@]}" -c "create role herald login" >/dev/null
  fi
  if [[ -z $(as_postgres "${psql[@]}" -c "select 1 from pg_database where datname='herald'") ]]; then
    as_postgres "${psql[@]}" -c "create database herald owner herald" >/dev/null
  fi
  log "ready: postgresql://herald@127.0.0.1:$PORT/herald"
}

stop() {
  local bin dir
  bin=$(bindir)
  [[ -e $DATA ]] || return 0
  dir=$(readlink -f "$DATA")
  [[ -f $dir/cluster/postmaster.pid ]] || return 0
  log "stopping"
  as_postgres "$bin/pg_ctl" -D "$dir/cluster" -m fast -w -t 60 stop >/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run) start; trap stop EXIT INT TERM; while as_postgres "$(bindir)/pg_ctl" -D "$(readlink -f "$DATA")/cluster" status >/dev/null 2>&1; do sleep 1; done ;;
  *) echo "usage: $0 start|stop|run" >&2; exit 2 ;;
esac
