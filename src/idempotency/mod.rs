//! Idempotency: claiming an event so its handler runs once.

mod memory;
mod ordering;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;

use std::error::Error as StdError;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::event::{EventId, EventType};

pub use memory::{MemoryStore, DEFAULT_MAX_RECORDS};
pub(crate) use ordering::{advances, is_cursor_key, CURSOR_KEY_PREFIX};
pub use ordering::{LockedClaim, ObjectLock, OrderingStore, Watermark};
#[cfg(feature = "redis")]
pub use redis::{RedisServerSettings, RedisStore};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::{Migration, DEFAULT_TABLE};
#[cfg(feature = "postgres")]
pub use sql::{PostgresStore, POSTGRES_MIGRATION};
#[cfg(feature = "sqlite")]
pub use sql::{SqliteStore, SQLITE_MIGRATION};

/// How long completed records are kept by default: 30 days (Stripe retries for 3 days and
/// lets you list events for 30).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest `last_error` a store keeps, in bytes; longer reasons are cut.
pub const MAX_ERROR_LEN: usize = 1024;

/// Proof that this delivery holds the claim on an event. Every later call on the claim
/// ([`complete`](IdempotencyStore::complete), [`release`](IdempotencyStore::release),
/// [`extend`](IdempotencyStore::extend)) is fenced by it.
///
/// # For store authors
///
/// A store makes one when a claim is acquired: [`ClaimToken::new`] draws a fresh
/// fencing value, unique across processes. Write [`fence_hex`](Self::fence_hex) (or
/// [`fence`](Self::fence)) into the record together with the claim, and change the
/// record in `complete`, `release` and `extend` only while it still holds that value.
/// A store that learns the attempt number only from its claim statement sets it
/// afterwards with [`with_attempt`](Self::with_attempt).
///
/// ```
/// use stripe_webhooks::{ClaimToken, EventId};
///
/// let token = ClaimToken::new(EventId::new("evt_1"), 0);
/// let fence = token.fence_hex(); // written by the claim statement
/// let token = token.with_attempt(1); // read back from it
/// assert_eq!((fence.len(), token.attempt()), (32, 1));
/// assert_ne!(token.fence(), ClaimToken::new(EventId::new("evt_1"), 1).fence());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimToken {
    event_id: EventId,
    fence: u128,
    attempt: u32,
}

impl ClaimToken {
    /// A token for a claim just acquired on `event_id`, as its `attempt`-th attempt (1
    /// for the first), with a fresh fencing value: a random 128-bit seed drawn once per
    /// process (from the OS-seeded keys of
    /// [`std::collections::hash_map::RandomState`], the process id and the clock), plus
    /// a counter, so two tokens of one process never share a fence and tokens of two
    /// processes collide with negligible probability. No system call after the first.
    pub fn new(event_id: EventId, attempt: u32) -> Self {
        Self {
            event_id,
            fence: new_fence(),
            attempt,
        }
    }

    /// The same claim, as attempt number `attempt`.
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same fence on another key: the SQL queues take a batch of jobs under one fence,
    /// and the Redis queue writes fences drawn before it knows the keys.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) fn with_key(&self, event_id: EventId) -> Self {
        Self {
            event_id,
            fence: self.fence,
            attempt: self.attempt,
        }
    }

    /// The event the claim is on.
    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }

    /// The fencing value that identifies this claim.
    pub fn fence(&self) -> u128 {
        self.fence
    }

    /// The fence as 32 lowercase hex digits, as the crate's stores write it.
    pub fn fence_hex(&self) -> String {
        format!("{:032x}", self.fence)
    }

    /// Which attempt at the event this claim is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

