"""docker-compose.yml, the Dockerfile and ops/ checked against the code that runs in them.

No Docker engine runs where these tests run, so nothing here starts a container. Instead the
tests read the files and compare them with what Herald's own code accepts: the environment with
pipeline.settings.Settings, the commands with the parser in api/cli.py, the ports and the
/metrics path with Settings' defaults and pipeline.health, and the Prometheus and Grafana files
with the services and mounts compose declares.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import typing
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, SecretStr

import api.cli
from pipeline.health import health_routes
from pipeline.roles import parse_roles
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PREFIX: str = Settings.model_config["env_prefix"] or ""
WORKER_SERVICES = ("router", "deliver", "index", "ingest")  # one per role, scaled with --scale
HERALD_SERVICES = ("topics", *WORKER_SERVICES, "api")
# Settings defaults encryption_keys to "", but the api and the worker refuse to start without a
# key (pipeline.crypto.Sealer), so compose must always hand them one.
REQUIRED_AT_RUNTIME: dict[str, set[str]] = {
    "api": {"encryption_keys"},
    **{name: {"encryption_keys"} for name in WORKER_SERVICES},
}
PROMETHEUS_DEFAULT_CONFIG = "/etc/prometheus/prometheus.yml"
PROMETHEUS_PORT = 9090  # Prometheus' default listen address is :9090
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
METRICS_PATH = "/metrics"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# What a ${NAME:?…} variable stands for here: the operator must set it, to something.
_SET_BY_OPERATOR = "set-by-the-operator"


# --- reading the files ---------------------------------------------------------------------


@cache
def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _service(name: str) -> dict[str, Any]:
    assert name in _services(), f"docker-compose.yml has no service {name!r}"
    return _services()[name]


def _resolve(value: str) -> str:
    """The value compose substitutes when the host sets none of the ${…} variables in it."""

    def substitute(match: re.Match[str]) -> str:
        op = match["op"] or ""
        if op.endswith("-"):
            return match["arg"]
        if op.endswith("?"):
            return _SET_BY_OPERATOR
        return ""  # a bare ${NAME} that is unset becomes the empty string

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def _raw_environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment (mapping or list form); None for a name passed through."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = [item.partition("=") for item in environment]
        return {name: value if sep else None for name, sep, value in pairs}
    return {name: None if value is None else str(value) for name, value in environment.items()}


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _build_dockerfile(service: dict[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / str(build.get("context", "."))).resolve()
    return context / str(build.get("dockerfile", "Dockerfile"))


def _image_environment(dockerfile: Path) -> dict[str, str]:
    environment: dict[str, str] = {}
    for keyword, arguments in _dockerfile(dockerfile):
        if keyword == "ENV":
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                environment[name] = value
    return environment


def _container_environment(name: str) -> dict[str, str]:
    """HERALD_* variables a Herald container sees with an empty host environment."""
    service = _service(name)
    dockerfile = _build_dockerfile(service)
    assert dockerfile is not None, f"{name} does not build the Herald image"
    environment = {k: v for k, v in _image_environment(dockerfile).items() if k.startswith(PREFIX)}
    for key, value in _raw_environment(service).items():
        if value is not None:
            environment[key] = _resolve(value)
    return environment


def _settings(name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings the service's process builds from its container's environment."""
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    for key, value in _container_environment(name).items():
        monkeypatch.setenv(key, value)
    return Settings()


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read-only); a bind's source is resolved to an absolute path."""
    mounts: dict[str, tuple[str, bool]] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            read_only = "ro" in (mode[0].split(",") if mode else [])
        else:
            source, target = volume.get("source", ""), volume["target"]
            read_only = bool(volume.get("read_only", False))
        if source.startswith((".", "/")):
            source = str((COMPOSE_FILE.parent / source).resolve())
        mounts[target] = (source, read_only)
    return mounts


