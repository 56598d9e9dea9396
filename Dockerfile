# The Herald image: one image for every Herald process; the command picks which one.
#   docker run herald api | worker | topics apply | keygen
# Build stage: install the project and its dependencies into a virtualenv (all have wheels).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/herald
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY pipeline ./pipeline
RUN /opt/herald/bin/pip install .

# Swagger UI for /docs (api/routes/docs.py): npm's swagger-ui-dist at the version
# scripts/setup.sh pins.
FROM node:22-slim AS swagger-ui
ARG SWAGGER_UI_VERSION=5.35.0
WORKDIR /swagger-ui
RUN npm pack --silent "swagger-ui-dist@${SWAGGER_UI_VERSION}" \
    && tar -xzf "swagger-ui-dist-${SWAGGER_UI_VERSION}.tgz" --strip-components=1 --exclude='*.map' \
    && rm "swagger-ui-dist-${SWAGGER_UI_VERSION}.tgz"

# Runtime stage: the virtualenv, Swagger UI and topics.yaml, run as an unprivileged user.
FROM python:3.11-slim
# `pip install .` puts pipeline/ under site-packages, where Settings' default topics_file
# (the repo root's topics.yaml) does not exist: point it at the copy below.
ENV PATH=/opt/herald/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HERALD_TOPICS_FILE=/app/topics.yaml \
    HERALD_SWAGGER_UI_DIR=/opt/swagger-ui
# /app is the working directory and must be writable: the worker's Faust app creates its data
# directory relative to it (Settings.worker_data_dir, .data/worker; Faust makes only the last
# level, so .data/ is made here).
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin herald \
    && install -d -o herald -g herald /app /app/.data
COPY --from=build /opt/herald /opt/herald
COPY --from=swagger-ui /swagger-ui /opt/swagger-ui
COPY topics.yaml /app/topics.yaml
WORKDIR /app
USER herald
# api (HERALD_API_PORT) and the worker's /healthz, /readyz, /metrics (HERALD_WORKER_PORT).
EXPOSE 8080 8081
ENTRYPOINT ["herald"]
CMD ["--help"]
