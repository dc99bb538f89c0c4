//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`):
//! install the exporter you use (Prometheus, StatsD, OpenTelemetry) as the global
//! recorder, and the processor, the workers and the queues report to it. Without a
//! recorder every call is a no-op.
//!
//! | Name | Kind | Labels | What |
//! |---|---|---|---|
//! | [`DELIVERIES`] | counter | `outcome`, `family`, `event_type`, `reason` | every delivery the processor answered, every request an adapter refused before it, and every delivery cut outside the processor (`handler_failed`; these with `family="unknown"`, `event_type="none"`, `reason="none"`) |
//! | [`HANDLER_DURATION`] | histogram (s) | `result` (`ok`, `error`, `panic`, `deadline`, `lease_lost`) | how long handlers ran (inline and in workers) |
//! | [`LAG`] | histogram (s) | `family` | from the event's `created` to its completion |
//! | [`QUEUE_JOBS`] | gauge | `state` | jobs in each state, at the last [`record_queue`] |
//! | [`QUEUE_OLDEST_AGE`] | gauge (s) | | how long the oldest queued job has waited |
//! | [`QUEUE_UP`] | gauge | | 1 when the last [`record_queue`] could count the queue, 0 when it could not (the two gauges above then keep their last values: alert on this one too) |
//! | [`JOBS`] | counter | `result` (`completed`, `retried`, `dead`, `released`, `lease_lost`, `settle_failed`: the queue could not record the run, so the job runs again when its lease ends), `event_type` | what workers did with jobs |
//! | [`STORE_ERRORS`] | counter | `kind` (`unavailable`, `timeout`, `lease_lost`) | failed store and queue calls |
//!
//! [`describe`] gives each its help text (Prometheus's `# HELP` lines).
//!
//! Label values are bounded: `event_type` is the type's name only when this release
//! knows it (one of 275 snapshot or 326 thin types), and `other` for anything else, so a
//! flood of invented types cannot create series; `outcome`, `family`, `reason`, `result`
//! and `kind` come from fixed lists.
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! use stripe_webhooks::metrics;
//! assert_eq!(metrics::DELIVERIES, "stripe_webhooks_deliveries_total");
//! # }
//! ```

use std::time::Duration;

use crate::event::{EventType, ThinEventType};
use crate::handler::HandlerError;
use crate::idempotency::StoreError;
use crate::processor::{Outcome, OutcomeKind};
use crate::signature::SignatureError;

/// Deliveries by outcome, family, event type and reason.
pub const DELIVERIES: &str = "stripe_webhooks_deliveries_total";
/// Handler run time, in seconds.
pub const HANDLER_DURATION: &str = "stripe_webhooks_handler_duration_seconds";
/// From an event's `created` to its completion, in seconds.
pub const LAG: &str = "stripe_webhooks_lag_seconds";
/// Queued jobs by state.
pub const QUEUE_JOBS: &str = "stripe_webhooks_queue_jobs";
/// Age of the oldest queued job, in seconds.
pub const QUEUE_OLDEST_AGE: &str = "stripe_webhooks_queue_oldest_age_seconds";
/// Whether the last [`record_queue`] could count the queue: 1 or 0.
pub const QUEUE_UP: &str = "stripe_webhooks_queue_up";
/// Jobs settled by workers, by result.
pub const JOBS: &str = "stripe_webhooks_jobs_total";
/// Failed store and queue calls, by kind.
pub const STORE_ERRORS: &str = "stripe_webhooks_store_errors_total";

/// The label value for a wire name: the name itself (borrowed from the type list, so
/// it lives for ever) when it is one of `all`, `other` otherwise.
fn known<T>(
    all: &'static [T],
    name: &str,
    wire: impl Fn(&'static T) -> &'static str,
) -> &'static str {
    match all.binary_search_by(|k| wire(k).cmp(name)) {
        Ok(i) => wire(&all[i]),
        // The lists are sorted by wire name (a unit test checks it); this only guards a
        // list that stopped being sorted.
        Err(_) => all
            .iter()
            .map(&wire)
            .find(|n| *n == name)
            .unwrap_or("other"),
    }
}