def _host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a container path lives on the host, if a bind mount provides it."""
    covering = [
        target
        for target in _mounts(service)
        if container_path == target or container_path.startswith(target.rstrip("/") + "/")
    ]
    if not covering:
        return None
    target = max(covering, key=len)
    source, _ = _mounts(service)[target]
    if not source.startswith("/"):
        return None  # a named volume: its content is not in the repository
    return Path(source) / os.path.relpath(container_path, target)


def _ports(service: dict[str, Any]) -> list[tuple[str | None, int]]:
    """(published host port or None, container port) for each entry of `ports`."""
    ports: list[tuple[str | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            ports.append((None if published is None else str(published), int(entry["target"])))
            continue
        *host, container = str(entry).split(":")
        ports.append((host[-1] if host else None, int(container.split("/")[0])))
    return ports


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return {name: "service_started" for name in depends_on}
    return {name: spec.get("condition", "service_started") for name, spec in depends_on.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def _cli_accepts(argv: list[str]) -> bool:
    try:
        api.cli.build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


# --- the tests ------------------------------------------------------------------------------


def test_the_cli_parser_refuses_what_herald_would_refuse() -> None:
    assert _cli_accepts(["topics", "apply"])
    assert not _cli_accepts(["topics"])
    assert not _cli_accepts(["topics", "drop"])
    assert not _cli_accepts(["serve"])
    assert not _cli_accepts([])


def test_herald_services_run_the_herald_entrypoint() -> None:
    building = {name for name, service in _services().items() if _build_dockerfile(service)}
    assert set(HERALD_SERVICES) <= building
    for name in building:
        dockerfile = _build_dockerfile(_service(name))
        assert dockerfile is not None and dockerfile.is_file(), f"{name}: no {dockerfile}"
        entrypoints = [json.loads(a) for k, a in _dockerfile(dockerfile) if k == "ENTRYPOINT"]
        assert entrypoints and entrypoints[-1] == ["herald"], dockerfile
        assert "entrypoint" not in _service(name), f"{name} replaces the herald entrypoint"


@pytest.mark.parametrize("name", HERALD_SERVICES)
def test_command_is_one_the_herald_cli_accepts(name: str) -> None:
    command = _command(_service(name))
    assert _cli_accepts(command), f"{name}: `herald {shlex.join(command)}` is not a command"


def settings_variables() -> set[str]:
    """Every environment variable Settings reads: HERALD_<FIELD>, and for the fields that
    take a standard variable (OTEL_*: pipeline/tracing.py) that variable's name."""
    names = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        else:
            names.add(PREFIX + field.upper())
    return names


@pytest.mark.parametrize("name", HERALD_SERVICES)
def test_environment_names_are_settings_fields(name: str) -> None:
    known = settings_variables()
    service = _service(name)
    dockerfile = _build_dockerfile(service)
    assert dockerfile is not None
    image = {k for k in _image_environment(dockerfile) if k.startswith(PREFIX)}
    unknown = (set(_raw_environment(service)) | image) - known
    assert not unknown, f"{name}: Settings reads none of {sorted(unknown)}"


@pytest.mark.parametrize("name", HERALD_SERVICES)
def test_required_settings_are_provided(name: str) -> None:
    required = {field for field, info in Settings.model_fields.items() if info.is_required()}
    required |= REQUIRED_AT_RUNTIME.get(name, set())
    environment = _container_environment(name)
    for field in required:
        assert environment.get(PREFIX + field.upper()), f"{name}: {PREFIX + field.upper()} unset"


@pytest.mark.parametrize("name", HERALD_SERVICES)
def test_environment_parses_as_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    environment = _container_environment(name)
    # pydantic-settings takes an empty value as a value, not as unset ("" is no API key list,
    # and an empty HERALD_DEV_API_KEY would be a key): leave such variables out instead.
    empty = sorted(key for key, value in environment.items() if value == "")
    assert not empty, f"{name}: {empty} would be empty"
    _settings(name, monkeypatch)  # raises if a value does not parse


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


@pytest.mark.parametrize("name", HERALD_SERVICES)
def test_secrets_come_from_the_host(name: str) -> None:
    environment = _raw_environment(_service(name))
    for field, info in Settings.model_fields.items():
        value = environment.get(PREFIX + field.upper())
        if _is_secret(info.annotation) and value is not None:
            match = _VARIABLE.fullmatch(value)
            assert match and (match["op"] or "").endswith("?"), (
                f"{name}: {PREFIX + field.upper()} must be ${{VAR:?…}}, not a value or default"
            )


