//! Keeping a claim while its handler runs: lease renewal, stopping a handler whose lease
//! is lost, and settling the claim of a delivery that was dropped half-way.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::dispatch::DispatchSettings;
use crate::handler::HandlerError;
use crate::idempotency::{ClaimToken, IdempotencyStore, OrderingStore};

/// How the handler's run ended, as [`renewing_lease`] saw it.
pub(super) enum Handled {
    /// The handler returned (or failed, panicked, ran past its deadline).
    Finished(Result<(), HandlerError>),
    /// The processor stopped the handler: its lease was lost. The caller releases the
    /// claim, fenced: it may be someone else's now, and is then left alone. (Only with
    /// the `tokio` feature's timers.)
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    LeaseLost,
}

/// Where a claim stands, for [`ClaimGuard`].
enum Held {
    /// The handler runs (or failed and the claim is not yet released).
    Running(ClaimToken),
    /// The handler succeeded; the completion is not recorded yet.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    Succeeded(ClaimToken),
    /// Completed, released, or lost: nothing to do on drop.
    Settled,
}

/// Settles the claim of a delivery whose future was dropped (the client went away, the
/// server cancelled the request) before it did so itself, from a task spawned on the
/// current tokio runtime:
///
/// - while the handler runs, the claim is released, so Stripe's retry can run it again
///   at once;
/// - once the handler has succeeded, the claim is **completed**, never released: a
///   release would let the retry run the handler a second time.
///
/// Without a runtime (or without the `tokio` feature) nothing is spawned and the lease
/// expiring frees the event instead.
pub(super) struct ClaimGuard<'a> {
    store: &'a Arc<dyn IdempotencyStore>,
    held: Held,
    /// The processor's store timeout, for the completion's calls.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    store_timeout: std::time::Duration,
    /// The processor's count of detached work, which the settling task joins.
    #[cfg(feature = "tokio")]
    in_flight: &'a Arc<super::drain::InFlight>,
}

impl<'a> ClaimGuard<'a> {
    pub(super) fn new(
        store: &'a Arc<dyn IdempotencyStore>,
        token: ClaimToken,
        settings: &'a DispatchSettings,
    ) -> Self {
        Self {
            store,
            held: Held::Running(token),
            store_timeout: settings.store_timeout,
            #[cfg(feature = "tokio")]
            in_flight: &settings.in_flight,
        }
    }

    /// The handler returned `Ok`: from now on a drop completes the claim.
    pub(super) fn handler_succeeded(&mut self) {
        self.held = match std::mem::replace(&mut self.held, Held::Settled) {
            Held::Running(token) | Held::Succeeded(token) => Held::Succeeded(token),
            Held::Settled => Held::Settled,
        };
    }

    /// The delivery settled the claim itself.
    pub(super) fn settled(&mut self) {
        self.held = Held::Settled;
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        let held = std::mem::replace(&mut self.held, Held::Settled);
        if matches!(held, Held::Settled) {
            return;
        }
        #[cfg(feature = "tokio")]
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(self.store);
            let t = self.store_timeout;
            // Counted from now until the task ends, so that `Processor::drain` waits for
            // it; a task the runtime's end cuts counts as cut.
            let running = self.in_flight.start();
            runtime.spawn(async move {
                match held {
                    Held::Running(token) => {
                        let reason = "delivery cancelled before the handler finished";
                        // If this fails too, the lease running out frees the event.
                        let _ = super::dispatch::store_call(t, store.release(&token, reason)).await;
                    }
                    Held::Succeeded(token) => {
                        let kind = super::dispatch::complete(t, || store.complete(&token)).await;
                        note_completion_after_drop(&token, &kind);
                    }
                    Held::Settled => {}
                }
                running.finished();
            });
        }
        #[cfg(not(feature = "tokio"))]
        let _ = (held, self.store);
    }
}

/// How many [`LockAttempt`] tasks may run at once in the process.
#[cfg(feature = "tokio")]
const MAX_LATE_UNLOCKS: usize = 64;

