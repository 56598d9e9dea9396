-- Tenant-wide statistics rows (issue 18, part 3): for each (tenant, event type) and minute or
-- hour, a row of destination_id '*' that sums the tenant's events and every destination's
-- deliveries and attempts. GET /v2/stats reads those: one row per event type and hour
-- instead of one per destination and event type, which made the 30-day hourly query sum
-- 53 histogram slots over 10,800 rows at 10 million attempts (pipeline/stats.py writes
-- them from now on; this sums the rows written before). Destination ids start with
-- `evtd_`, so '*' is never one.
insert into delivery_stats (tenant, span_s, bucket_at, destination_id, destination_generation,
    event_type, events, deliveries, succeeded, failed, canceled, attempts_succeeded,
    attempts_failed, status_2xx, status_3xx, status_4xx, status_5xx, status_none,
    latency_histogram)
select tenant, span_s, bucket_at, '*', '', event_type,
    sum(events), sum(deliveries), sum(succeeded), sum(failed), sum(canceled),
    sum(attempts_succeeded), sum(attempts_failed), sum(status_2xx), sum(status_3xx),
    sum(status_4xx), sum(status_5xx), sum(status_none),
    -- The histograms added slot by slot (slots as in migration 016, pipeline/stats.py).
    array[
    sum(latency_histogram[1]), sum(latency_histogram[2]), sum(latency_histogram[3]),
    sum(latency_histogram[4]), sum(latency_histogram[5]), sum(latency_histogram[6]),
    sum(latency_histogram[7]), sum(latency_histogram[8]), sum(latency_histogram[9]),
    sum(latency_histogram[10]), sum(latency_histogram[11]), sum(latency_histogram[12]),
    sum(latency_histogram[13]), sum(latency_histogram[14]), sum(latency_histogram[15]),
    sum(latency_histogram[16]), sum(latency_histogram[17]), sum(latency_histogram[18]),
    sum(latency_histogram[19]), sum(latency_histogram[20]), sum(latency_histogram[21]),
    sum(latency_histogram[22]), sum(latency_histogram[23]), sum(latency_histogram[24]),
    sum(latency_histogram[25]), sum(latency_histogram[26]), sum(latency_histogram[27]),
    sum(latency_histogram[28]), sum(latency_histogram[29]), sum(latency_histogram[30]),
    sum(latency_histogram[31]), sum(latency_histogram[32]), sum(latency_histogram[33]),
    sum(latency_histogram[34]), sum(latency_histogram[35]), sum(latency_histogram[36]),
    sum(latency_histogram[37]), sum(latency_histogram[38]), sum(latency_histogram[39]),
    sum(latency_histogram[40]), sum(latency_histogram[41]), sum(latency_histogram[42]),
    sum(latency_histogram[43]), sum(latency_histogram[44]), sum(latency_histogram[45]),
    sum(latency_histogram[46]), sum(latency_histogram[47]), sum(latency_histogram[48]),
    sum(latency_histogram[49]), sum(latency_histogram[50]), sum(latency_histogram[51]),
    sum(latency_histogram[52]), sum(latency_histogram[53])]::integer[]
from delivery_stats
where destination_id <> '*'
group by tenant, span_s, bucket_at, event_type;
