//! The in-process store.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    advances, truncate_error, Claim, ClaimToken, EventRecord, IdempotencyStore, LockedClaim,
    ObjectLock, OrderingStore, RecordStatus, StoreAdmin, StoreError, Watermark, DEFAULT_RETENTION,
};
use crate::clock::{Clock, SteadyClock};
use crate::event::{EventId, EventType};

/// The default number of records a [`MemoryStore`] keeps: 100,000.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;

/// An in-process [`IdempotencyStore`]: for tests and single-process services.
///
/// Claims are atomic (one operation on a map behind a mutex, never held across an
/// `.await`) and leases expire as in the durable stores, but everything is forgotten when
/// the process exits: a service that restarts or runs several replicas needs a durable
/// store (`SqliteStore`, `PostgresStore`, `RedisStore`).
///
/// # Memory is bounded
///
/// The store never holds more than [`with_max_records`](Self::with_max_records) records.
/// To make room for a new claim it evicts, in this order:
///
/// 1. completed records, oldest completion first. **A duplicate of an evicted event
///    runs the handler again**: keep the bound above the number of events Stripe may
///    still redeliver (three days of traffic), or use a durable store;
/// 2. failed records, oldest failure first (Stripe delivers the event again; the
///    retry counts its attempts from 1);
/// 3. processing records whose lease has ended (their delivery crashed).
///
/// When every record is a live claim, a new claim is refused with [`StoreError::Full`]
/// (answered 503, so Stripe delivers the event again later): nothing is lost, and
/// nothing in flight is evicted. [`purge_expired`](StoreAdmin::purge_expired) records
/// claims abandoned over [`ABANDONED_AFTER`](crate::ABANDONED_AFTER) as failed (kept for
/// the retention from then), and deletes completed and failed records past their
/// retention.
///
/// The ordering guard's objects are bounded the same way: past `max_records` objects,
/// the one written longest ago (and not locked) is evicted with its watermark, and **an
/// older event of that object is then applied** as if it were the first. Keep the bound
/// above the number of objects whose events may still arrive late, or use a durable
/// store. A [`Reconciler`](crate::reconcile::Reconciler)'s cursors are kept as objects
/// too (`reconcile:…` keys); they are never evicted nor purged. Nor is a locked object
/// (its event is being handled), and a new object is not refused as a new claim is: with
/// every object locked, the store holds one object more per event in flight, until
/// those complete.
///
/// ```
/// # tokio_test_block_on(async {
/// use std::time::Duration;
/// use stripe_webhooks::{Claim, EventId, EventType, IdempotencyStore, MemoryStore};
///
/// let store = MemoryStore::new();
/// let (id, ty) = (EventId::new("evt_1"), EventType::CustomerCreated);
/// let Claim::Acquired(token) = store.claim(&id, &ty, Duration::from_secs(30)).await? else {
///     unreachable!()
/// };
/// store.complete(&token).await?;
/// assert_eq!(store.claim(&id, &ty, Duration::from_secs(30)).await?, Claim::Completed);
/// # Ok::<(), stripe_webhooks::StoreError>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    max_records: usize,
    retention: Duration,
}

/// The settings and how many records it holds, not the records: a store of 100,000
/// would print them all while every claim waited on its lock.
impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let records = self.inner.try_lock().ok().map(|inner| inner.records.len());
        f.debug_struct("MemoryStore")
            .field("records", &records)
            .field("clock", &self.clock)
            .field("max_records", &self.max_records)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<EventId, Rec>,
    /// Completed records in completion order, for eviction. An entry is current while
    /// its record is completed and its stamp is the record's `updated_ms`.
    completed: VecDeque<(EventId, i64)>,
    /// Failed records in failure order, likewise.
    failed: VecDeque<(EventId, i64)>,
    /// The ordering guard's objects: watermark and lock.
    objects: HashMap<String, Obj>,
    /// Objects in the order they were last written, for eviction; an entry is current
    /// while its stamp is the object's `updated_ms`.
    object_order: VecDeque<(String, i64)>,
}

#[derive(Debug, Default)]
struct Obj {
    watermark: Option<Watermark>,
    holder: Option<String>,
    lock_until_ms: i64,
    updated_ms: i64,
}

