//! Ack fast, process later: a durable queue of verified events, and the workers that run
//! them.
//!
//! - [`Queue`]: what the ingest side ([`Processor::queued`](crate::Processor::queued))
//!   and the [`Worker`] need of a queue; [`QueueAdmin`]: the operator's queries;
//! - `memory`: [`MemoryQueue`], for tests and single-process tools;
//! - `sql`: [`SqliteQueue`] and [`PostgresQueue`], beside the SQL stores, in their database;
//! - `redis`: [`RedisQueue`], on Redis Streams with a consumer group;
//! - `worker`: [`Worker`] and [`RetryPolicy`] (feature `tokio`).
//!
//! A job is the raw verified body of one event, keyed by the event's dedupe key (its id,
//! or a thin event's `snapshot_event`), so a duplicate delivery of a queued, running,
//! finished or dead event queues nothing.

mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite_batch;
#[cfg(feature = "tokio")]
mod worker;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::event::{Event, EventHead, EventId, EventNotification, ParseError};
use crate::idempotency::{ClaimToken, StoreError};

pub use memory::MemoryQueue;
#[cfg(feature = "redis")]
pub use redis::RedisQueue;
#[cfg(feature = "postgres")]
pub use sql::PostgresQueue;
#[cfg(feature = "sqlite")]
pub use sql::SqliteQueue;
#[cfg(feature = "tokio")]
pub use worker::{
    RetryPolicy, Worker, WorkerHandle, DEFAULT_JOB_DEADLINE, MAX_JOB_LEASE, MAX_RETRY_DELAY,
};

/// Which payload a job holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadKind {
    /// A v1 snapshot event (`"object": "event"`).
    Snapshot,
    /// A v2 thin event notification.
    Thin,
}

impl PayloadKind {
    /// The name queues write: `snapshot` or `thin`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Snapshot => "snapshot",
            PayloadKind::Thin => "thin",
        }
    }

    /// Reads a name written by [`as_str`](Self::as_str); anything else is `None`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "snapshot" => Some(PayloadKind::Snapshot),
            "thin" => Some(PayloadKind::Thin),
            _ => None,
        }
    }
}

/// One verified event to queue: its dedupe key, what the workers need to schedule it,
/// and the raw body, borrowed (the queue writes it as it is). Its `Debug` output gives the
/// body's length, not the body (customers' names, emails and addresses).
#[derive(Clone)]
#[non_exhaustive]
pub struct NewJob<'a> {
    /// The dedupe key: the event id, or a thin event's
    /// [`dedupe_key`](crate::EventNotification::dedupe_key).
    pub key: EventId,
    /// The event id.
    pub event_id: EventId,
    /// The event type as Stripe wrote it.
    pub event_type: String,
    /// Snapshot or thin.
    pub kind: PayloadKind,
    /// The object the event is about (`data.object.id`, or a thin event's related
    /// object; `acct_…/id` for a connected account's event, `acct_…/test/id` for its
    /// test-mode one, and `product/gold`, `price/gold` or `coupon/gold` for an id you
    /// chose for a product, a plan or a coupon, as the ordering guard keys it), for
    /// per-object order.
    pub object_id: Option<String>,
    /// The event's `created`, in Unix seconds (0 when unknown).
    pub created: i64,
    /// The raw verified body.
    pub body: &'a [u8],
}

impl<'a> NewJob<'a> {
    /// A job for a parsed snapshot event and its raw body.
    pub fn snapshot(event: &Event, body: &'a [u8]) -> Self {
        Self::from_head(EventHead::of(event), body)
    }

    /// A job for a snapshot event's head (read without typing its object) and body.
    pub(crate) fn from_head(head: EventHead, body: &'a [u8]) -> Self {
        Self {
            key: head.id.clone(),
            event_id: head.id,
            event_type: head.event_type,
            kind: PayloadKind::Snapshot,
            // An empty id names no object (every queue reads it so).
            object_id: head.object_id.filter(|id| !id.is_empty()),
            created: head.created,
            body,
        }
    }

