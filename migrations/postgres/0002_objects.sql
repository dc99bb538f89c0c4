-- stripe-webhooks: the ordering guard's objects, one row per Stripe object
-- (`data.object.id`): the last event applied to it (its watermark) and a lock that lets
-- events about one object run one at a time. Its key compares bytewise, as 0001's does.
CREATE TABLE IF NOT EXISTS stripe_webhook_events_objects (
    object_id  TEXT COLLATE "C" PRIMARY KEY,
    created    BIGINT,
    event_id   TEXT,
    holder     TEXT,
    lock_until TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- No index on updated_at: purging walks the table in key order, and every lock and
-- watermark write stays a HOT update (no index entry to add).
DROP INDEX IF EXISTS stripe_webhook_events_objects_purge_idx;
-- Room on each page, so that lock, unlock and watermark updates (which change no indexed
-- column) stay on their page as HOT updates instead of adding index entries.
ALTER TABLE stripe_webhook_events_objects SET (fillfactor = 70);
