//! What the axum and actix-web examples share: configuration from the environment, the
//! store, and the demo handler that keeps an `access` table.
#![allow(dead_code, unreachable_pub)]

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "postgres")]
use stripe_webhooks::sqlx::Postgres;
use stripe_webhooks::sqlx::{self, Sqlite};
#[cfg(feature = "postgres")]
use stripe_webhooks::PostgresStore;
use stripe_webhooks::{
    async_trait, Event, EventHandler, EventType, HandlerError, IdempotencyStore, MemoryStore,
    Processor, SqliteStore, ThinEventRouter, ThinEventType, TransactionalHandler, Verifier,
};
#[cfg(feature = "redis")]
use stripe_webhooks::{redis, RedisStore};

/// The secret used when `STRIPE_WEBHOOK_SECRET` is unset, so the examples run out of the
/// box; `send_event` signs with the same one. Never use it for a real endpoint.
pub const DEV_SECRET: &str = "whsec_local_development_only";
/// The thin destination's development secret (`STRIPE_THIN_WEBHOOK_SECRET` unset).
pub const DEV_THIN_SECRET: &str = "whsec_local_thin_development_only";

/// Settings read from the environment.
pub struct Config {
    /// One secret or several, comma-separated.
    pub secrets: String,
    /// The thin event destination's secrets.
    pub thin_secrets: String,
    /// The port on 127.0.0.1.
    pub port: u16,
    /// `postgres://…` when set.
    pub database_url: Option<String>,
    /// `redis://…` when set.
    pub redis_url: Option<String>,
    /// The SQLite file used otherwise.
    pub sqlite_path: String,
    /// `STRIPE_WEBHOOKS_STORE=memory` keeps everything in memory (for load tests).
    pub memory: bool,
}

/// Names what is set, never the secrets or the database URL's password.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("secrets", &"<redacted>")
            .field("thin_secrets", &"<redacted>")
            .field("port", &self.port)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("sqlite_path", &self.sqlite_path)
            .field("memory", &self.memory)
            .finish()
    }
}

/// A secret nobody knows: the thin route refuses every request signed with anything.
fn unknowable_secret() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let part = || RandomState::new().build_hasher().finish();
    format!("whsec_unset_{:016x}{:016x}", part(), part())
}

/// Checks a comma-separated list of secrets now, naming the variable it came from.
fn checked_secrets(name: &str, list: String) -> Result<String, Box<dyn Error>> {
    Verifier::from_secrets_list(&list).map_err(|e| {
        format!("{name}: {e} (one secret, or several separated by commas with no spaces)")
    })?;
    Ok(list)
}

/// Whether the public development secrets may stand in for missing ones: in a debug
/// build, or with `STRIPE_WEBHOOKS_DEV=1`.
fn dev_secrets_allowed() -> bool {
    cfg!(debug_assertions) || std::env::var("STRIPE_WEBHOOKS_DEV").is_ok_and(|v| v == "1")
}

/// `name`'s value, `None` when unset. Set but empty (a secret reference that resolved
/// to nothing) is an error, never taken as unset.
fn env_secret(name: &str) -> Result<Option<String>, Box<dyn Error>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Err(format!(
            "{name} is set but empty: give the endpoint's signing secret (whsec_…), or unset \
             it for the local development secret"
        )
        .into()),
        Ok(v) => Ok(Some(v)),
        Err(_) => Ok(None),
    }
}

/// The development secret standing in for an unset `STRIPE_WEBHOOK_SECRET`, where
/// allowed ([`dev_secrets_allowed`]); else an error.
fn dev_secret() -> Result<String, Box<dyn Error>> {
    if !dev_secrets_allowed() {
        return Err(
            "STRIPE_WEBHOOK_SECRET is not set, and a release build does not run on \
                    the public development secret (set STRIPE_WEBHOOKS_DEV=1 to allow it anyway)"
                .into(),
        );
    }
    tracing::warn!("STRIPE_WEBHOOK_SECRET is not set: using the local development secret");
    Ok(DEV_SECRET.to_owned())
}