    /// A job for a parsed thin event and its raw body, keyed by its
    /// [`dedupe_key`](EventNotification::dedupe_key) when `dedupe_on_snapshot`, else by its
    /// own id.
    pub fn thin(n: &EventNotification, body: &'a [u8], dedupe_on_snapshot: bool) -> Self {
        let key = if dedupe_on_snapshot {
            n.dedupe_key().clone()
        } else {
            n.id.clone()
        };
        Self {
            key,
            event_id: n.id.clone(),
            event_type: n.event_type.as_str().to_owned(),
            kind: PayloadKind::Thin,
            // Within the connected account, as the ordering guard keys it.
            object_id: n
                .related_object_id()
                .filter(|id| !id.is_empty())
                .and_then(|_| n.ordering_key()),
            created: n.created_unix().unwrap_or(0),
            body,
        }
    }

    /// Parses a verified body of either family into a job (thin events keyed by their
    /// snapshot twin).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when the body is not a Stripe event.
    pub fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        match EventHead::from_slice(body) {
            Ok(head) => Ok(Self::from_head(head, body)),
            Err(ParseError::ThinEventNotification) => {
                let n = EventNotification::from_slice(body)?;
                Ok(Self::thin(&n, body, true))
            }
            Err(e) => Err(e),
        }
    }
}

/// The answer to [`Queue::enqueue`]. A duplicate is a value, never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enqueued {
    /// The job was written.
    Queued,
    /// A job with this key exists (queued, running, retrying, completed or dead);
    /// nothing was written.
    Duplicate,
}

/// A job a worker took: its lease token and its payload.
#[derive(Clone)]
#[non_exhaustive]
pub struct Job {
    /// The lease: every later call on the job is fenced by it. Its
    /// [`event_id`](ClaimToken::event_id) is the job's key and its
    /// [`attempt`](ClaimToken::attempt) counts this run.
    pub token: ClaimToken,
    /// The event id.
    pub event_id: EventId,
    /// The event type as Stripe wrote it.
    pub event_type: String,
    /// Snapshot or thin.
    pub kind: PayloadKind,
    /// The raw verified body.
    pub body: Vec<u8>,
    /// The event's `created`, in Unix seconds (0 when the queue does not know it).
    pub created: i64,
}

impl Job {
    /// A taken job; queues build them in [`Queue::take`].
    pub fn new(
        token: ClaimToken,
        event_id: EventId,
        event_type: String,
        kind: PayloadKind,
        body: Vec<u8>,
    ) -> Self {
        Self {
            token,
            event_id,
            event_type,
            kind,
            body,
            created: 0,
        }
    }

    /// The same job, with the event's `created` (Unix seconds): the workers report the
    /// lag from it.
    #[must_use]
    pub fn with_created(mut self, created: i64) -> Self {
        self.created = created;
        self
    }

    /// The job's key (its dedupe key).
    pub fn key(&self) -> &EventId {
        self.token.event_id()
    }
}

impl fmt::Debug for NewJob<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewJob")
            .field("key", &self.key)
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("kind", &self.kind)
            .field("object_id", &self.object_id)
            .field("created", &self.created)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl fmt::Debug for JobRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobRecord")
            .field("key", &self.key)
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("last_error", &self.last_error)
            .field("enqueued_at_ms", &self.enqueued_at_ms)
            .field("run_at_ms", &self.run_at_ms)
            .field("finished_at_ms", &self.finished_at_ms)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("token", &self.token)
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("kind", &self.kind)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker holds it (its lease may have expired: then it is taken over).
    Running,
    /// Its last run failed; it runs again at `run_at`.
    Retrying,
    /// Its handler succeeded (or nothing handles its type).
    Completed,
    /// It failed its last attempt, or can never run (its body is not an event). Kept,
    /// with its last error, until an operator requeues it.
    Dead,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Completed,
        JobState::Dead,
    ];

    /// The name queues write.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`JobState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}: expected queued, running, retrying, completed or dead")]
pub struct UnknownJobState(pub String);

impl std::str::FromStr for JobState {
    type Err = UnknownJobState;

    fn from_str(s: &str) -> Result<Self, UnknownJobState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_owned()))
    }
}