impl fmt::Debug for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimToken")
            .field("event_id", &self.event_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

fn new_fence() -> u128 {
    static SEED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut a = std::collections::hash_map::RandomState::new().build_hasher();
        a.write_u128(nanos);
        a.write_u32(std::process::id());
        let mut b = std::collections::hash_map::RandomState::new().build_hasher();
        b.write_u64(a.finish());
        b.write_u128(nanos);
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    });
    seed.wrapping_add(u128::from(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

/// The answer to [`IdempotencyStore::claim`]. A duplicate is a value here, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// This delivery holds the event: run the handler, then complete or release.
    Acquired(ClaimToken),
    /// Another delivery holds a live lease on the event; try again after `retry_after`.
    InProgress {
        /// How long until the other lease ends.
        retry_after: Duration,
    },
    /// The event was processed already.
    Completed,
}

/// Where an event stands in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordStatus {
    /// A delivery holds it (its lease may have expired).
    Processing,
    /// Its handler succeeded.
    Completed,
    /// Its last attempt failed and was released; Stripe will deliver it again.
    Failed,
}

impl RecordStatus {
    /// The name stores write: `processing`, `completed` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Processing => "processing",
            RecordStatus::Completed => "completed",
            RecordStatus::Failed => "failed",
        }
    }
}

/// A status name that is not `processing`, `completed` or `failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown record status {0:?}: expected processing, completed or failed")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for RecordStatus {
    type Err = UnknownStatus;

    /// Reads a name written by [`as_str`](Self::as_str).
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        Ok(match s {
            "processing" => RecordStatus::Processing,
            "completed" => RecordStatus::Completed,
            "failed" => RecordStatus::Failed,
            other => return Err(UnknownStatus(other.to_owned())),
        })
    }
}

impl fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a store keeps about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventRecord {
    /// The event id.
    pub event_id: EventId,
    /// The event type.
    pub event_type: EventType,
    /// Where it stands.
    pub status: RecordStatus,
    /// How many times it was claimed.
    pub attempts: u32,
    /// The reason given to the last [`release`](IdempotencyStore::release), at most
    /// [`MAX_ERROR_LEN`] bytes.
    /// The processor, the queue workers and the inboxes hide the credentials a
    /// handler's error may quote (API keys, signing secrets, client secrets) before they
    /// give it to the store.
    pub last_error: Option<String>,
    /// When it was first claimed, in Unix milliseconds.
    pub first_seen_ms: i64,
    /// When it completed, in Unix milliseconds.
    pub completed_at_ms: Option<i64>,
}

impl EventRecord {
    /// Builds a record; stores use it to answer [`StoreAdmin::record`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        event_id: EventId,
        event_type: EventType,
        status: RecordStatus,
        attempts: u32,
        last_error: Option<String>,
        first_seen_ms: i64,
        completed_at_ms: Option<i64>,
    ) -> Self {
        Self {
            event_id,
            event_type,
            status,
            attempts,
            last_error,
            first_seen_ms,
            completed_at_ms,
        }
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The token's claim is gone: its lease expired and another delivery took the event
    /// over (or it was already completed or released). Nothing was changed.
    #[error(
        "claim on event {event_id} was lost: its lease expired and another delivery took it over"
    )]
    LeaseLost {
        /// The event the claim was on.
        event_id: EventId,
    },
    /// The backend could not be reached or failed; the processor answers 503.
    #[error("idempotency store unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// The backend did not answer within the processor's store timeout.
    #[error("idempotency store did not answer within {0:?}")]
    Timeout(Duration),
    /// A [`MemoryStore`] holds as many records as it may, all of them live claims; the
    /// processor answers 503 and Stripe delivers the event again later. Raise the bound
    /// ([`MemoryStore::with_max_records`]) or use a durable store.
    #[error("memory store is full: {max_records} records, all of them live claims")]
    Full {
        /// The store's bound.
        max_records: usize,
    },
    /// A setting is invalid (for example a table name with characters other than
    /// letters, digits and underscores).
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
}

impl StoreError {
    /// Wraps a backend error as [`StoreError::Unavailable`].
    pub fn unavailable(e: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError::Unavailable(e.into())
    }
}

/// Cuts `reason` to at most [`MAX_ERROR_LEN`] bytes, on a character boundary, with any
/// NUL replaced by U+FFFD: PostgreSQL refuses NUL in text (so a release carrying one
/// would fail and leave the claim to its lease), and every store keeps the same text.
pub(crate) fn truncate_error(reason: &str) -> std::borrow::Cow<'_, str> {
    fn cut(reason: &str) -> &str {
        if reason.len() <= MAX_ERROR_LEN {
            return reason;
        }
        let mut end = MAX_ERROR_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        &reason[..end]
    }
    if reason.contains('\0') {
        let clean = reason.replace('\0', "\u{FFFD}");
        return std::borrow::Cow::Owned(cut(&clean).to_owned());
    }
    std::borrow::Cow::Borrowed(cut(reason))
}

