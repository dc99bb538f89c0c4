//! What happened to a delivery, and the one table that maps it to an HTTP status and a
//! name. The adapters' request checks answer from the same table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{EventId, EventType, ParseError, ThinEventType};
use crate::handler::HandlerError;
use crate::idempotency::{StoreError, Watermark};
use crate::signature::SignatureError;

/// Every answer this crate gives a webhook request: its status and its stable name. The
/// processor's [`OutcomeKind`] and the adapters' `Rejection` both answer through it, so
/// one failure has one name and one status wherever it is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) enum Answer {
    Processed,
    Queued,
    Duplicate,
    Ignored,
    OtherMode,
    Ping,
    Stale,
    CompletionNotRecorded,
    LeaseLost,
    InProgress,
    BadSignature,
    NotAnEvent,
    BodyUnreadable,
    MethodNotAllowed,
    BodyTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    HandlerFailed,
    VerifierMissing,
    StoreUnavailable,
}

impl Answer {
    /// The HTTP status. This is the one place the mapping lives.
    pub(crate) const fn status(self) -> u16 {
        match self {
            Answer::Processed
            | Answer::Queued
            | Answer::Duplicate
            | Answer::Ignored
            | Answer::OtherMode
            | Answer::Ping
            | Answer::Stale
            | Answer::CompletionNotRecorded
            | Answer::LeaseLost => 200,
            Answer::BadSignature | Answer::NotAnEvent | Answer::BodyUnreadable => 400,
            Answer::MethodNotAllowed => 405,
            Answer::BodyTimeout => 408,
            Answer::InProgress => 409,
            Answer::PayloadTooLarge => 413,
            Answer::UnsupportedMediaType => 415,
            Answer::HandlerFailed | Answer::VerifierMissing => 500,
            Answer::StoreUnavailable => 503,
        }
    }

    /// The stable name, sent in response bodies and logged.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Answer::Processed => "processed",
            Answer::Queued => "queued",
            Answer::Duplicate => "duplicate",
            Answer::Ignored => "ignored",
            Answer::OtherMode => "other_mode",
            Answer::Ping => "ping",
            Answer::Stale => "stale",
            Answer::CompletionNotRecorded => "completion_not_recorded",
            Answer::LeaseLost => "lease_lost",
            Answer::InProgress => "in_progress",
            Answer::BadSignature => "bad_signature",
            Answer::NotAnEvent => "not_an_event",
            Answer::BodyUnreadable => "body_unreadable",
            Answer::MethodNotAllowed => "method_not_allowed",
            Answer::BodyTimeout => "body_timeout",
            Answer::PayloadTooLarge => "payload_too_large",
            Answer::UnsupportedMediaType => "unsupported_media_type",
            Answer::HandlerFailed => "handler_failed",
            Answer::VerifierMissing => "verifier_not_configured",
            Answer::StoreUnavailable => "store_unavailable",
        }
    }
}

