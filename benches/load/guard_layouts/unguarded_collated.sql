-- unguarded.sql on tables created before the keys compared bytewise: in the database's collation.
-- The shipped unguarded claim and completion (statements.rs, POSTGRES: claim, complete).
\set n random(1, 2000000000)
\set o random(1, 2000)
INSERT INTO evd AS e (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at) VALUES ('evt_' || :n, 'customer.updated', 'processing', 1, 'f' || :n, now() + 30000::bigint * interval '1 millisecond', now(), now()) ON CONFLICT (event_id) DO UPDATE SET status = 'processing', attempts = e.attempts + 1, fence = EXCLUDED.fence, lease_until = EXCLUDED.lease_until, updated_at = now() WHERE e.status = 'failed' OR (e.status = 'processing' AND e.lease_until <= now()) RETURNING attempts::bigint;
UPDATE evd SET status = 'completed', completed_at = now(), lease_until = NULL, updated_at = now() WHERE event_id = 'evt_' || :n AND fence = 'f' || :n AND status = 'processing';
