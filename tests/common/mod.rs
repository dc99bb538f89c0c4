//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use stripe_webhooks::{FixedClock, SigningSecret, Verifier};

pub const SECRET: &str = "whsec_test_secret";
pub const NOW: i64 = 1_700_000_000;

pub fn verifier_at(now: i64) -> Verifier {
    Verifier::new(SigningSecret::new(SECRET).unwrap()).with_clock(FixedClock(now))
}

/// The path of an example binary built beside this test by
/// `cargo build --all-features --examples` (scripts/test.sh runs it first):
/// target/debug/deps/<test>-… → target/debug/examples/<name>.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first with `cargo build --all-features --examples` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A fresh directory under the system's temporary directory, removed with everything in
/// it when dropped. Bind it to a name (`let dir = …`, not `_`) for as long as files in it
/// are used.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "stripe_webhooks_{what}_{}_{}_{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// The directory `name` under the system's temporary directory, for a name that is
    /// unique already (see [`unique`]).
    pub fn at(name: &str) -> Self {
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, file: &str) -> std::path::PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A name no other test (or earlier run) uses: for tables, key prefixes and files.
pub fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    // The low 40 bits of the time (they wrap every 18 minutes; the process id and the
    // counter tell apart names made within that), so that a 20-letter name with a
    // six-digit process id still fits PostgreSQL's 45-letter table names.
    format!(
        "{what}_{:x}_{:x}_{}",
        nanos & ((1 << 40) - 1),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
pub mod queue_service;

/// Runs `work` on a current-thread runtime with a Prometheus recorder of its own (the
/// local recorder is the thread's, and a current-thread runtime keeps every task on
/// it); returns what it gave and the recorder's text.
#[cfg(feature = "metrics")]
pub fn with_local_prometheus<T>(work: impl std::future::Future<Output = T>) -> (T, String) {
    with_local_prometheus_handle(|handle| async move { (work.await, handle.render()) })
}

/// [`with_local_prometheus`], `work` given the recorder's handle, to read what was
/// recorded as it goes.
#[cfg(feature = "metrics")]
pub fn with_local_prometheus_handle<T, F>(
    work: impl FnOnce(metrics_exporter_prometheus::PrometheusHandle) -> F,
) -> T
where
    F: std::future::Future<Output = T>,
{
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || rt.block_on(work(handle)))
}

/// A thin handler that does nothing: the thin side of the tests that need one.
pub struct NoopThin;

#[stripe_webhooks::async_trait]
impl stripe_webhooks::ThinEventHandler for NoopThin {
    async fn handle(
        &self,
        _n: &stripe_webhooks::EventNotification,
    ) -> Result<(), stripe_webhooks::HandlerError> {
        Ok(())
    }
}

