//! Behaviours every [`Queue`] must have. Call [`run_all`] from a test of your queue with
//! a function that makes a fresh, empty queue (each behaviour gets its own), or the
//! functions one by one.
//!
//! Behaviours about leases and retry times that run out use [`LeaseTime`], as the store
//! suite does: a [`ManualClock`](crate::ManualClock) given to the queue, or a real clock
//! with short leases and sleeps.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use stripe_webhooks::queue::MemoryQueue;
//! use stripe_webhooks::testing::queue_conformance;
//! use stripe_webhooks::testing::store_conformance::LeaseTime;
//! use stripe_webhooks::ManualClock;
//!
//! let clock = ManualClock::new(1_700_000_000_000);
//! let c = clock.clone();
//! queue_conformance::run_all(move || { let c = c.clone(); async move { MemoryQueue::with_clock(c) } }, LeaseTime::Manual(clock)).await;
//! # });
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::store_conformance::LeaseTime;
use crate::event::EventId;
use crate::idempotency::StoreError;
use crate::queue::{Enqueued, JobState, NewJob, PayloadKind, Queue, QueueAdmin};

const LONG: Duration = Duration::from_secs(600);

/// A job about `object` created at `created`, with a recognisable body.
pub fn job(key: &str, object: Option<&str>, created: i64, body: &'static [u8]) -> NewJob<'static> {
    NewJob {
        key: EventId::new(key),
        event_id: EventId::new(key),
        event_type: "customer.updated".to_owned(),
        kind: PayloadKind::Snapshot,
        object_id: object.map(str::to_owned),
        created,
        body,
    }
}

/// Runs every behaviour, each on a fresh queue from `make`.
pub async fn run_all<Q, F, Fut>(make: F, time: LeaseTime)
where
    Q: QueueAdmin,
    F: Fn() -> Fut,
    Fut: Future<Output = Q>,
{
    enqueue_is_deduplicated(&make().await).await;
    concurrent_enqueues_queue_once(Arc::new(make().await), 16).await;
    take_hands_each_job_to_one_worker(Arc::new(make().await), 4).await;
    completion_is_fenced(&make().await, &time).await;
    extend_moves_the_lease_end(&make().await, &time).await;
    failed_jobs_retry_then_die(&make().await, &time).await;
    release_does_not_count_an_attempt(&make().await).await;
    requeue_brings_dead_jobs_back(&make().await).await;
    requeue_dead_takes_every_batch(&make().await).await;
    jobs_page_through_a_state(&make().await).await;
    per_object_order_runs_one_at_a_time_in_created_order(&make().await).await;
    counts_and_purge(&make().await, &time).await;
    oldest_queued_age_sees_past_requeued_jobs(&make().await, &time).await;
}

/// A key is queued once; its duplicates are [`Enqueued::Duplicate`] in every state.
pub async fn enqueue_is_deduplicated<Q: QueueAdmin + ?Sized>(q: &Q) {
    let j = job("evt_dedupe", Some("cus_1"), 10, b"{\"a\":1}");
    assert_eq!(q.enqueue(&j).await.unwrap(), Enqueued::Queued);
    assert_eq!(q.enqueue(&j).await.unwrap(), Enqueued::Duplicate);
    let taken = q.take(10, LONG, false).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].body, b"{\"a\":1}");
    assert_eq!(taken[0].token.attempt(), 1);
    assert_eq!(taken[0].kind, PayloadKind::Snapshot);
    assert_eq!(q.enqueue(&j).await.unwrap(), Enqueued::Duplicate, "running");
    q.complete(&taken[0].token).await.unwrap();
    assert_eq!(
        q.enqueue(&j).await.unwrap(),
        Enqueued::Duplicate,
        "completed"
    );
    let rec = q.job(&j.key).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Completed, 1));
    assert_eq!(rec.body, b"{\"a\":1}");
    assert!(rec.finished_at_ms.is_some());
    assert!(q.take(10, LONG, false).await.unwrap().is_empty());

    // Retrying and dead jobs deduplicate too: Stripe's retry of an event whose job
    // failed must not queue a second job beside it.
    for (key, retry_in, state) in [
        ("evt_dedupe_retrying", Some(LONG), "retrying"),
        ("evt_dedupe_dead", None, "dead"),
    ] {
        let j = job(key, None, 10, b"{}");
        assert_eq!(q.enqueue(&j).await.unwrap(), Enqueued::Queued);
        let taken = q.take(10, LONG, false).await.unwrap();
        assert_eq!(taken.len(), 1, "{state}");
        q.fail(&taken[0].token, "boom", retry_in).await.unwrap();
        assert_eq!(q.enqueue(&j).await.unwrap(), Enqueued::Duplicate, "{state}");
    }
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.retrying, c.dead), (0, 1, 1), "{c:?}");
}