#[derive(Debug)]
struct Rec {
    event_type: EventType,
    status: RecordStatus,
    attempts: u32,
    fence: u128,
    lease_until_ms: i64,
    last_error: Option<String>,
    first_seen_ms: i64,
    completed_at_ms: Option<i64>,
    updated_ms: i64,
}

/// Whole milliseconds, rounded up ([`ceil_millis`](crate::clock::ceil_millis)).
fn ms(d: Duration) -> i64 {
    i64::try_from(crate::clock::ceil_millis(d)).unwrap_or(i64::MAX)
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with a [`SteadyClock`](crate::SteadyClock) (the system clock's
    /// time, moved by a monotonic timer, so a step of the system clock does not end a
    /// running handler's lease early and let a redelivery run beside it),
    /// [`DEFAULT_MAX_RECORDS`] and [`DEFAULT_RETENTION`].
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            clock: Arc::new(SteadyClock::new()),
            max_records: DEFAULT_MAX_RECORDS,
            retention: DEFAULT_RETENTION,
        }
    }

    /// Replaces the clock (leases and retention are judged by it).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The most records the store holds (at least 1); see the eviction order above.
    #[must_use]
    pub fn with_max_records(mut self, max_records: usize) -> Self {
        self.max_records = max_records.max(1);
        self
    }

    /// How long completed and failed records are kept by
    /// [`purge_expired`](StoreAdmin::purge_expired). Keep it longer than an event may
    /// come back (Stripe retries it for 3 days, and a
    /// [`Reconciler`](crate::reconcile::Reconciler) may list it again for the 30 days
    /// Stripe lists events): a completed record purged sooner lets its event run again.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How many records the store holds.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the store holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a record half-written (each
        // operation writes whole fields), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the claimed record with `f`, if the token still holds it, then files the
    /// record in the eviction queue of the status it `settles` into, if any.
    fn with_claim(
        &self,
        token: &ClaimToken,
        settles: Option<RecordStatus>,
        f: impl FnOnce(&mut Rec, i64),
    ) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        match inner.records.get_mut(token.event_id()) {
            Some(rec) if rec.fence == token.fence() && rec.status == RecordStatus::Processing => {
                f(rec, now);
            }
            // A completion this token made already: done.
            Some(rec) if completed_by(rec, token) && settles == Some(RecordStatus::Completed) => {
                return Ok(());
            }
            _ => {
                return Err(StoreError::LeaseLost {
                    event_id: token.event_id().clone(),
                })
            }
        }
        if let Some(status) = settles {
            inner.settled(token.event_id(), status, now);
        }
        Ok(())
    }
}

impl Inner {
    /// How long another holder's live lock on `object_id` has left, if it has one.
    fn object_busy(&self, object_id: &str, holder: &str, now: i64) -> Option<Duration> {
        let obj = self.objects.get(object_id)?;
        match &obj.holder {
            Some(h) if h != holder && obj.lock_until_ms > now => {
                let left = u64::try_from(obj.lock_until_ms.saturating_sub(now)).unwrap_or(0);
                Some(Duration::from_millis(left.max(1)))
            }
            _ => None,
        }
    }

    /// Claims `id` at `now` (see [`IdempotencyStore::claim`]).
    fn claim(
        &mut self,
        id: &EventId,
        event_type: &EventType,
        lease: Duration,
        now: i64,
        max_records: usize,
    ) -> Result<Claim, StoreError> {
        let lease_until_ms = now.saturating_add(ms(lease));
        if let Some(rec) = self.records.get_mut(id) {
            match rec.status {
                RecordStatus::Completed => return Ok(Claim::Completed),
                RecordStatus::Processing if rec.lease_until_ms > now => {
                    let left = u64::try_from(rec.lease_until_ms.saturating_sub(now)).unwrap_or(0);
                    return Ok(Claim::InProgress {
                        retry_after: Duration::from_millis(left),
                    });
                }
                RecordStatus::Processing | RecordStatus::Failed => {
                    let token = ClaimToken::new(id.clone(), rec.attempts.saturating_add(1));
                    rec.status = RecordStatus::Processing;
                    rec.attempts = token.attempt();
                    rec.fence = token.fence();
                    rec.lease_until_ms = lease_until_ms;
                    rec.updated_ms = now;
                    return Ok(Claim::Acquired(token));
                }
            }
        }
        if !self.make_room(max_records, now) {
            return Err(StoreError::Full { max_records });
        }
        let token = ClaimToken::new(id.clone(), 1);
        self.records.insert(
            id.clone(),
            Rec {
                event_type: event_type.clone(),
                status: RecordStatus::Processing,
                attempts: 1,
                fence: token.fence(),
                lease_until_ms,
                last_error: None,
                first_seen_ms: now,
                completed_at_ms: None,
                updated_ms: now,
            },
        );
        Ok(Claim::Acquired(token))
    }

