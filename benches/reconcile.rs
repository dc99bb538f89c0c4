//! Reconciling 10,000 listed events against the fake Stripe API, with a no-op handler,
//! on SQLite (and PostgreSQL when `DATABASE_URL_TEST` is set): events per second, with
//! and without the ordering guard. One pass per store, repeated `ROUNDS` times on fresh
//! tables; the median is reported.
//!
//! Run with: `cargo bench --bench reconcile --features client,testing,sqlite,postgres`
//! (`eval "$(scripts/services.sh start)"` first for PostgreSQL).

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use stripe_webhooks::reconcile::Reconciler;
use stripe_webhooks::testing::{self, FakeStripe};
use stripe_webhooks::{
    async_trait, Event, EventHandler, EventType, HandlerError, OrderingStore, PostgresStore,
    Processor, SigningSecret, SqliteStore, TiePolicy, Verifier,
};

const EVENTS: usize = 10_000;
const ROUNDS: usize = 3;

struct Noop;

#[async_trait]
impl EventHandler for Noop {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        Ok(())
    }

    fn handles(&self, t: &EventType) -> bool {
        *t == EventType::CustomerUpdated
    }
}

async fn pass<S: OrderingStore + Clone>(fake: &FakeStripe, store: S, ordered: bool) -> f64 {
    let verifier = Verifier::new(SigningSecret::new("whsec_bench").unwrap());
    let processor = Arc::new(if ordered {
        Processor::ordered(verifier, store.clone(), Noop, TiePolicy::Run)
    } else {
        Processor::new(verifier, store.clone(), Noop)
    });
    let reconciler = Reconciler::new(fake.client().unwrap(), processor, store);
    let started = Instant::now();
    let report = reconciler.since_cursor().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.processed, EVENTS, "{report:?}");
    EVENTS as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let fake = FakeStripe::start().await.unwrap();
    let now = testing::now();
    for i in 0..EVENTS {
        // 2,000 customers, 5 updates each, one second apart per customer.
        let object = format!(
            r#"{{"id":"cus_{}","object":"customer","email":"c@example.com"}}"#,
            i % 2000
        );
        let mut v: serde_json::Value = serde_json::from_str(&testing::event_json(
            &format!("evt_bench_{i}"),
            "customer.updated",
            &object,
        ))
        .unwrap();
        v["created"] = (now - 3000 + (i / 2000) as i64).into();
        fake.add_event(&v.to_string()).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("reconcile_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("| store | without the guard (events/s) | with the guard (events/s) | guard cost |");
    println!("|---|---|---|---|");
    let mut plain = Vec::new();
    let mut guarded = Vec::new();
    for round in 0..ROUNDS {
        for ordered in [false, true] {
            let store = SqliteStore::connect(dir.join(format!("r{round}_{ordered}.db")))
                .await
                .unwrap();
            let rate = pass(&fake, store, ordered).await;
            if ordered {
                guarded.push(rate)
            } else {
                plain.push(rate)
            }
        }
    }
    let (p, g) = (median(plain), median(guarded));
    println!(
        "| SQLite | {p:.0} | {g:.0} | {:+.1}% per event |",
        (p / g - 1.0) * 100.0
    );
    if let Ok(url) = std::env::var("DATABASE_URL_TEST") {
        let pool = stripe_webhooks::sqlx::PgPool::connect(&url).await.unwrap();
        let mut plain = Vec::new();
        let mut guarded = Vec::new();
        for round in 0..ROUNDS {
            for ordered in [false, true] {
                let store = PostgresStore::new(pool.clone())
                    .with_table(&format!(
                        "reconcile_bench_{}_{round}_{ordered}",
                        std::process::id()
                    ))
                    .unwrap();
                store.migrate().await.unwrap();
                let rate = pass(&fake, store, ordered).await;
                if ordered {
                    guarded.push(rate)
                } else {
                    plain.push(rate)
                }
            }
        }
        let (p, g) = (median(plain), median(guarded));
        println!(
            "| PostgreSQL | {p:.0} | {g:.0} | {:+.1}% per event |",
            (p / g - 1.0) * 100.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
