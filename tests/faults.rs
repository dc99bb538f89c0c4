//! The store going away mid-run: PostgreSQL cut off behind a proxy, Redis paused with
//! `CLIENT PAUSE`. Claims answer 503 within 2 s, no handler runs, and after recovery
//! each redelivered event runs exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(feature = "postgres", feature = "redis"))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use stripe_webhooks::redis;
use stripe_webhooks::sqlx::{PgConnection, Postgres};
use stripe_webhooks::{
    async_trait, testing, Event, EventHandler, EventId, HandlerError, OutcomeKind, PostgresStore,
    Processor, RecordStatus, RedisStore, StoreAdmin, StoreError, TransactionalHandler, Verifier,
};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "whsec_faults";

#[derive(Default)]
struct Runs(Mutex<HashMap<String, usize>>);

#[async_trait]
impl EventHandler for Runs {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        *self
            .0
            .lock()
            .unwrap()
            .entry(event.id().to_string())
            .or_insert(0) += 1;
        Ok(())
    }
}

impl Runs {
    fn total(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }
    fn each_once(&self, n: usize) {
        let m = self.0.lock().unwrap();
        assert_eq!(m.len(), n, "{m:?}");
        assert!(m.values().all(|c| *c == 1), "{m:?}");
    }
}

fn deliveries(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let body =
                testing::event_for_type(&format!("evt_{prefix}_{i}"), "invoice.paid").unwrap();
            (testing::sign(body.as_bytes(), SECRET, testing::now()), body)
        })
        .collect()
}

async fn deliver_all(p: &Processor, ds: &[(String, String)]) -> Vec<(u16, Duration)> {
    let mut out = Vec::new();
    for (h, b) in ds {
        let t = Instant::now();
        let o = p.process(Some(h), b.as_bytes()).await;
        out.push((o.status(), t.elapsed()));
    }
    out
}

/// A TCP proxy to `target` that can cut every connection and refuse new ones.
struct Proxy {
    addr: std::net::SocketAddr,
    down: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let (d, g) = (down.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            down,
            generation,
        }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// A TCP proxy to `target` that stops forwarding a connection's requests for good once
/// one carries `pattern`: the statement hangs, as on a stalled server.
async fn stalling_proxy(target: String, pattern: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&target).await else {
                    return;
                };
                let (mut client_rd, mut client_wr) = client.into_split();
                let (mut server_rd, mut server_wr) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
                });
                let mut buf = vec![0_u8; 64 * 1024];
                // The end of the previous read, so a pattern split across two reads is
                // seen too.
                let mut tail: Vec<u8> = Vec::new();
                loop {
                    let n = match client_rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    tail.extend_from_slice(&buf[..n]);
                    if tail.windows(pattern.len()).any(|w| w == pattern) {
                        std::future::pending::<()>().await;
                    }
                    let keep = tail.len().saturating_sub(pattern.len());
                    tail.drain(..keep);
                    if server_wr.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A TCP proxy to `target` that loses the answer to the first run of the statement
/// carrying `pattern`. sqlx prepares a statement in one round trip, then binds and runs it
/// in the next: that run reaches the server, which runs and commits it, and its
/// connection is closed once the server has answered, with nothing relayed back.
async fn answer_losing_proxy(target: String, pattern: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lost = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (target, lost) = (target.clone(), Arc::clone(&lost));
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&target).await else {
                    return;
                };
                let (mut client_rd, mut client_wr) = client.into_split();
                let (mut server_rd, mut server_wr) = server.into_split();
                let mute = Arc::new(AtomicBool::new(false));
                let muted = Arc::clone(&mute);
                // Told once the muted run's answer ends (`ReadyForQuery`, after the commit).
                let answered = Arc::new(tokio::sync::Notify::new());
                let done = Arc::clone(&answered);
                let replies = tokio::spawn(async move {
                    const READY: &[u8] = b"Z\0\0\0\x05";
                    let mut buf = vec![0_u8; 64 * 1024];
                    let mut tail: Vec<u8> = Vec::new();
                    loop {
                        let n = match server_rd.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if muted.load(Ordering::SeqCst) {
                            tail.extend_from_slice(&buf[..n]);
                            if tail.windows(READY.len()).any(|w| w == READY) {
                                done.notify_one();
                            }
                            let keep = tail.len().saturating_sub(READY.len());
                            tail.drain(..keep);
                        } else if client_wr.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = vec![0_u8; 64 * 1024];
                let mut armed = false;
                loop {
                    let n = match client_rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // The run after the statement's preparation: a `Bind` message first.
                    let run = armed && buf[0] == b'B';
                    if !lost.load(Ordering::SeqCst)
                        && buf[..n].windows(pattern.len()).any(|w| w == pattern)
                    {
                        armed = true;
                    }
                    if run && !lost.swap(true, Ordering::SeqCst) {
                        mute.store(true, Ordering::SeqCst);
                        let _ = server_wr.write_all(&buf[..n]).await;
                        let _ = tokio::time::timeout(Duration::from_secs(10), answered.notified())
                            .await;
                        break;
                    }
                    if server_wr.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                replies.abort();
            });
        }
    });
    addr
}

