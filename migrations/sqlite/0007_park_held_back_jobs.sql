-- stripe-webhooks: a job that per-object order holds back behind an earlier job of its
-- object is *parked* by the take that meets it: its `run_at` moves 10^15 ms ahead, out of
-- the range every take reads, so a long backlog behind one failing object is read once,
-- not at every take. When a pending job of an object completes or dies, this trigger
-- gives the object's first queued or retrying job its own `run_at` back (it was due when
-- parked, so it is due at once, in its old place). SQLite has one writer, so the take's
-- check and this wake never interleave.
CREATE TRIGGER IF NOT EXISTS stripe_webhook_events_jobs_wake
    AFTER UPDATE OF state ON stripe_webhook_events_jobs
    WHEN NEW.object_id IS NOT NULL AND NEW.state IN ('completed', 'dead')
        AND OLD.state IN ('queued', 'retrying', 'running')
BEGIN
    UPDATE stripe_webhook_events_jobs SET run_at = run_at - 1000000000000000
        WHERE seq = (SELECT seq FROM stripe_webhook_events_jobs
            WHERE object_id = NEW.object_id AND object_id IS NOT NULL
            AND state IN ('queued', 'retrying', 'running') AND state <> 'running'
            ORDER BY created, seq LIMIT 1)
        AND run_at >= 1000000000000000;
END;
