//! The memory queue: for tests, examples and single-process tools. Not durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Enqueued, Job, JobRecord, JobState, NewJob, PayloadKind, Queue, QueueAdmin, QueueCounts,
};
use crate::clock::{Clock, SteadyClock};
use crate::event::EventId;
use crate::idempotency::{truncate_error, ClaimToken, StoreError};

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    event_id: EventId,
    event_type: String,
    kind: PayloadKind,
    object_id: Option<String>,
    created: i64,
    body: Vec<u8>,
    state: JobState,
    attempts: u32,
    fence: u128,
    /// When it is due (queued, retrying) or its lease ends (running).
    run_at: i64,
    last_error: Option<String>,
    enqueued_at: i64,
    finished_at: Option<i64>,
}

impl Entry {
    fn pending(&self) -> bool {
        matches!(
            self.state,
            JobState::Queued | JobState::Retrying | JobState::Running
        )
    }

    fn record(&self, key: &str) -> JobRecord {
        JobRecord::new(
            EventId::new(key),
            self.event_id.clone(),
            self.event_type.clone(),
            self.kind,
            self.state,
            self.attempts,
            self.last_error.clone(),
            self.enqueued_at,
            self.pending().then_some(self.run_at),
            self.finished_at,
            self.body.clone(),
        )
    }
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, Entry>,
    next_seq: u64,
}

impl Inner {
    /// Up to `limit` jobs in `state` in enqueue order, after the one numbered `after`.
    fn list(&self, state: JobState, after: Option<u64>, limit: usize) -> Vec<JobRecord> {
        let mut v: Vec<(&String, &Entry)> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.state == state && after.map_or(true, |a| e.seq > a))
            .collect();
        v.sort_by_key(|(_, e)| e.seq);
        v.into_iter()
            .take(limit)
            .map(|(k, e)| e.record(k))
            .collect()
    }
}