/// Of `n` concurrent enqueues of one key, one queues.
pub async fn concurrent_enqueues_queue_once<Q: QueueAdmin>(q: Arc<Q>, n: usize) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let q = Arc::clone(&q);
        tasks.push(tokio::spawn(async move {
            q.enqueue(&job("evt_race", None, 1, b"{}")).await.unwrap()
        }));
    }
    let mut queued = 0;
    for t in tasks {
        if t.await.unwrap() == Enqueued::Queued {
            queued += 1;
        }
    }
    assert_eq!(queued, 1);
    assert_eq!(q.counts().await.unwrap().queued, 1);
}

/// `takers` workers taking at once get every job exactly once.
pub async fn take_hands_each_job_to_one_worker<Q: QueueAdmin>(q: Arc<Q>, takers: usize) {
    let keys: Vec<String> = (0..40).map(|i| format!("evt_take_{i:02}")).collect();
    for k in &keys {
        q.enqueue(&job(k, None, 1, b"{}")).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..takers {
        let q = Arc::clone(&q);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = q.take(3, LONG, false).await.unwrap();
                if jobs.is_empty() {
                    break mine;
                }
                for j in jobs {
                    q.complete(&j.token).await.unwrap();
                    mine.push(j.key().as_str().to_owned());
                }
            }
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), keys.len(), "every job taken exactly once");
    assert_eq!(unique.len(), keys.len());
    assert_eq!(q.counts().await.unwrap().completed, keys.len() as u64);
}

/// `extend` moves the lease's end: past the first lease the job is still held, and it
/// is taken over only once the extended lease has run out.
pub async fn extend_moves_the_lease_end<Q: QueueAdmin + ?Sized>(q: &Q, time: &LeaseTime) {
    q.enqueue(&job("evt_extend", None, 1, b"{}")).await.unwrap();
    let lease = short_lease(time);
    let held = q.take(1, lease, false).await.unwrap().remove(0);
    q.extend(&held.token, lease * 3).await.unwrap();
    run_out(time, lease).await;
    assert!(
        q.take(1, LONG, false).await.unwrap().is_empty(),
        "the extended lease is live past the first lease's end"
    );
    run_out(time, lease * 2).await;
    let taken = q.take(1, LONG, false).await.unwrap();
    assert_eq!(taken.len(), 1, "taken over once the extended lease ran out");
    assert_eq!(taken[0].token.attempt(), 2);
    q.complete(&taken[0].token).await.unwrap();
}

/// Only the token that holds a job settles it; a job whose lease ran out is taken over,
/// and the old holder is then refused.
pub async fn completion_is_fenced<Q: QueueAdmin + ?Sized>(q: &Q, time: &LeaseTime) {
    q.enqueue(&job("evt_fence", None, 1, b"{}")).await.unwrap();
    let lease = short_lease(time);
    let first = q.take(1, lease, false).await.unwrap().remove(0);
    q.extend(&first.token, lease).await.unwrap();
    assert!(
        q.take(1, lease, false).await.unwrap().is_empty(),
        "live lease"
    );
    run_out(time, lease).await;
    let second = q.take(1, LONG, false).await.unwrap().remove(0);
    assert_eq!(second.token.attempt(), 2);
    for call in [
        q.complete(&first.token).await,
        q.extend(&first.token, LONG).await,
        q.fail(&first.token, "x", None).await,
        q.release(&first.token).await,
    ] {
        assert!(
            matches!(call, Err(StoreError::LeaseLost { .. })),
            "{call:?}"
        );
    }
    q.complete(&second.token).await.unwrap();
    // Completed: the same token's completion again (a retry whose first answer was lost)
    // is done; the old holder's is still refused, as is any other call.
    q.complete(&second.token).await.unwrap();
    for call in [
        q.complete(&first.token).await,
        q.extend(&second.token, LONG).await,
        q.fail(&second.token, "x", None).await,
        q.release(&second.token).await,
    ] {
        assert!(
            matches!(call, Err(StoreError::LeaseLost { .. })),
            "{call:?}"
        );
    }
    assert_eq!(
        q.job(&EventId::new("evt_fence"))
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Completed
    );
}