/// `STRIPE_WEBHOOK_SECRET` (one secret or several, comma-separated), checked; unset, the
/// development secret where allowed. What the examples without a [`Config`] read.
pub fn webhook_secrets() -> Result<String, Box<dyn Error>> {
    match env_secret("STRIPE_WEBHOOK_SECRET")? {
        Some(s) => checked_secrets("STRIPE_WEBHOOK_SECRET", s),
        None => dev_secret(),
    }
}

impl Config {
    /// Reads `STRIPE_WEBHOOK_SECRET`, `STRIPE_THIN_WEBHOOK_SECRET`, `PORT`,
    /// `DATABASE_URL`, `REDIS_URL` and `SQLITE_PATH`.
    ///
    /// With neither secret set, both routes use the development secrets that
    /// `send_event` signs with, in a debug build (`cargo run --example …`) or with
    /// `STRIPE_WEBHOOKS_DEV=1`; a release build refuses to start on them, since they are
    /// public and anyone could sign an event with them. A secret set but empty (a secret
    /// reference that resolved to nothing) is an error, never taken as unset. With
    /// `STRIPE_WEBHOOK_SECRET` set and no `STRIPE_THIN_WEBHOOK_SECRET`, the thin route
    /// refuses every request (the development thin secret is public, and a real endpoint
    /// must not accept it).
    pub fn from_env() -> Result<Self, Box<dyn Error>> {
        let snapshot = env_secret("STRIPE_WEBHOOK_SECRET")?;
        let thin = env_secret("STRIPE_THIN_WEBHOOK_SECRET")?;
        let secrets = match &snapshot {
            Some(s) => checked_secrets("STRIPE_WEBHOOK_SECRET", s.clone())?,
            None => dev_secret()?,
        };
        let thin_secrets = match (&thin, &snapshot) {
            (Some(t), _) => checked_secrets("STRIPE_THIN_WEBHOOK_SECRET", t.clone())?,
            (None, Some(_)) => {
                tracing::warn!(
                    "STRIPE_THIN_WEBHOOK_SECRET is not set: the thin route refuses every request"
                );
                unknowable_secret()
            }
            (None, None) => {
                tracing::warn!(
                    "STRIPE_THIN_WEBHOOK_SECRET is not set: using the local development secret"
                );
                DEV_THIN_SECRET.to_owned()
            }
        };
        let port = match std::env::var("PORT") {
            Ok(p) => p.parse().map_err(|e| format!("PORT={p:?}: {e}"))?,
            Err(_) => 4242,
        };
        // A URL of another scheme is an error rather than a silent fall back to a SQLite
        // file of each replica's own (no shared store: no exactly-once across them).
        // Set but empty is a mistake too (a secret reference that was never filled in),
        // not a wish for SQLite.
        let database_url =
            match std::env::var("DATABASE_URL") {
                Ok(u) if u.is_empty() => {
                    return Err("DATABASE_URL is set but empty (unset it for SQLite)".into())
                }
                Ok(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => Some(u),
                Ok(_) => return Err(
                    "DATABASE_URL is not a postgres:// or postgresql:// URL (unset it for SQLite)"
                        .into(),
                ),
                Err(_) => None,
            };
        let config = Self {
            secrets,
            thin_secrets,
            port,
            database_url,
            redis_url: match std::env::var("REDIS_URL") {
                Ok(u) if u.is_empty() => {
                    return Err("REDIS_URL is set but empty (unset it for SQLite)".into())
                }
                Ok(u) => Some(u),
                Err(_) => None,
            },
            sqlite_path: sqlite_path("stripe-webhooks.db")?,
            memory: std::env::var("STRIPE_WEBHOOKS_STORE").is_ok_and(|s| s == "memory"),
        };
        // One store: two named (a leftover variable) would leave the choice to an order
        // no one reads, and replicas that disagree would not share their claims.
        let urls =
            usize::from(config.database_url.is_some()) + usize::from(config.redis_url.is_some());
        if urls + usize::from(config.memory) > 1 {
            return Err("more than one store is named (DATABASE_URL, REDIS_URL, \
                        STRIPE_WEBHOOKS_STORE=memory): keep the one this service uses"
                .into());
        }
        Ok(config)
    }
}

/// `SQLITE_PATH`, else `default`. Set but empty is an error: SQLite would open a private
/// temporary database on each connection, so the pool's connections would not share
/// the store, and nothing would survive a restart.
pub fn sqlite_path(default: &str) -> Result<String, Box<dyn Error>> {
    match std::env::var("SQLITE_PATH") {
        Ok(p) if p.trim().is_empty() => {
            Err("SQLITE_PATH is set but empty (unset it for the default file)".into())
        }
        Ok(p) => Ok(p),
        Err(_) => Ok(default.to_owned()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One row per effect the demo handler had: `grant`, `payment_failed` or `revoke`.
pub const SQLITE_ACCESS: &str = "CREATE TABLE IF NOT EXISTS access (
    event_id TEXT NOT NULL, action TEXT NOT NULL, customer TEXT, email TEXT, at INTEGER NOT NULL)";
const POSTGRES_ACCESS: &str = "CREATE TABLE IF NOT EXISTS access (
    event_id TEXT NOT NULL, action TEXT NOT NULL, customer TEXT, email TEXT, at BIGINT NOT NULL)";

/// What the demo does with the three events every integration needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Effect {
    /// `grant`, `payment_failed` or `revoke`.
    pub action: &'static str,
    /// The customer id.
    pub customer: Option<String>,
    /// The customer's email.
    pub email: Option<String>,
}

/// The effect an event has, if any. An event of a handled type whose object this release
/// could not read (Stripe changed its shape) is an error: recorded failed, and Stripe
/// delivers it again, rather than acknowledged with nothing done.
pub fn effect_of(event: &Event) -> Result<Option<Effect>, HandlerError> {
    if let Event::Unparsed(e) = event {
        return Err(HandlerError::new(e.error().to_string()));
    }
    Ok(match event {
        // Provision access for the customer who paid.
        Event::CheckoutSessionCompleted(session) => Some(Effect {
            action: "grant",
            customer: session
                .customer
                .as_ref()
                .and_then(|c| c.id())
                .map(str::to_owned),
            email: session.customer_email().map(str::to_owned),
        }),
        // Record a payment-failed notice for the customer's email (a real service would
        // send the dunning email from a queue fed by this table).
        Event::InvoicePaymentFailed(invoice) => Some(Effect {
            action: "payment_failed",
            customer: invoice
                .customer
                .as_ref()
                .and_then(|c| c.id())
                .map(str::to_owned),
            email: invoice.customer_email.clone(),
        }),
        // Revoke access when the subscription ends.
        Event::CustomerSubscriptionDeleted(sub) => Some(Effect {
            action: "revoke",
            customer: sub
                .customer
                .as_ref()
                .and_then(|c| c.id())
                .map(str::to_owned),
            email: None,
        }),
        _ => None,
    })
}

fn handled(t: &EventType) -> bool {
    matches!(
        t,
        EventType::CheckoutSessionCompleted
            | EventType::InvoicePaymentFailed
            | EventType::CustomerSubscriptionDeleted
    )
}

/// The demo handler in inbox mode: the `access` row and the "done" mark commit together.
#[derive(Debug)]
pub struct Demo;

#[async_trait]
impl TransactionalHandler<Sqlite> for Demo {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<(), HandlerError> {
        let Some(e) = effect_of(event)? else {
            return Ok(());
        };
        sqlx::query("INSERT INTO access (event_id, action, customer, email, at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(event.id().as_str())
            .bind(e.action)
            .bind(e.customer)
            .bind(e.email)
            .bind(now_ms())
            .execute(&mut *conn)
            .await
            .map_err(HandlerError::new)?;
        Ok(())
    }

