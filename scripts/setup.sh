#!/usr/bin/env bash
# Everything `make run` and `make test` need on a fresh Debian machine; safe to run again.
#   Debian packages (PostgreSQL, RabbitMQ, chromium for the portal's browser tests, a JDK
#   and Maven if missing), the Kafka jars.
# The Python venv is the Makefile's job (it knows when pyproject.toml changed).
SERVICE=setup
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

packages=(postgresql rabbitmq-server chromium)
command -v java >/dev/null || packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || packages+=(maven)
apt_install "${packages[@]}"
"$HERALD_ROOT/scripts/kafka/kafka.sh" fetch