/// A PostgreSQL inbox handler that runs one statement for 30 s (`SELECT pg_sleep(30)`,
/// then a comment naming its tag, so that a test can find its own in
/// `pg_stat_activity`), far past any handler deadline.
#[cfg(feature = "postgres")]
pub struct SleepsInTheDatabase(pub &'static str);

#[cfg(feature = "postgres")]
#[stripe_webhooks::async_trait]
impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Postgres>
    for SleepsInTheDatabase
{
    async fn handle(
        &self,
        _event: &stripe_webhooks::Event,
        conn: &mut stripe_webhooks::sqlx::PgConnection,
    ) -> Result<(), stripe_webhooks::HandlerError> {
        let sleep = format!("SELECT pg_sleep(30) -- {}", self.0);
        stripe_webhooks::sqlx::query(&sleep)
            .execute(&mut *conn)
            .await
            .map_err(stripe_webhooks::HandlerError::new)?;
        Ok(())
    }
}

/// A PostgreSQL inbox handler that ends its transaction under the inbox, by the event's
/// id: `…_aborted…` only hides a failed statement (the transaction is aborted, not
/// ended); `…rollback…` runs `ROLLBACK`; any other hides a failed statement and then
/// begins a transaction of its own (the `SAVEPOINT` fails in the aborted transaction,
/// and sqlx undoes it with a whole `ROLLBACK`). It writes the event's id into `before`
/// first (in the transaction) and into `after` last (outside it, once it has ended),
/// where given.
#[cfg(feature = "postgres")]
pub struct EndsItsTransaction {
    pub before: Option<String>,
    pub after: Option<String>,
}

#[cfg(feature = "postgres")]
#[stripe_webhooks::async_trait]
impl stripe_webhooks::TransactionalHandler<stripe_webhooks::sqlx::Postgres> for EndsItsTransaction {
    async fn handle(
        &self,
        event: &stripe_webhooks::Event,
        conn: &mut stripe_webhooks::sqlx::PgConnection,
    ) -> Result<(), stripe_webhooks::HandlerError> {
        use stripe_webhooks::sqlx::{self, Connection as _};
        use stripe_webhooks::HandlerError;
        let id = event.id().as_str();
        let write = |table: &str| format!("INSERT INTO {table} (event_id) VALUES ($1)");
        if let Some(table) = &self.before {
            sqlx::query(&write(table))
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(HandlerError::new)?;
        }
        if id.contains("_aborted") {
            let _ = sqlx::query("SELECT 1 / 0").execute(&mut *conn).await;
        } else if id.contains("rollback") {
            sqlx::query("ROLLBACK")
                .execute(&mut *conn)
                .await
                .map_err(HandlerError::new)?;
        } else {
            let _ = sqlx::query("SELECT 1 / 0").execute(&mut *conn).await;
            let _ = conn.begin().await;
        }
        if let Some(table) = &self.after {
            sqlx::query(&write(table))
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(HandlerError::new)?;
        }
        Ok(())
    }
}

/// Waits, up to 10 s, until a session of the server `pool` reaches is waiting on a lock
/// in a statement whose text holds `needle` (a table name): the handshake for tests that
/// need one statement to queue behind another before they go on, where a sleep would
/// only make it likely. Whether one was seen.
#[cfg(feature = "postgres")]
pub async fn lock_wait_seen(pool: &stripe_webhooks::sqlx::PgPool, needle: &str) -> bool {
    for _ in 0..1000 {
        let waiting: i64 = stripe_webhooks::sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND position($1 in query) > 0 AND pid <> pg_backend_pid()",
        )
        .bind(needle)
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        if waiting > 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// Reads a billion generated rows on `conn`: minutes of SQLite's work in one statement,
/// far past any handler deadline or shutdown grace.
#[cfg(feature = "sqlite")]
pub async fn read_for_minutes(
    conn: &mut stripe_webhooks::sqlx::SqliteConnection,
) -> Result<(), stripe_webhooks::HandlerError> {
    stripe_webhooks::sqlx::query(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
         WHERE x < 1000000000) SELECT count(*) FROM c",
    )
    .execute(&mut *conn)
    .await
    .map_err(stripe_webhooks::HandlerError::new)?;
    Ok(())
}

/// A transactional handler that notes the events it ran and keeps `charge.succeeded`
/// outside an ordered inbox's guard (`TransactionalHandler::is_ordered`).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Default, Clone)]
pub struct PaymentsAlwaysRun {
    pub ran: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[stripe_webhooks::async_trait]
impl<DB: stripe_webhooks::sqlx::Database> stripe_webhooks::TransactionalHandler<DB>
    for PaymentsAlwaysRun
{
    async fn handle(
        &self,
        event: &stripe_webhooks::Event,
        _conn: &mut DB::Connection,
    ) -> Result<(), stripe_webhooks::HandlerError> {
        self.ran.lock().unwrap().push(event.id().to_string());
        Ok(())
    }

    fn is_ordered(&self, event_type: &stripe_webhooks::EventType) -> bool {
        *event_type != stripe_webhooks::EventType::ChargeSucceeded
    }
}

/// Delivers to `p` (an ordered inbox on [`PaymentsAlwaysRun`]) a `charge.updated` of the
/// charge `charge`, then its older `charge.succeeded`, then an update older still: the
/// payment runs whatever its age, the old update is stale.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub async fn unordered_types_run_whatever_their_age(
    p: &stripe_webhooks::Processor,
    handler: &PaymentsAlwaysRun,
    charge: &str,
) {
    let event = |id: &str, ty: &str, created: i64| {
        let mut v: serde_json::Value = serde_json::from_str(&stripe_webhooks::testing::event_json(
            &format!("{id}_{charge}"),
            ty,
            &format!(r#"{{"id":"{charge}","object":"charge"}}"#),
        ))
        .unwrap();
        v["created"] = created.into();
        stripe_webhooks::dangerous::parse_unverified(v.to_string().as_bytes()).unwrap()
    };
    let kinds = [
        event("evt_updated", "charge.updated", 1_700_000_002),
        event("evt_succeeded", "charge.succeeded", 1_700_000_001),
        event("evt_old_update", "charge.updated", 1_700_000_000),
    ];
    let mut names = Vec::new();
    for e in &kinds {
        names.push(p.process_event(e).await.kind().name());
    }
    assert_eq!(names, ["processed", "processed", "stale"]);
    assert_eq!(
        *handler.ran.lock().unwrap(),
        [
            format!("evt_updated_{charge}"),
            format!("evt_succeeded_{charge}")
        ]
    );
}

/// A delivery whose handler check (`handles`, `is_ordered`…) panicked: answered 500,
/// and `key` recorded in `store` as failed, its `attempts`-th attempt, with the panic's
/// message (holding `needle`), so operators see it and its attempts count.
pub async fn assert_check_panic_recorded(
    o: &stripe_webhooks::Outcome,
    store: &dyn stripe_webhooks::StoreAdmin,
    key: &str,
    attempts: u32,
    needle: &str,
) {
    use stripe_webhooks::{HandlerError, OutcomeKind, RecordStatus};
    assert_eq!(o.status(), 500, "{o:?}");
    assert!(
        matches!(o.kind(), OutcomeKind::HandlerFailed(HandlerError::Panicked(m)) if m.contains(needle)),
        "{o:?}"
    );
    let record = store
        .record(&stripe_webhooks::EventId::new(key))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{key} is not recorded"));
    assert_eq!(
        (record.status, record.attempts),
        (RecordStatus::Failed, attempts),
        "{record:?}"
    );
    let error = record.last_error.unwrap_or_default();
    assert!(
        error.contains("panicked") && error.contains(needle),
        "{error}"
    );
}