/// The label value for an event type: its name when known, `other` otherwise.
fn snapshot_label(t: &EventType) -> &'static str {
    match t {
        EventType::Unknown(_) => "other",
        known_type => known(EventType::ALL, known_type.as_str(), EventType::as_str),
    }
}

fn thin_label(t: &ThinEventType) -> &'static str {
    match t {
        ThinEventType::Unknown(_) => "other",
        known_type => known(
            ThinEventType::ALL,
            known_type.as_str(),
            ThinEventType::as_str,
        ),
    }
}

/// Why a delivery failed, from a fixed list (`none` when it did not).
fn reason(kind: &OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::BadSignature(e) => match e {
            SignatureError::MissingHeader => "missing_header",
            SignatureError::MalformedHeader(_) => "malformed_header",
            SignatureError::NoV1Signature { .. } => "no_v1_signature",
            SignatureError::OutsideTolerance { .. } => "outside_tolerance",
            SignatureError::Mismatch { .. } => "mismatch",
            _ => "invalid_secret",
        },
        OutcomeKind::HandlerFailed(e) => handler_reason(e),
        OutcomeKind::StoreUnavailable(e) | OutcomeKind::CompletionNotRecorded(e) => store_kind(e),
        _ => "none",
    }
}

fn handler_reason(e: &HandlerError) -> &'static str {
    match e {
        HandlerError::Failed(_) => "error",
        HandlerError::Panicked(_) => "panic",
        HandlerError::DeadlineExceeded(_) => "deadline",
        HandlerError::LeaseLost => "lease_lost",
    }
}

fn store_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Timeout(_) => "timeout",
        StoreError::LeaseLost { .. } => "lease_lost",
        _ => "unavailable",
    }
}

fn seconds_since(created_unix: i64) -> Option<f64> {
    let now = crate::clock::Clock::now_millis(&crate::clock::SystemClock);
    let ms = now.checked_sub(created_unix.checked_mul(1000)?)?;
    (ms >= 0).then(|| ms as f64 / 1000.0)
}

/// One delivery answered by the processor.
pub(crate) fn delivery(o: &Outcome) {
    let (family, event_type) = match (o.event_type(), o.thin_event_type()) {
        (_, Some(t)) => ("thin", thin_label(t)),
        (Some(t), None) => ("snapshot", snapshot_label(t)),
        (None, None) => ("unknown", "none"),
    };
    ::metrics::counter!(
        DELIVERIES,
        "outcome" => o.kind().name(),
        "family" => family,
        "event_type" => event_type,
        "reason" => reason(o.kind()),
    )
    .increment(1);
    if matches!(o.kind(), OutcomeKind::Processed) {
        if let Some(lag) = o.created.and_then(seconds_since) {
            ::metrics::histogram!(LAG, "family" => family).record(lag);
        }
    }
}

/// One request an adapter refused before the processor saw it: a method other than
/// POST, a content type other than JSON, a body too large, too slow or unreadable (and,
/// from the extractors, a bad signature or a body that is not an event); or one whose
/// delivery task ended outside the processor's count (a panic outside the handler, the
/// runtime's shutdown: `handler_failed`, 500). No event was read, so `family` is
/// `unknown` and `event_type` `none`.
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) fn rejected(outcome: &'static str) {
    ::metrics::counter!(
        DELIVERIES,
        "outcome" => outcome,
        "family" => "unknown",
        "event_type" => "none",
        "reason" => "none",
    )
    .increment(1);
}

/// One handler run (inline or in a worker).
pub(crate) fn handler_ran(took: Duration, result: &Result<(), HandlerError>) {
    let result = match result {
        Ok(()) => "ok",
        Err(e) => handler_reason(e),
    };
    ::metrics::histogram!(HANDLER_DURATION, "result" => result).record(took.as_secs_f64());
}

/// A store or queue call that failed.
pub(crate) fn store_error(e: &StoreError) {
    ::metrics::counter!(STORE_ERRORS, "kind" => store_kind(e)).increment(1);
}

