-- stripe-webhooks: a job that per-object order holds back behind an earlier job of its
-- object is *parked* by a slow take that read past it: its `run_at` moves 10^15 ms
-- ahead, out of the range every take reads, so a long backlog behind one failing object
-- is read once, not at every take. The take also marks the object's first pending job
-- (`wakes`), in the same statement, and parks only if that mark was written: the mark
-- and a completion of that job lock the same row, so either the completion sees the
-- mark or the take sees the completion and parks nothing. When a marked job completes
-- or dies, this trigger gives its object's first queued or retrying job its own `run_at`
-- back (it was due when parked, so it is due at once, in its old place) and marks it in
-- turn. A trigger rather than a step of the completion's statement: its statements read
-- a snapshot taken after the completion's row lock was won, which the statement's own
-- snapshot is not. A job that left pending between that snapshot and its row lock (an
-- unordered worker's) is passed over, and the next first job looked for again.
ALTER TABLE stripe_webhook_events_jobs ADD COLUMN IF NOT EXISTS wakes BOOLEAN NOT NULL DEFAULT false;
CREATE OR REPLACE FUNCTION stripe_webhook_events_jobs_wake() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..100 LOOP
        UPDATE stripe_webhook_events_jobs SET wakes = true,
                run_at = CASE WHEN run_at >= 1000000000000000
                    THEN run_at - 1000000000000000 ELSE run_at END
            WHERE seq = (SELECT seq FROM stripe_webhook_events_jobs
                WHERE object_id = NEW.object_id AND state IN ('queued', 'retrying')
                ORDER BY created, seq LIMIT 1)
            AND state IN ('queued', 'retrying', 'running');
        EXIT WHEN FOUND OR NOT EXISTS (SELECT 1 FROM stripe_webhook_events_jobs
            WHERE object_id = NEW.object_id AND state IN ('queued', 'retrying'));
    END LOOP;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS stripe_webhook_events_jobs_wake ON stripe_webhook_events_jobs;
CREATE TRIGGER stripe_webhook_events_jobs_wake
    AFTER UPDATE OF state ON stripe_webhook_events_jobs
    FOR EACH ROW WHEN (OLD.wakes AND NEW.object_id IS NOT NULL
        AND NEW.state IN ('completed', 'dead'))
    EXECUTE FUNCTION stripe_webhook_events_jobs_wake();
