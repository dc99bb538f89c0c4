//! Exactly-once across real OS processes and through faults: several processor
//! processes (`examples/store_driver.rs`) share one store, deliveries are shuffled and
//! released together, and the handler's effects are counted in the database.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(feature = "sqlite", feature = "postgres", feature = "redis"))]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stripe_webhooks::testing;

const SECRET: &str = "whsec_driver_secret";

/// These tests start many processes each; on a 2-core machine they run one at a time so
/// each one measures its own processes, not its neighbours'.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn driver() -> PathBuf {
    common::example_binary("store_driver")
}

fn pg_url() -> String {
    std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| {
        panic!("DATABASE_URL_TEST is not set: run `eval \"$(scripts/services.sh start)\"` or `scripts/test.sh`")
    })
}

fn redis_url() -> String {
    std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| {
        panic!("REDIS_URL_TEST is not set: run `eval \"$(scripts/services.sh start)\"` or `scripts/test.sh`")
    })
}

fn unique(what: &str) -> String {
    common::unique(&format!("mp_{what}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn delivery(id: &str) -> String {
    let body = testing::event_for_type(id, "invoice.paid").unwrap();
    let header = testing::sign(body.as_bytes(), SECRET, testing::now());
    serde_json::json!({ "header": header, "body": body }).to_string()
}

/// `events` × `dups` deliveries, shuffled deterministically, dealt round-robin into
/// `procs` files.
fn deal(name: &str, events: usize, dups: usize, procs: usize) -> Vec<PathBuf> {
    let mut all: Vec<String> = (0..events)
        .flat_map(|i| {
            let d = delivery(&format!("evt_{name}_{i}"));
            std::iter::repeat(d).take(dups)
        })
        .collect();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in (1..all.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        all.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    (0..procs)
        .map(|p| {
            let path = dir.join(format!("deliveries_{p}.jsonl"));
            let mut f = std::fs::File::create(&path).unwrap();
            for d in all.iter().skip(p).step_by(procs) {
                writeln!(f, "{d}").unwrap();
            }
            path
        })
        .collect()
}

fn spawn(
    backend: &str,
    url: &str,
    name: &str,
    file: &PathBuf,
    start_at: u64,
    extra: &[&str],
) -> Child {
    Command::new(driver())
        .args([
            "--backend",
            backend,
            "--url",
            url,
            "--name",
            name,
            "--deliveries",
        ])
        .arg(file)
        .args(["--start-at-ms", &start_at.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Status code counts over every process's output.
fn collect(children: Vec<Child>) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "driver failed: {:?}", out.status);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix("STATUS ") {
                let code: u16 = rest.split(' ').next().unwrap().parse().unwrap();
                *counts.entry(code).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn run_round(
    backend: &str,
    url: &str,
    name: &str,
    files: &[PathBuf],
    extra: &[&str],
) -> HashMap<u16, usize> {
    let start_at = now_ms() + 2500;
    let children = files
        .iter()
        .map(|f| spawn(backend, url, name, f, start_at, extra))
        .collect();
    collect(children)
}

async fn sql_effects(backend: &str, url: &str, name: &str) -> i64 {
    let q = format!("SELECT count(*) FROM {name}_effects");
    match backend {
        "postgres" => {
            let pool = stripe_webhooks::sqlx::PgPool::connect(url).await.unwrap();
            stripe_webhooks::sqlx::query_scalar(&q)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        _ => {
            let pool = stripe_webhooks::sqlx::SqlitePool::connect(&format!("sqlite://{url}"))
                .await
                .unwrap();
            stripe_webhooks::sqlx::query_scalar(&q)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }
}

/// `changes` changes, each delivered as a snapshot event and as its thin twin (signed
/// with the same secret, as one route taking both would see them), shuffled and dealt
/// into `procs` files.
fn deal_pairs(name: &str, changes: usize, procs: usize) -> Vec<PathBuf> {
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut files: Vec<Vec<String>> = vec![Vec::new(); procs];
    for i in 0..changes {
        let (snapshot, thin) = testing::event_pair(
            &format!("evt_{name}_{i}"),
            "customer.updated",
            &format!("cus_{i}"),
        );
        let signed = |body: String| {
            let header = testing::sign(body.as_bytes(), SECRET, testing::now());
            serde_json::json!({ "header": header, "body": body }).to_string()
        };
        // The two deliveries of one change always go to two different processes.
        files[i % procs].push(signed(snapshot));
        files[(i + 1) % procs].push(signed(thin));
    }
    files
        .iter()
        .enumerate()
        .map(|(p, lines)| {
            let path = dir.join(format!("pairs_{p}.jsonl"));
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            path
        })
        .collect()
}

/// `objects` objects, each updated `versions` times (`created` one second apart,
/// `metadata.version` 1 to `versions`), every update `dups` times, shuffled and dealt
/// into `procs` files.
fn deal_updates(
    name: &str,
    objects: usize,
    versions: i64,
    dups: usize,
    procs: usize,
) -> Vec<PathBuf> {
    let base = testing::now() - 3600;
    let mut all = Vec::new();
    for o in 0..objects {
        for v in 1..=versions {
            let object =
                format!(r#"{{"id":"cus_{o}","object":"customer","metadata":{{"version":"{v}"}}}}"#);
            let mut event: serde_json::Value = serde_json::from_str(&testing::event_json(
                &format!("evt_{name}_{o}_{v}"),
                "customer.updated",
                &object,
            ))
            .unwrap();
            event["created"] = (base + v).into();
            let body = event.to_string();
            let header = testing::sign(body.as_bytes(), SECRET, testing::now());
            let line = serde_json::json!({ "header": header, "body": body }).to_string();
            all.extend(std::iter::repeat(line).take(dups));
        }
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..all.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        all.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    (0..procs)
        .map(|p| {
            let path = dir.join(format!("updates_{p}.jsonl"));
            let lines: Vec<&String> = all.iter().skip(p).step_by(procs).collect();
            std::fs::write(
                &path,
                lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
            )
            .unwrap();
            path
        })
        .collect()
}

/// 100 objects × 5 updates, shuffled and duplicated across 4 processes with the
/// ordering guard: every object ends at its last version, and no update was ever
/// applied over a newer one. Returns `(objects at version 5, regressions)`.
async fn ordered_updates(backend: &str, url: &str, name: &str, extra: &[&str]) -> (i64, i64) {
    let procs = if backend == "sqlite" { 2 } else { 4 };
    let files = deal_updates(name, 100, 5, 2, procs);
    let mut flags = vec!["--ordered", "--retry"];
    flags.extend_from_slice(extra);
    let counts = run_round(backend, url, name, &files, &flags);
    assert_eq!(counts.get(&200), Some(&1000), "{counts:?}");
    match backend {
        "redis" => {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let state: HashMap<String, i64> = redis::cmd("HGETALL")
                .arg(format!("{name}:state"))
                .query_async(&mut conn)
                .await
                .unwrap();
            let regressions: Option<i64> = redis::cmd("HGET")
                .arg(format!("{name}:regressions"))
                .arg("regressions")
                .query_async(&mut conn)
                .await
                .unwrap();
            let at_last = state.values().filter(|v| **v == 5).count() as i64;
            (at_last, regressions.unwrap_or(0))
        }
        "sqlite" => {
            let pool = stripe_webhooks::sqlx::SqlitePool::connect(&format!("sqlite://{url}"))
                .await
                .unwrap();
            let q = format!(
                "SELECT count(*) FILTER (WHERE version = 5), coalesce(sum(regressions), 0) FROM {name}_state"
            );
            stripe_webhooks::sqlx::query_as(&q)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        _ => {
            let pool = stripe_webhooks::sqlx::PgPool::connect(url).await.unwrap();
            let q = format!(
                "SELECT count(*) FILTER (WHERE version = 5), coalesce(sum(regressions), 0)::bigint FROM {name}_state"
            );
            stripe_webhooks::sqlx::query_as(&q)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }
}

#[tokio::test]
async fn ordering_guard_across_four_processes_on_postgres() {
    let _serial = SERIAL.lock().await;
    let (url, name) = (pg_url(), unique("pg_order"));
    let _dir = common::TempDir::at(&name);
    assert_eq!(
        ordered_updates("postgres", &url, &name, &[]).await,
        (100, 0)
    );
}

#[tokio::test]
async fn ordering_guard_in_postgres_inbox_mode_across_four_processes() {
    let _serial = SERIAL.lock().await;
    let (url, name) = (pg_url(), unique("pg_order_inbox"));
    let _dir = common::TempDir::at(&name);
    assert_eq!(
        ordered_updates("postgres", &url, &name, &["--inbox"]).await,
        (100, 0)
    );
}

#[tokio::test]
async fn ordering_guard_in_sqlite_inbox_mode_across_two_processes() {
    let _serial = SERIAL.lock().await;
    let name = unique("sq_ord_inbox");
    let _dir = common::TempDir::at(&name);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("events.db").display().to_string();
    assert_eq!(
        ordered_updates("sqlite", &db, &name, &["--inbox"]).await,
        (100, 0)
    );
}

#[tokio::test]
async fn ordering_guard_across_four_processes_on_redis() {
    let _serial = SERIAL.lock().await;
    let (url, name) = (redis_url(), unique("redis_order"));
    let _dir = common::TempDir::at(&name);
    assert_eq!(ordered_updates("redis", &url, &name, &[]).await, (100, 0));
}

fn assert_only_200_409(counts: &HashMap<u16, usize>, total: usize) {
    assert_eq!(counts.values().sum::<usize>(), total, "{counts:?}");
    assert!(
        counts.keys().all(|c| *c == 200 || *c == 409),
        "no 5xx or 4xx other than 409: {counts:?}"
    );
}

#[tokio::test]
async fn four_processes_share_postgres_exactly_once() {
    let _serial = SERIAL.lock().await;
    let (url, name) = (pg_url(), unique("pg"));
    let _dir = common::TempDir::at(&name);
    let files = deal(&name, 100, 10, 4);
    let counts = run_round("postgres", &url, &name, &files, &[]);
    assert_only_200_409(&counts, 1000);
    assert_eq!(sql_effects("postgres", &url, &name).await, 100);
    // Everything again, as Stripe's retries would: all 200, no new effects.
    let again = run_round("postgres", &url, &name, &files, &[]);
    assert_eq!(again.get(&200), Some(&1000), "{again:?}");
    assert_eq!(sql_effects("postgres", &url, &name).await, 100);
}

#[tokio::test]
async fn four_processes_share_redis_exactly_once() {
    let _serial = SERIAL.lock().await;
    let (url, name) = (redis_url(), unique("redis"));
    let _dir = common::TempDir::at(&name);
    let files = deal(&name, 100, 10, 4);
    let counts = run_round("redis", &url, &name, &files, &[]);
    assert_only_200_409(&counts, 1000);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let effects: i64 = redis::cmd("LLEN")
        .arg(format!("{name}:effects"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(effects, 100);
}

/// One change delivered as a snapshot event and as a thin event, at once, to two
/// processes: the application's work runs once (the thin event is claimed under its
/// `snapshot_event`), on every shared store.
async fn snapshot_and_thin_twins_run_once(backend: &str, url: &str, name: &str) -> i64 {
    let files = deal_pairs(name, 100, 2);
    let counts = run_round(backend, url, name, &files, &[]);
    assert_only_200_409(&counts, 200);
    // Retries of all of it, as Stripe would send: nothing runs again.
    let again = run_round(backend, url, name, &files, &[]);
    assert_eq!(again.get(&200), Some(&200), "{again:?}");
    match backend {
        "redis" => {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            redis::cmd("LLEN")
                .arg(format!("{name}:effects"))
                .query_async(&mut conn)
                .await
                .unwrap()
        }
        _ => sql_effects(backend, url, name).await,
    }
}

#[tokio::test]
async fn snapshot_and_thin_twins_run_once_on_postgres() {
    let _serial = SERIAL.lock().await;
    let (url, name) = (pg_url(), unique("pg_twins"));
    let _dir = common::TempDir::at(&name);
    assert_eq!(
        snapshot_and_thin_twins_run_once("postgres", &url, &name).await,
        100
    );
}

#[tokio::test]
async fn snapshot_and_thin_twins_run_once_on_redis() {
    let _serial = SERIAL.lock().await;
    let (url, name) = (redis_url(), unique("redis_twins"));
    let _dir = common::TempDir::at(&name);
    assert_eq!(
        snapshot_and_thin_twins_run_once("redis", &url, &name).await,
        100
    );
}

#[tokio::test]
async fn snapshot_and_thin_twins_run_once_on_sqlite() {
    let _serial = SERIAL.lock().await;
    let name = unique("sqlite_twins");
    let _dir = common::TempDir::at(&name);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("events.db").display().to_string();
    assert_eq!(
        snapshot_and_thin_twins_run_once("sqlite", &db, &name).await,
        100
    );
}

#[tokio::test]
async fn two_processes_share_one_sqlite_file_exactly_once() {
    let _serial = SERIAL.lock().await;
    let name = unique("sqlite");
    let _dir = common::TempDir::at(&name);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("events.db").display().to_string();
    let files = deal(&name, 200, 5, 2);
    let counts = run_round("sqlite", &db, &name, &files, &[]);
    assert_only_200_409(&counts, 1000);
    assert_eq!(sql_effects("sqlite", &db, &name).await, 200);
}

/// Starts one driver for one delivery and waits for it to print `marker`. The caller kills
/// and waits for the child.
#[allow(clippy::zombie_processes)]
fn start_and_wait_for(
    backend: &str,
    url: &str,
    name: &str,
    file: &PathBuf,
    extra: &[&str],
    marker: &str,
) -> Child {
    let mut child = spawn(backend, url, name, file, 0, extra);
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("driver exited before reaching the marker")
            .unwrap();
        if line.starts_with(marker) {
            return child;
        }
    }
}

#[tokio::test]
async fn sigkill_during_handler_is_409_until_lease_then_taken_over() {
    let _serial = SERIAL.lock().await;
    let (url, name) = (pg_url(), unique("kill"));
    let _dir = common::TempDir::at(&name);
    let id = format!("evt_{name}_0");
    let files = deal(&name, 1, 1, 1);
    let mut a = start_and_wait_for(
        "postgres",
        &url,
        &name,
        &files[0],
        &["--hang-on", &id, "--lease-ms", "10000"],
        "HANDLING",
    );
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    let killed = std::time::Instant::now();
    // The lease is 10 s and was renewed every third of it until the kill, so it lasts at
    // least 6.6 s after it: far longer than a round (2.5 s, and starting the processes).
    let first = run_round("postgres", &url, &name, &files, &["--lease-ms", "10000"]);
    assert!(
        killed.elapsed() < Duration::from_millis(6500),
        "the first round must run while the lease lasts"
    );
    assert_eq!(
        first.get(&409),
        Some(&1),
        "answered 409 while the dead process's lease lasts: {first:?}"
    );
    tokio::time::sleep(Duration::from_millis(10_200).saturating_sub(killed.elapsed())).await;
    let second = run_round("postgres", &url, &name, &files, &["--lease-ms", "10000"]);
    assert_eq!(second.get(&200), Some(&1), "{second:?}");
    assert_eq!(sql_effects("postgres", &url, &name).await, 1);
    let pool = stripe_webhooks::sqlx::PgPool::connect(&url).await.unwrap();
    let (status, attempts): (String, i32) = stripe_webhooks::sqlx::query_as(&format!(
        "SELECT status, attempts FROM {name} WHERE event_id = $1"
    ))
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "completed", "nothing is left in processing");
    assert_eq!(attempts, 2);
}

async fn inbox_kill_between_write_and_commit(backend: &str, url: &str, name: &str) {
    let id = format!("evt_{name}_0");
    let files = deal(name, 1, 1, 1);
    let mut a = start_and_wait_for(
        backend,
        url,
        name,
        &files[0],
        &["--inbox", "--hang-on", &id, "--lease-ms", "2000"],
        "WROTE",
    );
    a.kill().unwrap();
    a.wait().unwrap();
    // The effect row was written inside the transaction that died with the process.
    assert_eq!(
        sql_effects(backend, url, name).await,
        0,
        "the uncommitted write is gone"
    );
    let round = run_round(
        backend,
        url,
        name,
        &files,
        &["--inbox", "--lease-ms", "2000"],
    );
    assert_eq!(round.get(&200), Some(&1), "{round:?}");
    assert_eq!(
        sql_effects(backend, url, name).await,
        1,
        "exactly one effect, never zero, never two"
    );
    let again = run_round(
        backend,
        url,
        name,
        &files,
        &["--inbox", "--lease-ms", "2000"],
    );
    assert_eq!(again.get(&200), Some(&1));
    assert_eq!(sql_effects(backend, url, name).await, 1);
}

#[tokio::test]
async fn postgres_inbox_kill_between_write_and_commit() {
    let _serial = SERIAL.lock().await;
    let (url, name) = (pg_url(), unique("inboxpg"));
    let _dir = common::TempDir::at(&name);
    inbox_kill_between_write_and_commit("postgres", &url, &name).await;
}

#[tokio::test]
async fn sqlite_inbox_kill_between_write_and_commit() {
    let _serial = SERIAL.lock().await;
    let name = unique("inboxlite");
    let _dir = common::TempDir::at(&name);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("events.db").display().to_string();
    inbox_kill_between_write_and_commit("sqlite", &db, &name).await;
}

#[tokio::test]
async fn sqlite_inbox_two_processes_exactly_once() {
    let _serial = SERIAL.lock().await;
    let name = unique("inboxlite2");
    let _dir = common::TempDir::at(&name);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("events.db").display().to_string();
    let files = deal(&name, 100, 5, 2);
    let counts = run_round("sqlite", &db, &name, &files, &["--inbox"]);
    assert_only_200_409(&counts, 500);
    assert_eq!(sql_effects("sqlite", &db, &name).await, 100);
}
