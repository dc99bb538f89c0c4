//! `verify` against its floor: a raw, pre-keyed HMAC-SHA256 of the same bytes.
//!
//! Run with: `cargo bench --bench verify --features testing`

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use stripe_webhooks::{testing, FixedClock, SigningSecret, Verifier};

const SECRET: &str = "whsec_bench_secret_0123456789abcdef";
const OTHER: &str = "whsec_bench_other_secret_fedcba987654";
const T: i64 = 1_700_000_000;

fn body_of(len: usize) -> Vec<u8> {
    let event = testing::event_for_type("evt_bench", "invoice.payment_failed").unwrap_or_default();
    event.bytes().cycle().take(len).collect()
}

fn floor(mac: &Hmac<Sha256>, body: &[u8]) -> [u8; 32] {
    let mut m = mac.clone();
    m.update(b"1700000000");
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

fn bench(c: &mut Criterion) {
    let keyed =
        Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap_or_else(|_| unreachable!());
    let one = Verifier::new(SigningSecret::new(SECRET).unwrap_or_else(|_| unreachable!()))
        .with_clock(FixedClock(T));

    let mut inputs: Vec<(String, Vec<u8>)> = [0usize, 1, 4, 16, 64]
        .iter()
        .map(|k| (format!("{k}KiB"), body_of(k * 1024)))
        .collect();
    for ty in [
        "checkout.session.completed",
        "invoice.payment_failed",
        "customer.subscription.updated",
    ] {
        if let Some(e) = testing::event_for_type("evt_bench", ty) {
            inputs.push((format!("{ty}({}B)", e.len()), e.into_bytes()));
        }
    }

    let mut g = c.benchmark_group("verify");
    for (name, body) in &inputs {
        g.throughput(Throughput::Bytes(body.len() as u64));
        let header = testing::sign(body, SECRET, T);
        // Three signatures, the matching one last, against two secrets (OTHER tried first
        // would be the worst case: put the matching secret second).
        let v1 = |secret: &str| {
            let h = testing::sign(body, secret, T);
            h.split_once(",v1=").map(|(_, sig)| sig.to_owned()).unwrap()
        };
        let three = format!(
            "t={T},v1={},v1={},v1={}",
            v1("whsec_not_configured"),
            v1("whsec_also_not"),
            v1(SECRET)
        );
        let two_rev = Verifier::new(SigningSecret::new(OTHER).unwrap_or_else(|_| unreachable!()))
            .with_secret(SigningSecret::new(SECRET).unwrap_or_else(|_| unreachable!()))
            .with_clock(FixedClock(T));
        // A benchmark of the error path by mistake would look fast: check the inputs.
        assert_eq!(
            one.verify(body, &header).unwrap().matched_secret().index(),
            0
        );
        assert_eq!(
            two_rev
                .verify(body, &three)
                .unwrap()
                .matched_secret()
                .index(),
            1
        );
        g.bench_with_input(BenchmarkId::new("floor_hmac", name), body, |b, body| {
            b.iter(|| floor(black_box(&keyed), black_box(body)))
        });
        g.bench_with_input(BenchmarkId::new("verify_1secret", name), body, |b, body| {
            b.iter(|| one.verify(black_box(body), black_box(&header)).is_ok())
        });
        g.bench_with_input(
            BenchmarkId::new("verify_2secrets_3sigs", name),
            body,
            |b, body| b.iter(|| two_rev.verify(black_box(body), black_box(&three)).is_ok()),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
