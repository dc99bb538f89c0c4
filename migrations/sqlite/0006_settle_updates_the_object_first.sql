-- stripe-webhooks: the settle step writes the object's row first, fenced by its holder,
-- instead of reading it for the holder and writing it by an upsert after the claim: the
-- same checks and writes, with one read of the row fewer. When the holder's lock was
-- taken over, or the claim is no longer this holder's, it raises `lease lost`, which
-- undoes the statement's writes: nothing changes, as before.
DROP TRIGGER IF EXISTS stripe_webhook_events_settle_step;
CREATE TRIGGER stripe_webhook_events_settle_step
    INSTEAD OF INSERT ON stripe_webhook_events_settle
BEGIN
    UPDATE stripe_webhook_events_objects SET
            created = CASE WHEN created IS NULL OR created <= NEW.created
                THEN NEW.created ELSE created END,
            event_id = CASE WHEN created IS NULL OR created <= NEW.created
                THEN NEW.applied_event ELSE event_id END,
            holder = NULL,
            lock_until = NULL,
            updated_at = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)
        WHERE object_id = NEW.object_id AND holder = NEW.holder;
    SELECT RAISE(ABORT, 'stripe_webhooks: lease lost') WHERE changes() = 0;
    UPDATE stripe_webhook_events SET status = 'completed',
            completed_at = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER),
            lease_until = NULL,
            updated_at = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)
        WHERE event_id = NEW.event_id AND fence = NEW.fence AND status = 'processing';
    SELECT RAISE(ABORT, 'stripe_webhooks: lease lost') WHERE changes() = 0;
END;
