-- stripe-webhooks: the settle step (completion, watermark, unlock) refuses a holder
-- whose object lock was taken over. A delivery whose lock ran out while its handler or
-- its completion was late, and which another delivery then locked, may have run beside
-- that one: completing it would record it applied over what the other applied. It is
-- `lease lost` (nothing changes); Stripe delivers it again, and it runs after the other.
DROP TRIGGER IF EXISTS stripe_webhook_events_settle_step;
CREATE TRIGGER stripe_webhook_events_settle_step
    INSTEAD OF INSERT ON stripe_webhook_events_settle
BEGIN
    SELECT RAISE(ABORT, 'stripe_webhooks: lease lost') WHERE NOT EXISTS (
        SELECT 1 FROM stripe_webhook_events_objects
        WHERE object_id = NEW.object_id AND holder = NEW.holder);
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
