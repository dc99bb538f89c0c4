//! Ack fast, process later: the axum service in ack-fast mode, with workers in the same
//! process.
//!
//! Run with: `cargo run --example queue --features axum,sqlite,tracing`
//! (add `postgres` or `redis` to the features for those queues)
//!
//! Each delivery is verified, its raw body written to a durable queue in one statement
//! keyed by the event's dedupe key, and answered 200 `queued` at once; the workers run the
//! handler afterwards, with retries (Stripe's schedule), a dead state, and leases that
//! let another process take over the jobs of one that died. Durable as the queue's
//! store is: the SQLite file here runs with `synchronous = NORMAL` (an OS crash or power
//! cut may lose the last acknowledged jobs, which Stripe will not send again: use
//! `synchronous = FULL` where that matters, see the README), and Redis needs
//! `appendonly yes`. The demo handler sleeps
//! `DEMO_HANDLER_SLEEP_MS` (2000 by default) to show that a slow handler does not slow
//! the acknowledgements.
//!
//! - The queue: in the SQLite file `stripe-webhooks.db` (or `SQLITE_PATH`) by default,
//!   PostgreSQL when `DATABASE_URL=postgres://…` (workers woken by `LISTEN/NOTIFY`),
//!   Redis Streams when `REDIS_URL=redis://…`.
//! - `STRIPE_WEBHOOK_SECRET`, `STRIPE_THIN_WEBHOOK_SECRET`: as in the axum example.
//! - `PORT` (default 4242) on 127.0.0.1.
//! - `QUEUE_WORKERS`: jobs run at once (default 4; in inbox mode each holds one of the
//!   store pool's connections while it runs: 8 on SQLite, 16 on PostgreSQL).
//! - `DEMO_HANDLER_SLEEP_MS`: how long the demo handler works, `2000` or a range `0-50`.
//! - `QUEUE_LEASE_MS`: a job's lease (default 120000); a process killed with SIGKILL
//!   delays its jobs by this much.
//! - `QUEUE_RETRY_MS`: the first retry's delay (default 60000, then doubling up to six
//!   hours, 20 attempts: Stripe's own schedule).
//! - On SQLite and PostgreSQL the handler runs in **inbox mode**: it writes one row per
//!   event to the `queue_effects` table in the transaction that completes the job
//!   (`QUEUE_MODE=plain`: the plain handler, no transaction).
//! - `STRIPE_WEBHOOKS_TABLE`: the store's table name (the queue is `{table}_jobs`, the
//!   effects `{table}_effects`), so several services (or tests) share one database.
//!
//! `--print-enabled-events` prints the `enabled_events` both Stripe destinations need,
//! from what the workers' handlers take, and exits.
//!
//! Routes: `POST /webhook`, `POST /webhook/thin`, `GET /healthz`, `GET /queue` (the
//! queue's counts as JSON), `GET /metrics` (Prometheus) with the `metrics` feature, and
//! the web console at `/admin/webhooks` with the `console` feature when
//! `CONSOLE_PASSWORD` is set (basic auth, user `admin`; without a password it is not
//! mounted). Reached under a name rather than an address or `localhost`, name it in
//! `CONSOLE_HOSTS` (comma-separated: `admin.example.com,.internal.example.com`), or
//! the console answers 421. SIGINT or SIGTERM stops taking requests and jobs, and gives the
//! jobs in hand 10 s to finish before they are released for another process.

mod common;

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use stripe_webhooks::queue::{QueueAdmin, RetryPolicy, Worker};
use stripe_webhooks::sqlx::{self, Sqlite};
use stripe_webhooks::{
    async_trait, Event, EventHandler, EventNotification, HandlerError, Processor, SqliteStore,
    ThinEventHandler, TransactionalHandler, Verifier,
};

/// The service: both webhook routes queue into one queue; `GET /queue` shows its counts.
fn app(snapshot: Arc<Processor>, thin: Arc<Processor>, queue: Arc<dyn QueueAdmin>) -> axum::Router {
    stripe_webhooks::axum::router("/webhook", snapshot)
        .merge(stripe_webhooks::axum::router("/webhook/thin", thin))
        .route("/healthz", get(|| async { "ok" }))
        .route("/queue", get(counts).with_state(queue))
}

