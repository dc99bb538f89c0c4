//! Tracing (feature `tracing`): one span per delivery and one log line with its outcome.

use super::outcome::Outcome;
use crate::event::Event;

/// The span of one delivery: it covers verification, the handler and the store calls,
/// and carries only these fields (never a secret or the body).
pub(super) fn delivery_span() -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "stripe_webhook",
        event_id = Empty,
        event_type = Empty,
        attempt = Empty,
        secret = Empty,
        outcome = Empty,
        status = Empty,
        duration_ms = Empty,
    )
}

pub(super) fn record_event(span: &tracing::Span, event: &Event) {
    span.record("event_id", event.id().as_str());
    span.record("event_type", event.event_type().as_str());
}

/// As [`record_event`], for the ack-fast path's head of an event.
pub(super) fn record_head(span: &tracing::Span, head: &crate::event::EventHead) {
    span.record("event_id", head.id.as_str());
    span.record("event_type", head.event_type.as_str());
}

pub(super) fn record_notification(span: &tracing::Span, n: &crate::event::EventNotification) {
    span.record("event_id", n.id.as_str());
    span.record("event_type", n.event_type.as_str());
}

/// Fills in the span's last fields and writes the one log line of the delivery.
pub(super) fn log_outcome(span: &tracing::Span, o: &Outcome) {
    let status = o.status();
    let duration_ms = o.duration.as_secs_f64() * 1000.0;
    if let Some(attempt) = o.attempt {
        span.record("attempt", attempt);
    }
    if let Some(label) = o.secret_label.as_deref() {
        span.record("secret", label);
    }
    span.record("outcome", o.kind.name());
    span.record("status", status);
    span.record("duration_ms", duration_ms);
    let _enter = span.enter();
    if status >= 500 {
        tracing::error!(
            outcome = o.kind.name(),
            status,
            duration_ms,
            "webhook delivery"
        );
    } else if status >= 400 {
        tracing::warn!(
            outcome = o.kind.name(),
            status,
            duration_ms,
            "webhook delivery"
        );
    } else {
        tracing::info!(
            outcome = o.kind.name(),
            status,
            duration_ms,
            "webhook delivery"
        );
    }
}