/// Checks a table name or key prefix: 1 to 63 ASCII letters, digits or underscores (and
/// `:` or `-` when `extra` allows), not starting with a digit.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]
pub(crate) fn validate_name(name: &str, extra: &[char]) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidConfig(format!(
            "{name:?} is not a valid name: use 1 to 63 ASCII letters, digits or underscores, not starting with a digit"
        )))
    }
}

/// Durable memory of which events were processed, with leases so a crashed delivery's
/// claim can be taken over. This is all the processor needs of a store.
///
/// # The store contract
///
/// - [`claim`](Self::claim) is one atomic operation: of any number of concurrent claims
///   on one event, at most one is [`Claim::Acquired`].
/// - The token it returns ([`ClaimToken::new`]) carries a fresh fence, written with the
///   claim; [`complete`](Self::complete), [`release`](Self::release) and
///   [`extend`](Self::extend) change the record only while it holds that fence, and
///   answer [`StoreError::LeaseLost`] otherwise. A `complete` that finds the record
///   completed with its own fence succeeds without changing it: the caller retries a
///   completion whose answer was lost (a timeout, a connection cut after the commit),
///   and that retry must not report a takeover that never happened.
/// - Leases are judged by one clock for every replica (the database's, or an injected
///   one), never by the caller's.
/// - A duplicate is a [`Claim`] value, never an error; [`StoreError::Unavailable`] and
///   [`StoreError::Timeout`] mean the backend failed.
/// - `release` may cut its reason to [`MAX_ERROR_LEN`] bytes.
///
/// `testing::store_conformance` (feature `testing`) checks all of it: run its `run_all`
/// against your own store, or `run_claims` if it does not implement [`StoreAdmin`]. The
/// operator queries are that separate trait, so that a store that only implements this
/// one keeps compiling when queries are added.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `id` for `lease`.
    ///
    /// - no record, a failed record, or a processing record whose lease expired:
    ///   [`Claim::Acquired`], with attempts incremented;
    /// - a processing record with a live lease: [`Claim::InProgress`];
    /// - a completed record: [`Claim::Completed`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn claim(
        &self,
        id: &EventId,
        event_type: &EventType,
        lease: Duration,
    ) -> Result<Claim, StoreError>;

    /// Marks the claimed event completed; again with the same token, succeeds and
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] if the token no longer holds the claim (and did not
    /// complete it);
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError>;

    /// Gives the claim up after a failure, recording `reason`, so the next delivery can
    /// claim the event at once.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError>;

    /// Extends the claim's lease to `lease` from now.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError>;
}

/// The operator's queries on a store: one record, the failed events, and purging old
/// records. Every store of this crate implements it. Queries added later come with a
/// default body, so a third-party implementation keeps compiling.
#[async_trait]
pub trait StoreAdmin: IdempotencyStore {
    /// What the store holds about `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn record(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError>;

    /// Events whose last attempt failed and that have not completed since, as long as
    /// the store keeps their records (the retention): those Stripe is still retrying
    /// (for 3 days), and older ones it gave up on, which only a
    /// [`Reconciler`](crate::reconcile::Reconciler) or an operator brings back. At most
    /// `limit`, oldest first (by when each was first seen, then by id in the store's
    /// order).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn failed_events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError>;

    /// The next page of [`failed_events`](Self::failed_events), which lists them by when
    /// they were first seen, then by id: up to `limit` failed events after the event
    /// `after` in that order. Pass the last id of the page before. An event that has
    /// completed since still marks its place; an id the store no longer has (purged)
    /// gives an empty page.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn failed_events_after(
        &self,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Deletes completed and failed records older than the retention period, never a
    /// record under a live lease. Returns how many were deleted.
    ///
    /// Every store of this crate first records abandoned claims as failed
    /// ([`fail_abandoned`](Self::fail_abandoned) with [`ABANDONED_AFTER`]), so an event
    /// whose handler's process stopped every time it ran shows up in
    /// [`failed_events`](Self::failed_events) and is kept for the retention from then,
    /// instead of staying `processing` where no listing shows it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn purge_expired(&self) -> Result<u64, StoreError>;

