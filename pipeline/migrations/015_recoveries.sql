-- Recoveries (issue 16, part 3): POST /v2/event-destinations/{id}/recover re-attempts a
-- destination's failed deliveries of a time window. The job and the deliveries it takes
-- live here, not in an API process's memory: any API process resumes a job whose owner
-- stopped renewing its lease (api/recovery.py). Numbered after its issue, like 012.
create table recoveries (
    tenant                  text        not null,
    id                      text        not null,
    destination_id          text        not null,
    destination_generation  text,
    since                   timestamptz not null,
    until                   timestamptz not null,
    status                  text        not null default 'running',
    error                   text,
    total                   integer     not null default 0,
    -- Which API process runs the job now, and until when (renewed while it runs).
    owner                   text,
    lease_until             timestamptz,
    created_at              timestamptz not null default now(),
    updated_at              timestamptz not null default now(),
    primary key (tenant, id)
);
create index recoveries_unfinished on recoveries (lease_until) where status = 'running';
create index recoveries_by_age on recoveries (created_at);

-- The deliveries a recovery takes, fixed when it is created, in publish order (`seq`).
-- `state`: queued → claimed (its chain restarted in the index) → requeued (its record is
-- on `deliveries`); or skipped (no longer failed when its turn came, or its event expired).
create table recovery_items (
    tenant        text    not null,
    recovery_id   text    not null,
    seq           integer not null,
    delivery_id   text    not null,
    event_id      text    not null,
    state         text    not null default 'queued',
    primary key (tenant, recovery_id, seq),
    -- Swept with their recovery (pipeline/retention.py sweeps recoveries by age).
    foreign key (tenant, recovery_id) references recoveries (tenant, id) on delete cascade
);

-- A destination's failed deliveries by time, read when a recovery is created (a small
-- part of all deliveries: only those that are failed now).
create index deliveries_failed_by_destination
    on deliveries (tenant, destination_id, created_at) where status = 'failed';