/// A failed job is retrying until its delay passes, then runs again; failed with no
/// retry it is dead, with its last error and body, and never taken.
pub async fn failed_jobs_retry_then_die<Q: QueueAdmin + ?Sized>(q: &Q, time: &LeaseTime) {
    q.enqueue(&job("evt_fail", None, 1, b"{\"dead\":true}"))
        .await
        .unwrap();
    let delay = short_lease(time);
    let j = q.take(1, LONG, false).await.unwrap().remove(0);
    q.fail(&j.token, "first failure", Some(delay))
        .await
        .unwrap();
    let rec = q.job(j.key()).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Retrying);
    assert_eq!(rec.last_error.as_deref(), Some("first failure"));
    // `Queue::last_error`: this error, or none where the queue keeps the default.
    let kept = q.last_error(j.key()).await.unwrap();
    assert!(kept.is_none() || kept == rec.last_error, "{kept:?}");
    assert!(
        q.take(1, LONG, false).await.unwrap().is_empty(),
        "not due yet"
    );
    run_out(time, delay).await;
    let j = q.take(1, LONG, false).await.unwrap().remove(0);
    assert_eq!(j.token.attempt(), 2);
    let long = "é".repeat(2000);
    q.fail(&j.token, &long, None).await.unwrap();
    let dead = q.jobs(JobState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].attempts, dead[0].state), (2, JobState::Dead));
    assert!(dead[0].last_error.as_ref().unwrap().len() <= crate::MAX_ERROR_LEN);
    assert_eq!(dead[0].body, b"{\"dead\":true}");
    run_out(time, delay).await;
    assert!(
        q.take(1, LONG, false).await.unwrap().is_empty(),
        "dead is never taken"
    );
}

/// A released job is queued again at once, and the run did not count.
pub async fn release_does_not_count_an_attempt<Q: QueueAdmin + ?Sized>(q: &Q) {
    q.enqueue(&job("evt_release", None, 1, b"{}"))
        .await
        .unwrap();
    let j = q.take(1, LONG, false).await.unwrap().remove(0);
    q.release(&j.token).await.unwrap();
    let again = q.take(1, LONG, false).await.unwrap().remove(0);
    assert_eq!(again.token.attempt(), 1);
    q.complete(&again.token).await.unwrap();
}

/// `requeue` and `requeue_dead` bring dead jobs back with their attempts reset; other
/// states are left alone.
pub async fn requeue_brings_dead_jobs_back<Q: QueueAdmin + ?Sized>(q: &Q) {
    for k in ["evt_rq_1", "evt_rq_2", "evt_rq_3"] {
        q.enqueue(&job(k, None, 1, b"{}")).await.unwrap();
    }
    for j in q.take(3, LONG, false).await.unwrap() {
        q.fail(&j.token, "boom", None).await.unwrap();
    }
    assert_eq!(q.counts().await.unwrap().dead, 3);
    assert!(q.requeue(&EventId::new("evt_rq_1")).await.unwrap());
    assert!(
        !q.requeue(&EventId::new("evt_rq_1")).await.unwrap(),
        "queued now"
    );
    assert!(!q.requeue(&EventId::new("evt_missing")).await.unwrap());
    assert_eq!(q.requeue_dead().await.unwrap(), 2);
    let jobs = q.take(10, LONG, false).await.unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.token.attempt() == 1));
    for j in jobs {
        q.complete(&j.token).await.unwrap();
    }
    assert_eq!(q.counts().await.unwrap().completed, 3);
}