    /// Makes room for one more record; `false` if every record is a live claim.
    fn make_room(&mut self, max_records: usize, now: i64) -> bool {
        while self.records.len() >= max_records {
            if !(self.evict_from(Queue::Completed)
                || self.evict_from(Queue::Failed)
                || self.evict_abandoned(now))
            {
                return false;
            }
        }
        true
    }

    /// Evicts the oldest current entry of a queue, skipping stale ones.
    fn evict_from(&mut self, which: Queue) -> bool {
        let (queue, status) = match which {
            Queue::Completed => (&mut self.completed, RecordStatus::Completed),
            Queue::Failed => (&mut self.failed, RecordStatus::Failed),
        };
        while let Some((id, stamp)) = queue.pop_front() {
            if let Entry::Occupied(e) = self.records.entry(id) {
                let r = e.get();
                if r.status == status && r.updated_ms == stamp {
                    e.remove();
                    return true;
                }
            }
        }
        false
    }

    /// Evicts one processing record whose lease has ended (its delivery crashed). Only
    /// reached when no completed or failed record is left, so the scan is rare.
    fn evict_abandoned(&mut self, now: i64) -> bool {
        let abandoned = self
            .records
            .iter()
            .filter(|(_, r)| r.status == RecordStatus::Processing && r.lease_until_ms <= now)
            .min_by_key(|(_, r)| r.lease_until_ms)
            .map(|(id, _)| id.clone());
        abandoned.is_some_and(|id| self.records.remove(&id).is_some())
    }

    /// Records a settled (completed or failed) record in its eviction queue, dropping
    /// stale entries when the queue has grown well past the records it can name.
    fn settled(&mut self, id: &EventId, status: RecordStatus, stamp: i64) {
        let queue = if status == RecordStatus::Completed {
            &mut self.completed
        } else {
            &mut self.failed
        };
        queue.push_back((id.clone(), stamp));
        if queue.len() > 2 * self.records.len() + 64 {
            let records = &self.records;
            queue.retain(|(id, stamp)| {
                records
                    .get(id)
                    .is_some_and(|r| r.status == status && r.updated_ms == *stamp)
            });
        }
    }
}

#[derive(Clone, Copy)]
enum Queue {
    Completed,
    Failed,
}

/// Whether `token`'s own completion is what completed `rec`: a completion tried again
/// (its first answer was lost) succeeds instead of reporting the lease lost.
fn completed_by(rec: &Rec, token: &ClaimToken) -> bool {
    rec.status == RecordStatus::Completed && rec.fence == token.fence()
}

fn record_of(id: &EventId, r: &Rec) -> EventRecord {
    EventRecord::new(
        id.clone(),
        r.event_type.clone(),
        r.status,
        r.attempts,
        r.last_error.clone(),
        r.first_seen_ms,
        r.completed_at_ms,
    )
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        id: &EventId,
        event_type: &EventType,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = self.clock.now_millis();
        self.lock()
            .claim(id, event_type, lease, now, self.max_records)
    }

    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.with_claim(token, Some(RecordStatus::Completed), |rec, now| {
            rec.status = RecordStatus::Completed;
            rec.completed_at_ms = Some(now);
            rec.updated_ms = now;
        })
    }

    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        self.with_claim(token, Some(RecordStatus::Failed), |rec, now| {
            rec.status = RecordStatus::Failed;
            rec.last_error = Some(truncate_error(reason).into_owned());
            rec.lease_until_ms = now;
            rec.updated_ms = now;
        })
    }

    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.with_claim(token, None, |rec, now| {
            rec.lease_until_ms = now.saturating_add(ms(lease));
            rec.updated_ms = now;
        })
    }
}