def test_api_publishes_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _settings("api", monkeypatch).api_port
    assert port == Settings.model_fields["api_port"].default
    assert (str(port), port) in _ports(_service("api"))


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_workers_can_be_scaled(name: str) -> None:
    worker = _service(name)
    assert "container_name" not in worker
    assert not [published for published, _ in _ports(worker) if published], "fixed host port"


def test_each_worker_service_runs_its_role() -> None:
    parser = api.cli.build_parser()
    for name in WORKER_SERVICES:
        args = parser.parse_args(_command(_service(name)))
        assert (args.command, args.roles) == ("worker", parse_roles(name)), name
    # Only the index role needs PostgreSQL before it starts.
    assert "postgres" in _depends_on(_service("index"))
    assert "postgres" not in _depends_on(_service("deliver"))


def test_start_order() -> None:
    assert _depends_on(_service("topics")).get("kafka") == "service_healthy"
    for name in HERALD_SERVICES:
        if name != "topics":
            assert _depends_on(_service(name)).get("topics") == "service_completed_successfully"
    for name, service in _services().items():
        for dependency, condition in _depends_on(service).items():
            assert dependency in _services(), f"{name} depends on unknown {dependency}"
            if condition == "service_healthy":
                assert "healthcheck" in _service(dependency), f"{dependency} has no healthcheck"


def test_kafka_is_apache_kafka_3_9() -> None:
    assert re.fullmatch(r"apache/kafka:3\.9(\.\d+)?", _service("kafka")["image"])