/// `requeue_dead` requeues every dead job, more than a backend's batch (500) of them,
/// each once.
pub async fn requeue_dead_takes_every_batch<Q: QueueAdmin + ?Sized>(q: &Q) {
    const JOBS: usize = 1_100;
    for i in 0..JOBS {
        q.enqueue(&job(&format!("evt_rqb_{i}"), None, 1, b"{}"))
            .await
            .unwrap();
    }
    let mut buried = 0;
    while buried < JOBS {
        let jobs = q.take(200, LONG, false).await.unwrap();
        assert!(!jobs.is_empty(), "jobs left queued");
        for j in jobs {
            q.fail(&j.token, "boom", None).await.unwrap();
            buried += 1;
        }
    }
    assert_eq!(q.counts().await.unwrap().dead, JOBS as u64);
    assert_eq!(q.requeue_dead().await.unwrap(), JOBS as u64);
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.dead), (JOBS as u64, 0), "{c:?}");
    assert_eq!(q.requeue_dead().await.unwrap(), 0);
}

/// [`jobs_after`](QueueAdmin::jobs_after) pages through a state in the order of
/// [`jobs`](QueueAdmin::jobs), each job once; a job that left the state still marks its
/// place, and a key the queue never had gives an empty page.
pub async fn jobs_page_through_a_state<Q: QueueAdmin + ?Sized>(q: &Q) {
    let keys: Vec<String> = (0..8).map(|i| format!("evt_page_{i}")).collect();
    for k in &keys {
        q.enqueue(&job(k, None, 1, b"{}")).await.unwrap();
    }
    let key_of = |r: &crate::queue::JobRecord| r.key.as_str().to_owned();
    let first: Vec<String> = q
        .jobs(JobState::Queued, 3)
        .await
        .unwrap()
        .iter()
        .map(key_of)
        .collect();
    assert_eq!(first, keys[..3]);
    let mut seen = first;
    for _ in 0..keys.len() {
        let after = EventId::new(seen.last().unwrap().as_str());
        let page = q.jobs_after(JobState::Queued, &after, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(key_of));
    }
    assert_eq!(seen, keys, "each queued job once, in enqueue order");

    // Two jobs leave `queued`: the page after either is still the queued jobs queued
    // after it.
    let taken = q.take(2, LONG, false).await.unwrap();
    assert_eq!(taken.len(), 2);
    let mut left: Vec<usize> = taken
        .iter()
        .map(|j| keys.iter().position(|k| *k == j.key().as_str()).unwrap())
        .collect();
    left.sort_unstable();
    // The later of the two dies; the earlier runs on.
    let buried = taken
        .iter()
        .find(|j| j.key().as_str() == keys[left[1]])
        .unwrap();
    q.fail(&buried.token, "boom", None).await.unwrap();
    for &i in &left {
        let page: Vec<String> = q
            .jobs_after(JobState::Queued, &EventId::new(keys[i].as_str()), 2)
            .await
            .unwrap()
            .iter()
            .map(key_of)
            .collect();
        let want: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(j, _)| *j > i && !left.contains(j))
            .take(2)
            .map(|(_, k)| k.clone())
            .collect();
        assert_eq!(page, want, "after {}", keys[i]);
    }
    // Any job's key places a page of another state: the dead jobs after the running one
    // (queued before it) are the one that died; after the dead one, none.
    let dead: Vec<String> = q
        .jobs_after(JobState::Dead, &EventId::new(keys[left[0]].as_str()), 10)
        .await
        .unwrap()
        .iter()
        .map(key_of)
        .collect();
    assert_eq!(dead, [keys[left[1]].clone()]);
    assert!(q
        .jobs_after(JobState::Dead, &EventId::new(keys[left[1]].as_str()), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(q
        .jobs_after(JobState::Queued, &EventId::new("evt_never_queued"), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(q
        .jobs_after(JobState::Queued, &EventId::new(keys[0].as_str()), 0)
        .await
        .unwrap()
        .is_empty());
}

/// With per-object order, a job runs only after the earlier jobs of its object, and
/// never beside another of its object; a retrying job holds its object's later jobs
/// back and a dead one does not. Without it, jobs of one object run side by side.
pub async fn per_object_order_runs_one_at_a_time_in_created_order<Q: QueueAdmin + ?Sized>(q: &Q) {
    q.enqueue(&job("evt_late", Some("sub_1"), 20, b"{}"))
        .await
        .unwrap();
    q.enqueue(&job("evt_early", Some("sub_1"), 10, b"{}"))
        .await
        .unwrap();
    q.enqueue(&job("evt_other", Some("sub_2"), 30, b"{}"))
        .await
        .unwrap();
    q.enqueue(&job("evt_none", None, 40, b"{}")).await.unwrap();
    let jobs = q.take(10, LONG, true).await.unwrap();
    let keys: HashSet<&str> = jobs.iter().map(|j| j.key().as_str()).collect();
    assert_eq!(keys, HashSet::from(["evt_early", "evt_other", "evt_none"]));
    let mut early = None;
    for j in jobs {
        if j.key().as_str() == "evt_early" {
            early = Some(j);
        } else {
            q.complete(&j.token).await.unwrap();
        }
    }
    assert!(
        q.take(10, LONG, true).await.unwrap().is_empty(),
        "sub_1 is busy"
    );
    q.complete(&early.unwrap().token).await.unwrap();
    let next = q.take(10, LONG, true).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].key().as_str(), "evt_late");
    q.complete(&next[0].token).await.unwrap();

    q.enqueue(&job("evt_a", Some("sub_3"), 1, b"{}"))
        .await
        .unwrap();
    q.enqueue(&job("evt_b", Some("sub_3"), 2, b"{}"))
        .await
        .unwrap();
    let a = q.take(10, LONG, true).await.unwrap().remove(0);
    assert_eq!(a.key().as_str(), "evt_a");
    q.fail(&a.token, "later", Some(LONG)).await.unwrap();
    assert!(
        q.take(10, LONG, true).await.unwrap().is_empty(),
        "evt_a retrying"
    );
    assert!(q.requeue(&EventId::new("evt_a")).await.unwrap());
    let a = q.take(10, LONG, true).await.unwrap().remove(0);
    q.fail(&a.token, "gave up", None).await.unwrap();
    let b = q.take(10, LONG, true).await.unwrap();
    assert_eq!(b.len(), 1, "a dead job does not hold its object back");
    q.complete(&b[0].token).await.unwrap();

    q.enqueue(&job("evt_c", Some("sub_4"), 1, b"{}"))
        .await
        .unwrap();
    q.enqueue(&job("evt_d", Some("sub_4"), 2, b"{}"))
        .await
        .unwrap();
    assert_eq!(q.take(10, LONG, false).await.unwrap().len(), 2);
}

/// Counts by state, the oldest queued age, and purging completed jobs in batches.
pub async fn counts_and_purge<Q: QueueAdmin + ?Sized>(q: &Q, time: &LeaseTime) {
    for i in 0..5 {
        q.enqueue(&job(&format!("evt_count_{i}"), None, 1, b"{}"))
            .await
            .unwrap();
        // A millisecond apart, so that "newest first" needs no tie-break (the trait's
        // default `recent` orders by enqueue time alone).
        run_out(time, Duration::ZERO).await;
    }
    let c = q.counts().await.unwrap();
    assert_eq!(c.queued, 5);
    assert!(c.oldest_queued_age_ms.is_some());
    let jobs = q.take(4, LONG, false).await.unwrap();
    let mut it = jobs.into_iter();
    for j in it.by_ref().take(3) {
        q.complete(&j.token).await.unwrap();
    }
    let last = it.next().unwrap();
    q.fail(&last.token, "x", None).await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.running, c.completed, c.dead), (1, 0, 3, 1));
    let recent = q.recent(3).await.unwrap();
    let keys: Vec<&str> = recent.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        ["evt_count_4", "evt_count_3", "evt_count_2"],
        "newest first"
    );
    // Completed jobs younger than the retention stay.
    assert_eq!(q.purge_completed(LONG, 10).await.unwrap(), 0);
    assert_eq!(
        q.counts().await.unwrap().completed,
        3,
        "young jobs were purged"
    );
    run_out(time, short_lease(time)).await;
    assert_eq!(q.purge_completed(Duration::ZERO, 2).await.unwrap(), 2);
    assert_eq!(q.purge_completed(Duration::ZERO, 2).await.unwrap(), 1);
    assert_eq!(q.purge_completed(Duration::ZERO, 2).await.unwrap(), 0);
    let c = q.counts().await.unwrap();
    assert_eq!((c.completed, c.dead), (0, 1), "dead jobs are never purged");
    // Any limit is taken, the largest too.
    assert_eq!(q.jobs(JobState::Dead, usize::MAX).await.unwrap().len(), 1);
    assert_eq!(
        q.purge_completed(Duration::ZERO, usize::MAX).await.unwrap(),
        0
    );

    // The age of the oldest queued job counts from when it was queued last: a dead job
    // queued long ago and requeued now has not waited (a lag alert must not fire).
    for j in q.take(1, LONG, false).await.unwrap() {
        q.complete(&j.token).await.unwrap();
    }
    assert_eq!(q.counts().await.unwrap().queued, 0);
    let waited = short_lease(time);
    run_out(time, waited).await;
    let dead = q.jobs(JobState::Dead, 1).await.unwrap();
    assert!(q.requeue(&dead[0].key).await.unwrap());
    let c = q.counts().await.unwrap();
    assert_eq!(c.queued, 1);
    let age = c.oldest_queued_age_ms.unwrap();
    assert!(
        u128::from(age) < waited.as_millis(),
        "a job requeued now has waited {age} ms"
    );
}