    /// Records as failed every claim still `processing` whose lease ended more than
    /// `lease_ended` ago: the process running its handler stopped (a crash, an out of
    /// memory kill, a deploy) and no delivery took the event over since. Stripe retries
    /// such an event, but one that stops its process every time stays `processing`
    /// once Stripe gives up, where [`failed_events`](Self::failed_events) would not
    /// list it. The record keeps its attempts; its error says it was abandoned; a
    /// delivery or the [reconciler](crate::reconcile) can still claim it, as any failed
    /// event. A claim's holder that is still alive but has not renewed its lease for
    /// that long finds its claim lost ([`StoreError::LeaseLost`]). Returns how many were
    /// recorded. [`purge_expired`](Self::purge_expired) calls it with
    /// [`ABANDONED_AFTER`]; the default body does nothing.
    ///
    /// No index lists the claims in progress (every claim would pay for one): the SQL
    /// stores read the whole table and Redis walks the store's keys with `SCAN`, without
    /// holding a write lock meanwhile. It belongs with the purge, not in a loop.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn fail_abandoned(&self, lease_ended: Duration) -> Result<u64, StoreError> {
        let _ = lease_ended;
        Ok(0)
    }
}

/// How long after its lease ended a claim still `processing` counts as abandoned, for
/// [`StoreAdmin::purge_expired`]: an hour. A live handler's lease is renewed long before
/// it ends, so only a claim whose process stopped (or froze for that long) is so late.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// The error an abandoned claim is recorded with ([`StoreAdmin::fail_abandoned`]).
pub const ABANDONED_ERROR: &str =
    "abandoned: its lease ended with no answer (the process running the handler stopped)";

#[async_trait]
impl<S: IdempotencyStore + ?Sized> IdempotencyStore for std::sync::Arc<S> {
    async fn claim(
        &self,
        id: &EventId,
        event_type: &EventType,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        (**self).claim(id, event_type, lease).await
    }
    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        (**self).complete(token).await
    }
    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        (**self).release(token, reason).await
    }
    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        (**self).extend(token, lease).await
    }
}

#[async_trait]
impl<S: StoreAdmin + ?Sized> StoreAdmin for std::sync::Arc<S> {
    async fn record(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        (**self).record(id).await
    }
    async fn failed_events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        (**self).failed_events(limit).await
    }
    async fn failed_events_after(
        &self,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        (**self).failed_events_after(after, limit).await
    }
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        (**self).purge_expired().await
    }
    async fn fail_abandoned(&self, lease_ended: Duration) -> Result<u64, StoreError> {
        (**self).fail_abandoned(lease_ended).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_what_they_write() {
        for status in [
            RecordStatus::Processing,
            RecordStatus::Completed,
            RecordStatus::Failed,
        ] {
            assert_eq!(status.as_str().parse(), Ok(status));
        }
        assert_eq!(
            "done".parse::<RecordStatus>(),
            Err(UnknownStatus("done".into()))
        );
    }

    #[test]
    fn error_text_has_no_nul() {
        assert_eq!(truncate_error("bad\0byte"), "bad\u{FFFD}byte");
        let long = "\0".repeat(2 * MAX_ERROR_LEN);
        assert!(truncate_error(&long).len() <= MAX_ERROR_LEN);
        assert!(matches!(
            truncate_error("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn truncates_on_char_boundary() {
        let s = "é".repeat(600);
        let t = truncate_error(&s);
        assert!(t.len() <= MAX_ERROR_LEN);
        assert!(t.len() >= MAX_ERROR_LEN - 1);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("stripe_webhook_events", &[]).is_ok());
        for bad in ["", "1abc", "a;drop table x", "a b", &"x".repeat(64)] {
            assert!(validate_name(bad, &[]).is_err(), "{bad}");
        }
        assert!(validate_name("app:webhooks-1", &[':', '-']).is_ok());
    }
}