/// Under the ordering guard, a `lock_and_claim` that committed on the server but whose
/// answer was lost (its connection went) gives back the claim and the object lock it
/// took, so Stripe's retry runs the event at once. Before, the claim stayed to its lease's
/// end, and every retry meanwhile was answered 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lock_and_claim_whose_answer_was_lost_gives_back_what_it_took() {
    let (_, target) = pg_url_and_target();
    let proxy = answer_losing_proxy(target, b"WITH lock AS (").await;
    let store = pg_store_through(proxy, "t_faults_lost_answer").await;
    let runs = Arc::new(Runs::default());
    let p = Processor::ordered(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.clone(),
        Arc::clone(&runs),
        stripe_webhooks::TiePolicy::Run,
    )
    // Room for the give-back's new connection on a loaded machine.
    .with_store_timeout(Duration::from_secs(10));
    let (header, body) = deliveries("pg_lost_answer", 1).remove(0);
    let first = p.process(Some(&header), body.as_bytes()).await;
    assert_eq!(first.status(), 503, "{first:?}");
    assert_eq!(runs.total(), 0);
    // The claim was taken on the server, and given back.
    let record = store
        .record(&EventId::new("evt_pg_lost_answer_0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Failed, "{record:?}");
    let why = record.last_error.clone().unwrap_or_default();
    assert!(why.starts_with("answer lost"), "{record:?}");
    let again = p.process(Some(&header), body.as_bytes()).await;
    assert_eq!(again.status(), 200, "{again:?}");
    runs.each_once(1);
}

fn pg_url_and_target() -> (String, String) {
    let url = std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| {
        panic!("DATABASE_URL_TEST is not set: run `eval \"$(scripts/services.sh start)\"` or `scripts/test.sh`")
    });
    let target = url
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    (url, target)
}

struct NoEffects;