/// What happened to one delivery. Its [`name`](Self::name) and
/// [`status`](Self::status) are the crate's one vocabulary: the adapters' `Rejection`
/// uses the same names and statuses for the same failures.
#[derive(Debug)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// The handler ran and succeeded, and the event is recorded as completed. 200.
    Processed,
    /// Ack-fast mode ([`Processor::queued`](crate::Processor::queued)): the verified event
    /// was written to the queue, and a worker will run it. 200.
    Queued,
    /// The event was processed before (or, in ack-fast mode, is queued already); the
    /// handler did not run. 200.
    Duplicate,
    /// Nothing here acts on this event (no route for its type or account, or a payload
    /// of the kind this processor has no handler for); nothing was claimed. 200.
    Ignored,
    /// The event is of the other mode than the processor's
    /// ([`Processor::with_livemode`](crate::Processor::with_livemode)); nothing was claimed
    /// or handled. 200.
    OtherMode {
        /// The event's `livemode`.
        livemode: bool,
    },
    /// A `v2.core.event_destination.ping`: acknowledged without a handler. 200.
    Ping,
    /// The ordering guard ([`Processor::ordered`](crate::Processor::ordered)) found a
    /// newer event already applied to the event's object: `handle` did not run
    /// (`EventHandler::handle_stale` did, in the standard mode), and the event is
    /// completed. 200.
    Stale {
        /// The last event applied to the object.
        watermark: Watermark,
    },
    /// The handler succeeded but the completion could not be recorded even after
    /// retries. Answered 200 (a 5xx would run the handler again); the claim's lease will
    /// expire and a later delivery may run the handler again, so alert on it. Under the
    /// ordering guard ([`Processor::ordered`](crate::Processor::ordered)), for an event
    /// the handler applied, this is [`StoreUnavailable`](Self::StoreUnavailable) instead
    /// (its watermark did not move); a stale event's stays this.
    CompletionNotRecorded(StoreError),
    /// The handler succeeded but its lease had expired and another delivery took the
    /// event over. 200; the other delivery records the completion. Under the ordering
    /// guard ([`Processor::ordered`](crate::Processor::ordered)), a lost lease or object
    /// lock of an event the handler applied is [`HandlerFailed`](Self::HandlerFailed)
    /// (500) instead: the watermark did not move, and Stripe's retry runs the event again
    /// after any older one. A stale event's (nothing applied, `handle_stale` done) stays
    /// `LeaseLost` when its claim was taken over (the delivery that took it judges it
    /// again), and is `HandlerFailed` when a renewal found its object's lock lost as
    /// `handle_stale` returned (it is not completed, and Stripe's retry judges it again).
    LeaseLost,
    /// Another delivery holds the event. 409 with `Retry-After`.
    InProgress {
        /// How long until the other delivery's lease ends.
        retry_after: Duration,
    },
    /// The signature was missing, malformed, stale or wrong. 400.
    BadSignature(SignatureError),
    /// The verified body is not a Stripe event. 400.
    NotAnEvent(ParseError),
    /// The body is longer than the limit; nothing else was done. 413.
    PayloadTooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The handler failed, panicked, ran past its deadline or was stopped because its
    /// lease was lost; Stripe's retry runs it again. 500.
    HandlerFailed(HandlerError),
    /// The store could not be reached, so the handler did not run; or, in inbox mode,
    /// the transaction holding the handler's writes did not commit, or did not say so in
    /// time (it may still commit: Stripe's retry then finds the event done, a
    /// duplicate, else runs it); or, under the ordering guard, the handler succeeded but
    /// its completion, which moves the object's watermark, could not be recorded even
    /// after retries. Then an older event arriving once the lease ends would find the
    /// watermark behind and be applied over this one; Stripe's retry of this one runs
    /// the handler again, after it. 503.
    StoreUnavailable(StoreError),
}

impl OutcomeKind {
    pub(crate) fn answer(&self) -> Answer {
        match self {
            OutcomeKind::Processed => Answer::Processed,
            OutcomeKind::Queued => Answer::Queued,
            OutcomeKind::Duplicate => Answer::Duplicate,
            OutcomeKind::Ignored => Answer::Ignored,
            OutcomeKind::OtherMode { .. } => Answer::OtherMode,
            OutcomeKind::Ping => Answer::Ping,
            OutcomeKind::Stale { .. } => Answer::Stale,
            OutcomeKind::CompletionNotRecorded(_) => Answer::CompletionNotRecorded,
            OutcomeKind::LeaseLost => Answer::LeaseLost,
            OutcomeKind::InProgress { .. } => Answer::InProgress,
            OutcomeKind::BadSignature(_) => Answer::BadSignature,
            OutcomeKind::NotAnEvent(_) => Answer::NotAnEvent,
            OutcomeKind::PayloadTooLarge { .. } => Answer::PayloadTooLarge,
            OutcomeKind::HandlerFailed(_) => Answer::HandlerFailed,
            OutcomeKind::StoreUnavailable(_) => Answer::StoreUnavailable,
        }
    }