async fn counts(
    State(queue): State<Arc<dyn QueueAdmin>>,
) -> Result<Json<serde_json::Value>, (axum::http::StatusCode, String)> {
    match queue.counts().await {
        Ok(c) => Ok(Json(serde_json::json!(c))),
        Err(e) => Err((axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// How long the demo handler works: a fixed time or a range, from `DEMO_HANDLER_SLEEP_MS`.
#[derive(Debug, Clone, Copy)]
struct Work {
    min_ms: u64,
    max_ms: u64,
}

impl Work {
    fn from_env() -> Result<Self, Box<dyn Error>> {
        let raw = std::env::var("DEMO_HANDLER_SLEEP_MS").unwrap_or_else(|_| "2000".to_owned());
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|e| format!("DEMO_HANDLER_SLEEP_MS={raw:?}: {e}"))
        };
        let (min_ms, max_ms) = match raw.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(&raw)?, parse(&raw)?),
        };
        Ok(Self {
            min_ms: min_ms.min(max_ms),
            max_ms: max_ms.max(min_ms),
        })
    }

    /// Sleeps for a time in the range, chosen from the event id.
    async fn run(&self, id: &str) {
        let span = self.max_ms - self.min_ms;
        let pick = if span == 0 {
            0
        } else {
            id.bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                % (span + 1)
        };
        tokio::time::sleep(Duration::from_millis(self.min_ms + pick)).await;
    }
}

/// The demo handler of the inbox mode: it works, then writes one effects row per event
/// in the job's transaction.
struct Effects {
    work: Work,
    insert: String,
}

impl Effects {
    /// The handler, and the statement that creates its table.
    fn new(work: Work, table: &str, placeholders: (&str, &str)) -> (Self, String) {
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} (event_id TEXT NOT NULL, event_type TEXT NOT NULL)"
        );
        let insert = format!(
            "INSERT INTO {table} (event_id, event_type) VALUES ({}, {})",
            placeholders.0, placeholders.1
        );
        (Self { work, insert }, create)
    }
}

/// The store table (`STRIPE_WEBHOOKS_TABLE`) and the effects table.
fn tables() -> (Option<String>, String) {
    match std::env::var("STRIPE_WEBHOOKS_TABLE") {
        Ok(t) if !t.is_empty() => (Some(t.clone()), format!("{t}_effects")),
        _ => (None, "queue_effects".to_owned()),
    }
}

fn plain_mode() -> bool {
    std::env::var("QUEUE_MODE").is_ok_and(|m| m == "plain")
}

