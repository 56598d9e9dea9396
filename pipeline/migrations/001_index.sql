-- The query index: events, deliveries and attempts as the indexer reads them from Kafka,
-- and the API's idempotency keys. Kafka stays the source of truth; all of this can be
-- rebuilt by replaying the topics.

create table events (
    tenant      text        not null,
    id          text        not null,
    type        text        not null,
    data        jsonb       not null,
    created_at  timestamptz not null,
    primary key (tenant, id)
);
create index events_by_time on events (tenant, created_at desc, id desc);
create index events_by_type on events (tenant, type, created_at desc, id desc);

create table deliveries (
    id               text        primary key,
    tenant           text        not null,
    event_id         text        not null,
    event_type       text        not null,
    destination_id   text        not null,
    status           text        not null default 'pending',
    attempts         integer     not null default 0,
    last_attempt_at  timestamptz,
    next_attempt_at  timestamptz,
    created_at       timestamptz not null,
    updated_at       timestamptz not null
);
create index deliveries_by_destination on deliveries (destination_id, created_at desc, id desc);
create index deliveries_by_event on deliveries (tenant, event_id);

create table delivery_attempts (
    id               text        primary key,
    delivery_id      text        not null,
    tenant           text        not null,
    event_id         text        not null,
    destination_id   text        not null,
    attempt          integer     not null,
    outcome          text        not null,
    response_status  integer,
    latency_ms       double precision,
    error            text,
    response_body    text,
    next_attempt_at  timestamptz,
    dead_letter      text,
    created_at       timestamptz not null
);
create index attempts_by_delivery on delivery_attempts (delivery_id, created_at, id);
create index attempts_by_time on delivery_attempts (created_at);

create table idempotency_keys (
    tenant        text        not null,
    key           text        not null,
    request_hash  text        not null,
    status        integer,
    body          bytea,
    created_at    timestamptz not null default now(),
    primary key (tenant, key)
);
create index idempotency_by_time on idempotency_keys (created_at);