def test_kafka_is_a_single_kraft_node() -> None:
    kafka = _service("kafka")
    environment = {k: v or "" for k, v in _raw_environment(kafka).items()}
    assert set(environment["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = environment["KAFKA_NODE_ID"]
    assert environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node_id}@")
    assert environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    assert "healthcheck" in kafka
    log_dir = environment.get("KAFKA_LOG_DIRS", "/tmp/kraft-combined-logs")  # noqa: S108
    source, _ = _mounts(kafka).get(log_dir, ("", False))
    assert source in (_compose().get("volumes") or {}), "the log dir is not on a named volume"


def test_topics_fit_on_the_brokers() -> None:
    brokers = [s for s in _services().values() if str(s.get("image", "")).startswith("apache/")]
    topics = yaml.safe_load((ROOT / "topics.yaml").read_text())
    assert 1 <= topics["replication_factor"] <= len(brokers)


@pytest.mark.parametrize("name", HERALD_SERVICES)
def test_herald_reaches_kafka(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    advertised = _raw_environment(_service("kafka"))["KAFKA_ADVERTISED_LISTENERS"] or ""
    addresses = {listener.partition("://")[2] for listener in advertised.split(",")}
    for address in _settings(name, monkeypatch).kafka_bootstrap.split(","):
        assert address in addresses, f"{name}: {address} is not an advertised listener"


@pytest.mark.parametrize("name", HERALD_SERVICES)
def test_herald_reaches_postgres(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = urlsplit(_settings(name, monkeypatch).database_url)
    postgres = _service(url.hostname or "")
    assert str(postgres["image"]).startswith("postgres:")
    environment = {k: _resolve(v or "") for k, v in _raw_environment(postgres).items()}
    assert url.username == environment["POSTGRES_USER"]
    assert url.password == environment["POSTGRES_PASSWORD"]
    assert url.path == "/" + environment.get("POSTGRES_DB", environment["POSTGRES_USER"])
    assert (url.port or 5432) == 5432


def test_herald_serves_metrics_where_prometheus_looks() -> None:
    assert METRICS_PATH in {route.path for route in health_routes({})}


def _prometheus_config_path() -> Path:
    prometheus = _service("prometheus")
    flags = [w for w in _command(prometheus) if w.startswith("--config.file=")]
    in_container = flags[-1].partition("=")[2] if flags else PROMETHEUS_DEFAULT_CONFIG
    assert _mounts(prometheus).get(in_container, ("", False))[1], "config is not mounted :ro"
    path = _host_path(prometheus, in_container)
    assert path is not None and path.is_file(), f"{in_container} comes from no file here"
    return path


def _scrape_targets(config: dict[str, Any]) -> set[tuple[str, int, str, str]]:
    """(host, port, metrics path, how it is found) for every scrape target."""
    targets: set[tuple[str, int, str, str]] = set()
    for job in config.get("scrape_configs", []):
        path = job.get("metrics_path", "/metrics")
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, _, port = target.rpartition(":")
                targets.add((host, int(port), path, "static"))
        for dns in job.get("dns_sd_configs", []):
            targets.update((host, int(dns["port"]), path, "dns") for host in dns["names"])
    return targets


def test_prometheus_scrapes_the_api_and_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    config = yaml.safe_load(_prometheus_config_path().read_text())
    targets = _scrape_targets(config)
    api_port = _settings("api", monkeypatch).api_port
    assert api_port == Settings.model_fields["api_port"].default
    assert ("api", api_port, METRICS_PATH) in {target[:3] for target in targets}
    for name in WORKER_SERVICES:
        worker_port = _settings(name, monkeypatch).worker_port
        assert worker_port == Settings.model_fields["worker_port"].default
        # A static worker:port would scrape one replica; a DNS lookup finds them all.
        assert (name, worker_port, METRICS_PATH, "dns") in targets
    for host, *_ in targets:
        assert host == "localhost" or host in _services(), f"{host} is no compose service"


def _provisioning(kind: str) -> list[dict[str, Any]]:
    directory = _host_path(_service("grafana"), GRAFANA_PROVISIONING)
    assert directory is not None and directory.is_dir(), "grafana provisioning is not mounted"
    files = sorted((directory / kind).glob("*.y*ml"))
    assert files, f"no provisioning files under {directory / kind}"
    return [yaml.safe_load(f.read_text()) for f in files]


def test_herald_exports_traces_to_the_collector_and_the_collector_to_jaeger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = yaml.safe_load((ROOT / "ops/otel/collector.yaml").read_text())
    mounts = _mounts(_service("otel-collector"))
    assert mounts["/etc/otelcol/config.yaml"][0] == str(ROOT / "ops/otel/collector.yaml")
    http = urlsplit("//" + collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"])
    for name in HERALD_SERVICES:
        settings = _settings(name, monkeypatch)
        assert settings.otel_traces_exporter == "otlp", name
        endpoint = urlsplit(settings.otel_exporter_otlp_endpoint)
        assert (endpoint.hostname, endpoint.port) == ("otel-collector", http.port), name
    [exporter] = collector["service"]["pipelines"]["traces"]["exporters"]
    jaeger = urlsplit("//" + collector["exporters"][exporter]["endpoint"])
    assert str(_service(jaeger.hostname or "")["image"]).startswith("jaegertracing/jaeger:2")
    assert jaeger.port == 4317  # Jaeger v2's OTLP gRPC receiver


def test_grafana_reads_the_prometheus_of_this_file() -> None:
    datasources = [d for f in _provisioning("datasources") for d in f.get("datasources", [])]
    urls = [urlsplit(d["url"]) for d in datasources if d.get("type") == "prometheus"]
    assert urls, "no prometheus data source"
    for url in urls:
        assert str(_service(url.hostname or "")["image"]).startswith("prom/prometheus")
        assert url.port == PROMETHEUS_PORT


def test_grafana_loads_the_herald_dashboard() -> None:
    providers = [p for f in _provisioning("dashboards") for p in f.get("providers", [])]
    assert providers, "no dashboard provider"
    dashboards: dict[str, dict[str, Any]] = {}
    for provider in providers:
        directory = _host_path(_service("grafana"), provider["options"]["path"])
        assert directory is not None and directory.is_dir(), provider["options"]["path"]
        for file in directory.glob("*.json"):
            dashboard = json.loads(file.read_text())
            dashboards[dashboard["uid"]] = dashboard
    assert "herald" in dashboards
    assert dashboards["herald"]["title"] == "Herald"
    assert isinstance(dashboards["herald"]["panels"], list)


def test_the_image_has_the_topics_file_settings_points_at() -> None:
    # `pip install .` moves pipeline/ to site-packages, away from Settings' default topics.yaml.
    dockerfile = _build_dockerfile(_service("topics"))
    assert dockerfile is not None
    topics_file = _image_environment(dockerfile).get(PREFIX + "TOPICS_FILE", "")
    copies = [shlex.split(a) for k, a in _dockerfile(dockerfile) if k == "COPY"]
    copied = {
        destination.rstrip("/") + "/topics.yaml" if destination.endswith("/") else destination
        for *sources, destination in copies
        if "topics.yaml" in sources
    }
    assert topics_file in copied