#[async_trait]
impl TransactionalHandler<Postgres> for NoEffects {
    async fn handle(&self, _event: &Event, _conn: &mut PgConnection) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A migrated store on a table of its own, on `url` through a pool from `options`.
async fn pg_store_on(
    options: stripe_webhooks::sqlx::postgres::PgPoolOptions,
    url: &str,
    name: &str,
) -> PostgresStore {
    let pool = options.connect(url).await.unwrap();
    let store = PostgresStore::new(pool)
        .with_table(&common::unique(name))
        .unwrap();
    store.migrate().await.unwrap();
    store
}

/// Holds its transaction open a while, so that a second delivery's claim waits on it;
/// adds a permit to its semaphore as each run starts (its claim is taken by then).
struct Lingers(Arc<tokio::sync::Semaphore>);

#[async_trait]
impl TransactionalHandler<Postgres> for Lingers {
    async fn handle(&self, _event: &Event, _conn: &mut PgConnection) -> Result<(), HandlerError> {
        self.0.add_permits(1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

/// Under a `repeatable read` or `serializable` default, a delivery whose claim (or the
/// object's row lock, ordered) waited on another delivery's transaction failed to
/// serialize once that one committed: answered 503. Its claim now runs again in a new
/// transaction, which sees what the other committed: a duplicate of the same event is
/// answered 200 duplicate, and another event of the same object runs after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_claims_again_after_a_serialization_failure() {
    use stripe_webhooks::sqlx::Executor;
    let (url, _) = pg_url_and_target();
    for isolation in ["repeatable read", "serializable"] {
        let options =
            stripe_webhooks::sqlx::postgres::PgPoolOptions::new().after_connect(move |conn, _| {
                Box::pin(async move {
                    let set = format!("SET default_transaction_isolation = '{isolation}'");
                    conn.execute(set.as_str()).await?;
                    Ok(())
                })
            });
        let store = pg_store_on(options, &url, "t_faults_iso").await;
        let started = Arc::new(tokio::sync::Semaphore::new(0));
        let p = Arc::new(Processor::with_inbox(
            Verifier::from_secrets_list(SECRET).unwrap(),
            store
                .inbox(Lingers(Arc::clone(&started)))
                .ordered(stripe_webhooks::TiePolicy::Run),
        ));
        let prefix = format!("pg_iso_{}", isolation.replace(' ', "_"));
        let ds = deliveries(&prefix, 2);
        // The same event twice, then another event of the same invoice.
        let runs = [&ds[0], &ds[0], &ds[1]];
        let mut tasks = Vec::new();
        for (i, (h, b)) in runs.into_iter().enumerate() {
            let (p, h, b) = (Arc::clone(&p), h.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                p.process(Some(&h), b.as_bytes()).await
            }));
            // The others once the first has claimed (its handler started).
            if i == 0 {
                let first = tokio::time::timeout(Duration::from_secs(10), started.acquire());
                drop(
                    first
                        .await
                        .expect("the first delivery's handler never started"),
                );
            }
        }
        let mut kinds = Vec::new();
        for task in tasks {
            let o = task.await.unwrap();
            assert_eq!(o.status(), 200, "{isolation}: {o:?}");
            kinds.push(format!("{:?}", o.kind()));
        }
        assert_eq!(kinds[1], "Duplicate", "{isolation}: {kinds:?}");
        assert!(
            kinds[2] == "Processed" || kinds[2].starts_with("Stale"),
            "{isolation}: {kinds:?}"
        );
    }
}

/// As [`pg_store_on`], through the proxy at `proxy` with a default pool, in plaintext so
/// that the proxy can read the statements (the server also speaks TLS).
async fn pg_store_through(proxy: std::net::SocketAddr, name: &str) -> PostgresStore {
    let (url, target) = pg_url_and_target();
    let proxied = format!(
        "{}?sslmode=disable",
        url.replace(&target, &proxy.to_string())
    );
    pg_store_on(
        stripe_webhooks::sqlx::postgres::PgPoolOptions::new(),
        &proxied,
        name,
    )
    .await
}

/// As [`pg_store_on`], straight to the server with a default pool.
async fn pg_store(name: &str) -> PostgresStore {
    let (url, _) = pg_url_and_target();
    pg_store_on(
        stripe_webhooks::sqlx::postgres::PgPoolOptions::new(),
        &url,
        name,
    )
    .await
}

/// Delivers one signed event, `evt_{prefix}_0`, to `p`.
async fn deliver_one(p: &Processor, prefix: &str) -> stripe_webhooks::Outcome {
    let delivery = deliveries(prefix, 1).remove(0);
    p.process(Some(&delivery.0), delivery.1.as_bytes()).await
}

/// Catches the error of a statement that fails, and returns `Ok`.
struct SwallowsAnError;

#[async_trait]
impl TransactionalHandler<Postgres> for SwallowsAnError {
    async fn handle(&self, _event: &Event, conn: &mut PgConnection) -> Result<(), HandlerError> {
        let failed = stripe_webhooks::sqlx::query("SELECT 1 / 0")
            .execute(&mut *conn)
            .await;
        assert!(failed.is_err());
        Ok(())
    }
}

/// A PostgreSQL inbox handler whose `is_ordered` check panics (on an ordered inbox): a
/// 500, the event recorded as failed with the panic's message outside any delivery's
/// transaction, each delivery an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_records_a_check_that_panics() {
    struct Unsure;
    #[async_trait]
    impl TransactionalHandler<Postgres> for Unsure {
        async fn handle(&self, _: &Event, _: &mut PgConnection) -> Result<(), HandlerError> {
            Ok(())
        }
        fn is_ordered(&self, _: &stripe_webhooks::EventType) -> bool {
            panic!("which order")
        }
    }
    let store = pg_store("t_faults_unsure").await;
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(Unsure).ordered(stripe_webhooks::TiePolicy::Run),
    );
    let delivery = deliveries("pg_unsure", 1).remove(0);
    for attempt in 1..=2 {
        let o = p.process(Some(&delivery.0), delivery.1.as_bytes()).await;
        common::assert_check_panic_recorded(&o, &store, "evt_pg_unsure_0", attempt, "which order")
            .await;
    }
}