    /// A short stable name for logs and response bodies: `processed`, `queued`, `duplicate`,
    /// `ignored`, `other_mode`, `ping`, `stale`, `completion_not_recorded`, `lease_lost`,
    /// `in_progress`, `bad_signature`, `not_an_event`, `payload_too_large`,
    /// `handler_failed` or `store_unavailable`.
    pub fn name(&self) -> &'static str {
        self.answer().name()
    }

    /// The HTTP status to answer Stripe with:
    ///
    /// | Outcome | Status |
    /// |---|---|
    /// | processed, queued, duplicate, ignored, other mode, ping, stale, completion not recorded, lease lost | 200 |
    /// | bad signature, not an event | 400 |
    /// | in progress elsewhere | 409 |
    /// | body too large | 413 |
    /// | handler failed | 500 |
    /// | store unavailable | 503 |
    pub fn status(&self) -> u16 {
        self.answer().status()
    }
}

/// The result of [`Processor::process`](crate::Processor::process): what happened, the
/// HTTP status to answer with, and the fields of an operator's log line. It never holds a
/// signing secret or the body; a handler's failure is kept as the handler gave it, and
/// shown by `Debug` with the credentials it quotes hidden ([`HandlerError`]).
#[derive(Debug)]
pub struct Outcome {
    pub(crate) kind: OutcomeKind,
    pub(crate) event_id: Option<EventId>,
    pub(crate) event_type: Option<EventType>,
    pub(crate) attempt: Option<u32>,
    /// A failed handler's failure is kept by the store (see `Dispatched`).
    pub(crate) failure_recorded: bool,
    pub(crate) duration: Duration,
    pub(crate) secret_label: Option<Arc<str>>,
    pub(crate) thin_type: Option<ThinEventType>,
    pub(crate) claim_key: Option<EventId>,
    /// The event's `created`, in Unix seconds (for the lag metric).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) created: Option<i64>,
}

impl Outcome {
    pub(crate) fn new(kind: OutcomeKind, started: Instant) -> Self {
        Self {
            kind,
            event_id: None,
            event_type: None,
            attempt: None,
            failure_recorded: false,
            duration: started.elapsed(),
            secret_label: None,
            thin_type: None,
            claim_key: None,
            created: None,
        }
    }

    /// What happened.
    pub fn kind(&self) -> &OutcomeKind {
        &self.kind
    }

    /// The HTTP status to answer Stripe with: [`OutcomeKind::status`].
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// Whether Stripe should consider the event delivered (a 2xx status).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status())
    }

    /// For a 409, the seconds to send in `Retry-After` (at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self.kind {
            OutcomeKind::InProgress { retry_after } => Some(
                retry_after
                    .as_secs()
                    .saturating_add(u64::from(retry_after.subsec_nanos() > 0)),
            )
            .map(|s| s.max(1)),
            _ => None,
        }
    }

    /// The event id, once the body was parsed.
    pub fn event_id(&self) -> Option<&EventId> {
        self.event_id.as_ref()
    }

    /// The event type, once the body was parsed.
    pub fn event_type(&self) -> Option<&EventType> {
        self.event_type.as_ref()
    }

    /// The thin event type, when the delivery was a thin event notification (its
    /// [`event_type`](Self::event_type) is then `None`).
    pub fn thin_event_type(&self) -> Option<&ThinEventType> {
        self.thin_type.as_ref()
    }

    /// The key the event was (or would have been) claimed under: the event id, or for a
    /// thin event its [`dedupe_key`](crate::EventNotification::dedupe_key).
    pub fn claim_key(&self) -> Option<&EventId> {
        self.claim_key.as_ref()
    }

    /// Which attempt this was (1 for the first), when the event was claimed.
    pub fn attempt(&self) -> Option<u32> {
        self.attempt
    }

    /// How long the delivery took.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The label of the secret that verified the request, if it has one.
    pub fn secret_label(&self) -> Option<&str> {
        self.secret_label.as_deref()
    }
}
