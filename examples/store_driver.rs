//! A webhook processor as a separate OS process, for the cross-process tests in
//! `tests/multiprocess.rs`: it reads signed deliveries from a file, waits for a start
//! time shared with its sibling processes, processes them all concurrently, and prints
//! one `STATUS <code> <event id> <outcome>` line each. Its handler appends a row to an
//! unconstrained effects table (SQL) or list (Redis).
//!
//! Run with: `cargo run --example store_driver --all-features -- --backend sqlite --url events.db --name demo --deliveries deliveries.jsonl`

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stripe_webhooks::sqlx::{self, PgPool, Postgres, Sqlite, SqlitePool};
use stripe_webhooks::{
    async_trait, Event, EventHandler, EventNotification, HandlerError, IdempotencyStore,
    PostgresStore, Processor, RedisStore, SqliteStore, ThinEventHandler, TiePolicy,
    TransactionalHandler, Verifier,
};
use tokio::io::AsyncWriteExt;

const SECRET: &str = "whsec_driver_secret";

#[derive(Debug, Default)]
struct Args {
    backend: String,
    url: String,
    name: String,
    deliveries: String,
    start_at_ms: u64,
    lease_ms: u64,
    hang_on: Option<String>,
    inbox: bool,
    /// The ordering guard, with a handler that keeps each object's version.
    ordered: bool,
    /// Deliver again (as Stripe would) while the answer is 409 or 5xx.
    retry: bool,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        lease_ms: 30_000,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => a.backend = value()?,
            "--url" => a.url = value()?,
            "--name" => a.name = value()?,
            "--deliveries" => a.deliveries = value()?,
            "--start-at-ms" => a.start_at_ms = value()?.parse()?,
            "--lease-ms" => a.lease_ms = value()?.parse()?,
            "--hang-on" => a.hang_on = Some(value()?),
            "--inbox" => a.inbox = true,
            "--ordered" => a.ordered = true,
            "--retry" => a.retry = true,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

async fn say(line: String) {
    let mut out = tokio::io::stdout();
    let _ = out.write_all(format!("{line}\n").as_bytes()).await;
    let _ = out.flush().await;
}

/// Hangs forever when `id` is the event to hang on, after saying so.
async fn maybe_hang(hang_on: &Option<String>, event: &Event, what: &str) {
    if hang_on.as_deref() == Some(event.id().as_str()) {
        say(format!("{what} {}", event.id())).await;
        std::future::pending::<()>().await;
    }
}

enum Effects {
    Sqlite(SqlitePool, String),
    Postgres(PgPool, String),
    Redis(redis::aio::ConnectionManager, String),
}

struct Effect {
    effects: Effects,
    hang_on: Option<String>,
}

#[async_trait]
impl EventHandler for Effect {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        maybe_hang(&self.hang_on, event, "HANDLING").await;
        self.record(event.id().as_str()).await
    }
}

/// A thin event's effect is recorded under its dedupe key: its snapshot twin's id.
#[async_trait]
impl ThinEventHandler for Effect {
    async fn handle(&self, n: &EventNotification) -> Result<(), HandlerError> {
        self.record(n.dedupe_key().as_str()).await
    }
}

impl Effect {
    async fn record(&self, id: &str) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        match &self.effects {
            Effects::Sqlite(pool, t) => {
                sqlx::query(&format!("INSERT INTO {t} (event_id) VALUES (?1)"))
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(|_| ())
            }
            Effects::Postgres(pool, t) => {
                sqlx::query(&format!("INSERT INTO {t} (event_id) VALUES ($1)"))
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(|_| ())
            }
            Effects::Redis(conn, key) => {
                let mut conn = conn.clone();
                return redis::cmd("RPUSH")
                    .arg(key)
                    .arg(id)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(HandlerError::new);
            }
        }
        .map_err(HandlerError::new)
    }
}

/// A processor that takes snapshot and thin payloads on one route, with one effect.
fn both(verifier: Verifier, store: impl IdempotencyStore, effect: Effect) -> Processor {
    let effect = Arc::new(effect);
    Processor::new(verifier, store, Arc::clone(&effect)).with_thin_handler(effect)
}

struct InboxEffect {
    table: String,
    hang_on: Option<String>,
}

#[async_trait]
impl TransactionalHandler<Sqlite> for InboxEffect {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<(), HandlerError> {
        sqlx::query(&format!(
            "INSERT INTO {} (event_id) VALUES (?1)",
            self.table
        ))
        .bind(event.id().as_str())
        .execute(&mut *conn)
        .await
        .map_err(HandlerError::new)?;
        maybe_hang(&self.hang_on, event, "WROTE").await;
        Ok(())
    }
}

#[async_trait]
impl TransactionalHandler<Postgres> for InboxEffect {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(), HandlerError> {
        sqlx::query(&format!(
            "INSERT INTO {} (event_id) VALUES ($1)",
            self.table
        ))
        .bind(event.id().as_str())
        .execute(&mut *conn)
        .await
        .map_err(HandlerError::new)?;
        maybe_hang(&self.hang_on, event, "WROTE").await;
        Ok(())
    }
}

