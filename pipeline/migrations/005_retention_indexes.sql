-- The retention sweep deletes by age: an index on created_at for each table it sweeps
-- (delivery_attempts and idempotency_keys have theirs since 001), so a sweep reads only
-- the rows it deletes instead of scanning the tables every hour.

create index if not exists events_by_age on events (created_at);
create index if not exists deliveries_by_age on deliveries (created_at);
