//! A webhook processor as a separate OS process, for the cross-process tests in
//! `tests/multiprocess.rs`: it reads signed deliveries from a file, waits for a start
//! time shared with its sibling processes, processes them all concurrently, and prints
//! one `STATUS <code> <event id>` line each. Its handler appends a row to an
//! unconstrained effects table (SQL) or list (Redis).
//!
//! Run with: `cargo run --example store_driver --all-features -- --backend sqlite --url events.db --name demo --deliveries deliveries.jsonl`

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stripe_webhooks::sqlx::{self, PgPool, Postgres, Sqlite, SqlitePool};
use stripe_webhooks::{
    async_trait, Event, EventHandler, EventNotification, HandlerError, IdempotencyStore,
    PostgresStore, Processor, RedisStore, SqliteStore, ThinEventHandler, TransactionalHandler,
    Verifier,
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

async fn processor(a: &Args) -> Result<Processor, Box<dyn Error>> {
    let verifier = Verifier::from_secrets_list(SECRET)?;
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
    for (header, body) in deliveries {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let o = p.process(Some(&header), body.as_bytes()).await;
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