    fn handles(&self, t: &EventType) -> bool {
        handled(t)
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl TransactionalHandler<Postgres> for Demo {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(), HandlerError> {
        let Some(e) = effect_of(event)? else {
            return Ok(());
        };
        sqlx::query("INSERT INTO access (event_id, action, customer, email, at) VALUES ($1, $2, $3, $4, $5)")
            .bind(event.id().as_str())
            .bind(e.action)
            .bind(e.customer)
            .bind(e.email)
            .bind(now_ms())
            .execute(&mut *conn)
            .await
            .map_err(HandlerError::new)?;
        Ok(())
    }

    fn handles(&self, t: &EventType) -> bool {
        handled(t)
    }
}

/// The demo handler for Redis: the access log is a Redis list (Redis has no transaction
/// spanning the claim and the handler, so this is the plain claim/complete mode).
#[cfg(feature = "redis")]
pub struct RedisDemo(redis::aio::ConnectionManager);

#[cfg(feature = "redis")]
#[async_trait]
impl EventHandler for RedisDemo {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let Some(e) = effect_of(event)? else {
            return Ok(());
        };
        let entry = serde_json::json!({"event_id": event.id().as_str(), "action": e.action, "customer": e.customer, "email": e.email});
        let mut conn = self.0.clone();
        redis::cmd("RPUSH")
            .arg("stripe_webhooks_demo:access")
            .arg(entry.to_string())
            .query_async::<i64>(&mut conn)
            .await
            .map_err(HandlerError::new)?;
        Ok(())
    }

    fn handles(&self, t: &EventType) -> bool {
        handled(t)
    }
}

/// The demo handler for the memory store: the access log is kept in memory.
#[derive(Debug, Default)]
pub struct MemoryDemo(std::sync::Mutex<Vec<(String, Effect)>>);

#[async_trait]
impl EventHandler for MemoryDemo {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        if let Some(e) = effect_of(event)? {
            let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
            log.push((event.id().to_string(), e));
        }
        Ok(())
    }

