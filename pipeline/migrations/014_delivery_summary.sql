-- The indexer keeps each delivery's summary up to date from the attempts of each batch
-- instead of counting all of the delivery's attempts again (issue 14). Besides the latest
-- attempt's time it needs its id: attempts are ordered by (created_at, id), and an attempt
-- indexed after a later one must not replace it in the summary.
alter table deliveries add column last_attempt_id text;
update deliveries d set last_attempt_id = (
    select a.id from delivery_attempts a
    where a.delivery_id = d.id and a.tenant = d.tenant
    order by a.created_at desc, a.id collate "C" desc limit 1)
where d.last_attempt_at is not null;

-- The rows of one indexer batch reach PostgreSQL as one array per table, of these types.
create type index_event as (
    tenant text, id text, type text, data text, created_at timestamptz);
create type index_attempt as (
    id text, delivery_id text, tenant text, event_id text, destination_id text,
    attempt integer, outcome text, response_status integer, latency_ms double precision,
    error text, response_body text, next_attempt_at timestamptz, dead_letter text,
    created_at timestamptz);
create type index_delivery as (
    id text, tenant text, event_id text, event_type text, destination_id text,
    created_at timestamptz, generation text, status text, attempts integer,
    last_at timestamptz, last_id text, next_at timestamptz);