/// What a queue keeps about one job, for operators. Its `Debug` output (as its JSON)
/// leaves the body out, giving its length.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct JobRecord {
    /// The job's key (the dedupe key).
    pub key: EventId,
    /// The event id.
    pub event_id: EventId,
    /// The event type.
    pub event_type: String,
    /// Snapshot or thin, as its name; `unknown` for a kind this version cannot read
    /// (written by a newer release).
    pub kind: &'static str,
    /// Where it stands.
    pub state: JobState,
    /// How many runs were started.
    pub attempts: u32,
    /// The last run's error, at most [`MAX_ERROR_LEN`](crate::MAX_ERROR_LEN) bytes.
    pub last_error: Option<String>,
    /// When it was queued, in Unix milliseconds.
    pub enqueued_at_ms: i64,
    /// When it runs next (queued, retrying) or its lease ends (running), in Unix
    /// milliseconds.
    pub run_at_ms: Option<i64>,
    /// When it completed or died, in Unix milliseconds.
    pub finished_at_ms: Option<i64>,
    /// The raw verified body, as queued.
    #[serde(skip)]
    pub body: Vec<u8>,
}

impl JobRecord {
    /// The body re-indented two spaces a level, its keys and numbers exactly as Stripe
    /// wrote them and in their order (a `serde_json::Value` would reorder them); `None`
    /// when the body is not JSON. A body nested so deep that re-indenting would make it
    /// more than eight times longer is given back as written.
    ///
    /// ```
    /// use stripe_webhooks::queue::{JobRecord, JobState, PayloadKind};
    ///
    /// let r = JobRecord::new(
    ///     "evt_1".into(), "evt_1".into(), "invoice.paid".into(), PayloadKind::Snapshot,
    ///     JobState::Dead, 3, None, 0, None, None, br#"{"z":1,"a":[]}"#.to_vec(),
    /// );
    /// assert_eq!(r.pretty_body().as_deref(), Some("{\n  \"z\": 1,\n  \"a\": []\n}"));
    /// ```
    pub fn pretty_body(&self) -> Option<String> {
        crate::display::pretty_json(&self.body)
    }

    /// Builds a record; queues use it to answer [`QueueAdmin`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: EventId,
        event_id: EventId,
        event_type: String,
        kind: PayloadKind,
        state: JobState,
        attempts: u32,
        last_error: Option<String>,
        enqueued_at_ms: i64,
        run_at_ms: Option<i64>,
        finished_at_ms: Option<i64>,
        body: Vec<u8>,
    ) -> Self {
        Self {
            key,
            event_id,
            event_type,
            kind: kind.as_str(),
            state,
            attempts,
            last_error,
            enqueued_at_ms,
            run_at_ms,
            finished_at_ms,
            body,
        }
    }

    /// The record of a job whose stored kind is `name`: `unknown` when it is not a
    /// [`PayloadKind`]'s.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) fn with_kind_name(mut self, name: &str) -> Self {
        self.kind = PayloadKind::from_name(name).map_or("unknown", PayloadKind::as_str);
        self
    }
}

/// How many jobs are in each state, and how long the oldest queued one has waited.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueCounts {
    /// Waiting for a worker (due now or not).
    pub queued: u64,
    /// Held by a worker.
    pub running: u64,
    /// Failed, waiting for their next attempt.
    pub retrying: u64,
    /// Dead: out of attempts, waiting for an operator.
    pub dead: u64,
    /// Completed and not yet purged.
    pub completed: u64,
    /// How long the oldest queued job has waited, in milliseconds, since it was queued
    /// last (a dead job requeued now has not waited).
    pub oldest_queued_age_ms: Option<u64>,
}

impl QueueCounts {
    /// Counts, with the age of the oldest queued job.
    pub fn new(
        queued: u64,
        running: u64,
        retrying: u64,
        dead: u64,
        completed: u64,
        oldest_queued_age: Option<Duration>,
    ) -> Self {
        Self {
            queued,
            running,
            retrying,
            dead,
            completed,
            oldest_queued_age_ms: oldest_queued_age
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The number of jobs in `state`.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::Retrying => self.retrying,
            JobState::Completed => self.completed,
            JobState::Dead => self.dead,
        }
    }
}

