-- The order the index wrote events and deliveries in, for pollers: `created_after` misses a
-- row written after the poller passed its created_at (an indexer behind, or catching up
-- after PostgreSQL was down); `indexed_after` does not. The indexer writes its batches one
-- at a time (an advisory lock), so this order is also the order rows became visible.
alter table events add column indexed_seq bigint generated always as identity;
create index events_by_index_order on events (tenant, indexed_seq);
alter table deliveries add column indexed_seq bigint generated always as identity;
create index deliveries_by_index_order on deliveries (destination_id, indexed_seq);
