//! Workers: run queued events through the application's handlers, with leases renewed
//! while a handler runs, a deadline, panics contained, fenced completion, retries with
//! backoff and jitter, a dead state, and graceful shutdown.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// Tokio's instants, which its timers wait on: on a paused clock (a test's `start_paused`),
// the system's stands still while tokio's jumps ahead, and a lease counted on the
// system's clock had ended, in tokio's time, before its run started.
use tokio::time::Instant;

use async_trait::async_trait;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::{Job, PayloadKind, Queue};
use crate::event::{Event, EventNotification, EventType, ThinEventType};
use crate::handler::{EventHandler, HandlerError, ThinEventHandler};
use crate::idempotency::StoreError;
use crate::processor::{check_caught, handler_future, run_handler, store_call};

/// When a failed job runs again, and when it is given up as dead.
///
/// The default, [`RetryPolicy::stripe`], follows Stripe's own delivery retries: about
/// three days of exponential backoff. A delay grows from `initial` by `multiplier` per
/// attempt up to `max_delay`, and each is cut by a random share of up to `jitter` so
/// that jobs that failed together do not retry together.
///
/// ```
/// use std::time::Duration;
/// use stripe_webhooks::queue::RetryPolicy;
///
/// let p = RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(60)).with_jitter(0.0);
/// assert_eq!(p.delay_after(1), Some(Duration::from_secs(1)));
/// assert_eq!(p.delay_after(2), Some(Duration::from_secs(2)));
/// assert_eq!(p.delay_after(3), None); // the third attempt was the last: dead
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial: Duration,
    multiplier: u32,
    max_delay: Duration,
    jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::stripe()
    }
}

impl RetryPolicy {
    /// Stripe's schedule: 20 attempts, the first retry after a minute, doubling up to six
    /// hours, with up to 20% jitter. The 19 retries span about 2.8 days before jitter
    /// (1 + 2 + … + 256 minutes, then ten times six hours), near the three days of
    /// Stripe's live-mode deliveries.
    pub fn stripe() -> Self {
        Self {
            max_attempts: 20,
            initial: Duration::from_secs(60),
            multiplier: 2,
            max_delay: Duration::from_secs(6 * 3600),
            jitter: 0.2,
        }
    }

    /// `max_attempts` runs in all (at least 1), the first retry after `initial`, doubling
    /// up to `max_delay`, with 20% jitter. Delays are at most [`MAX_RETRY_DELAY`].
    pub fn new(max_attempts: u32, initial: Duration, max_delay: Duration) -> Self {
        let initial = initial.min(MAX_RETRY_DELAY);
        Self {
            max_attempts: max_attempts.max(1),
            initial,
            max_delay: max_delay.clamp(initial, MAX_RETRY_DELAY),
            ..Self::stripe()
        }
    }

    /// How much each delay grows per attempt (at least 1: constant delays).
    #[must_use]
    pub fn with_multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier.max(1);
        self
    }

    /// The largest random share cut from a delay, from 0.0 (none) to 1.0.
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// How many runs a job gets before it is dead.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How long to wait after failed attempt number `attempt` (1 for the first), or `None`
    /// when it was the last.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let mut delay = self.initial;
        for _ in 1..attempt {
            delay = delay.saturating_mul(self.multiplier);
            if delay >= self.max_delay {
                break;
            }
        }
        let delay = delay.min(self.max_delay);
        Some(delay.mul_f64(1.0 - self.jitter * unit_random()))
    }
}

/// A number in `[0, 1)` from the OS-seeded hasher keys: jitter needs no more.
fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// How a job's run ended.
#[derive(Debug)]
pub(crate) enum Ran {
    /// The handler succeeded; the worker completes the job.
    Succeeded,
    /// The handler succeeded and the job was completed in its transaction (inbox mode).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    Completed,
    /// Nothing handles this event type; the worker completes the job.
    Skipped,
    /// The handler failed. `permanent`: it can never succeed (the body is not an event),
    /// so the job is dead at once.
    Failed { error: String, permanent: bool },
    /// The job's lease was lost while it ran (inbox mode: its transaction rolled back).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    LeaseLost,
}

impl Ran {
    pub(crate) fn failed(e: &HandlerError) -> Self {
        Ran::Failed {
            error: crate::error::error_text(e),
            permanent: false,
        }
    }

    pub(crate) fn permanent(error: String) -> Self {
        Ran::Failed {
            error,
            permanent: true,
        }
    }
}

/// How a worker runs one job: through handlers, or in a SQL queue's inbox transaction.
#[async_trait]
pub(crate) trait Runner: Send + Sync + 'static {
    async fn run(&self, job: &Job, deadline: Option<Duration>) -> Ran;

    /// Whether it runs snapshot events of this type (for the manifest).
    fn handles(&self, event_type: &EventType) -> bool;

    /// Whether it runs thin events of this type (for the manifest).
    fn handles_thin(&self, event_type: &ThinEventType) -> bool;

    /// Whether it runs this thin event (its type and, for a router, its account), as it
    /// screens a thin job.
    fn handles_notification(&self, n: &EventNotification) -> bool {
        self.handles_thin(&n.event_type)
    }

    /// Its handlers' `unknown_types`, snapshot and thin (for the manifest).
    fn unknown_types(&self) -> [Vec<String>; 2] {
        [Vec::new(), Vec::new()]
    }
}

