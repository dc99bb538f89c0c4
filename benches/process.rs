//! The full `process()` on a MemoryStore with a no-op handler, against verify + parse
//! alone; the MemoryStore claim+complete pair; claims per second with 2 threads.
//!
//! Run with: `cargo bench --bench process --features testing`

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use stripe_webhooks::{
    async_trait, testing, Claim, Event, EventHandler, EventId, EventType, FixedClock, HandlerError,
    IdempotencyStore, MemoryStore, Processor, SigningSecret, Verifier, DEFAULT_MAX_RECORDS,
};

const SECRET: &str = "whsec_bench_secret_0123456789abcdef";
const T: i64 = 1_700_000_000;
const LEASE: Duration = Duration::from_secs(30);

struct Noop;

#[async_trait]
impl EventHandler for Noop {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn verifier() -> Verifier {
    Verifier::new(SigningSecret::new(SECRET).unwrap_or_else(|_| unreachable!()))
        .with_clock(FixedClock(T))
}

/// One claim+complete pair per id.
async fn pairs(store: &MemoryStore, ids: &[EventId]) {
    for id in ids {
        if let Ok(Claim::Acquired(t)) = store.claim(id, &EventType::InvoicePaid, LEASE).await {
            let _ = store.complete(&t).await;
        }
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|_| unreachable!());
    // Distinct events, so every process() claims and completes (no duplicates).
    let n = 200_000;
    let template =
        testing::event_for_type("evt_00000000", "checkout.session.completed").unwrap_or_default();
    let bodies: Vec<(String, String)> = (0..n)
        .map(|i| {
            let body = template.replacen("evt_00000000", &format!("evt_{i:08}"), 1);
            let header = testing::sign(body.as_bytes(), SECRET, T);
            (header, body)
        })
        .collect();

    let mut g = c.benchmark_group("process");
    let v = verifier();
    // Both runs walk the same bodies from the first, so neither finds them warmer in cache.
    g.bench_function("verify_and_parse", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters as usize {
                let (h, body) = &bodies[i % n];
                black_box(
                    v.verify(body.as_bytes(), h)
                        .map(|p| p.parse().is_ok())
                        .is_ok(),
                );
            }
            start.elapsed()
        })
    });
    g.bench_function("process_memory_noop", |b| {
        b.iter_custom(|iters| {
            // A fresh store per sample, so every delivery is a first delivery.
            let p = Processor::new(verifier(), MemoryStore::new(), Noop);
            let start = Instant::now();
            rt.block_on(async {
                for i in 0..iters as usize {
                    let (h, body) = &bodies[i % n];
                    black_box(p.process(Some(h), body.as_bytes()).await.status());
                }
            });
            start.elapsed()
        })
    });
    // A long-running service's store: full (the default 100k records), so each new
    // event also evicts the oldest completed one. The ids are made outside the timing.
    let steady = MemoryStore::new();
    let mut next = 0u64;
    let mut fresh_ids = |n: u64| -> Vec<EventId> {
        let ids = (next..next + n)
            .map(|i| EventId::new(format!("evt_{i:012}")))
            .collect();
        next += n;
        ids
    };
    rt.block_on(pairs(&steady, &fresh_ids(DEFAULT_MAX_RECORDS as u64)));
    g.bench_function("memory_claim_complete", |b| {
        b.iter_custom(|iters| {
            let ids = fresh_ids(iters);
            let start = Instant::now();
            rt.block_on(pairs(&steady, &ids));
            start.elapsed()
        })
    });
    // The same pairs on an empty store that grows: the table's resizing and first
    // page touches are included.
    g.bench_function("memory_claim_complete_growing", |b| {
        b.iter_custom(|iters| {
            let store = MemoryStore::new();
            let ids = fresh_ids(iters);
            let start = Instant::now();
            rt.block_on(pairs(&store, &ids));
            start.elapsed()
        })
    });
    g.finish();

    // Claims per second with 2 threads contending on one store.
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|_| unreachable!());
    let store = Arc::new(MemoryStore::new());
    let done = Arc::new(AtomicU64::new(0));
    let per_thread = 200_000u64;
    let start = Instant::now();
    mt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..2u64 {
            let (store, done) = (store.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..per_thread {
                    // Half the ids are shared between the threads, half are distinct.
                    let id =
                        EventId::new(format!("evt_{}_{i}", if i % 2 == 0 { 0 } else { t + 1 }));
                    if let Ok(Claim::Acquired(tok)) =
                        store.claim(&id, &EventType::InvoicePaid, LEASE).await
                    {
                        let _ = store.complete(&tok).await;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "memory store, 2 threads contending: {:.0} claims/s ({} claims in {:.3}s)",
        done.load(Ordering::Relaxed) as f64 / secs,
        done.load(Ordering::Relaxed),
        secs
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
