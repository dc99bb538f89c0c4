-- stripe-webhooks: the ordering guard's two steps as one statement each, for SQLite
-- (which has no data-modifying CTEs): an INSERT into one of these views runs its trigger,
-- and the statement's own transaction holds every write of the step. A step that must
-- not happen raises, which undoes the statement's writes; the store reads the reason.
CREATE VIEW IF NOT EXISTS stripe_webhook_events_lock_claim
    (object_id, holder, lease_ms, event_id, event_type, fence)
    AS SELECT NULL, NULL, NULL, NULL, NULL, NULL WHERE 0;
-- Locks the object (free, expired or the holder's), then claims the event (new, failed
-- or expired).
CREATE TRIGGER IF NOT EXISTS stripe_webhook_events_lock_claim_step
    INSTEAD OF INSERT ON stripe_webhook_events_lock_claim
BEGIN
    INSERT INTO stripe_webhook_events_objects (object_id, holder, lock_until, updated_at)
        VALUES (NEW.object_id, NEW.holder,
            CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) + NEW.lease_ms,
            CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
        ON CONFLICT (object_id) DO UPDATE SET holder = excluded.holder,
            lock_until = excluded.lock_until
        WHERE stripe_webhook_events_objects.holder IS NULL OR stripe_webhook_events_objects.holder = excluded.holder OR stripe_webhook_events_objects.lock_until <= excluded.updated_at;
    SELECT RAISE(ABORT, 'stripe_webhooks: object busy') WHERE changes() = 0;
    INSERT INTO stripe_webhook_events (event_id, event_type, status, attempts, fence,
            lease_until, first_seen, updated_at)
        VALUES (NEW.event_id, NEW.event_type, 'processing', 1, NEW.fence,
            CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) + NEW.lease_ms,
            CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER),
            CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
        ON CONFLICT (event_id) DO UPDATE SET status = 'processing', attempts = stripe_webhook_events.attempts + 1,
            fence = excluded.fence, lease_until = excluded.lease_until,
            updated_at = excluded.updated_at
        WHERE stripe_webhook_events.status = 'failed'
            OR (stripe_webhook_events.status = 'processing' AND stripe_webhook_events.lease_until <= excluded.updated_at);
    SELECT RAISE(ABORT, 'stripe_webhooks: claim refused') WHERE changes() = 0;
END;
CREATE VIEW IF NOT EXISTS stripe_webhook_events_settle
    (event_id, fence, object_id, holder, created, applied_event)
    AS SELECT NULL, NULL, NULL, NULL, NULL, NULL WHERE 0;
-- Completes the claim (fenced), moves the object's watermark forward (never back) and
-- frees the holder's lock.
CREATE TRIGGER IF NOT EXISTS stripe_webhook_events_settle_step
    INSTEAD OF INSERT ON stripe_webhook_events_settle
BEGIN
    UPDATE stripe_webhook_events SET status = 'completed',
            completed_at = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER),
            lease_until = NULL,
            updated_at = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)
        WHERE event_id = NEW.event_id AND fence = NEW.fence AND status = 'processing';
    SELECT RAISE(ABORT, 'stripe_webhooks: lease lost') WHERE changes() = 0;
    INSERT INTO stripe_webhook_events_objects (object_id, created, event_id, updated_at)
        VALUES (NEW.object_id, NEW.created, NEW.applied_event,
            CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
        ON CONFLICT (object_id) DO UPDATE SET
            created = CASE WHEN stripe_webhook_events_objects.created IS NULL OR stripe_webhook_events_objects.created <= excluded.created
                THEN excluded.created ELSE stripe_webhook_events_objects.created END,
            event_id = CASE WHEN stripe_webhook_events_objects.created IS NULL OR stripe_webhook_events_objects.created <= excluded.created
                THEN excluded.event_id ELSE stripe_webhook_events_objects.event_id END,
            holder = CASE WHEN stripe_webhook_events_objects.holder = NEW.holder THEN NULL ELSE stripe_webhook_events_objects.holder END,
            lock_until = CASE WHEN stripe_webhook_events_objects.holder = NEW.holder THEN NULL ELSE stripe_webhook_events_objects.lock_until END,
            updated_at = excluded.updated_at;
END;
