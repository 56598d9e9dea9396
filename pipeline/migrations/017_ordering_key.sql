-- Ordered delivery per key (issue 16, part 2): an event's publisher-set `ordering_key`,
-- shown where the event is shown. Null for events published without one.
alter table events add column ordering_key text;
alter type index_event add attribute ordering_key text;