impl Inner {
    /// The object's row, made (evicting the oldest unlocked objects past `max`) if new.
    fn object(&mut self, object_id: &str, max: usize, now: i64) -> &mut Obj {
        if !self.objects.contains_key(object_id) {
            // Locked objects are kept, and queued again so they stay evictable; so are a
            // reconciler's cursors, which are never evicted.
            let mut locked = Vec::new();
            while self.objects.len() >= max {
                let Some((id, stamp)) = self.object_order.pop_front() else {
                    break;
                };
                match self.objects.get(&id) {
                    Some(o) if o.updated_ms == stamp => {
                        if (o.holder.is_none() || o.lock_until_ms <= now)
                            && !super::is_cursor_key(&id)
                        {
                            self.objects.remove(&id);
                        } else {
                            locked.push((id, stamp));
                        }
                    }
                    _ => {}
                }
            }
            self.object_order.extend(locked);
        }
        self.object_order.push_back((object_id.to_owned(), now));
        if self.object_order.len() > 2 * self.objects.len() + 64 {
            let objects = &self.objects;
            self.object_order
                .retain(|(id, stamp)| objects.get(id).is_some_and(|o| o.updated_ms == *stamp));
        }
        let obj = self.objects.entry(object_id.to_owned()).or_default();
        obj.updated_ms = now;
        obj
    }
}

#[async_trait]
impl OrderingStore for MemoryStore {
    async fn lock_object(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<ObjectLock, StoreError> {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        if let Some(retry_after) = inner.object_busy(object_id, holder, now) {
            return Ok(ObjectLock::Busy { retry_after });
        }
        let obj = inner.object(object_id, self.max_records, now);
        obj.holder = Some(holder.to_owned());
        obj.lock_until_ms = now.saturating_add(ms(lease));
        Ok(ObjectLock::Acquired {
            watermark: obj.watermark.clone(),
        })
    }

    /// One step under the store's lock: a busy object or a refused claim leaves both
    /// as they were (an expired lock of another holder stays that holder's, so its late
    /// completion still goes through).
    async fn lock_and_claim(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
        event_id: &EventId,
        event_type: &EventType,
    ) -> Result<LockedClaim, StoreError> {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        // A completed event is a duplicate whatever the object's lock: nothing to wait for.
        let completed = inner
            .records
            .get(event_id)
            .is_some_and(|r| r.status == RecordStatus::Completed);
        if completed {
            return Ok(LockedClaim::Refused(Claim::Completed));
        }
        if let Some(retry_after) = inner.object_busy(object_id, holder, now) {
            return Ok(LockedClaim::Busy { retry_after });
        }
        let token = match inner.claim(event_id, event_type, lease, now, self.max_records)? {
            Claim::Acquired(token) => token,
            refused => return Ok(LockedClaim::Refused(refused)),
        };
        let obj = inner.object(object_id, self.max_records, now);
        obj.holder = Some(holder.to_owned());
        obj.lock_until_ms = now.saturating_add(ms(lease));
        Ok(LockedClaim::Acquired {
            watermark: obj.watermark.clone(),
            token,
        })
    }

    async fn complete_applied(
        &self,
        token: &ClaimToken,
        object_id: &str,
        holder: &str,
        applied: &Watermark,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        // The lock must still name this holder (even run out): another holder may have
        // applied a newer event meanwhile.
        let held = inner
            .objects
            .get(object_id)
            .is_some_and(|o| o.holder.as_deref() == Some(holder));
        match inner.records.get_mut(token.event_id()) {
            Some(rec)
                if held && rec.fence == token.fence() && rec.status == RecordStatus::Processing =>
            {
                rec.status = RecordStatus::Completed;
                rec.completed_at_ms = Some(now);
                rec.updated_ms = now;
            }
            // A completion this token made already (the watermark moved with it): done.
            Some(rec) if completed_by(rec, token) => return Ok(()),
            _ => {
                return Err(StoreError::LeaseLost {
                    event_id: token.event_id().clone(),
                })
            }
        }
        inner.settled(token.event_id(), RecordStatus::Completed, now);
        let obj = inner.object(object_id, self.max_records, now);
        if advances(obj.watermark.as_ref(), applied) {
            obj.watermark = Some(applied.clone());
        }
        obj.holder = None;
        Ok(())
    }

    async fn unlock_object(&self, object_id: &str, holder: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(obj) = inner.objects.get_mut(object_id) {
            if obj.holder.as_deref() == Some(holder) {
                obj.holder = None;
            }
        }
        Ok(())
    }

    async fn watermark(&self, object_id: &str) -> Result<Option<Watermark>, StoreError> {
        Ok(self
            .lock()
            .objects
            .get(object_id)
            .and_then(|o| o.watermark.clone()))
    }

    async fn advance_watermark(&self, key: &str, to: &Watermark) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        let obj = inner.object(key, self.max_records, now);
        if advances(obj.watermark.as_ref(), to) {
            obj.watermark = Some(to.clone());
        }
        Ok(())
    }
}