/// The standard runner: the snapshot handler for snapshot jobs, the thin handler for thin
/// ones.
struct Handlers {
    snapshot: Option<Arc<dyn EventHandler>>,
    thin: Option<Arc<dyn ThinEventHandler>>,
}

#[async_trait]
impl Runner for Handlers {
    fn handles(&self, event_type: &EventType) -> bool {
        self.snapshot
            .as_ref()
            .is_some_and(|h| h.handles(event_type))
    }

    fn handles_thin(&self, event_type: &ThinEventType) -> bool {
        self.thin.as_ref().is_some_and(|h| h.handles(event_type))
    }

    fn handles_notification(&self, n: &EventNotification) -> bool {
        self.thin
            .as_ref()
            .is_some_and(|h| h.handles_notification(n))
    }

    fn unknown_types(&self) -> [Vec<String>; 2] {
        [
            self.snapshot
                .as_ref()
                .map_or_else(Vec::new, |h| h.unknown_types()),
            self.thin
                .as_ref()
                .map_or_else(Vec::new, |h| h.unknown_types()),
        ]
    }

    async fn run(&self, job: &Job, deadline: Option<Duration>) -> Ran {
        match job.kind {
            PayloadKind::Snapshot => {
                let Some(h) = &self.snapshot else {
                    return Ran::permanent(no_handler("snapshot", "Worker::new"));
                };
                let event = match Event::from_slice(&job.body) {
                    Ok(e) => e,
                    Err(e) => {
                        return Ran::permanent(format!("the queued body is not an event: {e}"))
                    }
                };
                if let Some(ran) = screen_job("handles_event", || h.handles_event(&event)) {
                    return ran;
                }
                match run_handler(handler_future(|| h.handle(&event)), deadline).await {
                    Ok(()) => Ran::Succeeded,
                    Err(e) => Ran::failed(&e),
                }
            }
            PayloadKind::Thin => {
                let Some(h) = &self.thin else {
                    return Ran::permanent(no_handler("thin", "Worker::with_thin_handler"));
                };
                let n = match EventNotification::from_slice(&job.body) {
                    Ok(n) => n,
                    Err(e) => {
                        return Ran::permanent(format!("the queued body is not an event: {e}"))
                    }
                };
                if let Some(ran) = screen_job("handles_notification", || h.handles_notification(&n))
                {
                    return ran;
                }
                match run_handler(handler_future(|| h.handle(&n)), deadline).await {
                    Ok(()) => Ran::Succeeded,
                    Err(e) => Ran::failed(&e),
                }
            }
        }
    }
}

/// Whether a job's handler takes it, by its own check (`name` in the error), its panic
/// caught: `None` to run it; else skipped (completed without running), or dead with
/// why: the check panics the same way each time, so the job waits for a fix and a
/// requeue.
pub(crate) fn screen_job(name: &str, takes: impl FnOnce() -> bool) -> Option<Ran> {
    match check_caught(takes) {
        Ok(true) => None,
        Ok(false) => Some(Ran::Skipped),
        Err(panic) => Some(Ran::permanent(format!(
            "the handler's {name} check panicked: {panic} (fix it, then requeue the job)"
        ))),
    }
}

/// A job of a family the worker has no handler for is kept dead rather than dropped: with
/// snapshot dedupe, its twin of the other family was not queued.
fn no_handler(family: &str, fix: &str) -> String {
    format!("this worker has no {family} event handler (add one with {fix}), then requeue the job")
}

/// Runs queued events: takes up to `concurrency` jobs at a time from a [`Queue`] and runs
/// each through the application's [`EventHandler`] (snapshot events) or
/// [`ThinEventHandler`] (thin events), by the rules of the inline processor:
///
/// - the job's lease is renewed while the handler runs, and a handler whose lease is
///   lost is stopped (another worker has the job now, or renewals failed until it may
///   have: then, if the job is still this worker's, the run counts as failed, and is
///   retried by the policy);
/// - the handler has a deadline, and its panics are contained;
/// - the completion is fenced: only the worker that holds the job can complete it;
/// - a failed run is retried after a [`RetryPolicy`] delay; after its last attempt the
///   job is dead, with its last error and attempts, until an operator requeues it;
/// - each take counts an attempt: a job taken more often than the policy's attempts,
///   its last runs unsettled (their worker died, or they outlived their lease), is dead
///   too, with why and the last error a run recorded;
/// - a job whose type its family's handler does not take is completed without running
///   anything; a job of a family the worker has no handler for (a thin job on a worker
///   without a thin handler) is dead, with the reason, until an operator requeues it.
///
/// A worker killed outright loses nothing: its jobs' leases end and other workers take
/// them over. [`WorkerHandle::shutdown`] stops it gracefully. Several workers, in one
/// process or many, can share a queue.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use stripe_webhooks::queue::{MemoryQueue, NewJob, Queue, QueueAdmin, Worker};
/// use stripe_webhooks::{testing, EventRouter};
///
/// let queue = MemoryQueue::new();
/// let body = testing::event_json("evt_1", "customer.created", r#"{"id":"cus_1","object":"customer"}"#);
/// queue.enqueue(&NewJob::parse(body.as_bytes())?).await?;
///
/// let worker = Worker::new(queue.clone(), EventRouter::new().fallback(|_e| Box::pin(async { Ok(()) })))
///     .with_concurrency(4);
/// assert_eq!(worker.run_once().await?, 1); // or worker.spawn() for a background loop
/// assert_eq!(queue.counts().await?.completed, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Worker {
    queue: Arc<dyn Queue>,
    runner: Arc<dyn Runner>,
    /// The handlers of the standard runner, kept to add a thin one later.
    handlers: Option<HandlerPair>,
    settings: Settings,
    /// The tasks that give back what a timed-out take took once it answers: a stopping
    /// worker waits for them (until its hard stop), or its runtime's end could cut them
    /// and leave their jobs running under a lease no one holds.
    late_takes: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// How many timed-out takes answered late since a take last answered within the
    /// store timeout: each doubles the next take's timeout
    /// ([`take_timeout`](Self::take_timeout)), so a queue whose takes are all slower than
    /// the store timeout is still taken from rather than never. A take that never
    /// answers (a queue that is down) does not count: its outage shows at once.
    late_streak: Arc<AtomicU32>,
}