    fn handles(&self, t: &EventType) -> bool {
        handled(t)
    }
}

/// The two routes' processors, on one store: `/webhook` (snapshot events) and
/// `/webhook/thin` (thin events), each with its destination's secret. A change delivered
/// to both runs once.
pub struct Processors {
    /// For `POST /webhook`.
    pub snapshot: Arc<Processor>,
    /// For `POST /webhook/thin`.
    pub thin: Arc<Processor>,
}

impl Processors {
    /// After the server stopped: waits (at most 30 s) for the deliveries whose client
    /// left mid-way, which run on tasks of their own, so that none is cut half-way by the
    /// runtime's end (its completion lost, and Stripe's retry running it again).
    pub async fn drain(&self) {
        let grace = std::time::Duration::from_secs(30);
        let (snapshot, thin) = tokio::join!(self.snapshot.drain(grace), self.thin.drain(grace));
        if !(snapshot && thin) {
            tracing::warn!(
                running = self.snapshot.deliveries_running() + self.thin.deliveries_running(),
                "deliveries still running after 30 s; Stripe delivers them again"
            );
        }
    }
}

/// What the demo does with a thin event: says what to fetch.
fn log_thin<'a>(
    n: &'a stripe_webhooks::EventNotification,
    what: &'static str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send + 'a>> {
    Box::pin(async move {
        let url = n.related_object.as_ref().map(|o| o.url.as_str());
        tracing::info!(event_type = %n.event_type, url, "thin event: fetch the {what} before acting");
        Ok(())
    })
}

/// The demo thin handler: a thin event carries no object, so it says which object to
/// fetch before acting.
///
/// It leaves alone the three types whose snapshot twins the demo acts on
/// (`checkout.session.completed`, `invoice.payment_failed`,
/// `customer.subscription.deleted`): claimed under its twin's id, a thin event that only
/// logs would answer for the twin, whose `access` row would then never be written. A
/// service that takes a change on both routes does the same work on both (the thin one
/// after fetching the object).
pub fn thin_demo() -> ThinEventRouter {
    const ON_THE_SNAPSHOT_ROUTE: [ThinEventType; 3] = [
        ThinEventType::V1CheckoutSessionCompleted,
        ThinEventType::V1InvoicePaymentFailed,
        ThinEventType::V1CustomerSubscriptionDeleted,
    ];
    let mut router = ThinEventRouter::new();
    for t in ThinEventType::ALL {
        let name = t.as_str();
        if ON_THE_SNAPSHOT_ROUTE.contains(t) {
            continue;
        }
        if name.starts_with("v1.customer.") {
            router = router.on(t.clone(), |n| log_thin(n, "customer"));
        } else if name.starts_with("v1.checkout.session.") {
            router = router.on(t.clone(), |n| log_thin(n, "session"));
        }
    }
    router
}

fn both(
    config: &Config,
    snapshot: Processor,
    store: impl IdempotencyStore,
) -> Result<Processors, Box<dyn Error>> {
    let deadline = Some(Duration::from_secs(10));
    let thin = Processor::thin(
        Verifier::from_secrets_list(&config.thin_secrets)?,
        store,
        thin_demo(),
    );
    Ok(Processors {
        snapshot: Arc::new(snapshot.with_handler_deadline(deadline)),
        thin: Arc::new(thin.with_handler_deadline(deadline)),
    })
}

/// Builds the processors on the store the environment names: Postgres when
/// `DATABASE_URL` is set, Redis when `REDIS_URL` is, the SQLite file otherwise.
pub async fn processor(config: &Config) -> Result<Processors, Box<dyn Error>> {
    let verifier = Verifier::from_secrets_list(&config.secrets)?;
    if config.memory {
        tracing::info!("store: memory (forgotten on restart)");
        let store = Arc::new(MemoryStore::new());
        let p = Processor::new(verifier, Arc::clone(&store), MemoryDemo::default());
        both(config, p, store)
    } else if let Some(url) = &config.database_url {
        postgres(config, verifier, url).await
    } else if let Some(url) = &config.redis_url {
        redis_store(config, verifier, url).await
    } else {
        let store = SqliteStore::connect(&config.sqlite_path).await?;
        sqlx::query(SQLITE_ACCESS).execute(store.pool()).await?;
        tracing::info!(path = %config.sqlite_path, "store: SQLite");
        let p = Processor::with_inbox(verifier, store.inbox(Demo));
        both(config, p, store)
    }
}

#[cfg(feature = "postgres")]
async fn postgres(
    config: &Config,
    verifier: Verifier,
    url: &str,
) -> Result<Processors, Box<dyn Error>> {
    let store = PostgresStore::connect(url).await?;
    sqlx::query(POSTGRES_ACCESS).execute(store.pool()).await?;
    tracing::info!("store: PostgreSQL");
    let p = Processor::with_inbox(verifier, store.inbox(Demo));
    both(config, p, store)
}

#[cfg(not(feature = "postgres"))]
async fn postgres(
    _config: &Config,
    _verifier: Verifier,
    _url: &str,
) -> Result<Processors, Box<dyn Error>> {
    Err(
        "DATABASE_URL is set, but this build has no PostgreSQL support: add `--features postgres`"
            .into(),
    )
}

#[cfg(feature = "redis")]
async fn redis_store(
    config: &Config,
    verifier: Verifier,
    url: &str,
) -> Result<Processors, Box<dyn Error>> {
    let conn = redis::aio::ConnectionManager::new(redis::Client::open(url)?).await?;
    tracing::info!("store: Redis");
    let store = RedisStore::new(conn.clone());
    // A server that may evict or forget completed records would let events run twice.
    for problem in store.check_server().await?.problems() {
        tracing::warn!("{problem}");
    }
    let p = Processor::new(verifier, store.clone(), RedisDemo(conn));
    both(config, p, store)
}

#[cfg(not(feature = "redis"))]
async fn redis_store(
    _config: &Config,
    _verifier: Verifier,
    _url: &str,
) -> Result<Processors, Box<dyn Error>> {
    Err("REDIS_URL is set, but this build has no Redis support: add `--features redis`".into())
}

/// Prints the `enabled_events` of both destinations as JSON and returns `true` when the
/// command line asks for it (`--print-enabled-events`).
pub fn print_enabled_events(p: &Processors) -> bool {
    if !std::env::args().any(|a| a == "--print-enabled-events") {
        return false;
    }
    let manifest = serde_json::json!({
        "snapshot": p.snapshot.enabled_events().snapshot,
        "thin": p.thin.enabled_events().thin,
    });
    println!("{manifest:#}");
    true
}

/// A processor on the memory store with the demo handler, and a signed
/// `checkout.session.completed`: for the examples' own tests.
#[cfg(test)]
pub fn test_delivery() -> (Arc<Processor>, String, String) {
    let verifier = Verifier::from_secrets_list(DEV_SECRET).unwrap();
    let processor = Processor::new(verifier, MemoryStore::new(), MemoryDemo::default());
    let body =
        stripe_webhooks::testing::event_for_type("evt_example", "checkout.session.completed")
            .unwrap();
    let header = stripe_webhooks::testing::sign(
        body.as_bytes(),
        DEV_SECRET,
        stripe_webhooks::testing::now(),
    );
    (Arc::new(processor), header, body)
}

/// A thin processor on the memory store with the demo thin handler: for the examples'
/// own tests.
#[cfg(test)]
pub fn test_thin_processor() -> Arc<Processor> {
    let verifier = Verifier::from_secrets_list(DEV_THIN_SECRET).unwrap();
    Arc::new(Processor::thin(verifier, MemoryStore::new(), thin_demo()))
}

/// `RUST_LOG` controls the level (default `info`).
/// With the crate's `tracing` feature (on here), the processor logs one line per delivery
/// with the event id, type, outcome, attempt and duration; never the secret or the body.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

/// Resolves on SIGINT or SIGTERM. (A signal that cannot be listened for is waited for
/// for ever, not taken as one: the service would stop as it starts.)
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing in-flight deliveries");
}

/// With the crate's `metrics` feature: installs the Prometheus recorder and serves
/// `GET /metrics` in its text format (refreshing the queue gauges first, when there is a
/// queue). Without it, the router is unchanged.
#[cfg(feature = "metrics")]
pub fn with_metrics(
    router: axum::Router,
    queue: Option<Arc<dyn stripe_webhooks::queue::QueueAdmin>>,
) -> axum::Router {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use stripe_webhooks::metrics::{HANDLER_DURATION, LAG};
    // Histograms (with buckets), not the exporter's default summaries: a histogram's
    // buckets add up across replicas (`histogram_quantile(0.99, sum by (le) (…))`), a
    // summary's quantiles do not. Lag runs from a tenth of a second to Stripe's three days.
    let built = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(LAG.to_owned()),
            &[
                0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 259200.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(HANDLER_DURATION.to_owned()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
            )
        })
        .and_then(PrometheusBuilder::install_recorder);
    let handle = match built {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "no /metrics: the Prometheus recorder is not installed");
            return router;
        }
    };
    stripe_webhooks::metrics::describe();
    // The exporter keeps what it recorded until upkeep drains it: without a scrape, that
    // would grow with every delivery.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    router.route(
        "/metrics",
        axum::routing::get(move || {
            let (handle, queue) = (handle.clone(), queue.clone());
            async move {
                if let Some(q) = queue {
                    if let Err(e) = stripe_webhooks::metrics::record_queue(&*q).await {
                        tracing::warn!(error = %e, "could not count the queue's jobs");
                    }
                }
                handle.render()
            }
        }),
    )
}

/// Without the crate's `metrics` feature: no `/metrics` route.
#[cfg(not(feature = "metrics"))]
pub fn with_metrics(
    router: axum::Router,
    _queue: Option<Arc<dyn stripe_webhooks::queue::QueueAdmin>>,
) -> axum::Router {
    router
}