/// A handler that catches a failed statement and returns `Ok` leaves PostgreSQL's
/// transaction aborted, its writes gone: that is the handler's failure (500, recorded
/// with the reason), not the store's (503, nothing recorded, for as long as Stripe
/// retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_a_handler_that_swallows_a_failed_statement_has_failed() {
    let store = pg_store("t_faults_swallow").await;
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(SwallowsAnError),
    );
    let o = deliver_one(&p, "pg_swallow").await;
    assert!(matches!(o.kind(), OutcomeKind::HandlerFailed(_)), "{o:?}");
    assert_eq!(o.status(), 500);
    let rec = store
        .record(&EventId::new("evt_pg_swallow_0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, RecordStatus::Failed);
    assert!(rec.last_error.unwrap().contains("25P02"));
}

/// An ordered PostgreSQL inbox whose handler's transaction ended under it (see
/// [`common::EndsItsTransaction`], which writes on after) answers the handler's failure,
/// 500, recorded with why, and leaves the watermark alone. It answered 503 and recorded
/// nothing (so a handler that always did this was never listed as failed), and moved the
/// watermark outside any transaction, for an event whose effects were gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_a_transaction_ended_under_the_handler_is_its_failure() {
    use stripe_webhooks::{dangerous, OrderingStore, TiePolicy};
    let store = pg_store("t_faults_ended").await;
    let audit = common::unique("t_faults_ended_audit");
    stripe_webhooks::sqlx::query(&format!("CREATE TABLE {audit} (event_id TEXT)"))
        .execute(store.pool())
        .await
        .unwrap();
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store
            .inbox(common::EndsItsTransaction {
                before: None,
                after: Some(audit.clone()),
            })
            .ordered(TiePolicy::Run),
    );
    for prefix in ["pg_ended_hidden", "pg_ended_rollback"] {
        let object = format!("cus_{prefix}_{}", std::process::id());
        let body = testing::event_json(
            &format!("evt_{prefix}"),
            "customer.updated",
            &format!(r#"{{"id":"{object}","object":"customer"}}"#),
        );
        let event = dangerous::parse_unverified(body.as_bytes()).unwrap();
        let o = p.process_event(&event).await;
        assert!(
            matches!(o.kind(), OutcomeKind::HandlerFailed(_)),
            "{prefix}: {o:?}"
        );
        assert_eq!(o.status(), 500);
        let rec = store
            .record(&EventId::new(format!("evt_{prefix}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.status, RecordStatus::Failed, "{prefix}");
        assert!(
            rec.last_error
                .unwrap()
                .contains("transaction had ended under it"),
            "{prefix}"
        );
        assert_eq!(store.watermark(&object).await.unwrap(), None, "{prefix}");
    }
}

/// Writes a row that breaks a deferred foreign key, which PostgreSQL checks only at
/// COMMIT: `children` references `parents`, and no parent `nobody` exists.
struct BreaksTheCommit {
    children: String,
}

#[async_trait]
impl TransactionalHandler<Postgres> for BreaksTheCommit {
    async fn handle(&self, _event: &Event, conn: &mut PgConnection) -> Result<(), HandlerError> {
        stripe_webhooks::sqlx::query(&format!(
            "INSERT INTO {} (parent) VALUES ('nobody')",
            self.children
        ))
        .execute(&mut *conn)
        .await
        .map_err(HandlerError::new)?;
        Ok(())
    }
}

/// A COMMIT refused for the handler's own writes (a deferred constraint) is the
/// handler's failure: 500 and recorded with why, as on SQLite, not 503 with nothing
/// recorded for as long as Stripe retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_a_commit_refused_for_the_handlers_writes_is_its_failure() {
    let store = pg_store("t_faults_deferred").await;
    let (parents, children) = (
        common::unique("t_faults_parents"),
        common::unique("t_faults_children"),
    );
    for ddl in [
        format!("CREATE TABLE {parents} (id TEXT PRIMARY KEY)"),
        format!(
            "CREATE TABLE {children} (parent TEXT REFERENCES {parents} (id) \
             DEFERRABLE INITIALLY DEFERRED)"
        ),
    ] {
        stripe_webhooks::sqlx::query(&ddl)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(BreaksTheCommit { children }),
    );
    let o = deliver_one(&p, "pg_deferred").await;
    assert!(matches!(o.kind(), OutcomeKind::HandlerFailed(_)), "{o:?}");
    assert_eq!(o.status(), 500);
    let rec = store
        .record(&EventId::new("evt_pg_deferred_0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, RecordStatus::Failed);
    let why = rec.last_error.unwrap();
    assert!(why.contains("could not be committed"), "{why}");
}

/// A handler dropped at its deadline in the middle of a statement: the statement is
/// cancelled on the server (which would otherwise run it to its end, holding the claim's
/// row), so the failure is recorded at once and Stripe's next delivery runs again
/// instead of waiting on the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_cancels_the_statement_a_deadline_cut() {
    let store = pg_store("t_faults_cancel").await;
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(common::SleepsInTheDatabase("faults_cancel")),
    )
    .with_handler_deadline(Some(Duration::from_secs(1)));
    let o = deliver_one(&p, "pg_cancel").await;
    cut_and_recorded(&o, &store, "evt_pg_cancel_0").await;
    let busy: i64 = stripe_webhooks::sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE query = 'SELECT pg_sleep(30) -- faults_cancel' AND state = 'active'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(busy, 0, "the statement still runs on the server");
}

/// The same with a pool of one connection, all the delivery's own: `pg_cancel_backend`
/// has no connection to run on, so the transaction's `statement_timeout` (the deadline
/// and a second) ends the statement on the server. Before, the rollback waited out the
/// whole statement, and the failure was not recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_ends_a_cut_statement_without_a_spare_connection() {
    let (url, _) = pg_url_and_target();
    let options = stripe_webhooks::sqlx::postgres::PgPoolOptions::new().max_connections(1);
    let store = pg_store_on(options, &url, "t_faults_cancel_one").await;
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(common::SleepsInTheDatabase("faults_cancel_one")),
    )
    .with_handler_deadline(Some(Duration::from_millis(500)))
    .with_store_timeout(Duration::from_secs(2));
    let o = tokio::time::timeout(Duration::from_secs(15), deliver_one(&p, "pg_cancel_one"))
        .await
        .expect("the delivery waited out the 30 s statement");
    cut_and_recorded(&o, &store, "evt_pg_cancel_one_0").await;
}

