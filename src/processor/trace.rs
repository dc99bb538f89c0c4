//! Tracing (feature `tracing`): one span per delivery and one log line with its outcome.

use super::outcome::{Outcome, OutcomeKind};
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
    // A body that is not an event was never parsed into one: its id, when it named one,
    // is the outcome's only.
    if let (OutcomeKind::NotAnEvent(_), Some(id)) = (&o.kind, &o.event_id) {
        span.record("event_id", id.as_str());
    }
    span.record("outcome", o.kind.name());
    span.record("status", status);
    span.record("duration_ms", duration_ms);
    let _enter = span.enter();
    let outcome = o.kind.name();
    // Why, when there is a why: the signature, parse, handler or store error (none of
    // the crate's holds a secret or an expected signature; a handler's may quote a
    // credential, hidden here), with its sources.
    let error = detail(&o.kind);
    let error = error.as_deref().unwrap_or("");
    match &o.kind {
        // Answered 200, but worth an alert: the handler ran and its completion is not
        // recorded (a later delivery may run it again).
        OutcomeKind::CompletionNotRecorded(_) => tracing::error!(
            outcome,
            status,
            duration_ms,
            error,
            "webhook delivery: the handler ran but its completion was not recorded; a \
             redelivery may run it again"
        ),
        // Answered 200: another delivery took the event over while the handler ran, so
        // the two may have run side by side.
        OutcomeKind::LeaseLost => tracing::warn!(
            outcome,
            status,
            duration_ms,
            "webhook delivery: another delivery took the event over while its handler ran"
        ),
        _ if status >= 500 => {
            tracing::error!(outcome, status, duration_ms, error, "webhook delivery");
        }
        _ if status >= 400 => {
            tracing::warn!(outcome, status, duration_ms, error, "webhook delivery");
        }
        _ => tracing::info!(outcome, status, duration_ms, "webhook delivery"),
    }
}

/// The error behind an outcome, with its sources, if it has one.
fn detail(kind: &OutcomeKind) -> Option<String> {
    let error: &dyn std::error::Error = match kind {
        OutcomeKind::BadSignature(e) => e,
        OutcomeKind::NotAnEvent(e) => e,
        OutcomeKind::HandlerFailed(e) => e,
        OutcomeKind::StoreUnavailable(e) | OutcomeKind::CompletionNotRecorded(e) => e,
        _ => return None,
    };
    Some(crate::error::error_text(error))
}