/// A durable queue of verified events. The ingest side
/// ([`Processor::queued`](crate::Processor::queued)) calls [`enqueue`](Self::enqueue);
/// a [`Worker`] calls the rest.
///
/// # The queue contract
///
/// - `enqueue` is one atomic step keyed by [`NewJob::key`]: of any number of concurrent
///   enqueues of one key, one is [`Enqueued::Queued`], and a key is never queued twice
///   while its job exists in any state.
/// - `take` hands a job to at most one worker at a time: it moves due jobs (queued,
///   retrying whose time came, or running whose lease ended) to running, with a fresh
///   fence ([`ClaimToken`]) and the attempt count incremented. With `per_object_order`,
///   a job about an object is taken only when no earlier job (by `created`, then by
///   queue order) about that object is queued, retrying or running, and no other job of
///   it runs under a live lease.
/// - `extend`, `complete`, `fail` and `release` change the job only while it holds the
///   token's fence, and answer [`StoreError::LeaseLost`] otherwise; but `complete`
///   answers `Ok` for a job this token's fence completed already (a retried call).
/// - Leases and retry times are judged by one clock for every process (the
///   database's), never a worker's. A lease that `take` or `extend` gives lasts at
///   least a millisecond.
/// - That clock is the database host's wall clock (SQLite's is the machine's, shared by
///   the processes on it): a jump forward of more than a lease's time left ends the
///   lease early, and another take may run the job beside its holder until the holder's
///   next renewal finds the lease lost. Keep the host's clock slewed (NTP), not stepped.
///
/// `testing::queue_conformance` (feature `testing`) checks all of it.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Writes a job unless one with its key exists.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails; the processor answers 503 and
    /// Stripe delivers the event again.
    async fn enqueue(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError>;

    /// Takes up to `max` due jobs, leasing each for `lease`: the SQL and memory queues
    /// take the longest due first; Redis takes jobs whose lease ended first, then new
    /// ones in the order they were queued.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn take(
        &self,
        max: usize,
        lease: Duration,
        per_object_order: bool,
    ) -> Result<Vec<Job>, StoreError>;

    /// Moves the job's lease to end `lease` from now.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] if the token no longer holds the job.
    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError>;

    /// Marks the job completed. A completion this token made already answers `Ok`, so a
    /// call retried after its first answer was lost (a timeout) is not taken for a lost
    /// lease.
    ///
    /// # Errors
    ///
    /// As [`extend`](Self::extend).
    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError>;

    /// Records a failed run: the job runs again after `retry_in`, or, when `None`, it is
    /// dead. `error` may be cut to [`MAX_ERROR_LEN`](crate::MAX_ERROR_LEN) bytes.
    ///
    /// # Errors
    ///
    /// As [`extend`](Self::extend).
    async fn fail(
        &self,
        token: &ClaimToken,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError>;

    /// Gives the job back (a worker shutting down): queued again, due now (behind jobs
    /// that were due before it), and this run does not count as an attempt.
    ///
    /// # Errors
    ///
    /// As [`extend`](Self::extend).
    async fn release(&self, token: &ClaimToken) -> Result<(), StoreError>;

    /// Waits until a job may be due, or `max_wait` passes. Queues that can be woken
    /// (Postgres's `LISTEN`) return early when a job is queued; the default returns
    /// `false` at once, and the worker sleeps its poll interval instead.
    async fn wait_for_jobs(&self, max_wait: Duration) -> bool {
        let _ = max_wait;
        false
    }

    /// The least time a worker gives a [`take`](Self::take) before abandoning it (its
    /// store timeout is raised to this). An abandoned statement can still run to its end
    /// and commit, leaving the jobs it took running under a fence nobody holds until
    /// their lease ends. The default is none; the SQLite queue answers 6 s, the busy
    /// timeout its store sets (5 s) and a second, so that its own wait for the write lock
    /// ends first (a pool of your own with a longer busy timeout: raise the worker's store
    /// timeout past it yourself).
    fn min_take_timeout(&self) -> Duration {
        Duration::ZERO
    }

    /// The error the job keyed `key` last recorded ([`fail`](Self::fail)'s), if the
    /// queue keeps it: a worker puts it in the reason of a job it buries for being taken
    /// more often than its attempts allow (its last runs never settled), which would
    /// otherwise replace it. The default keeps none; the crate's queues answer their
    /// [`QueueAdmin::job`]'s `last_error`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn last_error(&self, key: &EventId) -> Result<Option<String>, StoreError> {
        let _ = key;
        Ok(None)
    }
}

/// [`Queue::last_error`] as the crate's queues answer it: their [`QueueAdmin::job`]'s.
pub(crate) async fn recorded_error<Q: QueueAdmin + ?Sized>(
    queue: &Q,
    key: &EventId,
) -> Result<Option<String>, StoreError> {
    Ok(QueueAdmin::job(queue, key)
        .await?
        .and_then(|r| r.last_error))
}

