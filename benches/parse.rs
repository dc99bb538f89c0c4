//! Typed parse against `serde_json::Value` on the same bytes, the ack-fast path's read
//! of a queued job's head (`NewJob::parse`), and verify + parse against the HMAC floor.
//!
//! Run with: `cargo bench --bench parse --features testing`

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use stripe_webhooks::dangerous::parse_unverified;
use stripe_webhooks::{testing, FixedClock, SigningSecret, Verifier};

const SECRET: &str = "whsec_bench_secret_0123456789abcdef";
const T: i64 = 1_700_000_000;

/// An invoice.payment_failed event whose invoice carries several line items (about 8 KiB).
fn invoice_with_lines() -> String {
    let fixture = testing::fixture("invoice").unwrap_or_default();
    let mut invoice: serde_json::Value = serde_json::from_str(fixture).unwrap_or_default();
    if let Some(line) = invoice["lines"]["data"].get(0).cloned() {
        let mut lines = Vec::new();
        for i in 0..6 {
            let mut l = line.clone();
            l["id"] = format!("il_{i}").into();
            lines.push(l);
        }
        invoice["lines"]["data"] = lines.into();
    }
    testing::event_json(
        "evt_bench_inv",
        "invoice.payment_failed",
        &invoice.to_string(),
    )
}

/// A checkout.session.completed event with few fields set (about 1.6 KiB): Stripe's
/// fixture with only a handful of its top-level fields.
fn small_checkout() -> String {
    const KEEP: &[&str] = &[
        "id",
        "object",
        "amount_subtotal",
        "amount_total",
        "automatic_tax",
        "created",
        "currency",
        "customer_details",
        "expires_at",
        "livemode",
        "metadata",
        "mode",
        "payment_intent",
        "payment_method_types",
        "payment_status",
        "status",
        "success_url",
        "total_details",
        "invoice_creation",
        "custom_text",
        "customer_email",
        "client_reference_id",
    ];
    let fixture = testing::fixture("checkout.session").unwrap_or_default();
    let mut session: serde_json::Value = serde_json::from_str(fixture).unwrap_or_default();
    if let Some(m) = session.as_object_mut() {
        m.retain(|k, _| KEEP.contains(&k.as_str()));
    }
    testing::event_json(
        "evt_bench_small",
        "checkout.session.completed",
        &session.to_string(),
    )
}

fn bench(c: &mut Criterion) {
    let checkout =
        testing::event_for_type("evt_bench_cs", "checkout.session.completed").unwrap_or_default();
    let invoice = invoice_with_lines();
    let keyed =
        Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap_or_else(|_| unreachable!());
    let verifier = Verifier::new(SigningSecret::new(SECRET).unwrap_or_else(|_| unreachable!()))
        .with_clock(FixedClock(T));

    let mut g = c.benchmark_group("parse");
    for (name, body) in [
        ("checkout.session.completed", &checkout),
        ("invoice.payment_failed", &invoice),
    ] {
        let name = format!("{name}({}B)", body.len());
        let bytes = body.as_bytes();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("serde_json_value", &name),
            bytes,
            |b, bytes| {
                b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(bytes)).is_ok())
            },
        );
        g.bench_with_input(BenchmarkId::new("typed_event", &name), bytes, |b, bytes| {
            b.iter(|| {
                let e = parse_unverified(black_box(bytes));
                debug_assert!(e.as_ref().is_ok_and(|e| !e.is_untyped()));
                e.is_ok()
            })
        });
        // What the ack-fast path reads: the envelope and `data.object.id`.
        g.bench_with_input(
            BenchmarkId::new("queue_job_head", &name),
            bytes,
            |b, bytes| b.iter(|| stripe_webhooks::queue::NewJob::parse(black_box(bytes)).is_ok()),
        );
        let header = testing::sign(bytes, SECRET, T);
        g.bench_with_input(BenchmarkId::new("floor_hmac", &name), bytes, |b, bytes| {
            b.iter(|| {
                let mut m = keyed.clone();
                m.update(b"1700000000.");
                m.update(black_box(bytes));
                m.finalize()
            })
        });
        g.bench_with_input(
            BenchmarkId::new("verify_and_parse", &name),
            bytes,
            |b, bytes| {
                b.iter(|| {
                    verifier
                        .verify(black_box(bytes), &header)
                        .map(|v| v.parse().is_ok())
                })
            },
        );
    }
    g.finish();

    // The small event, typed against `Value`, side by side.
    let small = small_checkout();
    let mut g = c.benchmark_group("parse_small");
    let name = format!("checkout.session.completed({}B)", small.len());
    let bytes = small.as_bytes();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("serde_json_value", &name),
        bytes,
        |b, bytes| b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(bytes)).is_ok()),
    );
    g.bench_with_input(BenchmarkId::new("typed_event", &name), bytes, |b, bytes| {
        b.iter(|| {
            let e = parse_unverified(black_box(bytes));
            debug_assert!(e.as_ref().is_ok_and(|e| !e.is_untyped()));
            e.is_ok()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