/// A [`Queue`] in this process's memory, judged by an injectable [`Clock`]: for tests,
/// examples and tools that run in one process. Jobs are lost when the process exits, so a
/// service should queue into [`SqliteQueue`](crate::queue::SqliteQueue),
/// [`PostgresQueue`](crate::queue::PostgresQueue) or
/// [`RedisQueue`](crate::queue::RedisQueue). Its clones share the jobs.
///
/// Completed jobs stay (a duplicate of one is answered
/// [`Enqueued::Duplicate`](crate::queue::Enqueued::Duplicate)) until
/// [`purge_completed`](crate::queue::QueueAdmin::purge_completed) removes them, and dead
/// ones until they are requeued: a long-running process purges now and then, or memory
/// grows, and so does the time each take spends walking the jobs.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use stripe_webhooks::queue::{Enqueued, MemoryQueue, NewJob, Queue};
/// use stripe_webhooks::testing;
///
/// let queue = MemoryQueue::new();
/// let body = testing::event_json("evt_1", "customer.created", r#"{"id":"cus_1","object":"customer"}"#);
/// let job = NewJob::parse(body.as_bytes())?;
/// assert_eq!(queue.enqueue(&job).await?, Enqueued::Queued);
/// assert_eq!(queue.enqueue(&job).await?, Enqueued::Duplicate);
///
/// let taken = queue.take(10, Duration::from_secs(30), false).await?;
/// assert_eq!(taken[0].key().as_str(), "evt_1");
/// queue.complete(&taken[0].token).await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// An empty queue on a [`SteadyClock`](crate::SteadyClock): the system clock's
    /// time, moved by a monotonic timer, so a step of the system clock does not end or
    /// stretch leases.
    pub fn new() -> Self {
        Self::with_clock(SteadyClock::new())
    }

    /// An empty queue on `clock`.
    pub fn with_clock(clock: impl Clock + 'static) -> Self {
        Self {
            inner: Arc::default(),
            clock: Arc::new(clock),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave the map half-written: every
        // change is one assignment.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Runs `f` on the job if `token` still holds it.
    fn fenced(
        &self,
        token: &ClaimToken,
        f: impl FnOnce(&mut Entry, i64),
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut inner = self.lock();
        match inner.jobs.get_mut(token.event_id().as_str()) {
            Some(e) if e.state == JobState::Running && e.fence == token.fence() => {
                f(e, now);
                Ok(())
            }
            _ => Err(StoreError::LeaseLost {
                event_id: token.event_id().clone(),
            }),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `e` may be taken now under per-object order.
fn in_object_order(inner: &Inner, key: &str, e: &Entry, now: i64) -> bool {
    let Some(object) = &e.object_id else {
        return true;
    };
    !inner.jobs.iter().any(|(k, o)| {
        k != key
            && o.object_id.as_ref() == Some(object)
            && ((o.state == JobState::Running && o.run_at > now)
                || (o.pending() && (o.created, o.seq) < (e.created, e.seq)))
    })
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn last_error(&self, key: &EventId) -> Result<Option<String>, StoreError> {
        super::recorded_error(self, key).await
    }
    async fn enqueue(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError> {
        let now = self.now();
        let mut inner = self.lock();
        if inner.jobs.contains_key(job.key.as_str()) {
            return Ok(Enqueued::Duplicate);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.jobs.insert(
            job.key.as_str().to_owned(),
            Entry {
                seq,
                event_id: job.event_id.clone(),
                event_type: job.event_type.clone(),
                kind: job.kind,
                object_id: job.object_id.clone(),
                created: job.created,
                body: job.body.to_vec(),
                state: JobState::Queued,
                attempts: 0,
                fence: 0,
                run_at: now,
                last_error: None,
                enqueued_at: now,
                finished_at: None,
            },
        );
        Ok(Enqueued::Queued)
    }

    async fn take(
        &self,
        max: usize,
        lease: Duration,
        per_object_order: bool,
    ) -> Result<Vec<Job>, StoreError> {
        let now = self.now();
        let mut inner = self.lock();
        let mut due: Vec<(i64, u64, String)> = inner
            .jobs
            .iter()
            .filter(|(_, e)| e.pending() && e.run_at <= now)
            .map(|(k, e)| (e.run_at, e.seq, k.clone()))
            .collect();
        due.sort();
        let mut taken = Vec::new();
        for (_, _, key) in due {
            if taken.len() >= max {
                break;
            }
            let ok = match inner.jobs.get(&key) {
                Some(e) => !per_object_order || in_object_order(&inner, &key, e, now),
                None => false,
            };
            let Some(e) = inner.jobs.get_mut(&key).filter(|_| ok) else {
                continue;
            };
            e.attempts = e.attempts.saturating_add(1);
            let token = ClaimToken::new(EventId::new(&key), e.attempts);
            e.fence = token.fence();
            e.state = JobState::Running;
            // At least a millisecond, as the other queues: a lease that ends as it is
            // taken would let a take a moment later take the job again.
            e.run_at = now.saturating_add(millis(lease).max(1));
            taken.push(
                Job::new(
                    token,
                    e.event_id.clone(),
                    e.event_type.clone(),
                    e.kind,
                    e.body.clone(),
                )
                .with_created(e.created),
            );
        }
        Ok(taken)
    }

    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        // At least a millisecond, as a take's: a lease that ended as it was renewed would
        // let a take take the job again while its holder runs it.
        self.fenced(token, |e, now| {
            e.run_at = now.saturating_add(millis(lease).max(1))
        })
    }

    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        let done = self.fenced(token, |e, now| {
            e.state = JobState::Completed;
            e.finished_at = Some(now);
        });
        // A completion this token made already (a retry whose first answer was lost).
        let by_token = |e: &Entry| e.state == JobState::Completed && e.fence == token.fence();
        match done {
            Err(StoreError::LeaseLost { .. })
                if self
                    .lock()
                    .jobs
                    .get(token.event_id().as_str())
                    .is_some_and(by_token) =>
            {
                Ok(())
            }
            done => done,
        }
    }

    async fn fail(
        &self,
        token: &ClaimToken,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.fenced(token, |e, now| {
            e.last_error = Some(truncate_error(error).into_owned());
            match retry_in {
                Some(d) => {
                    e.state = JobState::Retrying;
                    e.run_at = now.saturating_add(millis(d));
                }
                None => {
                    e.state = JobState::Dead;
                    e.finished_at = Some(now);
                }
            }
        })
    }

    async fn release(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.fenced(token, |e, now| {
            e.state = JobState::Queued;
            e.attempts = e.attempts.saturating_sub(1);
            e.run_at = now;
        })
    }
}

#[async_trait]
impl QueueAdmin for MemoryQueue {
    async fn counts(&self) -> Result<QueueCounts, StoreError> {
        let now = self.now();
        let inner = self.lock();
        let mut c = [0u64; 5];
        let mut oldest: Option<i64> = None;
        for e in inner.jobs.values() {
            let i = JobState::ALL
                .iter()
                .position(|s| *s == e.state)
                .unwrap_or(0);
            c[i] += 1;
            if e.state == JobState::Queued {
                // Queued since `run_at` (enqueued, released or requeued then).
                oldest = Some(oldest.map_or(e.run_at, |o| o.min(e.run_at)));
            }
        }
        let age = oldest.map(|t| Duration::from_millis(u64::try_from(now - t).unwrap_or(0)));
        Ok(QueueCounts::new(c[0], c[1], c[2], c[4], c[3], age))
    }

    async fn jobs(&self, state: JobState, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        Ok(self.lock().list(state, None, limit))
    }

    async fn jobs_after(
        &self,
        state: JobState,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let inner = self.lock();
        Ok(match inner.jobs.get(after.as_str()) {
            Some(e) => inner.list(state, Some(e.seq), limit),
            None => Vec::new(),
        })
    }

    async fn job(&self, key: &EventId) -> Result<Option<JobRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner.jobs.get(key.as_str()).map(|e| e.record(key.as_str())))
    }

    async fn recent(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let inner = self.lock();
        let mut v: Vec<(&String, &Entry)> = inner.jobs.iter().collect();
        v.sort_by_key(|(_, e)| std::cmp::Reverse(e.seq));
        Ok(v.into_iter()
            .take(limit)
            .map(|(k, e)| e.record(k))
            .collect())
    }

    async fn requeue(&self, key: &EventId) -> Result<bool, StoreError> {
        let now = self.now();
        let mut inner = self.lock();
        match inner.jobs.get_mut(key.as_str()) {
            Some(e) if matches!(e.state, JobState::Dead | JobState::Retrying) => {
                e.state = JobState::Queued;
                e.attempts = 0;
                e.run_at = now;
                e.finished_at = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn requeue_dead(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let mut inner = self.lock();
        let mut n = 0;
        for e in inner
            .jobs
            .values_mut()
            .filter(|e| e.state == JobState::Dead)
        {
            e.state = JobState::Queued;
            e.attempts = 0;
            e.run_at = now;
            e.finished_at = None;
            n += 1;
        }
        Ok(n)
    }

    async fn purge_completed(&self, older_than: Duration, batch: usize) -> Result<u64, StoreError> {
        let cutoff = self.now().saturating_sub(millis(older_than));
        let mut inner = self.lock();
        let old: Vec<String> = inner
            .jobs
            .iter()
            .filter(|(_, e)| {
                e.state == JobState::Completed && e.finished_at.is_some_and(|t| t <= cutoff)
            })
            .map(|(k, _)| k.clone())
            .take(batch)
            .collect();
        for k in &old {
            inner.jobs.remove(k);
        }
        Ok(old.len() as u64)
    }
}