/// The age of the oldest queued job finds a job that has waited behind more requeued
/// jobs than any fixed window: after a mass requeue of dead jobs enqueued before it, a
/// backlog's lag must still show.
pub async fn oldest_queued_age_sees_past_requeued_jobs<Q: QueueAdmin + ?Sized>(
    q: &Q,
    time: &LeaseTime,
) {
    const AHEAD: usize = 150;
    for i in 0..AHEAD {
        q.enqueue(&job(&format!("evt_ahead_{i}"), None, 1, b"{}"))
            .await
            .unwrap();
    }
    let mut taken = Vec::new();
    while taken.len() < AHEAD {
        let batch = q.take(64, LONG, false).await.unwrap();
        assert!(!batch.is_empty(), "{} of {AHEAD} taken", taken.len());
        taken.extend(batch);
    }
    for j in &taken {
        q.fail(&j.token, "boom", None).await.unwrap();
    }
    q.enqueue(&job("evt_waiting", None, 1, b"{}"))
        .await
        .unwrap();
    let waited = short_lease(time);
    run_out(time, waited).await;
    assert_eq!(q.requeue_dead().await.unwrap(), AHEAD as u64);
    let c = q.counts().await.unwrap();
    assert_eq!(c.queued, AHEAD as u64 + 1, "{c:?}");
    let age = c.oldest_queued_age_ms.unwrap();
    assert!(
        u128::from(age) >= waited.as_millis(),
        "the job queued {} ms ago shows as waiting {age} ms",
        waited.as_millis()
    );
    // Once it is taken, the oldest is a requeued job, which has not waited. (The jobs
    // taken on the way are held meanwhile: the contract does not say in which order a
    // take finds jobs, and one given back could be found again.)
    let mut held = Vec::new();
    loop {
        let batch = q.take(64, LONG, false).await.unwrap();
        assert!(!batch.is_empty(), "evt_waiting was never taken");
        let found = batch.iter().any(|j| j.key().as_str() == "evt_waiting");
        held.extend(batch);
        if found {
            break;
        }
    }
    for j in held.iter().filter(|j| j.key().as_str() != "evt_waiting") {
        q.release(&j.token).await.unwrap();
    }
    let c = q.counts().await.unwrap();
    assert_eq!(c.queued, AHEAD as u64, "{c:?}");
    let age = c.oldest_queued_age_ms.unwrap();
    assert!(
        u128::from(age) < waited.as_millis(),
        "the requeued jobs show as waiting {age} ms"
    );
}

fn short_lease(time: &LeaseTime) -> Duration {
    match time {
        LeaseTime::Manual(_) => Duration::from_secs(30),
        LeaseTime::Real => Duration::from_millis(800),
    }
}

async fn run_out(time: &LeaseTime, lease: Duration) {
    match time {
        LeaseTime::Manual(clock) => clock.advance(lease + Duration::from_millis(1)),
        LeaseTime::Real if lease.is_zero() => {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        LeaseTime::Real => tokio::time::sleep(lease + Duration::from_millis(200)).await,
    }
}