/// `o` is the handler stopped at its deadline, and its failure is recorded for `id`.
async fn cut_and_recorded(o: &stripe_webhooks::Outcome, store: &PostgresStore, id: &str) {
    assert!(
        matches!(
            o.kind(),
            OutcomeKind::HandlerFailed(HandlerError::DeadlineExceeded(_))
        ),
        "{o:?}"
    );
    let rec = store
        .record(&EventId::new(id))
        .await
        .unwrap()
        .expect("the failure is recorded");
    assert_eq!(rec.status, RecordStatus::Failed);
}

/// Records the setting its statements run under (`SHOW {0}`).
#[derive(Clone)]
struct ShowsSetting(&'static str, Arc<Mutex<Vec<String>>>);

impl ShowsSetting {
    fn new(setting: &'static str) -> Self {
        Self(setting, Arc::default())
    }
}

#[async_trait]
impl TransactionalHandler<Postgres> for ShowsSetting {
    async fn handle(&self, _event: &Event, conn: &mut PgConnection) -> Result<(), HandlerError> {
        let shown: String = stripe_webhooks::sqlx::query_scalar(&format!("SHOW {}", self.0))
            .fetch_one(&mut *conn)
            .await
            .map_err(HandlerError::new)?;
        self.1.lock().unwrap().push(shown);
        Ok(())
    }
}

/// A store whose pool runs `set` on each connection it opens (a session setting).
async fn pg_store_setting(set: &'static str, table: &str) -> PostgresStore {
    use stripe_webhooks::sqlx::Executor;
    let (url, _) = pg_url_and_target();
    let options =
        stripe_webhooks::sqlx::postgres::PgPoolOptions::new().after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(set).await?;
                Ok(())
            })
        });
    pg_store_on(options, &url, table).await
}

