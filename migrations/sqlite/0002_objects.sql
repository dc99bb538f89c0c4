-- stripe-webhooks: the ordering guard's objects, one row per Stripe object
-- (`data.object.id`): the last event applied to it (its watermark) and a lock that lets
-- events about one object run one at a time. Times are Unix milliseconds. WITHOUT ROWID:
-- the row lives in its key's B-tree, so a lock or a watermark writes one page.
CREATE TABLE IF NOT EXISTS stripe_webhook_events_objects (
    object_id  TEXT PRIMARY KEY NOT NULL,
    created    INTEGER,
    event_id   TEXT,
    holder     TEXT,
    lock_until INTEGER,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Purging walks the table in key order (one B-tree, no index to move on each write).
DROP INDEX IF EXISTS stripe_webhook_events_objects_purge_idx;
