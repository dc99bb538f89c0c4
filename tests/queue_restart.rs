//! The queue survives a PostgreSQL restart: two `queue` example services in inbox mode
//! work through 500 events while the server is restarted as after a crash
//! (`scripts/services.sh restart-pg`). Deliveries during the outage get 503 and are sent
//! again, jobs in hand fail and are retried, and afterwards every event ran exactly once:
//! 500 effect rows, none dead.
//!
//! It restarts the shared test server, so it is a test binary of its own (cargo runs test
//! binaries one after another). Needs `DATABASE_URL_TEST`, `PG_RESTART_TEST` (a shell
//! command that restarts that server: `scripts/services.sh start` prints the one for the
//! server it starts) and the example services built (`scripts/test.sh` does all three).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(feature = "postgres", feature = "testing"))]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::queue_service::{deliver, events, wait_drained, Delivered, Service};

const EVENTS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_mid_run_loses_nothing_and_runs_nothing_twice() {
    let url = std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| {
        panic!("DATABASE_URL_TEST is not set: run `scripts/test.sh` or `eval \"$(scripts/services.sh start)\"`")
    });
    // Never restart a server by guessing where it is: a server of the user's own is
    // restarted by the command they name, never by `services.sh`'s data directory.
    let restart = std::env::var("PG_RESTART_TEST")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "PG_RESTART_TEST is not set: this test restarts the PostgreSQL server at \
                 DATABASE_URL_TEST as after a crash. `scripts/services.sh start` prints it \
                 for the server it starts; for a server of your own, set it to a shell \
                 command that restarts that server"
            )
        });
    let table = common::unique("qrestart");
    let store = stripe_webhooks::PostgresStore::connect(&url)
        .await
        .unwrap()
        .with_table(&table)
        .unwrap();
    store.migrate().await.unwrap();
    stripe_webhooks::sqlx::query(&format!(
        "CREATE TABLE {table}_effects (event_id TEXT NOT NULL, event_type TEXT NOT NULL)"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    store.pool().close().await;

    let env = [
        ("DATABASE_URL", url.as_str()),
        ("STRIPE_WEBHOOKS_TABLE", table.as_str()),
        ("DEMO_HANDLER_SLEEP_MS", "20-200"),
        ("QUEUE_LEASE_MS", "3000"),
        ("QUEUE_WORKERS", "8"),
        ("QUEUE_RETRY_MS", "200"),
    ];
    let services = [Service::start(&env).await, Service::start(&env).await];
    let ports: Vec<u16> = services.iter().map(|s| s.port).collect();
    let delivered = Arc::new(Delivered::default());
    let sending = tokio::spawn(deliver(
        ports,
        Arc::new(events("rst", EVENTS)),
        2,
        32,
        Arc::clone(&delivered),
    ));
    while delivered.done.load(Ordering::SeqCst) < EVENTS / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = std::process::Command::new("sh")
        .args(["-c", &restart])
        .status()
        .unwrap();
    assert!(status.success(), "`{restart}` failed");
    let restarted = std::time::Instant::now();
    sending.await.unwrap();
    eprintln!(
        "deliveries done {:?} after the restart",
        restarted.elapsed()
    );
    let counts = wait_drained(&services[0], EVENTS as u64, Duration::from_secs(120)).await;
    eprintln!("drained {:?} after the restart", restarted.elapsed());

    let pool = stripe_webhooks::sqlx::PgPool::connect(&url).await.unwrap();
    let (rows, distinct): (i64, i64) = stripe_webhooks::sqlx::query_as(&format!(
        "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM {table}_effects"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, distinct), (EVENTS as i64, EVENTS as i64), "{counts}");
    assert_eq!(
        (counts["completed"].as_u64(), counts["dead"].as_u64()),
        (Some(EVENTS as u64), Some(0))
    );
    let (retried,): (i64,) = stripe_webhooks::sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM {table}_jobs WHERE attempts > 1"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        retried > 0,
        "the restart caught jobs in hand, and they were retried"
    );
    let statuses = delivered.statuses.lock().unwrap().clone();
    eprintln!("jobs run more than once (rolled back, then retried): {retried}");
    eprintln!("answers during the restart: {statuses:?}");
}