/// With a handler deadline, the handler's statements are bounded by it and a second;
/// without one, or where the session bounds its statements itself, they run under the
/// session's setting, never widened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_bounds_statements_by_the_deadline_unless_the_session_does() {
    let plain = pg_store("t_faults_stmt_timeout").await;
    let own = pg_store_setting(
        "SET statement_timeout = '4321ms'",
        "t_faults_stmt_timeout_own",
    )
    .await;
    for (store, deadline, want) in [
        (&plain, Some(Duration::from_secs(2)), "3s"),
        (&plain, None, "0"),
        (&own, Some(Duration::from_secs(2)), "4321ms"),
    ] {
        let handler = ShowsSetting::new("statement_timeout");
        let p = Processor::with_inbox(
            Verifier::from_secrets_list(SECRET).unwrap(),
            store.inbox(handler.clone()),
        )
        .with_handler_deadline(deadline);
        let o = deliver_one(
            &p,
            &format!(
                "pg_stmt_{}",
                want.replace(|c: char| !c.is_ascii_alphanumeric(), "")
            ),
        )
        .await;
        assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
        assert_eq!(*handler.1.lock().unwrap(), [want], "{deadline:?}");
    }
}

/// The inbox's short `lock_timeout` is for its claim: the handler's statements run under
/// the session's own setting (here from the pool's `after_connect`), not the server's
/// default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_handler_runs_under_the_sessions_lock_timeout() {
    let store = pg_store_setting("SET lock_timeout = '4321ms'", "t_faults_locktimeout").await;
    let handler = ShowsSetting::new("lock_timeout");
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(handler.clone()),
    );
    let o = deliver_one(&p, "pg_locktimeout").await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    assert_eq!(*handler.1.lock().unwrap(), ["4321ms"]);
}

/// A store timeout too long for PostgreSQL's `lock_timeout` (or for the clock) is taken
/// as `MAX_STORE_TIMEOUT`: the inbox delivers, where it panicked or got 503 every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_takes_a_huge_store_timeout_as_the_maximum() {
    let store = pg_store("t_faults_huge").await;
    for timeout in [Duration::MAX, Duration::from_secs(30 * 24 * 3600)] {
        let p = Processor::with_inbox(
            Verifier::from_secrets_list(SECRET).unwrap(),
            store.inbox(NoEffects),
        )
        .with_store_timeout(timeout);
        let delivery = deliveries(&format!("pg_huge_{}", timeout.as_secs()), 1).remove(0);
        let o = p.process(Some(&delivery.0), delivery.1.as_bytes()).await;
        assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    }
}