/// How many [`LockAttempt`] tasks run.
#[cfg(feature = "tokio")]
static LATE_UNLOCKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An object lock asked for ([`OrderingStore::lock_and_claim`]) whose answer never
/// came: the call timed out, or the delivery was dropped while it ran. Its statement
/// may still take the lock on the server (one waiting on the object's row, behind an
/// inbox's transaction, runs when the row is free), which would then hold the object's
/// other events (409) until its lease ran out, with nobody to let it go. Dropped
/// unanswered, it lets that lock go from a task, tried at once and then after waits
/// that double from the store timeout up to a quarter of the lease, until the lease has
/// passed: it frees only this holder's lock, a name no other delivery uses. (A claim the
/// statement took stays to its own lease: its fence is unknown here.) At most
/// `MAX_LATE_UNLOCKS` such tasks run at once in the process, so a store that is slow or
/// down for everyone is not sent more work by each delivery it failed; past that, and
/// without a runtime, the lease frees the object instead. Not counted by
/// `Processor::drain`, which need not wait a lease for it.
///
/// [`OrderingStore::lock_and_claim`]: crate::idempotency::OrderingStore::lock_and_claim
/// It borrows what it names: only a task spawned for an unanswered call copies it, so
/// a delivery that got its answer (nearly all) allocates nothing for it.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(super) struct LockAttempt<'a> {
    store: &'a Arc<dyn OrderingStore>,
    object_id: &'a str,
    holder: &'a str,
    settings: &'a DispatchSettings,
    answered: bool,
}

impl<'a> LockAttempt<'a> {
    pub(super) fn new(
        store: &'a Arc<dyn OrderingStore>,
        object_id: &'a str,
        holder: &'a str,
        settings: &'a DispatchSettings,
    ) -> Self {
        Self {
            store,
            object_id,
            holder,
            settings,
            answered: false,
        }
    }