/// A standard worker's snapshot and thin handlers.
type HandlerPair = (
    Option<Arc<dyn EventHandler>>,
    Option<Arc<dyn ThinEventHandler>>,
);

#[derive(Debug, Clone)]
struct Settings {
    concurrency: usize,
    lease: Duration,
    deadline: Option<Duration>,
    retry: RetryPolicy,
    per_object_order: bool,
    poll_interval: Duration,
    store_timeout: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How long a worker's handler may run by default: 60 s (a queued job may do more than
/// a request would).
pub const DEFAULT_JOB_DEADLINE: Duration = Duration::from_secs(60);

/// The longest delay a [`RetryPolicy`] waits before a retry (a year): longer ones are
/// taken as this, so a job's next run is always a time its database can hold.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most jobs a worker runs at once ([`Worker::with_concurrency`] caps at it).
const MAX_CONCURRENCY: usize = 4096;

/// The longest lease a [`Worker`] takes a job for (a day, as the processor's): longer
/// ones, asked for or made from the deadline, are taken as this. The lease is renewed
/// while the handler runs, so it bounds only how long a dead worker's job waits.
pub const MAX_JOB_LEASE: Duration = Duration::from_secs(24 * 3600);

impl Worker {
    /// A worker for snapshot events, with 4 concurrent jobs, a 60 s handler deadline, a
    /// 2-minute lease renewed every 40 s, Stripe's [`RetryPolicy`], and a 1 s poll.
    pub fn new(queue: impl Queue, handler: impl EventHandler) -> Self {
        Self::with_handlers(Arc::new(queue), Some(Arc::new(handler)), None)
    }

    /// A worker for thin events.
    pub fn thin(queue: impl Queue, handler: impl ThinEventHandler) -> Self {
        Self::with_handlers(Arc::new(queue), None, Some(Arc::new(handler)))
    }

    fn with_handlers(
        queue: Arc<dyn Queue>,
        snapshot: Option<Arc<dyn EventHandler>>,
        thin: Option<Arc<dyn ThinEventHandler>>,
    ) -> Self {
        let runner = Arc::new(Handlers {
            snapshot: snapshot.clone(),
            thin: thin.clone(),
        });
        Self::with_runner(queue, runner, Some((snapshot, thin)))
    }

    pub(crate) fn with_runner(
        queue: Arc<dyn Queue>,
        runner: Arc<dyn Runner>,
        handlers: Option<HandlerPair>,
    ) -> Self {
        Self {
            queue,
            runner,
            handlers,
            late_takes: Arc::default(),
            late_streak: Arc::default(),
            settings: Settings {
                concurrency: 4,
                lease: 2 * DEFAULT_JOB_DEADLINE,
                deadline: Some(DEFAULT_JOB_DEADLINE),
                retry: RetryPolicy::stripe(),
                per_object_order: false,
                poll_interval: Duration::from_secs(1),
                store_timeout: crate::DEFAULT_STORE_TIMEOUT,
            },
        }
    }

    /// The `enabled_events` the Stripe destinations feeding this worker's queue need,
    /// from what its handlers [`handles`](EventHandler::handles), as
    /// [`Processor::enabled_events`](crate::Processor::enabled_events) computes them for
    /// a processor that runs its handlers. Give it to the ack-fast processor
    /// ([`Processor::with_enabled_events`](crate::Processor::with_enabled_events)), so
    /// its manifest and a reconciler over it list these types only.
    ///
    /// ```
    /// use stripe_webhooks::queue::{MemoryQueue, Worker};
    /// use stripe_webhooks::{EventRouter, EventType};
    ///
    /// let worker = Worker::new(
    ///     MemoryQueue::new(),
    ///     EventRouter::new().on(EventType::InvoicePaid, |_e| Box::pin(async { Ok(()) })),
    /// );
    /// assert_eq!(worker.enabled_events().snapshot, ["invoice.paid"]);
    /// assert!(worker.enabled_events().thin.is_empty());
    /// ```
    pub fn enabled_events(&self) -> crate::EnabledEvents {
        let runner = &self.runner;
        let snapshot = |t: &EventType| runner.handles(t);
        let thin = |t: &ThinEventType| runner.handles_thin(t);
        let unknown = runner.unknown_types();
        let has_thin = ThinEventType::ALL.iter().any(|t| runner.handles_thin(t))
            || runner.handles_thin(&ThinEventType::Unknown(String::new()))
            || !unknown[1].is_empty();
        let has_snapshot = EventType::ALL.iter().any(|t| runner.handles(t))
            || runner.handles(&EventType::Unknown(String::new()))
            || !unknown[0].is_empty();
        let mut events = crate::EnabledEvents::of(
            has_snapshot.then_some(snapshot),
            has_thin.then_some(thin),
            unknown,
        );
        // Also without a thin handler (it takes none): a thin event queued under its twin's
        // key would be buried as dead there, and hold the key.
        let runner = Arc::clone(&self.runner);
        events.thin_handles = Some(crate::processor::ThinHandles(Arc::new(move |n| {
            runner.handles_notification(n)
        })));
        events
    }