/// In inbox mode, a duplicate's claim is refused and the record's state is read: that
/// read runs under the store timeout like every other store call, so a stalled server
/// is answered 503 in time instead of holding the delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_state_read_is_under_the_store_timeout() {
    let (_, target) = pg_url_and_target();
    let proxy = stalling_proxy(target, b"SELECT status").await;
    let store = pg_store_through(proxy, "t_faults_state").await;
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(NoEffects),
    )
    .with_store_timeout(Duration::from_millis(1500));
    let delivery = deliveries("pg_state", 1).remove(0);
    let first = p.process(Some(&delivery.0), delivery.1.as_bytes()).await;
    assert!(matches!(first.kind(), OutcomeKind::Processed), "{first:?}");
    // The duplicate's claim is refused; its state read stalls.
    let started = Instant::now();
    let dup = tokio::time::timeout(
        Duration::from_secs(20),
        p.process(Some(&delivery.0), delivery.1.as_bytes()),
    )
    .await
    .expect("the state read must not hang the delivery");
    assert!(
        matches!(
            dup.kind(),
            OutcomeKind::StoreUnavailable(StoreError::Timeout(_))
        ),
        "{dup:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_off_is_503_by_the_store_timeout_then_exactly_once() {
    let (url, target) = pg_url_and_target();
    let proxy = Proxy::start(target.clone()).await;
    let proxied = url.replace(&target, &proxy.addr.to_string());
    let pool = stripe_webhooks::sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(1500))
        .connect(&proxied)
        .await
        .unwrap();
    let table = common::unique("t_faults");
    let store = PostgresStore::new(pool).with_table(&table).unwrap();
    store.migrate().await.unwrap();
    let runs = Arc::new(Runs::default());
    // The store timeout leaves room inside the 2 s the answer must come within.
    let p = Processor::new(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store,
        runs.clone(),
    )
    .with_store_timeout(Duration::from_millis(1500));

    let before = deliveries("pg_before", 5);
    assert!(deliver_all(&p, &before)
        .await
        .iter()
        .all(|(s, _)| *s == 200));

    proxy.cut();
    let during = deliveries("pg_during", 5);
    for (status, took) in deliver_all(&p, &during).await {
        assert_eq!(status, 503);
        // Answered by the 1.5 s store timeout, not left hanging on the cut connection
        // (the bound leaves a slow machine room: it tells a timeout from none).
        assert!(
            took <= Duration::from_secs(5),
            "503 by the store timeout (took {took:?})"
        );
    }
    assert_eq!(runs.total(), 5, "no handler ran while the store was down");

    proxy.restore();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses = deliver_all(&p, &during).await;
        if statuses.iter().all(|(s, _)| *s == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert!(deliver_all(&p, &during)
        .await
        .iter()
        .all(|(s, _)| *s == 200));
    runs.each_once(10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_is_503_by_the_store_timeout_then_exactly_once() {
    let url = std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| {
        panic!("REDIS_URL_TEST is not set: run `eval \"$(scripts/services.sh start)\"` or `scripts/test.sh`")
    });
    let client = redis::Client::open(url.as_str()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client.clone())
        .await
        .unwrap();
    let prefix = common::unique("t_faults");
    let store = RedisStore::new(conn).with_prefix(&prefix).unwrap();
    let runs = Arc::new(Runs::default());
    let p = Processor::new(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store,
        runs.clone(),
    )
    .with_handler_deadline(Some(Duration::from_millis(500)))
    .with_lease(Duration::from_millis(1500))
    .with_store_timeout(Duration::from_millis(1500));

    let before = deliveries("redis_before", 5);
    assert!(deliver_all(&p, &before)
        .await
        .iter()
        .all(|(s, _)| *s == 200));

    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let during = deliveries("redis_during", 1);
    for (status, took) in deliver_all(&p, &during).await {
        assert_eq!(status, 503);
        // Answered by the 1.5 s store timeout, before the 3 s pause ends.
        assert!(
            took < Duration::from_millis(2900),
            "503 by the store timeout, not the pause's end (took {took:?})"
        );
    }
    assert_eq!(runs.total(), 5, "no handler ran while Redis was paused");

    // The paused claim may still land when the pause ends; its lease then runs out
    // (409 until then).
    let mut after = Vec::new();
    for _ in 0..100 {
        after = deliver_all(&p, &during).await;
        if after.iter().all(|(s, _)| *s == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after.iter().all(|(s, _)| *s == 200), "{after:?}");
    assert!(deliver_all(&p, &during)
        .await
        .iter()
        .all(|(s, _)| *s == 200));
    runs.each_once(6);
}

/// An ordered PostgreSQL inbox leaves the types its handler keeps outside the guard
/// (`TransactionalHandler::is_ordered`) unguarded: a payment's event older than an
/// update of its charge still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ordered_inbox_runs_unordered_types_whatever_their_age() {
    use stripe_webhooks::TiePolicy;
    let store = pg_store("t_faults_inbox_unordered").await;
    let handler = common::PaymentsAlwaysRun::default();
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(handler.clone()).ordered(TiePolicy::Run),
    );
    let charge = format!("ch_pg_unordered_{}", std::process::id());
    common::unordered_types_run_whatever_their_age(&p, &handler, &charge).await;
}

