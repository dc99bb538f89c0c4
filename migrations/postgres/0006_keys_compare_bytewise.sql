-- stripe-webhooks: the key columns compare bytewise (COLLATE "C"). Event, object and job
-- ids are ASCII identifiers that this crate only looks up, so the database's collation
-- buys them nothing, yet every index search compared them under its rules: on a database
-- in en_US.UTF-8 (the default of most hosted PostgreSQL) a claim and its completion cost
-- the server 328 k instructions an event, and 251 k in "C"; with the ordering guard, 578 k
-- and 454 k (benches/README.md). The tables are not rewritten; the indexes on these
-- columns are rebuilt, under each table's exclusive lock, which on a table of a million
-- rows holds its statements up for a second or two.
ALTER TABLE stripe_webhook_events ALTER COLUMN event_id TYPE TEXT COLLATE "C";
ALTER TABLE stripe_webhook_events_objects ALTER COLUMN object_id TYPE TEXT COLLATE "C";
-- The jobs' wake trigger (0005) reads `object_id` in its condition, so it is made again
-- around the change, as 0005 made it.
DROP TRIGGER IF EXISTS stripe_webhook_events_jobs_wake ON stripe_webhook_events_jobs;
ALTER TABLE stripe_webhook_events_jobs ALTER COLUMN job_key TYPE TEXT COLLATE "C",
    ALTER COLUMN object_id TYPE TEXT COLLATE "C";
CREATE TRIGGER stripe_webhook_events_jobs_wake
    AFTER UPDATE OF state ON stripe_webhook_events_jobs
    FOR EACH ROW WHEN (OLD.wakes AND NEW.object_id IS NOT NULL
        AND NEW.state IN ('completed', 'dead'))
    EXECUTE FUNCTION stripe_webhook_events_jobs_wake();