/// The operator's queries on a queue: counts, lists, requeueing and purging. Every queue
/// of this crate implements it; the command-line tool and the console are built on it.
#[async_trait]
pub trait QueueAdmin: Queue {
    /// How many jobs are in each state, and the age of the oldest queued job.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the backend fails.
    async fn counts(&self) -> Result<QueueCounts, StoreError>;

    /// Up to `limit` jobs in `state`, oldest first.
    ///
    /// # Errors
    ///
    /// As [`counts`](Self::counts).
    async fn jobs(&self, state: JobState, limit: usize) -> Result<Vec<JobRecord>, StoreError>;

    /// The next page of [`jobs`](Self::jobs): up to `limit` jobs in `state` that come
    /// after the job keyed `after` in that listing's order. Pass the last key of the page
    /// before. A job that has left `state` since still marks its place (by when it was
    /// queued), except in Redis's completed listing, which is ordered by when jobs
    /// finished: there, and for a key the queue no longer has (purged), the page is empty.
    /// The crate's queues answer with one query each. On PostgreSQL a job's place is
    /// given when its enqueue began, so one whose enqueue committed after a later one's,
    /// while you paged, can fall before a page already read: a listing is a view of a
    /// moving queue, not a snapshot ([`counts`](Self::counts) says how many there are).
    ///
    /// # Errors
    ///
    /// As [`counts`](Self::counts).
    async fn jobs_after(
        &self,
        state: JobState,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError>;

    /// One job, by its key.
    ///
    /// # Errors
    ///
    /// As [`counts`](Self::counts).
    async fn job(&self, key: &EventId) -> Result<Option<JobRecord>, StoreError>;

    /// The `limit` most recently queued jobs, in any state, newest first: the recent
    /// deliveries. The default reads every job of every state with [`jobs`](Self::jobs)
    /// (which lists the oldest first, so it cannot stop at `limit`) and orders them by
    /// enqueue time, jobs queued in the same millisecond in no set order: override it
    /// for a queue that keeps many jobs. The crate's queues answer with one query each.
    ///
    /// # Errors
    ///
    /// As [`counts`](Self::counts).
    async fn recent(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let mut all = Vec::new();
        for state in JobState::ALL {
            all.extend(self.jobs(state, usize::MAX).await?);
        }
        all.sort_by_key(|r| std::cmp::Reverse(r.enqueued_at_ms));
        all.truncate(limit);
        Ok(all)
    }

    /// Queues a dead or retrying job to run at once, with its attempts reset. `false`
    /// when there is no such job in either state.
    ///
    /// # Errors
    ///
    /// As [`counts`](Self::counts).
    async fn requeue(&self, key: &EventId) -> Result<bool, StoreError>;

    /// Requeues every dead job; returns how many. The crate's queues work in batches of
    /// 500 (one statement or script each), so an error after the first batch leaves the
    /// batches before it requeued.
    ///
    /// # Errors
    ///
    /// As [`counts`](Self::counts).
    async fn requeue_dead(&self) -> Result<u64, StoreError>;

    /// Deletes up to `batch` completed jobs that finished more than `older_than` ago
    /// (their keys stop deduplicating). Dead jobs are never purged. Returns how many were
    /// deleted; call again while it returns `batch`.
    ///
    /// # Errors
    ///
    /// As [`counts`](Self::counts).
    async fn purge_completed(&self, older_than: Duration, batch: usize) -> Result<u64, StoreError>;
}

macro_rules! forward_queue {
    ($($ty:tt)*) => {
        #[async_trait]
        impl<Q: Queue + ?Sized> Queue for $($ty)*<Q> {
            async fn enqueue(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError> {
                (**self).enqueue(job).await
            }
            async fn take(
                &self,
                max: usize,
                lease: Duration,
                per_object_order: bool,
            ) -> Result<Vec<Job>, StoreError> {
                (**self).take(max, lease, per_object_order).await
            }
            async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
                (**self).extend(token, lease).await
            }
            async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
                (**self).complete(token).await
            }
            async fn fail(
                &self,
                token: &ClaimToken,
                error: &str,
                retry_in: Option<Duration>,
            ) -> Result<(), StoreError> {
                (**self).fail(token, error, retry_in).await
            }
            async fn release(&self, token: &ClaimToken) -> Result<(), StoreError> {
                (**self).release(token).await
            }
            async fn wait_for_jobs(&self, max_wait: Duration) -> bool {
                (**self).wait_for_jobs(max_wait).await
            }
            fn min_take_timeout(&self) -> Duration {
                (**self).min_take_timeout()
            }
            async fn last_error(&self, key: &EventId) -> Result<Option<String>, StoreError> {
                (**self).last_error(key).await
            }
        }
    };
}
forward_queue!(std::sync::Arc);

