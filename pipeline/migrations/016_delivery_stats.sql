-- Delivery statistics (issue 18, part 3): GET /v2/stats and …/{id}/stats read per-minute and
-- per-hour sums that the indexer keeps up to date in the transaction that writes the rows
-- they count (pipeline/stats.py), instead of scanning up to millions of attempts per query.
-- A row sums one (tenant, destination, its generation, event type) over one minute
-- (span_s 60) or one hour (span_s 3600) starting at bucket_at. The tenant's published
-- events are counted in rows of destination_id '' (an event has no destination).
create table delivery_stats (
    tenant                  text        not null,
    span_s                  integer     not null,
    bucket_at               timestamptz not null,
    destination_id          text        not null,
    destination_generation  text        not null,
    event_type              text        not null,
    events                  integer     not null default 0,
    -- Deliveries routed (created) in the bucket, and those that reached a final status in
    -- it (by the time of the attempt that decided it).
    deliveries              integer     not null default 0,
    succeeded               integer     not null default 0,
    failed                  integer     not null default 0,
    canceled                integer     not null default 0,
    -- Attempts made (a `canceled` one is not), by outcome and by response status class;
    -- `status_none`: no HTTP status (a network error, a timeout, a non-HTTP destination).
    attempts_succeeded      integer     not null default 0,
    attempts_failed         integer     not null default 0,
    status_2xx              integer     not null default 0,
    status_3xx              integer     not null default 0,
    status_4xx              integer     not null default 0,
    status_5xx              integer     not null default 0,
    status_none             integer     not null default 0,
    -- Attempt latencies in fixed slots (pipeline/stats.py LATENCY_SLOTS): percentiles are
    -- interpolated from the sum of these.
    latency_histogram       integer[]   not null,
    primary key (tenant, span_s, bucket_at, destination_id, destination_generation, event_type)
);
-- One destination's rows (…/{id}/stats); the key above serves the tenant-wide query.
create index delivery_stats_by_destination
    on delivery_stats (tenant, destination_id, span_s, bucket_at);
-- The retention sweep deletes by age.
create index delivery_stats_by_age on delivery_stats (bucket_at);

-- The indexer's rollup rows of one batch, passed as one array (like migration 014's types).
create type index_stats as (
    tenant text, span_s integer, bucket_at timestamptz, destination_id text,
    destination_generation text, event_type text, events integer, deliveries integer,
    succeeded integer, failed integer, canceled integer, attempts_succeeded integer,
    attempts_failed integer, status_2xx integer, status_3xx integer, status_4xx integer,
    status_5xx integer, status_none integer, latency_histogram integer[]);

-- Two histograms of the same slots, added slot by slot (an upsert into an existing row).
create function herald_add_histograms(a integer[], b integer[]) returns integer[]
language sql immutable parallel safe as $$
    select array_agg(x + y order by n) from unnest(a, b) with ordinality as t(x, y, n)
$$;
