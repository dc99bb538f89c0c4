//! The ordering guard's side of a store: per-object watermarks and object locks.

use std::time::Duration;

use async_trait::async_trait;

use super::{Claim, ClaimToken, IdempotencyStore, StoreError};
use crate::event::{EventId, EventType};

/// The last event applied to an object: its `created` time (Unix seconds) and id. The
/// ordering guard answers an event older than its object's watermark without running
/// the handler.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Watermark {
    /// The applied event's `created`, in Unix seconds.
    pub created: i64,
    /// The applied event's id.
    pub event_id: EventId,
}

impl Watermark {
    /// A watermark of event `event_id` created at `created`.
    pub fn new(created: i64, event_id: EventId) -> Self {
        Self { created, event_id }
    }

    /// Whether the event `id`, created at `created`, is another event of this
    /// watermark's second, whose order against it Stripe does not say. The watermark's
    /// own event, delivered again (after its record was purged or evicted), is not.
    pub(crate) fn ties(&self, created: i64, id: &EventId) -> bool {
        self.created == created && self.event_id != *id
    }

    /// Whether that event is older than this watermark, or ties it where ties count as
    /// stale (`TiePolicy::Stale`): not to be applied over it.
    pub(crate) fn outdates(&self, created: i64, id: &EventId, ties_stale: bool) -> bool {
        self.created > created || (ties_stale && self.ties(created, id))
    }
}

/// What [`OrderingStore::lock_object`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectLock {
    /// The object is locked for the caller; its watermark, if any event was applied.
    Acquired {
        /// The last event applied to the object.
        watermark: Option<Watermark>,
    },
    /// Another delivery holds the object's lock for this long yet.
    Busy {
        /// When to try again.
        retry_after: Duration,
    },
}

/// What [`OrderingStore::lock_and_claim`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockedClaim {
    /// The object is locked and the event claimed.
    Acquired {
        /// The object's watermark.
        watermark: Option<Watermark>,
        /// The event's claim.
        token: ClaimToken,
    },
    /// The event's claim was refused ([`Claim::Completed`] or [`Claim::InProgress`]);
    /// the object is not locked.
    Refused(Claim),
    /// Another holder has the object's lock; nothing was claimed.
    Busy {
        /// When to try again.
        retry_after: Duration,
    },
}