/// A job a worker settled: `completed`, `retried`, `dead`, `released`, `lease_lost` or
/// `settle_failed`;
/// `created` (Unix seconds, 0 when unknown) gives the lag of a completed job.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) fn job(
    result: &'static str,
    kind: crate::queue::PayloadKind,
    event_type: &str,
    created: i64,
) {
    let (family, label) = match kind {
        crate::queue::PayloadKind::Snapshot => (
            "snapshot",
            snapshot_label(&EventType::from_wire(event_type)),
        ),
        crate::queue::PayloadKind::Thin => {
            ("thin", thin_label(&ThinEventType::from_wire(event_type)))
        }
    };
    ::metrics::counter!(JOBS, "result" => result, "event_type" => label).increment(1);
    if result == "completed" && created > 0 {
        if let Some(lag) = seconds_since(created) {
            ::metrics::histogram!(LAG, "family" => family).record(lag);
        }
    }
}

/// Describes every metric to the installed recorder: its help text, which exporters
/// print (Prometheus: `# HELP` lines). No unit is given: the names already end in theirs
/// (`_seconds`, `_total`), and an exporter told to add a unit's suffix would otherwise
/// write `…_seconds_seconds`. Call it once, after installing the recorder; the metrics
/// are the same without it, only undescribed.
pub fn describe() {
    ::metrics::describe_counter!(
        DELIVERIES,
        "Stripe webhook deliveries answered, by outcome, family, event type and reason."
    );
    ::metrics::describe_histogram!(
        HANDLER_DURATION,
        "How long event handlers ran, inline and in queue workers, by result."
    );
    ::metrics::describe_histogram!(
        LAG,
        "From an event's created time at Stripe to its completion here, by family."
    );
    ::metrics::describe_gauge!(
        QUEUE_JOBS,
        "Jobs in the queue by state, at the last record_queue."
    );
    ::metrics::describe_gauge!(
        QUEUE_OLDEST_AGE,
        "How long the oldest queued job has waited, at the last record_queue."
    );
    ::metrics::describe_gauge!(
        QUEUE_UP,
        "1 when the last record_queue could count the queue, 0 when it could not."
    );
    ::metrics::describe_counter!(
        JOBS,
        "Jobs settled by queue workers, by result and event type."
    );
    ::metrics::describe_counter!(
        STORE_ERRORS,
        "Failed idempotency store and queue calls, by kind."
    );
}

/// Reads the queue's counts and sets the [`QUEUE_JOBS`] and [`QUEUE_OLDEST_AGE`]
/// gauges, and [`QUEUE_UP`] to 1: call it on every scrape, or every few seconds. The SQL
/// queues count each state by its index, reading only the queued jobs' rows.
///
/// # Errors
///
/// The queue's error when it cannot count; [`QUEUE_UP`] is then 0, and the other gauges
/// keep their last values (a queue whose database is down has an unknown backlog, not an
/// empty one).
pub async fn record_queue(
    queue: &dyn crate::queue::QueueAdmin,
) -> Result<crate::queue::QueueCounts, StoreError> {
    let counts = match queue.counts().await {
        Ok(counts) => counts,
        Err(e) => {
            ::metrics::gauge!(QUEUE_UP).set(0.0);
            return Err(e);
        }
    };
    ::metrics::gauge!(QUEUE_UP).set(1.0);
    for state in crate::queue::JobState::ALL {
        ::metrics::gauge!(QUEUE_JOBS, "state" => state.as_str()).set(counts.get(state) as f64);
    }
    let age = counts.oldest_queued_age_ms.unwrap_or(0) as f64 / 1000.0;
    ::metrics::gauge!(QUEUE_OLDEST_AGE).set(age);
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_labels_are_known_names_or_other() {
        assert!(EventType::ALL
            .windows(2)
            .all(|w| w[0].as_str() < w[1].as_str()));
        assert!(ThinEventType::ALL
            .windows(2)
            .all(|w| w[0].as_str() < w[1].as_str()));
        assert_eq!(snapshot_label(&EventType::InvoicePaid), "invoice.paid");
        assert_eq!(snapshot_label(&EventType::from_wire("made.up")), "other");
        assert_eq!(
            thin_label(&ThinEventType::from_wire("v1.invoice.paid")),
            "v1.invoice.paid"
        );
        assert_eq!(thin_label(&ThinEventType::from_wire("v9.nope")), "other");
    }
}