    /// Adds a thin event handler, so the worker runs jobs of both families.
    ///
    /// # Panics
    ///
    /// Never; on an inbox worker (whose thin events have no transaction) the thin
    /// handler runs the standard way beside the inbox handler.
    #[must_use]
    pub fn with_thin_handler(mut self, handler: impl ThinEventHandler) -> Self {
        let thin: Arc<dyn ThinEventHandler> = Arc::new(handler);
        match self.handlers.take() {
            Some((snapshot, _)) => {
                self.runner = Arc::new(Handlers {
                    snapshot: snapshot.clone(),
                    thin: Some(Arc::clone(&thin)),
                });
                self.handlers = Some((snapshot, Some(thin)));
            }
            None => {
                self.runner = Arc::new(WithThin {
                    inner: Arc::clone(&self.runner),
                    thin: Handlers {
                        snapshot: None,
                        thin: Some(thin),
                    },
                });
            }
        }
        self
    }

    /// How many jobs run at once (1 to 4,096; default 4).
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.settings.concurrency = n.clamp(1, MAX_CONCURRENCY);
        self
    }

    /// How long a handler may run (default 60 s; `None`: no limit; at least 10 ms
    /// otherwise). It raises the lease to
    /// twice the deadline (up to [`MAX_JOB_LEASE`]); a later
    /// [`with_lease`](Self::with_lease) sets the lease as given.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        let deadline = deadline.map(|d| d.max(crate::processor::MIN_HANDLER_DEADLINE));
        self.settings.deadline = deadline;
        if let Some(d) = deadline {
            self.settings.lease = self
                .settings
                .lease
                .max(d.saturating_mul(2))
                .min(MAX_JOB_LEASE);
        }
        self
    }

    /// How long a job is leased (default 2 minutes; from 300 ms, three renewals of a
    /// third of it, to [`MAX_JOB_LEASE`]): a worker that dies holding a job delays it by
    /// this much.
    ///
    /// On SQLite, an inbox job's renewals wait for the write lock its own transaction
    /// holds once its handler wrote, so they cannot succeed before it commits: keep the
    /// lease longer than the handler can run (twice the deadline, as
    /// [`with_deadline`](Self::with_deadline) sets it), or the job is stopped as lost at
    /// nine tenths of it and runs again later.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease.clamp(Duration::from_millis(300), MAX_JOB_LEASE);
        self
    }

    /// When failed jobs run again, and when they are dead.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.settings.retry = retry;
        self
    }

    /// Runs the jobs about one object (`data.object.id`, a thin event's related object;
    /// within its connected account and mode for a Connect event) one at a time in
    /// `created` order, so a slow `updated` is never overtaken by a later one. A job that is still
    /// retrying holds the later jobs of its object back; a dead one does not. `created`
    /// is whole seconds: jobs of one object in the same second run in the order they
    /// were queued (Stripe's delivery order, not necessarily the order of the changes).
    ///
    /// It orders the jobs the queue holds together; it keeps no watermark. An event
    /// queued after a newer one of its object already ran (Stripe's retry of a delivery
    /// the queue refused, or a reconcile pass) still runs. Make such handlers act on the
    /// object's current state ([`FetchLatest`](crate::client::FetchLatest)), or use the
    /// ordering guard of the request path ([`Processor::ordered`](crate::Processor::ordered)).
    ///
    /// Jobs held back behind a job that keeps failing are *parked* by the queue, so that
    /// a long backlog of one object does not slow every take (SQL queues: see
    /// [`PostgresQueue::with_parking_after`](crate::queue::PostgresQueue::with_parking_after);
    /// the Redis queue always parks them). A parked job waits for its object whatever the
    /// worker that takes it: the workers sharing a queue should agree on this setting.
    #[must_use]
    pub fn with_per_object_order(mut self, on: bool) -> Self {
        self.settings.per_object_order = on;
        self
    }

    /// How long an idle worker waits before it looks again (default 1 s, from 1 ms to an
    /// hour). Queues that can wake workers (Postgres) wake them sooner.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.settings.poll_interval =
            interval.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        self
    }

    /// How long a queue call may take before it counts as failed (default 2 s; at least
    /// 10 ms, since with a zero timeout no take would ever finish; at most
    /// [`MAX_STORE_TIMEOUT`](crate::MAX_STORE_TIMEOUT)). A take that times out and then
    /// answers doubles the next take's timeout, up to 64 times this or half the lease,
    /// whichever is less (one that answers within this brings it back), so a queue whose
    /// takes are all slower than this is still worked; a queue that does not answer at
    /// all keeps this timeout.
    #[must_use]
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.settings.store_timeout = timeout.clamp(
            crate::processor::MIN_STORE_TIMEOUT,
            crate::MAX_STORE_TIMEOUT,
        );
        self
    }

    /// How long a take may wait: the store timeout, or the queue's floor if higher
    /// ([`base_take_timeout`](Self::base_take_timeout)), doubled for each timed-out take
    /// that answered late (up to 64 times), but not past half the lease (a take that
    /// answers later leaves its jobs too little of it to run). A take that answers
    /// within the base brings it back down; one that answers within the longer timeout
    /// keeps it, so a queue that is always that slow is not timed out every other take.
    fn take_timeout(&self) -> Duration {
        let base = self.base_take_timeout();
        let streak = self.late_streak.load(Ordering::Relaxed).min(6);
        base.saturating_mul(1 << streak)
            .min(base.max(self.settings.lease / 2))
    }

    /// The store timeout, or the queue's floor if higher.
    fn base_take_timeout(&self) -> Duration {
        self.settings
            .store_timeout
            .max(self.queue.min_take_timeout())
    }

    /// Takes up to `max` jobs within the take timeout. The take runs on a task of its
    /// own: one that answers after the timeout has still taken its jobs (a database
    /// finishes a statement its client stopped waiting for), and they are given back
    /// ([`Queue::release`]: queued again at once, the attempt not counted) when it does,
    /// instead of sitting as running under a lease no one holds, an attempt spent. A
    /// shutdown (`stopping` set) ends the wait at once the same way, with nothing taken:
    /// a take can last as long as the store timeout, far past a shutdown's grace.
    async fn take(
        &self,
        max: usize,
        stopping: Option<&mut watch::Receiver<bool>>,
    ) -> Result<Vec<Job>, StoreError> {
        let queue = Arc::clone(&self.queue);
        let (lease, ordered) = (self.settings.lease, self.settings.per_object_order);
        let sent = Instant::now();
        let mut take = tokio::spawn(async move { queue.take(max, lease, ordered).await });
        let limit = self.take_timeout();
        let stopped = async {
            match stopping {
                Some(rx) => until_true(rx).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            answered = tokio::time::timeout(limit, &mut take) => match answered {
                Ok(Ok(taken)) => {
                    if sent.elapsed() <= self.base_take_timeout() {
                        self.late_streak.store(0, Ordering::Relaxed);
                    }
                    taken
                }
                Ok(Err(e)) => Err(StoreError::unavailable(format!("the take failed: {e}"))),
                Err(_) => {
                    self.give_back_when_answered(take);
                    Err(StoreError::Timeout(limit))
                }
            },
            () = stopped => {
                self.give_back_when_answered(take);
                Ok(Vec::new())
            }
        }
    }

    /// Gives back the jobs of a take no one waits for any more once it answers (queued
    /// again at once, the attempt not counted); the worker's loop waits for it when it
    /// stops, until the hard stop.
    fn give_back_when_answered(&self, take: tokio::task::JoinHandle<Result<Vec<Job>, StoreError>>) {
        let queue = Arc::clone(&self.queue);
        let late_streak = Arc::clone(&self.late_streak);
        let giving_back = tokio::spawn(async move {
            let answered = take.await;
            if answered.is_ok() {
                // Slow, not down: the next take waits longer.
                late_streak.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(Ok(jobs)) = answered {
                for job in jobs {
                    // If this fails too, the job's lease ends and it runs then.
                    let _ = queue.release(&job.token).await;
                }
            }
        });
        if let Ok(mut late) = self.late_takes.lock() {
            late.retain(|t| !t.is_finished());
            late.push(giving_back);
        }
    }

    /// Takes up to `concurrency` due jobs, runs them all, and returns how many it took:
    /// for tests, and for running the queue from a scheduler instead of a loop.
    ///
    /// It runs on a task of its own, so dropping its future (a `tokio::time::timeout`
    /// or `select!` around it) does not cut the jobs it took: they run to their end and
    /// are settled on that task. (Cut mid-handler, a job would have waited as running
    /// until its lease ended, an attempt spent, and one cut after its handler succeeded
    /// would have run again.) The runtime's end still cuts them, as it cuts any task.
    ///
    /// # Errors
    ///
    /// The queue's error if the take fails; a failure to settle a job is logged (the
    /// job's lease ends and it runs again); [`StoreError::Unavailable`] if the run's task
    /// was cut (the runtime ending). After [`StoreError::Timeout`], the take may still
    /// answer: a task gives back the jobs it took then, so a process that runs this from
    /// a scheduler should not end its runtime at once on that error (the jobs would wait
    /// as running until their lease ends).
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let run = Self {
            queue: Arc::clone(&self.queue),
            runner: Arc::clone(&self.runner),
            handlers: self.handlers.clone(),
            settings: self.settings.clone(),
            late_takes: Arc::clone(&self.late_takes),
            late_streak: Arc::clone(&self.late_streak),
        };
        match tokio::spawn(async move { run.run_once_here().await }).await {
            Ok(ran) => ran,
            Err(e) => Err(StoreError::unavailable(format!(
                "the worker's run was cut before its end: {e}"
            ))),
        }
    }

    /// [`run_once`](Self::run_once), on the task it runs on.
    async fn run_once_here(&self) -> Result<usize, StoreError> {
        let taken_at = Instant::now();
        let jobs = self.take(self.settings.concurrency, None).await?;
        let n = jobs.len();
        let (_stop_tx, stop) = watch::channel(false);
        let mut set = JoinSet::new();
        for job in jobs {
            let (queue, runner, settings) = (
                Arc::clone(&self.queue),
                Arc::clone(&self.runner),
                self.settings.clone(),
            );
            let stop = stop.clone();
            set.spawn(async move {
                run_job(&*queue, &*runner, &settings, job, taken_at, stop).await;
            });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    /// Runs the worker on the current tokio runtime until [`WorkerHandle::shutdown`].
    pub fn spawn(self) -> WorkerHandle {
        let (stop_taking, taking) = watch::channel(false);
        let (hard_stop, stop) = watch::channel(false);
        let task = tokio::spawn(self.run_loop(taking, stop));
        WorkerHandle {
            stop_taking,
            hard_stop,
            task,
        }
    }

    async fn run_loop(self, mut taking: watch::Receiver<bool>, stop: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut set = JoinSet::new();
        let mut failures = 0u32;
        loop {
            if *taking.borrow() {
                break;
            }
            // Reap finished jobs so the set does not grow.
            while set.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = set.join_next() => {}
                    () = until_true(&mut taking) => {}
                }
                continue;
            }
            let taken_at = Instant::now();
            let taken = self.take(free, Some(&mut taking)).await;
            let jobs = match taken {
                Ok(jobs) => {
                    failures = 0;
                    jobs
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    note_take_failed(&e);
                    // Back off while the queue is down: doubling from the poll interval, at
                    // most 5 s (or the poll interval, if longer).
                    let pause = (self
                        .settings
                        .poll_interval
                        .saturating_mul(1 << failures.min(5)))
                    .min(self.settings.poll_interval.max(Duration::from_secs(5)));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        () = until_true(&mut taking) => {}
                    }
                    continue;
                }
            };
            if jobs.is_empty() {
                let queue = Arc::clone(&self.queue);
                let poll = self.settings.poll_interval;
                // The whole wait races the stop signal, the sleep of a queue without
                // wakeups included: a shutdown does not wait out a poll interval.
                let wait = async {
                    if !queue.wait_for_jobs(poll).await {
                        tokio::time::sleep(poll).await;
                    }
                };
                tokio::select! {
                    () = wait => {}
                    () = until_true(&mut taking) => {}
                }
                continue;
            }
            for job in jobs {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    // Cannot happen (we took no more than the free permits); give it back.
                    let _ = self.queue.release(&job.token).await;
                    continue;
                };
                let (queue, runner, settings, stop) = (
                    Arc::clone(&self.queue),
                    Arc::clone(&self.runner),
                    self.settings.clone(),
                    stop.clone(),
                );
                set.spawn(async move {
                    run_job(&*queue, &*runner, &settings, job, taken_at, stop).await;
                    drop(permit);
                });
            }
        }
        // Graceful: no more takes; the jobs in hand finish, or are released when the
        // handle's deadline passes (it flips `stop`).
        while set.join_next().await.is_some() {}
        // And the jobs of a take that timed out are given back once it answers, until
        // the hard stop (the lease ends them then).
        let late = self
            .late_takes
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let mut stop = stop;
        for giving_back in late {
            tokio::select! {
                _ = giving_back => {}
                () = until_true(&mut stop) => break,
            }
        }
    }
}

