-- Idempotency keys are scoped to the API key that used them (a stored response is only ever
-- replayed to the key that caused it), and a claim is a lease: a request whose process died
-- between claiming a key and storing its response no longer holds the key for 24 h.
-- (Numbered 012 after issue 12, so that other migrations of the same issue can take 002.)
alter table idempotency_keys add column api_key text not null default '';
alter table idempotency_keys drop constraint idempotency_keys_pkey;
alter table idempotency_keys add primary key (tenant, api_key, key);
-- Who runs the request now, and until when; both null once no request holds the key.
alter table idempotency_keys add column owner text;
alter table idempotency_keys add column lease_until timestamptz;
-- A stored response that a retry with the same key continues instead of replaying (a batch
-- whose events the broker did not all confirm).
alter table idempotency_keys add column resumable boolean not null default false;
