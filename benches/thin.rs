//! Thin event notifications: typed parse against `serde_json::Value` on the same bytes,
//! and a whole delivery through a thin processor on the memory store.
//!
//! Run with: `cargo bench --bench thin --features testing,tokio`

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stripe_webhooks::dangerous::parse_unverified_notification;
use stripe_webhooks::testing::{self, ThinEventBuilder};
use stripe_webhooks::{MemoryStore, Processor, SigningSecret, ThinEventRouter, Verifier};

const SECRET: &str = "whsec_bench_secret_0123456789abcdef";

fn bench(c: &mut Criterion) {
    let customer = ThinEventBuilder::new(
        "evt_test_65TgW8pJ4vXQmZc2Lq916TgVw3sbSQ2yD7rHnKfE1MuA0",
        "v1.customer.created",
    )
    .related(
        "cus_Tq8ZkR2mWxY6vB",
        "customer",
        "/v1/customers/cus_Tq8ZkR2mWxY6vB",
    )
    .snapshot_event("evt_1Pgc76B7WZ01zgkWwyRHS12y")
    .build();
    let mut g = c.benchmark_group("thin");
    let name = format!("v1.customer.created({}B)", customer.len());
    let bytes = customer.as_bytes();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("serde_json_value", &name),
        bytes,
        |b, bytes| b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(bytes)).is_ok()),
    );
    g.bench_with_input(BenchmarkId::new("typed", &name), bytes, |b, bytes| {
        b.iter(|| parse_unverified_notification(black_box(bytes)).is_ok())
    });

    // A whole delivery: verify, parse, claim, handle (no-op), complete; a new id each
    // time, so every iteration claims.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let processor = Processor::thin(
        Verifier::new(SigningSecret::new(SECRET).unwrap()),
        MemoryStore::new().with_max_records(usize::MAX),
        ThinEventRouter::new().fallback(|_n| Box::pin(async { Ok(()) })),
    );
    let mut i = 0u64;
    g.bench_function(BenchmarkId::new("process", &name), |b| {
        b.iter_batched(
            || {
                i += 1;
                let body =
                    ThinEventBuilder::new(&format!("evt_{i}"), "v1.customer.created").build();
                let header = testing::sign(body.as_bytes(), SECRET, testing::now());
                (body, header)
            },
            |(body, header)| {
                rt.block_on(processor.process(Some(&header), body.as_bytes()))
                    .status()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