impl MemoryStore {
    /// Up to `limit` failed records by when they were first seen, then id: after the
    /// place `after` when given.
    fn failed_after(&self, after: Option<(i64, EventId)>, limit: usize) -> Vec<EventRecord> {
        let inner = self.lock();
        let mut failed: Vec<(i64, &EventId, &Rec)> = inner
            .records
            .iter()
            .filter(|(_, r)| r.status == RecordStatus::Failed)
            .map(|(id, r)| (r.first_seen_ms, id, r))
            .filter(|(seen, id, _)| after.as_ref().map_or(true, |(s, a)| (*seen, *id) > (*s, a)))
            .collect();
        failed.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        failed
            .into_iter()
            .take(limit)
            .map(|(_, id, r)| record_of(id, r))
            .collect()
    }

    /// [`StoreAdmin::fail_abandoned`].
    fn abandon(&self, lease_ended: Duration) -> u64 {
        let now = self.clock.now_millis();
        let before = now.saturating_sub(ms(lease_ended));
        let mut inner = self.lock();
        let abandoned: Vec<EventId> = inner
            .records
            .iter()
            .filter(|(_, r)| r.status == RecordStatus::Processing && r.lease_until_ms < before)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &abandoned {
            if let Some(rec) = inner.records.get_mut(id) {
                rec.status = RecordStatus::Failed;
                rec.last_error = Some(crate::idempotency::ABANDONED_ERROR.to_owned());
                rec.lease_until_ms = now;
                rec.updated_ms = now;
            }
            inner.settled(id, RecordStatus::Failed, now);
        }
        abandoned.len() as u64
    }
}

#[async_trait]
impl StoreAdmin for MemoryStore {
    async fn fail_abandoned(&self, lease_ended: Duration) -> Result<u64, StoreError> {
        Ok(self.abandon(lease_ended))
    }

    async fn record(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        Ok(self.lock().records.get(id).map(|r| record_of(id, r)))
    }

    async fn failed_events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        Ok(self.failed_after(None, limit))
    }

    async fn failed_events_after(
        &self,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let Some(place) = self
            .lock()
            .records
            .get(after)
            .map(|r| (r.first_seen_ms, after.clone()))
        else {
            return Ok(Vec::new());
        };
        Ok(self.failed_after(Some(place), limit))
    }

    /// Records abandoned claims as failed ([`fail_abandoned`](StoreAdmin::fail_abandoned)
    /// with [`ABANDONED_AFTER`](crate::ABANDONED_AFTER)), then deletes completed and
    /// failed records last changed before the retention period. A claim is never
    /// deleted, its lease live or not, as on the SQL stores: one whose lease ran out is
    /// taken over by the event's next delivery (its attempts counted on) or, past the
    /// hour, recorded as failed and kept for the retention from then.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.abandon(crate::idempotency::ABANDONED_AFTER);
        let cutoff = self.clock.now_millis().saturating_sub(ms(self.retention));
        let mut inner = self.lock();
        let before = inner.records.len();
        inner.records.retain(|_, r| match r.status {
            RecordStatus::Processing => true,
            RecordStatus::Completed | RecordStatus::Failed => r.updated_ms >= cutoff,
        });
        let Inner {
            records,
            completed,
            failed,
            objects,
            ..
        } = &mut *inner;
        completed.retain(|(id, _)| records.contains_key(id));
        failed.retain(|(id, _)| records.contains_key(id));
        // Watermarks outlive their events' records by the same retention: an event
        // older than that is past Stripe's retries and its object's next event decides.
        // A locked object stays, and for the retention after its lock ran out (its
        // holder may still complete), as on the SQL stores.
        // A reconciler's cursor is kept whatever its age.
        objects.retain(|k, o| {
            o.updated_ms >= cutoff
                || (o.holder.is_some() && o.lock_until_ms >= cutoff)
                || super::is_cursor_key(k)
        });
        Ok((before - inner.records.len()) as u64)
    }
}
