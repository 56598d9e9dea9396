"""Sources: topics and queues of the platform's own that Herald ingests events from.

`herald worker --role ingest` runs them (worker.py): each configured source (settings in
pipeline/source_settings.py) has a consumer of its own (kafka.py, rabbitmq.py) that hands
its records, a batch at a time, to the Ingester (ingest.py), which validates each as
`POST /v2/events` does (api/acceptance.py), produces the valid ones to `events` and the
invalid ones to the rejects topic, and returns once all are durable; only then does the
consumer commit the batch's offsets or acknowledge its messages.
"""
