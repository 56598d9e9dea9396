# Shared helpers for Herald's service scripts (sourced, not run).
# Every service keeps its state in one directory and its pid in a file there, so
# start is a no-op when the service already runs and stop only stops what we started.

set -euo pipefail

HERALD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[%s] %s\n' "${SERVICE:-herald}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll COMMAND until it succeeds or the deadline passes.
wait_for() {
  local what=$1 timeout_s=$2; shift 2
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "gave up after ${timeout_s}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfile PIDFILE TIMEOUT_S: TERM the process, wait, then KILL it.
stop_pidfile() {
  local pidfile=$1 timeout_s=${2:-30} pid
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for "pid $pid to exit" "$timeout_s" bash -c "! kill -0 $pid"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# apt_install PACKAGE...: install Debian packages that are missing (needs root).
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  # Another apt or unattended-upgrades holding the dpkg lock is waited for, not a failure.
  local wait_for_lock=(-o DPkg::Lock::Timeout=600)
  $sudo apt-get "${wait_for_lock[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait_for_lock[@]}" install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
}

# service_dir PATH USER: make PATH a directory USER owns and can reach. PostgreSQL and
# RabbitMQ refuse to run as root, and a checkout under a 0700 home is out of their reach,
# so then the real directory lives under /var/lib/herald and PATH is a symlink to it.
service_dir() {
  local path=$1 user=$2
  if [[ -L $path ]]; then
    path=$(readlink -f "$path")
  elif [[ ! -d $path ]]; then
    mkdir -p "$path"
    chown "$user:" "$path"
    if ! runuser -u "$user" -- test -w "$path"; then
      rmdir "$path"
      local real="/var/lib/herald/$(printf '%s' "$path" | sha1sum | cut -c1-12)-$(basename "$path")"
      mkdir -p "$real"
      ln -s "$real" "$path"
      path=$real
    fi
  fi
  chown -R "$user:" "$path"
  printf '%s\n' "$path"
}