/// The version an update carries in `metadata.version`.
fn version_of(event: &Event) -> Result<(String, i64), HandlerError> {
    let v: serde_json::Value =
        serde_json::from_str(event.raw_object().get()).map_err(HandlerError::new)?;
    let id = v["id"]
        .as_str()
        .ok_or_else(|| HandlerError::new("no object id"))?;
    let version = v["metadata"]["version"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HandlerError::new("no metadata.version"))?;
    Ok((id.to_owned(), version))
}

/// Keeps each object's state (its version) the way an application copies Stripe's
/// objects, and counts every update applied over a newer one (a regression).
struct VersionState {
    effects: Effects,
}

#[async_trait]
impl EventHandler for VersionState {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let (object_id, version) = version_of(event)?;
        // Handlers take 0 to 20 ms, so deliveries overlap.
        tokio::time::sleep(Duration::from_millis(
            (version as u64 * 7 + object_id.len() as u64) % 21,
        ))
        .await;
        match &self.effects {
            Effects::Sqlite(pool, t) => sqlx::query(&format!(
                "INSERT INTO {t} (object_id, version, regressions) VALUES (?1, ?2, 0) \
                 ON CONFLICT (object_id) DO UPDATE SET version = excluded.version, \
                 regressions = {t}.regressions + (excluded.version < {t}.version)"
            ))
            .bind(&object_id)
            .bind(version)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(HandlerError::new),
            Effects::Postgres(pool, t) => sqlx::query(&format!(
                "INSERT INTO {t} (object_id, version, regressions) VALUES ($1, $2, 0) \
                 ON CONFLICT (object_id) DO UPDATE SET version = excluded.version, \
                 regressions = {t}.regressions + (excluded.version < {t}.version)::int"
            ))
            .bind(&object_id)
            .bind(version)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(HandlerError::new),
            Effects::Redis(conn, key) => {
                let mut conn = conn.clone();
                redis::Script::new(
                    "local v = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') \
                     if tonumber(ARGV[2]) < v then redis.call('HINCRBY', KEYS[2], 'regressions', 1) end \
                     redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1",
                )
                .key(format!("{key}:state"))
                .key(format!("{key}:regressions"))
                .arg(&object_id)
                .arg(version)
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|_| ())
                .map_err(HandlerError::new)
            }
        }
    }
}

/// `VersionState` in inbox mode: the state changes in the delivery's transaction.
struct VersionStateTx {
    table: String,
}

#[async_trait]
impl TransactionalHandler<Postgres> for VersionStateTx {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(), HandlerError> {
        let (object_id, version) = version_of(event)?;
        tokio::time::sleep(Duration::from_millis(
            (version as u64 * 7 + object_id.len() as u64) % 21,
        ))
        .await;
        let t = &self.table;
        sqlx::query(&format!(
            "INSERT INTO {t} (object_id, version, regressions) VALUES ($1, $2, 0) \
             ON CONFLICT (object_id) DO UPDATE SET version = excluded.version, \
             regressions = {t}.regressions + (excluded.version < {t}.version)::int"
        ))
        .bind(&object_id)
        .bind(version)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(HandlerError::new)
    }
}

#[async_trait]
impl TransactionalHandler<Sqlite> for VersionStateTx {
    async fn handle(
        &self,
        event: &Event,
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<(), HandlerError> {
        let (object_id, version) = version_of(event)?;
        let t = &self.table;
        sqlx::query(&format!(
            "INSERT INTO {t} (object_id, version, regressions) VALUES (?1, ?2, 0) \
             ON CONFLICT (object_id) DO UPDATE SET version = excluded.version, \
             regressions = {t}.regressions + (excluded.version < {t}.version)"
        ))
        .bind(&object_id)
        .bind(version)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(HandlerError::new)
    }
}

/// The processor of `--ordered`: the ordering guard over the backend's store.
async fn ordered(a: &Args, verifier: Verifier) -> Result<Processor, Box<dyn Error>> {
    let state = format!("{}_state", a.name);
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {state} (object_id TEXT PRIMARY KEY, version BIGINT NOT NULL, \
         regressions BIGINT NOT NULL)"
    );
    Ok(match a.backend.as_str() {
        "sqlite" => {
            let store = SqliteStore::connect(&a.url).await?.with_table(&a.name)?;
            store.migrate().await?;
            sqlx::query(&ddl).execute(store.pool()).await?;
            if a.inbox {
                let handler = VersionStateTx { table: state };
                return Ok(Processor::with_inbox(
                    verifier,
                    store.inbox(handler).ordered(TiePolicy::Run),
                ));
            }
            let effects = Effects::Sqlite(store.pool().clone(), state);
            Processor::ordered(verifier, store, VersionState { effects }, TiePolicy::Run)
        }
        "postgres" => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(16)
                .connect(&a.url)
                .await?;
            let store = PostgresStore::new(pool.clone()).with_table(&a.name)?;
            store.migrate().await?;
            let _ = sqlx::query(&ddl).execute(&pool).await;
            if a.inbox {
                let handler = VersionStateTx { table: state };
                return Ok(Processor::with_inbox(
                    verifier,
                    store.inbox(handler).ordered(TiePolicy::Run),
                ));
            }
            let effects = Effects::Postgres(pool, state);
            Processor::ordered(verifier, store, VersionState { effects }, TiePolicy::Run)
        }
        "redis" => {
            let client = redis::Client::open(a.url.as_str())?;
            let conn = redis::aio::ConnectionManager::new(client).await?;
            let store = RedisStore::new(conn.clone()).with_prefix(&a.name)?;
            let effects = Effects::Redis(conn, a.name.clone());
            Processor::ordered(verifier, store, VersionState { effects }, TiePolicy::Run)
        }
        other => return Err(format!("unknown backend {other}").into()),
    })
}