#[async_trait]
impl<Q: QueueAdmin + ?Sized> QueueAdmin for std::sync::Arc<Q> {
    async fn counts(&self) -> Result<QueueCounts, StoreError> {
        (**self).counts().await
    }
    async fn jobs(&self, state: JobState, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        (**self).jobs(state, limit).await
    }
    async fn jobs_after(
        &self,
        state: JobState,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        (**self).jobs_after(state, after, limit).await
    }
    async fn job(&self, key: &EventId) -> Result<Option<JobRecord>, StoreError> {
        (**self).job(key).await
    }
    async fn recent(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        (**self).recent(limit).await
    }
    async fn requeue(&self, key: &EventId) -> Result<bool, StoreError> {
        (**self).requeue(key).await
    }
    async fn requeue_dead(&self) -> Result<u64, StoreError> {
        (**self).requeue_dead().await
    }
    async fn purge_completed(&self, older_than: Duration, batch: usize) -> Result<u64, StoreError> {
        (**self).purge_completed(older_than, batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_read_back() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse(), Ok(state));
        }
        assert!("done".parse::<JobState>().is_err());
        for kind in [PayloadKind::Snapshot, PayloadKind::Thin] {
            assert_eq!(PayloadKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(PayloadKind::from_name("v3"), None);
    }

    #[cfg(feature = "testing")]
    #[test]
    fn jobs_parse_both_families() {
        let body = crate::testing::event_json(
            "evt_1",
            "customer.updated",
            r#"{"id":"cus_1","object":"customer"}"#,
        );
        let job = NewJob::parse(body.as_bytes()).unwrap();
        assert_eq!(
            (job.key.as_str(), job.kind, job.object_id.as_deref()),
            ("evt_1", PayloadKind::Snapshot, Some("cus_1"))
        );
        let thin = crate::testing::ThinEventBuilder::new("evt_thin_1", "v1.customer.updated")
            .snapshot_event("evt_1")
            .build();
        let job = NewJob::parse(thin.as_bytes()).unwrap();
        assert_eq!((job.key.as_str(), job.kind), ("evt_1", PayloadKind::Thin));
        assert!(NewJob::parse(b"{}").is_err());
    }

    /// A Connect event's per-object key is its account's, in both families, as the
    /// ordering guard keys it: one account's retrying job must not hold back another
    /// account's on the same bare id, and a thin and a snapshot job about one object
    /// share a key.
    #[cfg(feature = "testing")]
    #[test]
    fn connect_jobs_are_keyed_within_their_account() {
        let thin = crate::testing::ThinEventBuilder::new("evt_thin_1", "v1.capability.updated")
            .related(
                "card_payments",
                "capability",
                "/v1/accounts/acct_1/capabilities/card_payments",
            )
            .context("acct_1")
            .build();
        let job = NewJob::parse(thin.as_bytes()).unwrap();
        assert_eq!(job.object_id.as_deref(), Some("acct_1/test/card_payments"));
        let mut snapshot: serde_json::Value = serde_json::from_str(&crate::testing::event_json(
            "evt_2",
            "capability.updated",
            r#"{"id":"card_payments","object":"capability"}"#,
        ))
        .unwrap();
        snapshot["account"] = "acct_1".into();
        let snapshot = snapshot.to_string();
        let job = NewJob::parse(snapshot.as_bytes()).unwrap();
        assert_eq!(job.object_id.as_deref(), Some("acct_1/test/card_payments"));
        // No related object, or an empty id: no key at all (never `acct_1/`).
        let bare = crate::testing::ThinEventBuilder::new("evt_thin_2", "v1.capability.updated")
            .related("", "capability", "/v1/x")
            .context("acct_1")
            .build();
        assert_eq!(NewJob::parse(bare.as_bytes()).unwrap().object_id, None);
    }
}
