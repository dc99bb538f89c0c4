-- stripe-webhooks: the event queue (Processor::queued and Worker), one row per event,
-- keyed by its dedupe key. Times are Unix milliseconds from the database's clock; `run_at`
-- is when a queued or retrying job is due, or when a running job's lease ends. Its keys
-- compare bytewise, as 0001's does.
CREATE TABLE IF NOT EXISTS stripe_webhook_events_jobs (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_key     TEXT COLLATE "C" NOT NULL UNIQUE,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    object_id   TEXT COLLATE "C",
    created     BIGINT NOT NULL DEFAULT 0,
    body        BYTEA NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'retrying', 'completed', 'dead')),
    attempts    BIGINT NOT NULL DEFAULT 0,
    fence       TEXT,
    run_at      BIGINT NOT NULL,
    last_error  TEXT,
    enqueued_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX IF NOT EXISTS stripe_webhook_events_jobs_due_idx
    ON stripe_webhook_events_jobs (run_at, seq) WHERE state IN ('queued', 'retrying', 'running');
CREATE INDEX IF NOT EXISTS stripe_webhook_events_jobs_object_idx
    ON stripe_webhook_events_jobs (object_id, created, seq)
    WHERE state IN ('queued', 'retrying', 'running') AND object_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS stripe_webhook_events_jobs_state_idx
    ON stripe_webhook_events_jobs (state, seq);
CREATE INDEX IF NOT EXISTS stripe_webhook_events_jobs_purge_idx
    ON stripe_webhook_events_jobs (finished_at) WHERE state = 'completed';