/// Resolves once the flag is set; never, if its sender is gone (a dropped
/// [`WorkerHandle`] detaches the worker, it does not stop it).
async fn until_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A running [`Worker`]'s handle. Dropping it detaches the worker: it runs until the
/// runtime stops.
#[derive(Debug)]
pub struct WorkerHandle {
    stop_taking: watch::Sender<bool>,
    hard_stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops taking jobs and waits for the jobs in hand to finish, at most `grace`; the
    /// handlers still running then are stopped and their jobs released, queued again at
    /// once without counting the attempt. Returns when every job in hand is settled. A
    /// take the queue has not answered yet is not waited for past the grace: a task
    /// gives back what it took when it answers, so a service whose runtime ends at once
    /// leaves those jobs running until their lease ends (an attempt spent).
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop_taking.send(true);
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            let _ = self.hard_stop.send(true);
            let _ = (&mut self.task).await;
        }
    }

    /// Whether the worker's loop has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// The standard thin handler beside an inbox runner.
struct WithThin {
    inner: Arc<dyn Runner>,
    thin: Handlers,
}

#[async_trait]
impl Runner for WithThin {
    fn handles(&self, event_type: &EventType) -> bool {
        self.inner.handles(event_type)
    }

    fn handles_thin(&self, event_type: &ThinEventType) -> bool {
        self.thin.handles_thin(event_type)
    }