async fn processor(a: &Args) -> Result<Processor, Box<dyn Error>> {
    let verifier = Verifier::from_secrets_list(SECRET)?;
    if a.ordered {
        let lease = Duration::from_millis(a.lease_ms);
        return Ok(ordered(a, verifier)
            .await?
            .with_handler_deadline(Some(lease / 2))
            .with_lease(lease));
    }
    let effects_table = format!("{}_effects", a.name);
    let lease = Duration::from_millis(a.lease_ms);
    let deadline = Some(lease / 2);
    let p = match a.backend.as_str() {
        "sqlite" => {
            let store = SqliteStore::connect(&a.url).await?.with_table(&a.name)?;
            store.migrate().await?;
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {effects_table} (event_id TEXT NOT NULL)"
            ))
            .execute(store.pool())
            .await?;
            if a.inbox {
                Processor::with_inbox(
                    verifier,
                    store.inbox(InboxEffect {
                        table: effects_table,
                        hang_on: a.hang_on.clone(),
                    }),
                )
            } else {
                let effects = Effects::Sqlite(store.pool().clone(), effects_table);
                both(
                    verifier,
                    store,
                    Effect {
                        effects,
                        hang_on: a.hang_on.clone(),
                    },
                )
            }
        }
        "postgres" => {
            // Room for a burst of concurrent deliveries on a 2-core machine.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .min_connections(16)
                .max_connections(16)
                .connect(&a.url)
                .await?;
            // Open every connection before the burst, not during it.
            let warm: Vec<_> = warm_up(&pool, 16).await?;
            drop(warm);
            let store = PostgresStore::new(pool.clone()).with_table(&a.name)?;
            store.migrate().await?;
            let _ = sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {effects_table} (event_id TEXT NOT NULL)"
            ))
            .execute(&pool)
            .await;
            if a.inbox {
                Processor::with_inbox(
                    verifier,
                    store.inbox(InboxEffect {
                        table: effects_table,
                        hang_on: a.hang_on.clone(),
                    }),
                )
            } else {
                both(
                    verifier,
                    store,
                    Effect {
                        effects: Effects::Postgres(pool, effects_table),
                        hang_on: a.hang_on.clone(),
                    },
                )
            }
        }
        "redis" => {
            let client = redis::Client::open(a.url.as_str())?;
            let conn = redis::aio::ConnectionManager::new(client).await?;
            let store = RedisStore::new(conn.clone()).with_prefix(&a.name)?;
            let effects = Effects::Redis(conn, format!("{}:effects", a.name));
            both(
                verifier,
                store,
                Effect {
                    effects,
                    hang_on: a.hang_on.clone(),
                },
            )
        }
        other => return Err(format!("unknown backend {other}").into()),
    };
    Ok(p.with_handler_deadline(deadline).with_lease(lease))
}

/// Checks out `n` connections at once, so the pool has them all open.
async fn warm_up(
    pool: &PgPool,
    n: usize,
) -> Result<Vec<sqlx::pool::PoolConnection<Postgres>>, sqlx::Error> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move { pool.acquire().await }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(
            t.await
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))??,
        );
    }
    Ok(conns)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let a = args()?;
    let p = std::sync::Arc::new(processor(&a).await?);
    let text = std::fs::read_to_string(&a.deliveries)?;
    let deliveries: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok((
                v["header"].as_str().unwrap_or_default().to_owned(),
                v["body"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect::<Result<_, serde_json::Error>>()?;
    say("READY".to_owned()).await;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    if a.start_at_ms > now_ms {
        tokio::time::sleep(Duration::from_millis(a.start_at_ms - now_ms)).await;
    }
    let mut tasks = Vec::new();
    let retry = a.retry;
    for (header, body) in deliveries {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut o = p.process(Some(&header), body.as_bytes()).await;
            // Stripe delivers again after a 409 or a 5xx; so does `--retry`, sooner.
            while retry && (o.status() == 409 || o.status() >= 500) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                o = p.process(Some(&header), body.as_bytes()).await;
            }
            let id = o.event_id().map(|i| i.to_string()).unwrap_or_default();
            say(format!("STATUS {} {id} {}", o.status(), o.kind().name())).await;
        }));
    }
    for t in tasks {
        t.await?;
    }
    say("DONE".to_owned()).await;
    Ok(())
}
