"""deploy/helm/herald checked against the code that runs in it, and against Kubernetes.

`helm template` (Helm built from its Go module into .cache/bin by scripts/setup.sh) renders
the chart offline, with the default values and with values-production.yaml; every object is
validated with kubernetes-validate's schemas, except the two custom resources (no schema
ships for them: their key fields are checked here instead). Then the rendered pods are
compared with what Herald's own code reads, as tests/unit/test_compose.py does for compose:
the environment with pipeline.settings.Settings, the arguments with api/cli.py's parser, the
probes and /metrics with pipeline/health.py, the consumer group with pipeline/delivery.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

import api.cli
from pipeline.crypto import generate_key
from pipeline.delivery import sink_group_id
from pipeline.health import health_routes
from pipeline.roles import INGEST, ROLES, parse_roles
from pipeline.settings import Settings
from pipeline.topics import DELIVERIES, TopicSpec, load_specs
from tests.unit.test_compose import PREFIX, _dockerfile, _is_secret, settings_variables

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "herald"
HELM = ROOT / ".cache" / "bin" / "helm"
# A version kubernetes-validate ships schemas for (and `helm template` renders for).
KUBERNETES_VERSION = "1.33.0"
RELEASE = "herald"
# The custom resources: no schema for them in kubernetes-validate (checked field by field
# in the tests below), and each behind a values flag.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
COMPONENTS = ("api", *ROLES)
# values-production.yaml enables the optional ingest Deployment (the sources).
PRODUCTION_COMPONENTS = (*COMPONENTS, INGEST)
# Secrets each component's code reads (the API seals destination credentials and reads
# PostgreSQL; deliver opens the credentials; index writes PostgreSQL).
NEEDS = {
    "api": {"encryption_keys", "database_url"},
    "router": set(),
    "deliver": {"encryption_keys"},
    "index": {"database_url"},
    "ingest": {"sources"},
    "topics": set(),
}
# database_url is a str (it must reach asyncpg whole) but carries the password.
SECRET_FIELDS = {
    name for name, info in Settings.model_fields.items() if _is_secret(info.annotation)
} | {"api_keys", "database_url", "sources"}
# What a secretKeyRef stands for when the rendered environment is parsed as Settings.
PLACEHOLDERS = {
    "encryption_keys": generate_key(),
    "database_url": "postgresql://herald:secret@postgres.example:5432/herald",
    "api_keys": "[]",
    "portal_signing_key": "signing-key",
    "sources": "[]",
}
PRODUCTION = CHART / "values-production.yaml"
RENDERINGS = {"default": (), "production": ("--values", str(PRODUCTION))}


def _go_present() -> bool:
    return shutil.which("go") is not None or Path("/usr/local/go/bin/go").is_file()


def _helm(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`helm template` or `helm lint` of the chart, offline, for KUBERNETES_VERSION."""
    if not HELM.is_file():
        if not _go_present():
            pytest.skip("no Go toolchain, so scripts/setup.sh could not build helm")
        pytest.fail(f"{HELM} is missing: run `make setup` (it builds helm with go install)")
    release = [RELEASE] if command == "template" else []
    return subprocess.run(
        [
            str(HELM),
            command,
            *release,
            str(CHART),
            "--namespace",
            "herald",
            "--kube-version",
            KUBERNETES_VERSION,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@cache
def _render(*args: str) -> tuple[dict[str, Any], ...]:
    result = _helm("template", *args)
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def _objects(rendering: str) -> tuple[dict[str, Any], ...]:
    return _render(*RENDERINGS[rendering])


def _of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def _workloads(objects: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(component, pod spec) of every Deployment and Job."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            yield _component(obj), obj["spec"]["template"]["spec"]


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["containers"]
    return dict(container)


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables, each secretKeyRef replaced by a placeholder of its kind."""
    environment: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            field = entry["name"].removeprefix(PREFIX).lower()
            environment[entry["name"]] = PLACEHOLDERS[field]
        else:
            environment[entry["name"]] = entry["value"]
    return environment


def _settings(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings the container's process builds from the environment the chart gives it."""
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.upper().startswith(PREFIX)]:
            patch.delenv(key)
        for key, value in _environment(container).items():
            patch.setenv(key, value)
        return Settings()


def _topics_file(objects: tuple[dict[str, Any], ...], pod: dict[str, Any]) -> str:
    """The topics file a pod mounts, through its ConfigMap volume."""
    container = _container(pod)
    path = PurePosixPath(_environment(container)[PREFIX + "TOPICS_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    name = volume["configMap"]["name"]
    (config_map,) = [c for c in _of_kind(objects, "ConfigMap") if c["metadata"]["name"] == name]
    return str(config_map["data"][path.name])


# --- Kubernetes' own schemas ----------------------------------------------------------------


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_helm_lint_finds_nothing(rendering: str) -> None:
    result = _helm("lint", "--strict", *RENDERINGS[rendering])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_object_is_valid_kubernetes(rendering: str) -> None:
    objects = _objects(rendering)
    assert {"Deployment", "Service", "PodDisruptionBudget", "Job", "ConfigMap"} <= {
        o["kind"] for o in objects
    }
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")


def test_custom_resources_only_when_asked_for() -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in _objects("default")}
    assert not kinds & CUSTOM_KINDS, "the default needs neither Prometheus Operator nor KEDA"
    kinds = {(o["apiVersion"], o["kind"]) for o in _objects("production")}
    assert kinds >= CUSTOM_KINDS


def test_the_chart_holds_no_secret() -> None:
    for rendering in RENDERINGS:
        assert not _of_kind(_objects(rendering), "Secret")


# --- the pods against Herald's code ---------------------------------------------------------


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_component_runs(rendering: str) -> None:
    components = sorted(c for c, _ in _workloads(_objects(rendering)))
    expected = PRODUCTION_COMPONENTS if rendering == "production" else COMPONENTS
    assert components == sorted([*expected, "topics"])


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_arguments_are_commands_the_cli_runs(rendering: str) -> None:
    parser = api.cli.build_parser()
    for component, pod in _workloads(_objects(rendering)):
        args = parser.parse_args(_container(pod)["args"])
        if component == "topics":
            assert (args.command, args.action) == ("topics", "apply")
        elif component == "api":
            assert args.command == "api"
        else:
            assert (args.command, args.roles) == ("worker", parse_roles(component)), component


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_environment_names_are_settings_fields(rendering: str) -> None:
    known = settings_variables()
    for component, pod in _workloads(_objects(rendering)):
        names = {entry["name"] for entry in _container(pod).get("env", [])}
        assert not names - known, f"{component}: Settings reads none of {names - known}"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_secrets_are_referenced_where_read_and_never_inlined(rendering: str) -> None:
    for component, pod in _workloads(_objects(rendering)):
        env = {entry["name"]: entry for entry in _container(pod).get("env", [])}
        for field in SECRET_FIELDS:
            entry = env.get(PREFIX + field.upper())
            if entry is not None:
                assert "value" not in entry, f"{component}: {field} inlined"
                assert set(entry["valueFrom"]) == {"secretKeyRef"}, f"{component}: {field}"
        for field in NEEDS[component]:
            reference = env[PREFIX + field.upper()]["valueFrom"]["secretKeyRef"]
            assert not reference.get("optional"), f"{component}: {field} may be missing"
        given = {n.removeprefix(PREFIX).lower() for n, e in env.items() if "valueFrom" in e}
        extra = given - NEEDS[component] - {"api_keys", "portal_signing_key"}
        assert not extra, f"{component} is handed {extra}, which it never reads"
        if component == INGEST:  # a tenant named by a configured key may be a record's
            assert "portal_signing_key" not in given
        elif component != "api":
            assert not given & {"api_keys", "portal_signing_key"}, component


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_environment_parses_as_settings(
    rendering: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = _objects(rendering)
    for component, pod in _workloads(objects):
        container = _container(pod)
        settings = _settings(container, monkeypatch)  # raises if a value does not parse
        ports = [p["containerPort"] for p in container.get("ports", [])]
        if component == "api":
            assert (settings.api_host, ports) == ("0.0.0.0", [settings.api_port])
        elif component != "topics":
            assert (settings.worker_host, ports) == ("0.0.0.0", [settings.worker_port])
        # The Job applies, and the pods read partitions from, the repository's topics.
        assert _layout(_specs(_topics_file(objects, pod), tmp_path)) == _layout(
            load_specs(ROOT / "topics.yaml")
        ), component


def _specs(text: str, directory: Path) -> list[TopicSpec]:
    """pipeline.topics' reading of a rendered topics.yaml."""
    path = directory / "topics.yaml"
    path.write_text(text)
    return load_specs(path)


def _layout(specs: list[TopicSpec]) -> dict[str, tuple[int, dict[str, str]]]:
    """Each topic's partitions and config: all but the replication factor, which is a value."""
    return {s.name: (s.partitions, s.config) for s in specs}


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_probes_ask_the_health_routes(rendering: str) -> None:
    paths = {route.path for route in health_routes({})}
    for component, pod in _workloads(_objects(rendering)):
        if component == "topics":
            continue
        container = _container(pod)
        port_names = {p["name"] for p in container["ports"]}
        expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        for probe, path in expected.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path and path in paths, f"{component}: {probe}"
            assert get["port"] in port_names, f"{component}: {probe} port"


def test_a_role_may_override_a_probe_field() -> None:
    objects = _render("--set", "router.probes.startup.failureThreshold=60")
    startup = {
        _component(d): _container(d["spec"]["template"]["spec"])["startupProbe"]
        for d in _of_kind(objects, "Deployment")
    }
    assert startup["router"]["failureThreshold"] == 60
    assert startup["router"]["httpGet"] == startup["deliver"]["httpGet"]
    assert startup["deliver"]["failureThreshold"] != 60


def _dockerfile_user() -> tuple[int, PurePosixPath]:
    """The image's user id and working directory (the Dockerfile's useradd and WORKDIR)."""
    instructions = _dockerfile(ROOT / "Dockerfile")
    (uid,) = {int(m[1]) for _, a in instructions if (m := re.search(r"--uid (\d+)", a))}
    workdir = [a for k, a in instructions if k == "WORKDIR"][-1]
    return uid, PurePosixPath(workdir)


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_pods_run_unprivileged_on_a_read_only_root(
    rendering: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, workdir = _dockerfile_user()
    for component, pod in _workloads(_objects(rendering)):
        container = _container(pod)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        # Faust's data directory (the router) must be on a writable volume.
        data_dir = workdir / _settings(container, monkeypatch).worker_data_dir
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        writable = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs]
        assert any(data_dir.is_relative_to(path) for path in writable), component


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_deployment_has_a_disruption_budget(rendering: str) -> None:
    objects = _objects(rendering)
    budgets = _of_kind(objects, "PodDisruptionBudget")
    for deployment in _of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, deployment["metadata"]["name"]


# --- the topics Job -------------------------------------------------------------------------


def test_the_charts_topics_file_is_the_repositorys() -> None:
    copy = CHART / "files" / "topics.yaml"
    assert copy.read_text() == (ROOT / "topics.yaml").read_text(), (
        "topics.yaml changed: cp topics.yaml deploy/helm/herald/files/topics.yaml"
    )


@pytest.mark.parametrize("replication_factor", [1, 3])
def test_the_topics_job_applies_topics_yaml_before_install_and_upgrade(
    replication_factor: int, tmp_path: Path
) -> None:
    objects = _render("--set", f"topics.replicationFactor={replication_factor}")
    (job,) = _of_kind(objects, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    pod = job["spec"]["template"]["spec"]
    text = _topics_file(objects, pod)
    assert yaml.safe_load(text)["replication_factor"] == replication_factor
    assert {s.replication_factor for s in _specs(text, tmp_path)} == {replication_factor}
    # A hook runs before the release's objects exist: its ConfigMap is a hook, weighed first.
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    (config_map,) = [
        c
        for c in _of_kind(objects, "ConfigMap")
        if c["metadata"]["name"] == volume["configMap"]["name"]
    ]
    hook = config_map["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == annotations["helm.sh/hook"]
    assert int(hook["helm.sh/hook-weight"]) < int(annotations.get("helm.sh/hook-weight", 0))


def test_settings_values_reach_herald_as_they_were_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {
        "sink_max_buffered": 1_000_000,
        "circuit_cooldown_s": 30.5,
        "https_only": False,
        "outbound_allowlist": ["10.0.0.0/8"],
        "eventbridge_source": "acme",
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump({"settings": values}))
    objects = _render("--values", str(tmp_path / "values.yaml"))
    for component, pod in _workloads(objects):
        settings = _settings(_container(pod), monkeypatch)
        assert {name: getattr(settings, name) for name in values} == values, component


def test_settings_the_chart_owns_are_refused_in_values() -> None:
    result = _helm("template", "--set", "settings.api_port=9999")
    assert result.returncode != 0 and "settings.api_port is set by the chart" in result.stderr


# --- the custom resources -------------------------------------------------------------------


def _services_selected(objects: tuple[dict[str, Any], ...], monitor: dict[str, Any]) -> set[str]:
    selector = monitor["spec"]["selector"]
    selected: set[str] = set()
    for service in _of_kind(objects, "Service"):
        labels = service["metadata"]["labels"]
        if not selector["matchLabels"].items() <= labels.items():
            continue
        if all(
            labels.get(e["key"]) in e["values"]
            for e in selector.get("matchExpressions", [])
            if e["operator"] == "In"
        ):
            selected.add(_component(service))
    return selected


def test_the_service_monitor_scrapes_the_api_and_every_role() -> None:
    objects = _objects("production")
    (monitor,) = _of_kind(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["herald"]
    assert _services_selected(objects, monitor) == set(PRODUCTION_COMPONENTS)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["path"] in {route.path for route in health_routes({})}
    for service in _of_kind(objects, "Service"):
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports[endpoint["port"]]["targetPort"] == "http"  # the container's port


def _scaled_object(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (scaled,) = _of_kind(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    return scaled


def test_deliver_scales_on_its_consumer_groups_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = _objects("production")
    scaled = _scaled_object(objects)
    (deliver,) = [d for d in _of_kind(objects, "Deployment") if _component(d) == "deliver"]
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deliver["metadata"]["name"])
    assert "replicas" not in deliver["spec"], "KEDA owns the replica count"
    settings = _settings(_container(deliver["spec"]["template"]["spec"]), monkeypatch)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["consumerGroup"] == sink_group_id(settings)
    assert metadata["topic"] == DELIVERIES
    assert metadata["bootstrapServers"] == settings.kafka_bootstrap
    assert int(metadata["lagThreshold"]) > 0
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_autoscaling_stops_at_the_partitions_of_deliveries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = _render(
        "--set",
        "deliver.autoscaling.enabled=true",
        "--set",
        "deliver.autoscaling.maxReplicas=50",
        "--set",
        "settings.app_id=acme",
    )
    partitions = {s.name: s.partitions for s in load_specs(ROOT / "topics.yaml")}
    scaled = _scaled_object(objects)
    assert scaled["spec"]["maxReplicaCount"] == partitions[DELIVERIES]
    # The group follows the app id the pods run with.
    assert scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"] == "acme-sinks"