    fn handles_notification(&self, n: &EventNotification) -> bool {
        self.thin.handles_notification(n)
    }

    fn unknown_types(&self) -> [Vec<String>; 2] {
        let [snapshot, _] = self.inner.unknown_types();
        let [_, thin] = self.thin.unknown_types();
        [snapshot, thin]
    }

    async fn run(&self, job: &Job, deadline: Option<Duration>) -> Ran {
        match job.kind {
            PayloadKind::Thin => self.thin.run(job, deadline).await,
            PayloadKind::Snapshot => self.inner.run(job, deadline).await,
        }
    }
}

/// How the run with lease renewal ended.
enum Held {
    Ran(Ran),
    /// The run succeeded (or was skipped) and its completion was recorded, or not: the
    /// settlement's answer, reached with the lease still renewed.
    Completed(Result<(), StoreError>),
    /// The lease was lost (or renewals failed until it may have ended).
    Lost,
    /// The worker is shutting down past its grace.
    Stopped,
}

/// A job's lease renewal in flight.
type RenewalFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// The renewal in flight's answer (only polled while there is one).
async fn in_flight(renewal: &mut Option<RenewalFuture<'_>>) -> Result<(), StoreError> {
    match renewal {
        Some(r) => r.await,
        None => std::future::pending().await,
    }
}

