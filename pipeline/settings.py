"""One Settings object for every Herald process, read from HERALD_* environment variables."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.operator_events import reserved_tenant
from pipeline.source_settings import SourceSettings, read_sources_file, unique_names

ROOT = Path(__file__).resolve().parent.parent


class ApiKey(BaseModel):
    """One configured API key: only its SHA-256 is kept, with its tenant and role."""

    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # A `platform` key belongs to no tenant (it acts on one with the Herald-Tenant header):
    # its tenant is ignored; every other key needs one.
    tenant: str = Field(default="", max_length=64)
    role: Literal["manage", "publish", "platform"] = "manage"
    # This key's own request rate limit (None: the api_rate_limit_* settings).
    rate_limit_per_s: float | None = Field(default=None, ge=0)
    rate_limit_burst: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _tenant_unless_platform(self) -> ApiKey:
        if self.role == "platform":
            self.tenant = ""
        elif not self.tenant:
            raise ValueError(f"a {self.role} key needs a tenant")
        return self


class Settings(BaseSettings):
    """Every knob Herald reads. Built once in main and passed down; nothing else reads env."""

    # An empty variable means "not set" (so HERALD_DEV_API_KEY= never registers a "" key).
    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore", env_ignore_empty=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql://herald@127.0.0.1:25432/herald"
    topics_file: Path = ROOT / "topics.yaml"
    app_id: str = "herald"
    # Faust's working directory (it keeps nothing durable there: tables are in memory and
    # recovered from Kafka). Relative paths are relative to the working directory.
    worker_data_dir: Path = Path(".data/worker")

    # Delivering processes `make run` starts (scripts/run.sh): 1 runs one worker of every
    # role; N > 1 runs a router and index worker beside N deliver workers.
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    worker_host: str = "127.0.0.1"
    worker_port: int = 8081

    dev_api_key: SecretStr | None = None
    dev_tenant: str = "dev"
    api_keys: list[ApiKey] = Field(default_factory=list)
    # Base64 32-byte AES keys, comma separated; the first encrypts, all of them decrypt.
    encryption_keys: SecretStr = SecretStr("")

    # How long the attempt-record producer waits to fill a batch before it sends (the router's
    # and the API's producers have their own: router_linger_ms and api_linger_ms, at the end).
    producer_linger_ms: int = 5
    # How soon a consumer group notices a dead member (kill -9) and hands its partitions on.
    consumer_session_timeout_s: float = 10.0

    max_event_bytes: int = 256 * 1024
    max_batch_bytes: int = 8 * 1024 * 1024
    view_wait_timeout_s: float = 10.0
    # How long a claimed Idempotency-Key stays held without its request renewing the claim
    # (renewed every third of it while the request runs): a few times the longest a request
    # waits (a view wait, a broker round trip: 10 s each). Only a dead process lets it lapse;
    # then a retry with the key takes it over.
    idempotency_lease_s: float = Field(default=60.0, gt=0)
    # The router (a batch's deliveries) and the recorder (an attempt's outcome) write again,
    # with backoff, while the broker refuses with a retriable error; this long after the
    # first refusal the worker exits instead, for its supervisor to restart it.
    broker_give_up_s: float = 60.0

    delivery_timeout_s: float = 5.0
    retry_base_delay_s: float = 30.0
    max_retries: int = 10
    # A destination whose last N deliveries in a row all exhausted their retries is
    # disabled (status inactive, status_reason says why). 0 turns this off.
    auto_disable_after_dead_letters: int = 5
    # Deliveries in flight at once in a worker (waiting for their sink's answer), in all.
    sink_max_in_flight: int = 1000
    # Each destination's concurrency adapts (pipeline/lanes.py): it starts at the initial
    # value, grows by one per round trip while the receiver's latency stays flat, halves on
    # a timeout, 429 or 503, and never passes the maximum.
    sink_initial_in_flight_per_destination: int = Field(default=16, ge=1)
    sink_max_in_flight_per_destination: int = Field(default=128, ge=1)
    # CIDRs that outbound deliveries may reach although they are loopback/private.
    outbound_allowlist: list[str] = Field(default_factory=list)

    # Sinks. Endpoint overrides exist for local peers (moto, emulators) and LocalStack-style
    # deployments; None means the provider's real endpoint.
    aws_endpoint_url: str | None = None
    # A destination without credentials may use Herald's own AWS credential chain only if
    # the operator allows it: a tenant must never borrow Herald's identity by default.
    aws_default_credentials_allowed: bool = False
    eventbridge_source: str = "herald"
    gcp_pubsub_endpoint: str | None = None
    hookdeck_base_url: str = "https://hkdk.events"
    sink_client_cache_size: int = 1000

    # How long events, deliveries and attempts stay queryable in PostgreSQL.
    index_retention_days: int = 30

    log_level: str = "INFO"

    # Per-API-key request rate limit (a token bucket per key in each API process): requests
    # per second and burst. 0 turns it off, the default (the contract: off unless configured).
    api_rate_limit_per_s: float = Field(default=0.0, ge=0)
    api_rate_limit_burst: int = Field(default=200, ge=1)

    # Refuse plain-http destination URLs: at create and PATCH (400), and at delivery time
    # (a permanent failure) for records made before this was switched on. Production sets it.
    https_only: bool = False

    @model_validator(mode="after")
    def _https_only_endpoints(self) -> Settings:
        if self.https_only:
            for name in ("hookdeck_base_url", "aws_endpoint_url"):
                url = getattr(self, name)
                if url is not None and not url.lower().startswith("https://"):
                    raise ValueError(f"{name} must be an https URL when https_only is set")
        return self

    @field_validator("outbound_allowlist")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    # Circuit breaker per destination (pipeline/circuit.py; in memory, per worker process):
    # after this many retryable failures in a row its deliveries are not attempted, each
    # moved on to its next scheduled retry (using it up), until a cool-down passes and one
    # probe goes; each failed probe doubles the cool-down up to the maximum. 0 turns the
    # breaker off.
    circuit_failure_threshold: int = 10
    circuit_cooldown_s: float = 30.0
    circuit_max_cooldown_s: float = 600.0
    # A delivery whose destination's lane would hold it longer than this (the lane's
    # measured service time times its queue over its concurrency, or its queue over its rate)
    # is put off to a retry tier without an attempt and without using a retry: a slow or
    # rate-limited destination keeps at most this much of its backlog in a worker's
    # memory. A healthy destination's burst drains well within it. 0: never put off.
    sink_max_queue_wait_s: float = Field(default=30.0, ge=0)
    # Deliveries a worker holds in its destinations' lanes, waiting for their turn; at the
    # bound it fetches nothing more until half have gone (memory pauses fetching, never a
    # destination's burst). 0: unbounded.
    sink_max_buffered: int = Field(default=20_000, ge=0)
    # Offsets a deliveries partition may have fetched but not finished (the finished ones
    # wait behind the lowest unfinished to be committed). At the bound the partition is
    # paused until half are finished, and herald_delivery_partitions_stalled says so.
    sink_max_unfinished_per_partition: int = 20_000
    # How long the router's producer (deliveries) and the API's (events) wait to fill a
    # batch before they send. Both are on the publish → delivered path and their callers wait
    # for the acknowledgement, so a linger is added to every event's latency; a router
    # batch's deliveries (and a publish request's events) are appended together anyway, and
    # the records that arrive while a request is in flight go together in the next one.
    router_linger_ms: int = Field(default=0, ge=0)
    api_linger_ms: int = Field(default=0, ge=0)

    # Tenants and portal sessions (api/tenants.py, api/portal_sessions.py). The HS256 key that
    # signs portal session tokens: without it POST /v2/tenants/{id}/portal-sessions is a 503
    # saying so. Every API process of a deployment needs the same one.
    portal_signing_key: SecretStr | None = None
    # The longest a portal session may be asked to last, and its default.
    portal_session_max_s: int = Field(default=24 * 3600, ge=60)
    portal_session_default_s: int = Field(default=3600, ge=60)
    # Where the API is reached from outside (portal session URLs are built on it).
    public_url: str = "http://127.0.0.1:8080"
    # A recovery job (POST /v2/event-destinations/{id}/recover) is leased to the API process
    # running it for this long, renewed after each page; once it lapses (the process stopped
    # or died) any API process takes the job over, checking every third of it.
    recovery_lease_s: float = Field(default=30.0, gt=0)
    # Swagger UI's files (npm's swagger-ui-dist), which the API serves at /docs/
    # (api/routes/docs.py): scripts/setup.sh unpacks them here; the image has its own copy.
    swagger_ui_dir: Path = ROOT / ".cache" / "swagger-ui"

    # -- traces (pipeline/tracing.py) -------------------------------------------------------
    # The standard OpenTelemetry variables, read without the HERALD_ prefix. Tracing is off
    # unless OTEL_TRACES_EXPORTER is otlp or zipkin; spans then go over OTLP/HTTP (protobuf)
    # to OTEL_EXPORTER_OTLP_ENDPOINT (a collector's :4318), or as Zipkin v2 JSON to
    # OTEL_EXPORTER_ZIPKIN_ENDPOINT, sampled by OTEL_TRACES_SAMPLER and its _ARG (the
    # parent's decision always wins downstream of the API).
    otel_traces_exporter: Literal["none", "otlp", "zipkin"] = Field(
        default="none",
        validation_alias=AliasChoices("OTEL_TRACES_EXPORTER", "otel_traces_exporter"),
    )
    otel_exporter_otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318",
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_exporter_otlp_endpoint"),
    )
    # The specification's default: a Zipkin server's span intake on this host.
    otel_exporter_zipkin_endpoint: str = Field(
        default="http://localhost:9411/api/v2/spans",
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_ZIPKIN_ENDPOINT", "otel_exporter_zipkin_endpoint"
        ),
    )
    otel_traces_sampler: Literal[
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ] = Field(
        default="parentbased_always_on",
        validation_alias=AliasChoices("OTEL_TRACES_SAMPLER", "otel_traces_sampler"),
    )
    otel_traces_sampler_arg: float = Field(
        default=1.0,
        ge=0,
        le=1,
        validation_alias=AliasChoices("OTEL_TRACES_SAMPLER_ARG", "otel_traces_sampler_arg"),
    )
    # Unset: herald-api or herald-worker, by process.
    otel_service_name: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_SERVICE_NAME", "otel_service_name")
    )

    # -- Operator events (pipeline/operator_events.py, api/operator_sink.py) ---------------
    # The one destination operator events go to: the JSON body POST /v2/event-destinations
    # takes (any type; a webhook needs its `secret`, to verify what it receives), checked
    # by the API at start-up like a create. None: no operator events.
    operator_sink: SecretStr | None = None
    # `destination.consecutive_failures` is emitted when a destination's deliveries
    # dead-lettered in a row reach each of these fractions of the auto-disable threshold.
    operator_events_failure_fractions: list[float] = Field(default_factory=lambda: [0.5, 0.8])
    # At most one `delivery.exhausted_retries` per destination per window (the rest counted).
    operator_events_exhausted_window_s: float = Field(default=300.0, gt=0)
    # `attempt.failed` for every failed attempt (many: off by default).
    operator_events_attempt_failed: bool = False
    # Events waiting to be written per process; more are dropped (and counted).
    operator_events_buffer: int = Field(default=1000, ge=1)
    # Per destination: a burst of events, refilled at this many per hour; more are dropped.
    operator_events_burst: int = Field(default=20, ge=1)
    operator_events_per_hour: float = Field(default=60.0, ge=0)

    @field_validator("operator_events_failure_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < fraction < 1 for fraction in value):
            raise ValueError("each fraction must be between 0 and 1 (exclusive)")
        return value

    @model_validator(mode="after")
    def _operator_tenant_reserved(self) -> Settings:
        named = [("dev_tenant", self.dev_tenant)]
        named += [(f"api_keys[{n}].tenant", key.tenant) for n, key in enumerate(self.api_keys)]
        for name, tenant in named:
            if reserved_tenant(tenant):
                raise ValueError(f"{name}: '{tenant}' is reserved for operator events")
        return self

    # -- sources (api/sources/, `herald worker --role ingest`) --------------------------------
    # Topics and queues of the platform's own that Herald ingests events from, besides the
    # API (pipeline/source_settings.py): a JSON list here and/or in the file named below.
    sources: list[SourceSettings] = Field(default_factory=list)
    sources_file: Path | None = None
    # Where a source's invalid records go (a topic on Herald's cluster), with why, unless the
    # source names its own.
    sources_rejects_topic: str = "rejects"

    def all_sources(self) -> list[SourceSettings]:
        """The sources of HERALD_SOURCES and of HERALD_SOURCES_FILE (read now), by name."""
        listed = list(self.sources)
        if self.sources_file is not None:
            listed += read_sources_file(self.sources_file)
        return unique_names(listed)