    /// The store answered: whatever it did, the delivery knows it.
    pub(super) fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for LockAttempt<'_> {
    fn drop(&mut self) {
        #[cfg(feature = "tokio")]
        if let (false, Ok(runtime)) = (self.answered, tokio::runtime::Handle::try_current()) {
            use std::sync::atomic::Ordering::SeqCst;
            let taken = LATE_UNLOCKS
                .fetch_update(SeqCst, SeqCst, |n| (n < MAX_LATE_UNLOCKS).then_some(n + 1));
            if taken.is_err() {
                return;
            }
            /// Gives its place back when the task ends, or is dropped with its runtime.
            struct Place;
            impl Drop for Place {
                fn drop(&mut self) {
                    LATE_UNLOCKS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            let place = Place;
            let store = Arc::clone(self.store);
            let (object_id, holder) = (self.object_id.to_owned(), self.holder.to_owned());
            let (lease, t) = (self.settings.lease, self.settings.store_timeout);
            let longest = (lease / 4).max(t);
            let until = tokio::time::Instant::now() + lease;
            runtime.spawn(async move {
                let _place = place;
                let mut wait = t;
                loop {
                    let unlock = store.unlock_object(&object_id, &holder);
                    let _ = super::dispatch::store_call(t, unlock).await;
                    if tokio::time::Instant::now() + wait > until {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(longest);
                }
            });
        }
    }
}

/// A completion recorded for a dropped delivery that failed is an event that may run
/// again: say so, as the delivery's own outcome would have.
#[cfg(feature = "tokio")]
fn note_completion_after_drop(token: &ClaimToken, kind: &super::OutcomeKind) {
    #[cfg(feature = "tracing")]
    if let super::OutcomeKind::CompletionNotRecorded(e) = kind {
        tracing::error!(
            event_id = token.event_id().as_str(),
            error = %e,
            "the handler succeeded but its completion could not be recorded after the delivery was dropped; the event may run again"
        );
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (token, kind);
}

/// Runs `work` (the handler) while renewing the claim's lease every third of the lease,
/// so a handler that runs longer than the lease is not taken over by a redelivery. The
/// renewal runs alongside the handler, never pausing it.
///
/// A renewal that fails for a passing reason is tried again after a third of the lease
/// or a second, whichever is sooner. But the handler is **stopped** (its future dropped,
/// answered [`HandlerError::LeaseLost`]) as soon as the store says the claim is gone, or
/// when the lease may have run out: more than 90% of a lease after the start of the last
/// call that set it (the claim, or the last successful renewal). Past that point another
/// delivery may claim the event, and two runs of one handler must never overlap. (A
/// handler is stopped at its next `.await`; work it spawned, or blocking code, runs on.)
#[cfg(feature = "tokio")]
pub(super) async fn renewing_lease(
    store: &dyn IdempotencyStore,
    token: &ClaimToken,
    settings: &DispatchSettings,
    claimed_at: Instant,
    work: impl Future<Output = Result<(), HandlerError>>,
    finished_before_renewal: impl FnOnce(&Result<(), HandlerError>),
) -> Handled {
    use std::task::Poll;
    use tokio::time::{sleep_until, timeout_at, Instant as TokioInstant};

    use super::dispatch::store_call;
    use crate::idempotency::StoreError;

    use std::time::Duration;

    // At most a day (`MAX_LEASE`), so no instant below can overflow. Tokio's instants,
    // which its timers wait on: on a paused clock (a test's `start_paused`) the system's
    // does not move while tokio's jumps ahead, and a renewal due by the system's clock
    // was due again at once, over and over (22 million times in a minute's run).
    let lease = settings.lease;
    let every = (lease / 3).max(Duration::from_millis(1));
    let safe = lease - lease / 10;
    // The claim's start on tokio's clock: as long ago as on the system's (a paused clock
    // may be far ahead of the system's, so `from_std` would put it in tokio's past).
    let now = TokioInstant::now();
    let claimed_at_t = now.checked_sub(claimed_at.elapsed()).unwrap_or(now);
    // The lease certainly lasts until then; the handler stops there at the latest.
    let mut held_until = claimed_at_t + safe;
    let mut next_renewal = claimed_at_t + every;
    // When the handler started: a run stopped here is timed from it, not from the claim.
    let ran_from = Instant::now();
    let mut work = std::pin::pin!(work);
    loop {
        let wake = next_renewal.min(held_until);
        if let Ok(out) = timeout_at(wake, work.as_mut()).await {
            return Handled::Finished(out);
        }
        if TokioInstant::now() >= held_until {
            note_lost(
                ran_from,
                settings,
                "the lease may have run out while renewals failed",
            );
            return Handled::LeaseLost;
        }
        let started = TokioInstant::now();
        let mut renew = std::pin::pin!(store_call(
            settings.store_timeout,
            store.extend(token, lease)
        ));
        let mut expiry = std::pin::pin!(sleep_until(held_until));
        let mut renewed = None;
        let finished = std::future::poll_fn(|cx| {
            if renewed.is_none() {
                if let Poll::Ready(result) = renew.as_mut().poll(cx) {
                    renewed = Some(result);
                }
            }
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(Handled::Finished(out)));
            }
            if renewed.is_some() {
                return Poll::Ready(None);
            }
            if expiry.as_mut().poll(cx).is_ready() {
                note_lost(
                    ran_from,
                    settings,
                    "the lease may have run out while a renewal was pending",
                );
                return Poll::Ready(Some(Handled::LeaseLost));
            }
            Poll::Pending
        })
        .await;
        if let Some(out) = finished {
            if let (Handled::Finished(result), None) = (&out, &renewed) {
                // The handler finished while a renewal was on its way: let it end (within
                // the store timeout) before the claim is settled. Dropped, its statement
                // could still run on the server after the completion, and lock the
                // object again for a lease (the completion had freed it). The caller
                // hears first how the handler ended, so that a delivery dropped during
                // this wait completes a claim whose handler succeeded, never releases it.
                finished_before_renewal(result);
                let _ = renew.await;
            }
            return out;
        }
        match renewed {
            Some(Ok(())) => {
                held_until = started + safe;
                next_renewal = started + every;
            }
            Some(Err(StoreError::LeaseLost { .. })) => {
                note_lost(
                    ran_from,
                    settings,
                    "the store says another delivery took the claim over",
                );
                return Handled::LeaseLost;
            }
            Some(Err(e)) => {
                note_renewal_failed(&e);
                next_renewal = TokioInstant::now() + every.min(Duration::from_secs(1));
            }
            None => {}
        }
    }
}

/// Without a runtime there is no timer to renew on: the handler must finish within the
/// lease.
#[cfg(not(feature = "tokio"))]
pub(super) async fn renewing_lease(
    _store: &dyn IdempotencyStore,
    _token: &ClaimToken,
    _settings: &DispatchSettings,
    _claimed_at: Instant,
    work: impl Future<Output = Result<(), HandlerError>>,
    _finished_before_renewal: impl FnOnce(&Result<(), HandlerError>),
) -> Handled {
    Handled::Finished(work.await)
}

#[cfg(feature = "tokio")]
fn note_renewal_failed(e: &crate::idempotency::StoreError) {
    #[cfg(feature = "tracing")]
    tracing::warn!(error = %e, "could not renew the lease of a running handler");
    #[cfg(not(feature = "tracing"))]
    let _ = e;
}

#[cfg(feature = "tokio")]
/// A handler stopped because its lease was lost: logged, and counted as a run that
/// ended `lease_lost` (its future is dropped, so it records nothing itself), timed from
/// when it started; work standing in for a handler is not counted.
fn note_lost(ran_from: Instant, settings: &DispatchSettings, why: &str) {
    #[cfg(feature = "tracing")]
    tracing::error!(why, "stopped a running handler: its claim's lease was lost");
    #[cfg(not(feature = "tracing"))]
    let _ = why;
    #[cfg(feature = "metrics")]
    if settings.handler_work {
        crate::metrics::handler_ran(ran_from.elapsed(), &Err(HandlerError::LeaseLost));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (ran_from, settings);
}