/// A store that keeps, for each object (`data.object.id`; `acct_…/id` for a connected
/// account's event and `acct_…/test/id` for its test-mode one, and `product/gold`,
/// `price/gold` or `coupon/gold` for an id you chose for a product, a plan or a coupon,
/// as the processor keys it),
/// the last event applied to it
/// (its [`Watermark`]) and a lock, so events about one object run one at a time and an
/// old event is never applied over a newer one. `MemoryStore`, `SqliteStore`,
/// `PostgresStore` and `RedisStore` implement it; turn the guard on with
/// [`Processor::ordered`](crate::Processor::ordered).
///
/// # For store authors
///
/// The lock is a lease held by an opaque `holder` string: [`lock_object`](Self::lock_object)
/// takes it when it is free, expired or already the caller's (which renews it).
/// [`complete_applied`](Self::complete_applied) must, in **one atomic step**, complete
/// the event's claim (fenced by the token, as [`IdempotencyStore::complete`]), advance
/// the watermark when the applied event is not older than it, and free the lock; when
/// the claim is lost, or the object's lock no longer names the holder (it ran out and
/// another holder took it, who may have applied a newer event meanwhile), it changes
/// nothing and answers [`StoreError::LeaseLost`], unless the claim is completed with the
/// token's own fence (a completion tried again after its answer was lost), which
/// succeeds and changes nothing. `testing::store_conformance::run_ordering` checks all of
/// it.
#[async_trait]
pub trait OrderingStore: IdempotencyStore {
    /// Takes (or renews) the lock on `object_id` for `holder` for `lease`, and reads the
    /// object's watermark.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot answer.
    async fn lock_object(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<ObjectLock, StoreError>;

    /// Completes the claim of `token`, advances the object's watermark to `applied`
    /// unless the watermark is newer, and frees `holder`'s lock: one atomic step.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] if the token no longer holds the claim, or the object's
    /// lock no longer names `holder` (nothing changed).
    async fn complete_applied(
        &self,
        token: &ClaimToken,
        object_id: &str,
        holder: &str,
        applied: &Watermark,
    ) -> Result<(), StoreError>;

    /// Frees `holder`'s lock on `object_id` without touching the watermark (the handler
    /// failed, or the event was stale). Freeing a lock that is not the holder's does
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot answer.
    async fn unlock_object(&self, object_id: &str, holder: &str) -> Result<(), StoreError>;

    /// The object's watermark, if an event was applied to it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot answer.
    async fn watermark(&self, object_id: &str) -> Result<Option<Watermark>, StoreError>;

    /// Locks `object_id` for `holder` and, when it is locked, claims the event: the
    /// ordering guard's first step. The default calls
    /// [`lock_object`](Self::lock_object) then [`claim`](IdempotencyStore::claim) (and
    /// unlocks again when the claim is refused); the SQL stores do both in one
    /// statement. When the claim is refused, SQLite's statement undoes its lock, while
    /// PostgreSQL's has taken it and a second statement gives it back (a duplicate
    /// delivery holds its object for that round trip: another event of the object
    /// arriving then is answered 409, and Stripe retries it; and a lapsed lock of another
    /// holder is freed, whose late completion then fails so that Stripe's retry runs it
    /// again). `MemoryStore` and `RedisStore` check the claim before taking the lock, in
    /// one step, so a refused claim changes nothing.
    ///
    /// The crate's stores answer a completed event
    /// [`Refused(Claim::Completed)`](Claim::Completed) even while another holder has its
    /// object (a duplicate has nothing to wait for); the default answers
    /// [`Busy`](LockedClaim::Busy) then, and a retry after the lock finds it completed
    /// (`store_conformance::a_completed_event_is_a_duplicate_while_its_object_is_locked`
    /// checks the former, apart from `run_ordering`).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot answer (the object is then not locked by
    /// this call, or its lease frees it), and, in the default, when a refused claim's
    /// lock could not be given back (the processor lets it go again).
    async fn lock_and_claim(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
        event_id: &EventId,
        event_type: &EventType,
    ) -> Result<LockedClaim, StoreError> {
        let watermark = match self.lock_object(object_id, holder, lease).await? {
            ObjectLock::Acquired { watermark } => watermark,
            ObjectLock::Busy { retry_after } => return Ok(LockedClaim::Busy { retry_after }),
        };
        let claim = self.claim(event_id, event_type, lease).await;
        match claim {
            Ok(Claim::Acquired(token)) => Ok(LockedClaim::Acquired { watermark, token }),
            other => {
                // A lock that could not be given back is an error, not a refusal: the
                // caller then lets it go again (a refusal would leave it to its lease,
                // holding up every other event of the object).
                let unlocked = self.unlock_object(object_id, holder).await;
                let refused = other.map(LockedClaim::Refused)?;
                unlocked.map(|()| refused)
            }
        }
    }

    /// Moves `key`'s watermark to `to` unless it is newer already, outside any claim: the
    /// reconciler keeps its cursors this way (keys `reconcile:…`), so replicas that run
    /// it at once only ever move a cursor forward.
    ///
    /// A key that starts with `reconcile:` is kept however long no pass moves it: the
    /// stores' retention (their purge, Redis's key expiry) passes it over, since a
    /// reconciler stopped for longer than the retention must find its cursor, not start
    /// again from its lookback and skip what Stripe still lists. Any other key lives for
    /// the retention, as an object's watermark does.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot answer.
    async fn advance_watermark(&self, key: &str, to: &Watermark) -> Result<(), StoreError>;
}

#[async_trait]
impl<S: OrderingStore + ?Sized> OrderingStore for std::sync::Arc<S> {
    async fn lock_object(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<ObjectLock, StoreError> {
        (**self).lock_object(object_id, holder, lease).await
    }

    async fn complete_applied(
        &self,
        token: &ClaimToken,
        object_id: &str,
        holder: &str,
        applied: &Watermark,
    ) -> Result<(), StoreError> {
        (**self)
            .complete_applied(token, object_id, holder, applied)
            .await
    }

    async fn unlock_object(&self, object_id: &str, holder: &str) -> Result<(), StoreError> {
        (**self).unlock_object(object_id, holder).await
    }

    async fn watermark(&self, object_id: &str) -> Result<Option<Watermark>, StoreError> {
        (**self).watermark(object_id).await
    }

    async fn advance_watermark(&self, key: &str, to: &Watermark) -> Result<(), StoreError> {
        (**self).advance_watermark(key, to).await
    }

    async fn lock_and_claim(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
        event_id: &EventId,
        event_type: &EventType,
    ) -> Result<LockedClaim, StoreError> {
        (**self)
            .lock_and_claim(object_id, holder, lease, event_id, event_type)
            .await
    }
}

/// Where the keys that [`OrderingStore::advance_watermark`] keeps past the retention
/// start: the reconciler's cursors.
pub(crate) const CURSOR_KEY_PREFIX: &str = "reconcile:";

/// Whether `key` is a reconciler's cursor, kept past the stores' retention.
pub(crate) fn is_cursor_key(key: &str) -> bool {
    key.starts_with(CURSOR_KEY_PREFIX)
}

/// Whether `applied` may replace `current` as an object's watermark: not older. At the
/// same second the later-applied event wins (ids are not ordered).
pub(crate) fn advances(current: Option<&Watermark>, applied: &Watermark) -> bool {
    match current {
        Some(w) => applied.created >= w.created,
        None => true,
    }
}
