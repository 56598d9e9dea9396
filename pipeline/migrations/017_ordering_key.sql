-- Ordered delivery per key (issue 16, part 2): an event's publisher-set `ordering_key`,
-- shown where the event is shown. Null for events published without one.
alter table events add column ordering_key text;
-- A row type of its own rather than an attribute added to 014's `index_event`: an indexer
-- of the previous version, still running while this one migrates, keeps writing with the
-- type it knows.
create type index_event_keyed as (
    tenant text, id text, type text, data text, created_at timestamptz, ordering_key text);