/// Runs one job: the handler under lease renewal, then the fenced settlement.
async fn run_job(
    queue: &dyn Queue,
    runner: &dyn Runner,
    s: &Settings,
    job: Job,
    // When the take that handed out the job was sent: its lease runs from no earlier.
    taken_at: Instant,
    mut stop: watch::Receiver<bool>,
) {
    // Each take counts an attempt, and only a settled run can retry it. A job taken more
    // often than its attempts allow had its last runs unsettled (they outlived their
    // lease, or their worker died): it is dead, with why and the last error a run
    // recorded (read only here; the error written now replaces it), instead of being
    // taken for ever.
    let held = if job.token.attempt() > s.retry.max_attempts() {
        let recorded = store_call(s.store_timeout, queue.last_error(job.token.event_id()));
        let last = recorded.await.ok().flatten();
        let before = last.map_or_else(String::new, |e| format!("; the last error recorded: {e}"));
        Held::Ran(Ran::Failed {
            error: format!(
                "taken {} times, more than the {} attempts allowed: its last runs did not \
                 settle (each lost its lease, a handler running longer than the lease, or \
                 its worker){before}",
                job.token.attempt(),
                s.retry.max_attempts()
            ),
            permanent: true,
        })
    } else if *stop.borrow() {
        // Taken as the hard stop came: given back untouched, not started only to be
        // stopped at its first `.await` (a handler that does work in its call would do
        // some of it).
        Held::Stopped
    } else if Instant::now() >= taken_at + (s.lease - s.lease / 10) {
        // The take answered so late that the lease may already have ended: the handler
        // would be stopped as soon as it started. Record a failed attempt instead
        // (fenced: a no-op if the job is another worker's now), so the job comes back
        // after the retry policy's delay and, if every take is this slow, ends dead with
        // why rather than being taken and given back for ever.
        let took = taken_at.elapsed();
        note_late_take(&job, took, s.lease);
        Held::Ran(Ran::Failed {
            error: format!(
                "not run: the take answered after {} ms, past 90% of the {} ms lease (raise \
                 the worker's lease above the queue's take time)",
                took.as_millis(),
                s.lease.as_millis()
            ),
            permanent: false,
        })
    } else {
        let run = runner.run(&job, s.deadline);
        tokio::pin!(run);
        let every = s.lease / 3;
        // Until then the lease certainly holds; past it, the job may be another
        // worker's, so the run stops there unless a renewal moved it.
        let safe = s.lease - s.lease / 10;
        let mut renewed = taken_at;
        let mut next_renewal = renewed + every;
        // The renewal in flight. The run is polled beside it: on SQLite an inbox run's
        // transaction may hold the write lock the renewal waits for, and a run not
        // polled could never let it go.
        let mut renewal: Option<RenewalFuture<'_>> = None;
        // When the renewal in flight was sent: the lease it sets runs from no earlier.
        let mut sent = renewed;
        // A handle dropped without `shutdown` never stops the jobs in hand.
        let mut stoppable = true;
        // A succeeded run's completion, once the run is over: its tries (three, over
        // backoffs, each up to a store timeout) go on under the renewals, so that a slow
        // or failing queue cannot let the lease end meanwhile, and another worker take
        // the job and run its handler again.
        let mut completing: Option<RenewalFuture<'_>> = None;
        loop {
            tokio::select! {
                // The run first: a handler that finished as the stop came is settled as
                // it ended, not released to run again.
                biased;
                ran = &mut run, if completing.is_none() => match ran {
                    Ran::Succeeded | Ran::Skipped => {
                        completing = Some(Box::pin(settle(s, || queue.complete(&job.token))));
                    }
                    ran => break Held::Ran(ran),
                },
                completed = in_flight(&mut completing), if completing.is_some() => {
                    break Held::Completed(completed);
                }
                renewed_now = in_flight(&mut renewal), if renewal.is_some() => {
                    renewal = None;
                    // A renewal that failed is tried again a quarter period on, so that
                    // a short outage of the queue does not cut a run whose lease holds.
                    next_renewal = Instant::now()
                        + match renewed_now {
                            Ok(()) => {
                                renewed = sent;
                                every
                            }
                            // While completing: the completion may have landed (a
                            // completed job renews no more); its own answer says.
                            Err(StoreError::LeaseLost { .. }) if completing.is_some() => {
                                Duration::from_secs(86_400)
                            }
                            Err(StoreError::LeaseLost { .. }) => break Held::Lost,
                            Err(e) => {
                                note_settle_failed("renew", &job, &e);
                                every / 4
                            }
                        };
                }
                // Past it the job may be another worker's: the run stops. A completion
                // under way is not cut (it is fenced: a job another worker took refuses
                // it).
                () = tokio::time::sleep_until(renewed + safe), if completing.is_none() => {
                    break Held::Lost;
                }
                () = tokio::time::sleep_until(next_renewal), if renewal.is_none() => {
                    sent = Instant::now();
                    renewal = Some(Box::pin(store_call(
                        s.store_timeout,
                        queue.extend(&job.token, s.lease),
                    )));
                }
                changed = stop.changed(), if stoppable && completing.is_none() => match changed {
                    Ok(()) if *stop.borrow() => break Held::Stopped,
                    Ok(()) => {}
                    Err(_) => stoppable = false,
                },
            }
        }
    };
    let (settled, result) = match held {
        Held::Completed(settled) => (settled, "completed"),
        // (A run that succeeded is completed under its renewals, above.)
        Held::Ran(Ran::Succeeded | Ran::Skipped) => {
            (settle(s, || queue.complete(&job.token)).await, "completed")
        }
        Held::Ran(Ran::Completed) => (Ok(()), "completed"),
        Held::Ran(Ran::LeaseLost) => (Ok(()), "lease_lost"),
        Held::Lost => {
            // The handler's future was dropped before it could record its run.
            #[cfg(feature = "metrics")]
            crate::metrics::handler_ran(
                taken_at.elapsed(),
                &Err(crate::handler::HandlerError::LeaseLost),
            );
            // A failed run, if the job is still this worker's (fenced: one another worker
            // took is left alone): retried by the policy, so a handler that always
            // outlasts its lease dies in the end, and a renewal still on its way when it
            // was stopped cannot hold the job for a lease more. Tried once: if it fails,
            // the lease's end gives the job back, as before.
            let error = "the job's lease was lost while its handler ran (renewals failed)";
            let retry_in = s.retry.delay_after(job.token.attempt());
            match store_call(s.store_timeout, queue.fail(&job.token, error, retry_in)).await {
                Ok(()) => {
                    note_failed(&job, error, retry_in);
                    (
                        Ok(()),
                        if retry_in.is_some() {
                            "retried"
                        } else {
                            "dead"
                        },
                    )
                }
                Err(_) => (Ok(()), "lease_lost"),
            }
        }
        Held::Ran(Ran::Failed { error, permanent }) => {
            // Kept in the queue and logged: a handler's error may quote a credential.
            let error = crate::secret::redacted_text(error);
            let retry_in = if permanent {
                None
            } else {
                s.retry.delay_after(job.token.attempt())
            };
            note_failed(&job, &error, retry_in);
            let settled = settle(s, || queue.fail(&job.token, &error, retry_in)).await;
            (
                settled,
                if retry_in.is_some() {
                    "retried"
                } else {
                    "dead"
                },
            )
        }
        Held::Stopped => (settle(s, || queue.release(&job.token)).await, "released"),
    };
    if let Err(e) = &settled {
        note_settle_failed("settle", &job, e);
    }
    // What the queue holds now: a settlement that failed leaves the job running until its
    // lease ends (then it runs again), whatever the run did.
    let result = match &settled {
        Ok(()) => result,
        Err(StoreError::LeaseLost { .. }) => "lease_lost",
        Err(_) => "settle_failed",
    };
    #[cfg(not(feature = "metrics"))]
    let _ = result;
    #[cfg(feature = "metrics")]
    crate::metrics::job(result, job.kind, &job.event_type, job.created);
}