#[async_trait]
impl TransactionalHandler<Sqlite> for Effects {
    // The work first, the write last: on SQLite the transaction holds the database's one
    // write lock from its first write to its commit.
    async fn handle(
        &self,
        event: &Event,
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<(), HandlerError> {
        self.work.run(event.id().as_str()).await;
        sqlx::query(&self.insert)
            .bind(event.id().as_str())
            .bind(event.event_type().as_str())
            .execute(conn)
            .await
            .map_err(HandlerError::new)?;
        tracing::info!(event = %event.id(), "handled");
        Ok(())
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl TransactionalHandler<sqlx::Postgres> for Effects {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(), HandlerError> {
        self.work.run(event.id().as_str()).await;
        sqlx::query(&self.insert)
            .bind(event.id().as_str())
            .bind(event.event_type().as_str())
            .execute(conn)
            .await
            .map_err(HandlerError::new)?;
        tracing::info!(event = %event.id(), "handled");
        Ok(())
    }
}

/// The demo handler where there is no transaction (Redis, and thin events): it works and
/// logs.
struct Plain(Work);

#[async_trait]
impl EventHandler for Plain {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        self.0.run(event.id().as_str()).await;
        tracing::info!(event = %event.id(), "handled");
        Ok(())
    }
}

#[async_trait]
impl ThinEventHandler for Plain {
    async fn handle(&self, n: &EventNotification) -> Result<(), HandlerError> {
        // A real thin handler fetches the object first (`n.fetch_related_object(&client)`).
        self.0.run(n.id.as_str()).await;
        tracing::info!(event = %n.id, "handled (thin)");
        Ok(())
    }
}

/// The queue the environment names, and the worker on it.
async fn queue_and_worker(
    config: &common::Config,
    work: Work,
) -> Result<(Arc<dyn QueueAdmin>, Worker), Box<dyn Error>> {
    // A queue in memory would lose every acknowledged event at a restart: the point of
    // this example is the durable queue.
    if config.memory {
        return Err(
            "STRIPE_WEBHOOKS_STORE=memory: the queue example keeps its jobs in a \
                    durable store (SQLite by default, DATABASE_URL, REDIS_URL); unset it"
                .into(),
        );
    }
    if let Some(url) = &config.database_url {
        return postgres(url, work).await;
    }
    if let Some(url) = &config.redis_url {
        return redis_queue(url, work).await;
    }
    let (table, effects) = tables();
    let mut store = SqliteStore::connect(&config.sqlite_path).await?;
    if let Some(t) = table {
        store = store.with_table(&t)?;
        store.migrate().await?;
    }
    let (handler, create) = Effects::new(work, &effects, ("?1", "?2"));
    sqlx::query(&create).execute(store.pool()).await?;
    tracing::info!(path = %config.sqlite_path, "queue: SQLite");
    let queue = store.queue();
    let worker = if plain_mode() {
        Worker::new(queue.clone(), Plain(work))
    } else {
        queue.inbox_worker(handler)
    };
    Ok((Arc::new(queue), worker.with_thin_handler(Plain(work))))
}

#[cfg(feature = "postgres")]
async fn postgres(url: &str, work: Work) -> Result<(Arc<dyn QueueAdmin>, Worker), Box<dyn Error>> {
    let (table, effects) = tables();
    let mut store = stripe_webhooks::PostgresStore::connect(url).await?;
    if let Some(t) = table {
        store = store.with_table(&t)?;
        store.migrate().await?;
    }
    let (handler, create) = Effects::new(work, &effects, ("$1", "$2"));
    sqlx::query(&create).execute(store.pool()).await?;
    tracing::info!("queue: PostgreSQL");
    let queue = store.queue();
    let worker = if plain_mode() {
        Worker::new(queue.clone(), Plain(work))
    } else {
        queue.inbox_worker(handler)
    };
    Ok((Arc::new(queue), worker.with_thin_handler(Plain(work))))
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_: &str, _: Work) -> Result<(Arc<dyn QueueAdmin>, Worker), Box<dyn Error>> {
    Err(
        "DATABASE_URL is set, but this build has no PostgreSQL support: add `--features postgres`"
            .into(),
    )
}

#[cfg(feature = "redis")]
async fn redis_queue(
    url: &str,
    work: Work,
) -> Result<(Arc<dyn QueueAdmin>, Worker), Box<dyn Error>> {
    let client = stripe_webhooks::redis::Client::open(url)?;
    let conn = stripe_webhooks::redis::aio::ConnectionManager::new(client.clone()).await?;
    tracing::info!("queue: Redis Streams");
    let mut store = stripe_webhooks::RedisStore::new(conn);
    if let (Some(t), _) = tables() {
        store = store.with_prefix(&t)?;
    }
    // Idle workers block on the stream for new jobs instead of polling.
    let queue = store.queue().with_wakeups(client);
    let worker = Worker::new(queue.clone(), Plain(work)).with_thin_handler(Plain(work));
    Ok((Arc::new(queue), worker))
}

#[cfg(not(feature = "redis"))]
async fn redis_queue(_: &str, _: Work) -> Result<(Arc<dyn QueueAdmin>, Worker), Box<dyn Error>> {
    Err("REDIS_URL is set, but this build has no Redis support: add `--features redis`".into())
}

/// The web console at `/admin/webhooks` (feature `console`), behind basic auth with the
/// password in `CONSOLE_PASSWORD`; never mounted without one. `CONSOLE_HOSTS` names the
/// hosts it answers besides addresses and `localhost`.
#[cfg(feature = "console")]
fn with_console(app: axum::Router, queue: Arc<dyn QueueAdmin>) -> axum::Router {
    match std::env::var("CONSOLE_PASSWORD") {
        Ok(password) if !password.is_empty() => {
            use stripe_webhooks::console::{basic_auth, Console};
            let hosts = std::env::var("CONSOLE_HOSTS").unwrap_or_default();
            let console = hosts.split(',').fold(
                Console::new(queue, basic_auth("admin", &password))
                    .with_basic_auth_realm("stripe-webhooks"),
                |console, host| console.with_allowed_host(host),
            );
            tracing::info!("console at /admin/webhooks (user admin)");
            app.nest("/admin/webhooks", console.router())
        }
        _ => app,
    }
}

/// Without the `console` feature: no console.
#[cfg(not(feature = "console"))]
fn with_console(app: axum::Router, _queue: Arc<dyn QueueAdmin>) -> axum::Router {
    app
}

fn env_u64(name: &str, default: u64) -> Result<u64, Box<dyn Error>> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse().map_err(|e| format!("{name}={v:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    common::init_logging();
    let config = common::Config::from_env()?;
    let work = Work::from_env()?;
    let (queue, worker) = queue_and_worker(&config, work).await?;
    // The queued processors report the workers' types: the manifest, and what a
    // reconciler over them would list.
    let enabled = worker.enabled_events();
    let processors = common::Processors {
        snapshot: Arc::new(
            Processor::queued(
                Verifier::from_secrets_list(&config.secrets)?,
                Arc::clone(&queue),
            )
            .with_enabled_events(enabled.clone()),
        ),
        thin: Arc::new(
            Processor::queued(
                Verifier::from_secrets_list(&config.thin_secrets)?,
                Arc::clone(&queue),
            )
            .with_enabled_events(enabled),
        ),
    };
    if common::print_enabled_events(&processors) {
        return Ok(());
    }
    let lease = Duration::from_millis(env_u64("QUEUE_LEASE_MS", 120_000)?);
    let workers = usize::try_from(env_u64("QUEUE_WORKERS", 4)?)?;
    let first_retry = Duration::from_millis(env_u64("QUEUE_RETRY_MS", 60_000)?);
    let retry = RetryPolicy::new(20, first_retry, Duration::from_secs(6 * 3600));
    let handle = worker
        .with_retry(retry)
        .with_concurrency(workers)
        .with_lease(lease)
        .with_deadline(Some(lease / 2))
        .spawn();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    tracing::info!(
        workers,
        "listening on http://{}/webhook (ack fast, process later)",
        listener.local_addr()?
    );
    // `GET /metrics` (Prometheus) when built with the `metrics` feature.
    let app = common::with_metrics(
        app(
            Arc::clone(&processors.snapshot),
            Arc::clone(&processors.thin),
            Arc::clone(&queue),
        ),
        Some(Arc::clone(&queue)),
    );
    let app = with_console(app, queue);
    // One signal stops both at once: the server takes no new request, and the workers
    // take no new job and give the jobs in hand 10 s (not after the server's drain,
    // which would leave them taking jobs meanwhile, past an orchestrator's grace).
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        common::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let serve = async {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(until_stopped(stopping.clone()))
            .await;
        processors.drain().await;
        served
    };
    let work = async {
        until_stopped(stopping.clone()).await;
        handle.shutdown(Duration::from_secs(10)).await;
    };
    let (served, ()) = tokio::join!(serve, work);
    served?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::Request;
    use stripe_webhooks::queue::{JobState, MemoryQueue};
    use stripe_webhooks::testing;
    use tower::ServiceExt;

    use super::*;

    /// The acknowledgement comes while the 2 s handler has not finished: the job is
    /// queued or running, not completed, when the 200 arrives; later it completes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_handler_does_not_hold_the_acknowledgement() {
        let queue = MemoryQueue::new();
        let work = Work {
            min_ms: 2000,
            max_ms: 2000,
        };
        let handle = Worker::new(queue.clone(), Plain(work))
            .with_poll_interval(Duration::from_millis(10))
            .spawn();
        let verifier = || Verifier::from_secrets_list(common::DEV_SECRET).unwrap();
        let queue_dyn: Arc<dyn QueueAdmin> = Arc::new(queue.clone());
        let app = app(
            Arc::new(Processor::queued(verifier(), queue.clone())),
            Arc::new(Processor::queued(verifier(), queue.clone())),
            queue_dyn,
        );
        let body = testing::event_for_type("evt_slow_ack", "invoice.paid").unwrap();
        let header = testing::sign(body.as_bytes(), common::DEV_SECRET, testing::now());
        let res = app
            .clone()
            .oneshot(
                Request::post("/webhook")
                    .header("content-type", "application/json")
                    .header("stripe-signature", header)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let state = queue
            .job(&"evt_slow_ack".into())
            .await
            .unwrap()
            .unwrap()
            .state;
        assert!(
            matches!(state, JobState::Queued | JobState::Running),
            "{state:?}"
        );
        for _ in 0..100 {
            if queue.counts().await.unwrap().completed == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(queue.counts().await.unwrap().completed, 1);
        let res = app
            .oneshot(Request::get("/queue").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        handle.shutdown(Duration::from_secs(1)).await;
    }

    #[test]
    fn work_ranges_parse() {
        std::env::set_var("DEMO_HANDLER_SLEEP_MS", "0-50");
        let w = Work::from_env().unwrap();
        assert_eq!((w.min_ms, w.max_ms), (0, 50));
        std::env::remove_var("DEMO_HANDLER_SLEEP_MS");
    }
}
