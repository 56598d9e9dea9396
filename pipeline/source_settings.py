"""The sources Herald ingests events from besides the API (api/sources/): their settings.

The operator lists them in HERALD_SOURCES (a JSON list) and/or a JSON file named by
HERALD_SOURCES_FILE; Settings.all_sources() joins both. Secrets (a SASL password, an AMQP
URL with its credentials) are SecretStr, or read from a file of their own (`*_file`), and
never appear in logs, metric labels or /readyz: a source is known there by its `name`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, model_validator

from pipeline.ids import TENANT_ID_PATTERN
from pipeline.operator_events import reserved_tenant

# A source's name labels metrics and names its /readyz check: short, plain.
SOURCE_NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"


def _secret(value: SecretStr | None, file: Path | None, what: str) -> SecretStr | None:
    """`value`, or the stripped text of `file`; not both."""
    if value is not None and file is not None:
        raise ValueError(f"give {what} or {what}_file, not both")
    if file is not None:
        return SecretStr(file.read_text().strip())
    return value


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SOURCE_NAME)
    # The tenant of a record that names none (a record's own `tenant` field wins).
    default_tenant: str | None = Field(default=None, pattern=TENANT_ID_PATTERN)
    # Where invalid records go, on Herald's cluster (None: Settings.sources_rejects_topic).
    rejects_topic: str | None = None
    # Records taken, validated and produced together; the source's position moves on once
    # all of them are durable in `events` (or `rejects`).
    max_batch: int = Field(default=2000, ge=1, le=50_000)

    @model_validator(mode="after")
    def _tenant_not_reserved(self) -> _Source:
        if reserved_tenant(self.default_tenant):
            raise ValueError(
                f"source {self.name}: default_tenant '{self.default_tenant}' is reserved "
                "for operator events"
            )
        return self


class KafkaSource(_Source):
    """A topic on the platform's own Kafka cluster, read in a consumer group."""

    type: Literal["kafka"]
    bootstrap_servers: str
    topic: str
    group_id: str | None = None  # None: herald-source-<name>
    # Where a group without committed offsets starts.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    # TLS: the CA to trust (None: the system's), and a client certificate if the cluster
    # asks for one.
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _password(self) -> KafkaSource:
        password = _secret(self.sasl_password, self.sasl_password_file, "sasl_password")
        object.__setattr__(self, "sasl_password", password)
        object.__setattr__(self, "sasl_password_file", None)
        if self.security_protocol.startswith("SASL") and (
            self.sasl_mechanism is None or self.sasl_username is None or password is None
        ):
            raise ValueError(
                f"source {self.name}: SASL needs sasl_mechanism, sasl_username and a password"
            )
        return self

    @property
    def group(self) -> str:
        """The consumer group whose committed offsets are this source's position."""
        return self.group_id or f"herald-source-{self.name}"


class RabbitMQSource(_Source):
    """A queue on the platform's RabbitMQ; a message is acknowledged once it is durable."""

    type: Literal["rabbitmq"]
    # amqp:// or amqps:// with its credentials: a secret as a whole.
    url: SecretStr | None = None
    url_file: Path | None = None
    queue: str

    @model_validator(mode="after")
    def _url(self) -> RabbitMQSource:
        url = _secret(self.url, self.url_file, "url")
        if url is None:
            raise ValueError(f"source {self.name}: give url or url_file")
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "url_file", None)
        return self


SourceSettings = Annotated[KafkaSource | RabbitMQSource, Field(discriminator="type")]
SOURCE_LIST: TypeAdapter[list[SourceSettings]] = TypeAdapter(list[SourceSettings])


def read_sources_file(path: Path) -> list[SourceSettings]:
    """The sources listed in a JSON file (a list, as in HERALD_SOURCES)."""
    return SOURCE_LIST.validate_json(path.read_bytes())


def unique_names(sources: list[SourceSettings]) -> list[SourceSettings]:
    """`sources`, or a ValueError naming a name used twice."""
    seen: set[str] = set()
    for source in sources:
        if source.name in seen:
            raise ValueError(f"two sources are named {source.name!r}")
        seen.add(source.name)
    return sources
