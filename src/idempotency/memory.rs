//! The in-process store.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    new_fence, truncate_error, Claim, ClaimToken, EventRecord, IdempotencyStore, RecordStatus,
    StoreError, DEFAULT_RETENTION,
};
use crate::event::EventId;
use crate::signature::{Clock, SystemClock};

/// The default number of records a [`MemoryStore`] keeps before evicting completed ones.
pub const DEFAULT_MEMORY_CAPACITY: usize = 100_000;

/// An in-process [`IdempotencyStore`]: for tests and single-process services.
///
/// Claims are atomic (one operation on a map behind a mutex, never held across an
/// `.await`) and leases expire as in the durable stores, but everything is forgotten when
/// the process exits: a service that restarts or runs several replicas needs a durable
/// store (`SqliteStore`, `PostgresStore`, `RedisStore`).
///
/// Memory is bounded: past [`with_capacity`](Self::with_capacity) records it evicts
/// completed records, oldest completion first. It never evicts a processing or failed
/// record, so nothing in flight is lost.
///
/// ```
/// # tokio_test_block_on(async {
/// use std::time::Duration;
/// use stripe_webhooks::{Claim, EventId, IdempotencyStore, MemoryStore};
///
/// let store = MemoryStore::new();
/// let id = EventId::new("evt_1");
/// let Claim::Acquired(token) = store.claim(&id, "customer.created", Duration::from_secs(30)).await? else {
///     unreachable!()
/// };
/// store.complete(&token).await?;
/// assert_eq!(store.claim(&id, "customer.created", Duration::from_secs(30)).await?, Claim::Completed);
/// # Ok::<(), stripe_webhooks::StoreError>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    capacity: usize,
    retention: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<EventId, Rec>,
    /// Completed records in completion order, for eviction.
    completed: VecDeque<(EventId, i64)>,
}

#[derive(Debug)]
struct Rec {
    event_type: String,
    status: RecordStatus,
    attempts: u32,
    fence: u128,
    lease_until_ms: i64,
    last_error: Option<String>,
    first_seen_ms: i64,
    completed_at_ms: Option<i64>,
    updated_ms: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the system clock, [`DEFAULT_MEMORY_CAPACITY`] and
    /// [`DEFAULT_RETENTION`].
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            clock: Arc::new(SystemClock),
            capacity: DEFAULT_MEMORY_CAPACITY,
            retention: DEFAULT_RETENTION,
        }
    }

    /// Replaces the clock (leases and retention are judged by it).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How many records to keep before evicting completed ones (at least 1).
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How long completed and failed records are kept by [`purge_expired`](IdempotencyStore::purge_expired).
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

    fn with_claim<T>(
        &self,
        token: &ClaimToken,
        f: impl FnOnce(&mut Rec, i64) -> T,
    ) -> Result<T, StoreError> {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        match inner.records.get_mut(token.event_id()) {
            Some(rec) if rec.fence == token.fence() && rec.status == RecordStatus::Processing => {
                Ok(f(rec, now))
            }
            _ => Err(StoreError::LeaseLost {
                event_id: token.event_id().clone(),
            }),
        }
    }
}

impl Inner {
    fn evict(&mut self, capacity: usize) {
        while self.records.len() > capacity {
            let Some((id, at)) = self.completed.pop_front() else {
                return;
            };
            // One lookup: the queue entry may be stale (the record was purged, or is no
            // longer the completion the queue saw).
            if let Entry::Occupied(e) = self.records.entry(id) {
                let r = e.get();
                if r.status == RecordStatus::Completed && r.completed_at_ms == Some(at) {
                    e.remove();
                }
            }
        }
    }
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
        event_type: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = self.clock.now_millis();
        let lease_until_ms = now.saturating_add(ms(lease));
        let fence = new_fence();
        let mut inner = self.lock();
        let attempt = match inner.records.entry(id.clone()) {
            Entry::Occupied(mut e) => {
                let rec = e.get_mut();
                match rec.status {
                    RecordStatus::Completed => return Ok(Claim::Completed),
                    RecordStatus::Processing if rec.lease_until_ms > now => {
                        let left = u64::try_from(rec.lease_until_ms - now).unwrap_or(0);
                        return Ok(Claim::InProgress {
                            retry_after: Duration::from_millis(left),
                        });
                    }
                    RecordStatus::Processing | RecordStatus::Failed => {
                        rec.status = RecordStatus::Processing;
                        rec.attempts = rec.attempts.saturating_add(1);
                        rec.fence = fence;
                        rec.lease_until_ms = lease_until_ms;
                        rec.updated_ms = now;
                        rec.attempts
                    }
                }
            }
            Entry::Vacant(e) => {
                e.insert(Rec {
                    event_type: event_type.to_owned(),
                    status: RecordStatus::Processing,
                    attempts: 1,
                    fence,
                    lease_until_ms,
                    last_error: None,
                    first_seen_ms: now,
                    completed_at_ms: None,
                    updated_ms: now,
                });
                inner.evict(self.capacity);
                1
            }
        };
        Ok(Claim::Acquired(ClaimToken::new(id.clone(), fence, attempt)))
    }

    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        match inner.records.get_mut(token.event_id()) {
            Some(rec) if rec.fence == token.fence() && rec.status == RecordStatus::Processing => {
                rec.status = RecordStatus::Completed;
                rec.completed_at_ms = Some(now);
                rec.updated_ms = now;
                inner.completed.push_back((token.event_id().clone(), now));
                inner.evict(self.capacity);
                Ok(())
            }
            _ => Err(StoreError::LeaseLost {
                event_id: token.event_id().clone(),
            }),
        }
    }

    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        self.with_claim(token, |rec, now| {
            rec.status = RecordStatus::Failed;
            rec.last_error = Some(truncate_error(reason).to_owned());
            rec.lease_until_ms = now;
            rec.updated_ms = now;
        })
    }

    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.with_claim(token, |rec, now| {
            rec.lease_until_ms = now.saturating_add(ms(lease));
            rec.updated_ms = now;
        })
    }

    async fn record(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        Ok(self.lock().records.get(id).map(|r| record_of(id, r)))
    }

    async fn failed_events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let inner = self.lock();
        let mut failed: Vec<EventRecord> = inner
            .records
            .iter()
            .filter(|(_, r)| r.status == RecordStatus::Failed)
            .map(|(id, r)| record_of(id, r))
            .collect();
        failed.sort_by_key(|r| r.first_seen_ms);
        failed.truncate(limit);
        Ok(failed)
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let cutoff = self.clock.now_millis().saturating_sub(ms(self.retention));
        let mut inner = self.lock();
        let before = inner.records.len();
        inner.records.retain(|_, r| match r.status {
            RecordStatus::Processing => true,
            RecordStatus::Completed | RecordStatus::Failed => r.updated_ms >= cutoff,
        });
        let Inner { records, completed } = &mut *inner;
        completed.retain(|(id, _)| records.contains_key(id));
        Ok((before - inner.records.len()) as u64)
    }
}
