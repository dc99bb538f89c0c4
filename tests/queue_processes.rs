//! The queue across real processes: four `queue` example services ingest and work on one
//! PostgreSQL (and one Redis), 1,000 events × 3 duplicates are delivered across them at
//! once, handlers take 0 to 50 ms, and one service is killed with SIGKILL mid-run and
//! restarted. Afterwards every event ran exactly once (inbox mode: exactly 1,000 effect
//! rows), none is dead and nothing is left running.
//!
//! Needs `DATABASE_URL_TEST` and `REDIS_URL_TEST` (`scripts/test.sh` sets them) and the
//! example services built (`cargo build --all-features --examples`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(feature = "postgres", feature = "redis", feature = "testing"))]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::queue_service::{deliver, events, wait_drained, Delivered, Service};
use common::unique;

const EVENTS: usize = 1000;
const COPIES: usize = 3;

/// One test at a time: each kills a service and restarts it on the same port, and a test
/// beside it could take that port meanwhile (its own service on a free port), so that the
/// two tests' deliveries crossed (seen once: 1,764 effects in a table meant for 1,000).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pg_url() -> String {
    std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| {
        panic!("DATABASE_URL_TEST is not set: run `scripts/test.sh` or `eval \"$(scripts/services.sh start)\"`")
    })
}

fn redis_url() -> String {
    std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| {
        panic!("REDIS_URL_TEST is not set: run `scripts/test.sh` or `eval \"$(scripts/services.sh start)\"`")
    })
}

/// Creates the store, queue and effects tables once, before four processes start (their
/// own `migrate` is then a no-op).
async fn prepare_postgres(table: &str) -> stripe_webhooks::sqlx::PgPool {
    let store = stripe_webhooks::PostgresStore::connect(&pg_url())
        .await
        .unwrap()
        .with_table(table)
        .unwrap();
    store.migrate().await.unwrap();
    stripe_webhooks::sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {table}_effects (event_id TEXT NOT NULL, event_type TEXT NOT NULL)"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    store.pool().clone()
}

/// Four services on `env`; deliveries across them; one killed with SIGKILL after a third
/// of the deliveries got their answer, and restarted. Returns a service to read the
/// queue from, after the queue drained.
async fn run(
    env: &[(&str, &str)],
    prefix: &str,
) -> (Vec<Service>, serde_json::Value, Arc<Delivered>) {
    let mut services = Vec::new();
    for _ in 0..4 {
        services.push(Service::start(env).await);
    }
    let ports: Vec<u16> = services.iter().map(|s| s.port).collect();
    let evs = Arc::new(events(prefix, EVENTS));
    let delivered = Arc::new(Delivered::default());
    let sending = tokio::spawn(deliver(ports, evs, COPIES, 64, Arc::clone(&delivered)));
    // Kill one service mid-run, with jobs in hand, then bring it back.
    while delivered.done.load(Ordering::SeqCst) < EVENTS * COPIES / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    services[1].kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    services[1].restart().await;
    sending.await.unwrap();
    assert_eq!(delivered.done.load(Ordering::SeqCst), EVENTS * COPIES);
    let counts = wait_drained(&services[0], EVENTS as u64, Duration::from_secs(120)).await;
    (services, counts, delivered)
}