/// An ordered inbox beside a guarded route outside it (`Processor::thin_ordered` on the
/// same table): the lease lock that route holds on an object while its handler runs
/// makes the inbox's delivery about that object wait (409, its claim rolled back)
/// instead of running beside it; once the lock is freed, the delivery runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ordered_inbox_waits_for_a_lease_lock_on_the_object() {
    use stripe_webhooks::{dangerous, ObjectLock, OrderingStore, TiePolicy};
    let store = pg_store("t_faults_inbox_lease").await;
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(NoEffects).ordered(TiePolicy::Run),
    );
    let (header, body) = deliveries("pg_lease", 1).remove(0);
    let event = dangerous::parse_unverified(body.as_bytes()).unwrap();
    let object = event.object_id().unwrap().to_owned();
    let lock = store
        .lock_object(&object, "another-route", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(lock, ObjectLock::Acquired { .. }), "{lock:?}");
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::InProgress { .. }), "{o:?}");
    assert!(store.record(event.id()).await.unwrap().is_none());
    store.unlock_object(&object, "another-route").await.unwrap();
    let o = p.process(Some(&header), body.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
}

/// A lease lock that ran out (its route's handler stalled past the lease) is taken over
/// by an ordered inbox's delivery, as by any other holder: the stalled route's late
/// completion, which applied an older event, is refused. It went through, the lock still
/// naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ordered_inbox_takes_over_a_lapsed_lease_lock() {
    use stripe_webhooks::{dangerous, LockedClaim, OrderingStore, TiePolicy, Watermark};
    let store = pg_store("t_inbox_lapsed").await;
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(NoEffects).ordered(TiePolicy::Run),
    );
    let ds = deliveries("pg_lapsed", 2);
    let old = dangerous::parse_unverified(ds[0].1.as_bytes()).unwrap();
    let object = old.object_id().unwrap().to_owned();
    let locked = store
        .lock_and_claim(
            &object,
            "stalled-route",
            Duration::from_millis(200),
            old.id(),
            old.event_type(),
        )
        .await
        .unwrap();
    let LockedClaim::Acquired { token, .. } = locked else {
        panic!("{locked:?}");
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let o = p.process(Some(&ds[1].0), ds[1].1.as_bytes()).await;
    assert!(matches!(o.kind(), OutcomeKind::Processed), "{o:?}");
    let late = store
        .complete_applied(
            &token,
            &object,
            "stalled-route",
            &Watermark::new(old.created(), old.id().clone()),
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
}

/// Beside an ordered PostgreSQL inbox, a thin event claimed under its snapshot twin joins
/// the object's guard: it moves the watermark, so an older snapshot event of the object
/// arriving later is stale in the inbox, and its twin a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_thin_twin_beside_an_ordered_inbox_moves_the_watermark() {
    use stripe_webhooks::testing::ThinEventBuilder;
    use stripe_webhooks::{dangerous, OrderingStore, TiePolicy};
    let store = pg_store("t_inbox_twin").await;
    let p = Processor::with_inbox(
        Verifier::from_secrets_list(SECRET).unwrap(),
        store.inbox(NoEffects).ordered(TiePolicy::Run),
    )
    .with_thin_handler(common::NoopThin);
    let base = testing::now() - 100;
    let object = format!("cus_twin_{}", std::process::id());
    let update = |id: &str, created: i64| {
        let mut v: serde_json::Value = serde_json::from_str(&testing::event_json(
            id,
            "customer.updated",
            &format!(r#"{{"id":"{object}","object":"customer"}}"#),
        ))
        .unwrap();
        v["created"] = created.into();
        dangerous::parse_unverified(v.to_string().as_bytes()).unwrap()
    };
    let thin = ThinEventBuilder::new("evt_pg_thin_tw2", "v1.customer.updated")
        .related(&object, "customer", &format!("/v1/customers/{object}"))
        .snapshot_event("evt_pg_tw2")
        .created(base + 2)
        .build();
    let n = dangerous::parse_unverified_notification(thin.as_bytes()).unwrap();
    assert_eq!(p.process_notification(&n).await.kind().name(), "processed");
    let wm = store.watermark(&object).await.unwrap().unwrap();
    assert_eq!((wm.created, wm.event_id.as_str()), (base + 2, "evt_pg_tw2"));
    let older = p.process_event(&update("evt_pg_tw1", base + 1)).await;
    assert_eq!(older.kind().name(), "stale", "{older:?}");
    let twin = p.process_event(&update("evt_pg_tw2", base + 2)).await;
    assert_eq!(twin.kind().name(), "duplicate", "{twin:?}");
}
