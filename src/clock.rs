//! Clocks: where the crate reads the time. Signature verification reads seconds, stores
//! read milliseconds for leases and retention; tests and replays inject their own.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `d` in whole milliseconds, rounded up: the stores' leases, retentions and delays. A
/// lease under a millisecond lasts one; rounded down to none, it would end as it was
/// taken, and a second claim in the same millisecond would be acquired beside the first.
pub(crate) fn ceil_millis(d: Duration) -> u128 {
    d.as_millis()
        .saturating_add(u128::from(d.subsec_nanos() % 1_000_000 != 0))
}

/// A source of the current time in Unix seconds, injectable for tests and replays.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time as seconds since the Unix epoch.
    fn now_unix(&self) -> i64;

    /// The current time as milliseconds since the Unix epoch (used for leases). The
    /// default is [`now_unix`](Self::now_unix) × 1000.
    fn now_millis(&self) -> i64 {
        self.now_unix().saturating_mul(1000)
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
        }
    }

    fn now_millis(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |s| -s),
        }
    }
}

/// The system clock read once, then moved by a monotonic timer (`std::time::Instant`):
/// Unix time as it was when the clock was made plus the time elapsed since. A step of
/// the system clock (NTP, an operator) does not move it, so leases judged by it neither
/// end early nor last longer; the in-memory store and queue use it. It drifts from the
/// system clock by as much as the system clock was stepped, and falls behind it by the
/// time the machine spent suspended (the monotonic timer stops meanwhile), so the
/// records' times (`first_seen_ms`, retention) can lag wall time by that much.
///
/// ```
/// use stripe_webhooks::{Clock, SteadyClock, SystemClock};
///
/// let steady = SteadyClock::new();
/// assert!((steady.now_unix() - SystemClock.now_unix()).abs() <= 1);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SteadyClock {
    /// Unix milliseconds at `started`.
    start_millis: i64,
    started: std::time::Instant,
}

impl SteadyClock {
    /// A clock reading the system clock now, and moving steadily from there.
    pub fn new() -> Self {
        Self::starting_at(SystemClock.now_millis())
    }

    /// A clock reading `millis` (Unix milliseconds) now, and moving steadily from there.
    pub fn starting_at(millis: i64) -> Self {
        Self {
            start_millis: millis,
            started: std::time::Instant::now(),
        }
    }
}

impl Default for SteadyClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SteadyClock {
    fn now_unix(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }

    fn now_millis(&self) -> i64 {
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.start_millis.saturating_add(elapsed)
    }
}

/// A clock that moves only when told to, shared by its clones: for tests of leases and
/// retention.
///
/// ```
/// use std::time::Duration;
/// use stripe_webhooks::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_700_000_000_000);
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now_millis(), 1_700_000_001_500);
/// assert_eq!(clock.now_unix(), 1_700_000_001);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `millis` (Unix milliseconds).
    pub fn new(millis: i64) -> Self {
        Self(Arc::new(AtomicI64::new(millis)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(ms))
            });
    }

    /// Sets the clock to `millis`.
    pub fn set(&self, millis: i64) {
        self.0.store(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst).div_euclid(1000)
    }

    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A clock stopped at one instant (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_unix(&self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A steady clock moves from where it started by the monotonic timer alone: it does
    /// not read the system clock again (which here reads some 1.7 × 10¹² ms).
    #[test]
    fn a_steady_clock_moves_from_its_start_by_the_monotonic_timer() {
        let clock = SteadyClock::starting_at(1_000_000);
        let first = clock.now_millis();
        std::thread::sleep(Duration::from_millis(20));
        let later = clock.now_millis();
        assert!((1_000_000..1_060_000).contains(&first), "{first}");
        assert!(
            later >= first + 20 && later < 1_060_000,
            "{first} then {later}"
        );
        assert_eq!(clock.now_unix(), later.div_euclid(1000));
    }

    /// A `MemoryStore`'s `Debug` shows its settings and how many records it holds, never
    /// the records (their ids and fences), however many there are.
    #[test]
    fn a_memory_stores_debug_shows_no_records() {
        use crate::IdempotencyStore;
        let store = crate::MemoryStore::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..3 {
            let id = crate::EventId::new(format!("evt_debug_{i}"));
            let claim = store.claim(&id, &crate::EventType::InvoicePaid, Duration::from_secs(30));
            rt.block_on(claim).unwrap();
        }
        let shown = format!("{store:?}");
        assert!(shown.contains("records: Some(3)"), "{shown}");
        assert!(!shown.contains("evt_debug"), "{shown}");
    }

    #[test]
    fn the_in_memory_store_and_queue_judge_leases_by_a_steady_clock() {
        assert!(format!("{:?}", crate::MemoryStore::new()).contains("SteadyClock"));
        assert!(format!("{:?}", crate::queue::MemoryQueue::new()).contains("SteadyClock"));
    }
}