/// SIGTERM with a backlog queued and a request still arriving: the service stops taking
/// jobs at once, beside the server's drain (which waits for that request, up to its
/// 10 s body timeout), finishes the jobs in hand and exits cleanly, leaving nothing
/// running and the rest queued, which a restarted service runs, each once. (The workers
/// used to be stopped after the drain, and worked the backlog through meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminated_service_stops_taking_jobs_and_leaves_the_rest_queued() {
    const N: usize = 100;
    let _serial = SERIAL.lock().await;
    let table = unique("qproc_term");
    let pool = prepare_postgres(&table).await;
    let url = pg_url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("STRIPE_WEBHOOKS_TABLE", table.as_str()),
        ("DEMO_HANDLER_SLEEP_MS", "100"),
        ("QUEUE_WORKERS", "2"),
    ];
    let mut service = Service::start(&env).await;
    let delivered = Arc::new(Delivered::default());
    let evs = Arc::new(events("term", N));
    deliver(vec![service.port], evs, 1, 16, Arc::clone(&delivered)).await;
    // A request whose body never comes: the server's drain waits for it.
    let mut arriving = std::net::TcpStream::connect(("127.0.0.1", service.port)).unwrap();
    std::io::Write::write_all(
        &mut arriving,
        b"POST /webhook HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
          stripe-signature: t=1,v1=00\r\ncontent-length: 100\r\n\r\n{",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Two workers at 100 ms a job need about 5 s for the backlog.
    let status = service.terminate(Duration::from_secs(30)).await;
    drop(arriving);
    assert!(status.success(), "{status:?}");
    let states: Vec<(String, i64)> = stripe_webhooks::sqlx::query_as(&format!(
        "SELECT state, COUNT(*) FROM {table}_jobs GROUP BY state ORDER BY state"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    let count = |s: &str| states.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    assert_eq!(count("running"), 0, "{states:?}");
    assert!(
        count("queued") > 0,
        "the backlog was worked through: {states:?}"
    );
    assert_eq!(count("queued") + count("completed"), N as i64, "{states:?}");
    service.restart().await;
    let counts = wait_drained(&service, N as u64, Duration::from_secs(60)).await;
    assert_eq!(counts["dead"], 0, "{counts}");
    let (rows, distinct): (i64, i64) = stripe_webhooks::sqlx::query_as(&format!(
        "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM {table}_effects"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, distinct), (N as i64, N as i64));
}

fn common_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("DEMO_HANDLER_SLEEP_MS", "0-50"),
        ("QUEUE_LEASE_MS", "3000"),
        ("QUEUE_WORKERS", "8"),
        ("QUEUE_RETRY_MS", "200"),
    ];
    env.extend_from_slice(extra);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_processes_on_postgres_inbox_mode_exactly_1000_effects() {
    let _serial = SERIAL.lock().await;
    let table = unique("qproc_inbox");
    let pool = prepare_postgres(&table).await;
    let url = pg_url();
    let env = common_env(&[("DATABASE_URL", &url), ("STRIPE_WEBHOOKS_TABLE", &table)]);
    let (_services, counts, delivered) = run(&env, "pgi").await;
    let (rows, distinct): (i64, i64) = stripe_webhooks::sqlx::query_as(&format!(
        "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM {table}_effects"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (rows, distinct),
        (EVENTS as i64, EVENTS as i64),
        "{counts} {delivered:?}"
    );
    assert_eq!(counts["completed"], EVENTS, "{counts}");
    assert_eq!(counts["dead"], 0, "{counts}");
    let (taken_over,): (i64,) = stripe_webhooks::sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM {table}_jobs WHERE attempts > 1"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    eprintln!("jobs taken over after the SIGKILL (or retried): {taken_over}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_processes_on_postgres_plain_handler_complete_every_event() {
    let _serial = SERIAL.lock().await;
    let table = unique("qproc_plain");
    prepare_postgres(&table).await;
    let url = pg_url();
    let env = common_env(&[
        ("DATABASE_URL", &url),
        ("STRIPE_WEBHOOKS_TABLE", &table),
        ("QUEUE_MODE", "plain"),
    ]);
    let (_services, counts, _) = run(&env, "pgp").await;
    assert_eq!(counts["completed"], EVENTS, "{counts}");
    assert_eq!(
        (counts["dead"].as_u64(), counts["running"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_processes_on_redis_complete_every_event() {
    let _serial = SERIAL.lock().await;
    let prefix = unique("qproc");
    let url = redis_url();
    let env = common_env(&[("REDIS_URL", &url), ("STRIPE_WEBHOOKS_TABLE", &prefix)]);
    let (_services, counts, _) = run(&env, "rds").await;
    assert_eq!(counts["completed"], EVENTS, "{counts}");
    assert_eq!(
        (counts["dead"].as_u64(), counts["running"].as_u64()),
        (Some(0), Some(0))
    );
}
