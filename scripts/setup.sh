#!/usr/bin/env bash
# Everything `make run` and `make test` need on a fresh Debian machine; safe to run again.
#   Debian packages (PostgreSQL, RabbitMQ, chromium for the portal's browser tests, a JDK,
#   Maven and npm if missing), the Kafka jars, Swagger UI for /docs, Helm.
# The Python venv is the Makefile's job (it knows when pyproject.toml changed).
SERVICE=setup
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

packages=(postgresql rabbitmq-server chromium)
command -v npm >/dev/null || packages+=(npm)
command -v java >/dev/null || packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || packages+=(maven)
apt_install "${packages[@]}"
"$HERALD_ROOT/scripts/kafka/kafka.sh" fetch

# Swagger UI, which /docs serves (api/routes/docs.py): npm's swagger-ui-dist at a pinned
# version, unpacked into .cache/swagger-ui; skipped when that version is already there.
SWAGGER_UI_VERSION=5.35.0
swagger_dir="$HERALD_ROOT/.cache/swagger-ui"
if ! grep -qs "\"version\": \"$SWAGGER_UI_VERSION\"" "$swagger_dir/package.json"; then
  log "fetching swagger-ui-dist $SWAGGER_UI_VERSION from npm into .cache/swagger-ui"
  mkdir -p "$HERALD_ROOT/.cache"
  unpacked=$(mktemp -d "$HERALD_ROOT/.cache/swagger-ui.XXXXXX")
  (cd "$unpacked" && npm pack --silent "swagger-ui-dist@$SWAGGER_UI_VERSION" >/dev/null)
  tar -xzf "$unpacked/swagger-ui-dist-$SWAGGER_UI_VERSION.tgz" -C "$unpacked" \
    --strip-components=1 --exclude='*.map'
  rm "$unpacked/swagger-ui-dist-$SWAGGER_UI_VERSION.tgz"
  rm -rf "$swagger_dir" && mv "$unpacked" "$swagger_dir"
fi

# Helm, for the chart's tests (tests/unit/test_helm_chart.py renders deploy/helm/herald):
# built from its Go module into .cache/bin, skipped when that version is already there.
# A cold `go install` downloads a few hundred modules and compiles for about 4 minutes.
HELM_VERSION=v3.22.0
helm_bin="$HERALD_ROOT/.cache/bin/helm"
go_bin=$(command -v go || echo /usr/local/go/bin/go)
if [[ -x $helm_bin ]] && "$go_bin" version -m "$helm_bin" 2>/dev/null \
    | grep -qE "^\s+mod\s+helm.sh/helm/v3\s+$HELM_VERSION(\s|$)"; then
  :
elif [[ -x $go_bin ]]; then
  log "installing helm $HELM_VERSION into .cache/bin (go install)"
  GOBIN="$HERALD_ROOT/.cache/bin" "$go_bin" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
else
  log "no Go toolchain: helm not installed, the Helm chart's tests will be skipped"
fi
