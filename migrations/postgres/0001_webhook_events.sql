-- stripe-webhooks: idempotency records, one row per Stripe event.
-- The table name is the default; PostgresStore::with_table renames it when applied by
-- PostgresStore::migrate, and PostgresStore::migration_sql gives the renamed text.
-- The key compares bytewise (COLLATE "C"), whatever the database's collation: ids are
-- ASCII and only looked up, and on a database in en_US.UTF-8 (most hosted PostgreSQL)
-- the locale's comparisons cost a claim and its completion a quarter of the server's
-- work (benches/README.md). A table created before this was written keeps its collation.
CREATE TABLE IF NOT EXISTS stripe_webhook_events (
    event_id     TEXT COLLATE "C" PRIMARY KEY,
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 1,
    fence        TEXT NOT NULL,
    lease_until  TIMESTAMPTZ,
    last_error   TEXT,
    first_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS stripe_webhook_events_failed_idx
    ON stripe_webhook_events (first_seen) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS stripe_webhook_events_purge_idx
    ON stripe_webhook_events (updated_at) WHERE status <> 'processing';
