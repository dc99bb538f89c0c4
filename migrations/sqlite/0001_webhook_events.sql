-- stripe-webhooks: idempotency records, one row per Stripe event.
-- Times are Unix milliseconds from SQLite's own clock. The table name is the default;
-- SqliteStore::with_table renames it when applied by SqliteStore::migrate, and
-- SqliteStore::migration_sql gives the renamed text.
CREATE TABLE IF NOT EXISTS stripe_webhook_events (
    event_id     TEXT PRIMARY KEY NOT NULL,
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 1,
    fence        TEXT NOT NULL,
    lease_until  INTEGER,
    last_error   TEXT,
    first_seen   INTEGER NOT NULL,
    completed_at INTEGER,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS stripe_webhook_events_failed_idx
    ON stripe_webhook_events (first_seen) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS stripe_webhook_events_purge_idx
    ON stripe_webhook_events (updated_at) WHERE status <> 'processing';
