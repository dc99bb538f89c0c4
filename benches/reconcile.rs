//! Reconciling 10,000 listed events against the fake Stripe API, with a no-op handler,
//! on SQLite (and PostgreSQL when `DATABASE_URL_TEST` is set): events per second, with
//! and without the ordering guard. Each round runs one pass of each on fresh tables, back
//! to back (alternating which goes first); the guard's cost is the median of the rounds'
//! own ratios, with their range.
//!
//! Run with: `cargo bench --bench reconcile --features client,testing,sqlite,postgres`
//! (`eval "$(scripts/services.sh start)"` first for PostgreSQL). `EVENTS`, `ROUNDS`,
//! `STORES` (`sqlite`, `postgres`) and `ONLY` (`plain`, `guard`, `none`: one side, for an
//! instruction counter) change what runs; `MAX_BUFFERED` (default: `EVENTS`, the whole
//! listing in one window) sets `Reconciler::with_max_buffered`, to measure the memory a
//! windowed pass holds (`/usr/bin/time -v` on the bench binary).

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use stripe_webhooks::reconcile::Reconciler;
use stripe_webhooks::testing::{self, FakeStripe};
use stripe_webhooks::{
    async_trait, Event, EventHandler, EventType, HandlerError, OrderingStore, PostgresStore,
    Processor, SigningSecret, SqliteStore, TiePolicy, Verifier,
};

/// `name` from the environment, or `default`.
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `store` runs: every store unless `STORES` (say `sqlite` or `postgres`) names
/// others.
fn wanted(store: &str) -> bool {
    std::env::var("STORES").map_or(true, |s| s.contains(store))
}

/// Which passes run: both (the default), or only `plain` or `guard` (with `ONLY`), so
/// an instruction counter such as `valgrind --tool=cachegrind` can measure one side.
fn passes(round: usize) -> Vec<bool> {
    match std::env::var("ONLY").as_deref() {
        Ok("plain") => vec![false],
        Ok("guard") => vec![true],
        Ok("none") => vec![],
        _ => order(round).to_vec(),
    }
}

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

async fn pass<S: OrderingStore + Clone>(
    fake: &FakeStripe,
    store: S,
    ordered: bool,
    events: usize,
) -> f64 {
    let verifier = Verifier::new(SigningSecret::new("whsec_bench").unwrap());
    let processor = Arc::new(if ordered {
        Processor::ordered(verifier, store.clone(), Noop, TiePolicy::Run)
    } else {
        Processor::new(verifier, store.clone(), Noop)
    });
    // By default the whole listing in one window, as before windows existed: the
    // figures compare the claims, not the listing.
    let reconciler = Reconciler::new(fake.client().unwrap(), processor, store)
        .with_max_buffered(knob("MAX_BUFFERED", events));
    let started = Instant::now();
    let report = reconciler.since_cursor().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.processed, events, "{report:?}");
    events as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Which pass of a round runs first alternates, so a machine that speeds up or slows
/// down during the bench does not favour one side.
fn order(round: usize) -> [bool; 2] {
    if round % 2 == 0 {
        [false, true]
    } else {
        [true, false]
    }
}

/// One table row: the median rates, and the guard's cost as the median of each round's
/// own ratio (its two passes ran back to back, so they saw the same machine).
fn report(store: &str, rounds: &[[f64; 2]]) {
    if rounds.iter().any(|r| r.contains(&0.0)) {
        // One side only (`ONLY`): its rate, no ratio.
        let rates: Vec<f64> = rounds.iter().map(|[p, g]| p.max(*g)).collect();
        println!("| {store} | one side only: {:.0} events/s |", median(rates));
        return;
    }
    let costs: Vec<f64> = rounds.iter().map(|[p, g]| (p / g - 1.0) * 100.0).collect();
    let (lo, hi) = costs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), c| (lo.min(*c), hi.max(*c)));
    println!(
        "| {store} | {:.0} | {:.0} | {:+.1}% ({lo:+.0}% to {hi:+.0}%) |",
        median(rounds.iter().map(|r| r[0]).collect()),
        median(rounds.iter().map(|r| r[1]).collect()),
        median(costs),
    );
}

#[tokio::main]
async fn main() {
    let events = knob("EVENTS", 10_000);
    let rounds_wanted = knob("ROUNDS", 5);
    let fake = FakeStripe::start().await.unwrap();
    let now = testing::now();
    for i in 0..events {
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
    println!("| store | without the guard (events/s) | with the guard (events/s) | guard cost per event (median of rounds; range) |");
    println!("|---|---|---|---|");
    let mut rounds = Vec::new();
    for round in (0..rounds_wanted).filter(|_| wanted("sqlite")) {
        let mut pair = [0.0; 2];
        for ordered in passes(round) {
            let store = SqliteStore::connect(dir.join(format!("r{round}_{ordered}.db")))
                .await
                .unwrap();
            pair[usize::from(ordered)] = pass(&fake, store, ordered, events).await;
        }
        rounds.push(pair);
    }
    if !rounds.iter().flatten().all(|r| *r == 0.0) {
        report("SQLite", &rounds);
    }
    let postgres = std::env::var("DATABASE_URL_TEST")
        .ok()
        .filter(|_| wanted("postgres"));
    if let Some(url) = postgres {
        let pool = stripe_webhooks::sqlx::PgPool::connect(&url).await.unwrap();
        let mut rounds = Vec::new();
        for round in 0..rounds_wanted {
            let mut pair = [0.0; 2];
            for ordered in passes(round) {
                let store = PostgresStore::new(pool.clone())
                    .with_table(&format!(
                        "reconcile_bench_{}_{round}_{ordered}",
                        std::process::id()
                    ))
                    .unwrap();
                store.migrate().await.unwrap();
                pair[usize::from(ordered)] = pass(&fake, store, ordered, events).await;
            }
            rounds.push(pair);
        }
        report("PostgreSQL", &rounds);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