/// A settlement, tried three times over a short backoff while the queue fails; a lost
/// lease is final (the job is another worker's).
async fn settle<'a, F, Fut>(s: &Settings, call: F) -> Result<(), StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>> + 'a,
{
    let mut last = None;
    for pause in [0u64, 50, 250] {
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        match store_call(s.store_timeout, call()).await {
            Ok(()) => return Ok(()),
            Err(e @ StoreError::LeaseLost { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::unavailable("settlement failed")))
}

#[allow(unused_variables)]
fn note_take_failed(e: &StoreError) {
    #[cfg(feature = "tracing")]
    tracing::warn!(error = %e, "could not take jobs from the queue");
}

#[allow(unused_variables)]
fn note_failed(job: &Job, error: &str, retry_in: Option<Duration>) {
    #[cfg(feature = "tracing")]
    match retry_in {
        Some(d) => tracing::warn!(
            job = %job.key(), event_type = %job.event_type, attempt = job.token.attempt(),
            retry_in_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX), error,
            "job failed; it will be retried"
        ),
        None => tracing::error!(
            job = %job.key(), event_type = %job.event_type, attempt = job.token.attempt(), error,
            "job failed its last attempt and is dead"
        ),
    }
}

#[allow(unused_variables)]
fn note_late_take(job: &Job, took: Duration, lease: Duration) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        job = %job.key(),
        took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        "the take answered after its lease's safe window; the job was not run and will be retried (raise the lease)"
    );
}

#[allow(unused_variables)]
fn note_settle_failed(what: &str, job: &Job, e: &StoreError) {
    #[cfg(feature = "tracing")]
    tracing::warn!(job = %job.key(), error = %e, what, "could not record a job's state");
}
