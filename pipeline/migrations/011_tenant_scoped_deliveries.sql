-- Ids are scoped per tenant, and a destination id may be created again after a delete
-- (issue 12, A1/A3/B12). A delivery is one tenant's: its key is (tenant, id), like an
-- event's. It remembers the destination generation it was routed to, so a destination
-- created again under a deleted one's id neither lists nor retries its predecessor's
-- deliveries. A delivery dropped because its destination was deleted or disabled is
-- `canceled` (a final status; an attempt row with outcome `canceled` says why).

alter table deliveries add column destination_generation text;
alter table deliveries drop constraint deliveries_pkey;
alter table deliveries add primary key (tenant, id);
drop index deliveries_by_destination;
create index deliveries_by_destination
    on deliveries (tenant, destination_id, created_at desc, id desc);
