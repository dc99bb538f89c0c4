//! How fast workers drain a queue: `N` queued `customer.updated` jobs (default 20,000),
//! a no-op handler, `WORKERS` concurrent jobs (default 4), on PostgreSQL
//! (`DATABASE_URL`), Redis (`REDIS_URL`, Redis Streams) or SQLite (a file in a fresh
//! temporary directory), whichever `QUEUE_BACKEND` names. The jobs update `OBJECTS`
//! customers (default 1,000) in turn; `ORDERED=1` runs the worker in per-object order.
//! `STUCK=k` queues, first, `k` updates of one more customer whose every update fails
//! (retried minutes later): with per-object order they are held back behind its first,
//! and the drain ends when the other jobs are done. It prints one line, `drain <backend> <jobs> jobs <seconds> s <jobs/s> jobs/s`,
//! that `benches/load/queue.sh` compares with pgbench (or a pipelined Redis client)
//! running the same dequeue-and-complete statements.
//!
//! Run with: `DATABASE_URL=postgres://… cargo bench --bench queue_drain --features postgres,redis,sqlite,testing`
//! (`QUEUE_BACKEND=redis REDIS_URL=redis://…` for Redis; `RAW=1` drains with bare
//! take-and-complete calls instead of a worker, the baseline; `QUEUE_TABLE` names the table and
//! keeps it; `FILL_ONLY=1` fills it and stops, for pgbench to drain).

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stripe_webhooks::queue::{NewJob, Queue, QueueAdmin, Worker};
use stripe_webhooks::{testing, EventRouter};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn fill(
    queue: Arc<dyn QueueAdmin>,
    n: usize,
    objects: usize,
    stuck: usize,
) -> Result<(), Box<dyn Error>> {
    for i in 0..stuck {
        let body = testing::event_json(
            &format!("evt_stuck_{i:07}"),
            "customer.updated",
            r#"{"id":"cus_stuck","object":"customer"}"#,
        );
        let job = NewJob::parse(body.as_bytes()).map_err(|e| e.to_string())?;
        queue.enqueue(&job).await?;
    }
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            testing::event_json(
                &format!("evt_drain_{i:07}"),
                "customer.updated",
                &format!(r#"{{"id":"cus_{}","object":"customer"}}"#, i % objects),
            )
        })
        .collect();
    let bodies = Arc::new(bodies);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16 {
        let (queue, bodies) = (Arc::clone(&queue), Arc::clone(&bodies));
        tasks.spawn(async move {
            for body in bodies.iter().skip(t).step_by(16) {
                let job = NewJob::parse(body.as_bytes()).map_err(|e| e.to_string())?;
                queue.enqueue(&job).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// The baseline without a worker: `workers` clients each looping on the queue's own
/// dequeue-and-complete calls (`take(1)`, `complete`), no parse, no handler, no task per
/// job: the same statements or scripts, as fast as a client can send them.
async fn raw(
    queue: Arc<dyn QueueAdmin>,
    n: usize,
    workers: usize,
    backend: &str,
) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let queue = Arc::clone(&queue);
        tasks.spawn(async move {
            let mut done = 0usize;
            loop {
                let jobs = queue
                    .take(1, Duration::from_secs(120), false)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(job) = jobs.into_iter().next() else {
                    return Ok::<usize, String>(done);
                };
                queue
                    .complete(&job.token)
                    .await
                    .map_err(|e| e.to_string())?;
                done += 1;
            }
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "raw {backend} {total} jobs {secs:.2} s {:.0} jobs/s",
        total as f64 / secs
    );
    if total != n {
        return Err(format!("drained {total} of {n} jobs").into());
    }
    queue.purge_completed(Duration::ZERO, usize::MAX).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n: usize = env_or("N", "20000").parse()?;
    let workers: usize = env_or("WORKERS", "4").parse()?;
    let backend = env_or("QUEUE_BACKEND", "postgres");
    let table = env_or("QUEUE_TABLE", &format!("drain_{}", std::process::id()));
    let objects: usize = env_or("OBJECTS", "1000").parse::<usize>()?.max(1);
    let ordered = std::env::var("ORDERED").is_ok_and(|v| v == "1");
    let dir = std::env::temp_dir().join(format!("stripe_webhooks_drain_{}", std::process::id()));
    let queue: Arc<dyn QueueAdmin> = match backend.as_str() {
        "postgres" => {
            let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
            let store = stripe_webhooks::PostgresStore::connect(&url)
                .await?
                .with_table(&table)?;
            store.migrate().await?;
            Arc::new(store.queue())
        }
        "redis" => {
            let url = std::env::var("REDIS_URL").map_err(|_| "set REDIS_URL")?;
            let conn = stripe_webhooks::redis::aio::ConnectionManager::new(
                stripe_webhooks::redis::Client::open(url)?,
            )
            .await?;
            Arc::new(
                stripe_webhooks::RedisStore::new(conn)
                    .with_prefix(&table)?
                    .queue(),
            )
        }
        "sqlite" => {
            std::fs::create_dir_all(&dir)?;
            let store = stripe_webhooks::SqliteStore::connect(dir.join("drain.db")).await?;
            Arc::new(store.queue())
        }
        other => return Err(format!("QUEUE_BACKEND={other:?}: postgres, redis or sqlite").into()),
    };
    let stuck: usize = env_or("STUCK", "0").parse()?;
    fill(Arc::clone(&queue), n, objects, stuck).await?;
    let queued = queue.counts().await?.queued;
    if queued != (n + stuck) as u64 {
        return Err(format!("{queued} jobs queued, expected {n}: use a fresh QUEUE_TABLE").into());
    }
    if std::env::var("FILL_ONLY").is_ok() {
        println!("filled {backend} {n} jobs");
        return Ok(());
    }
    if std::env::var("RAW").is_ok() {
        return raw(queue, n, workers, &backend).await;
    }
    let handler = EventRouter::new().fallback(|e| {
        let fails = e.id().as_str().starts_with("evt_stuck_");
        Box::pin(async move {
            if fails {
                Err(stripe_webhooks::HandlerError::new("stuck"))
            } else {
                Ok(())
            }
        })
    });
    let started = Instant::now();
    let handle = Worker::new(Arc::clone(&queue), handler)
        .with_concurrency(workers)
        .with_poll_interval(Duration::from_millis(5))
        .with_per_object_order(ordered)
        .spawn();
    loop {
        let c = queue.counts().await?;
        if c.completed == n as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    handle.shutdown(Duration::from_secs(5)).await;
    let order = if ordered { " in per-object order" } else { "" };
    println!(
        "drain {backend} {n} jobs of {objects} objects{order}, {stuck} held back, \
         {secs:.2} s {:.0} jobs/s",
        n as f64 / secs
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Nothing left behind unless asked to keep it.
    if std::env::var("QUEUE_TABLE").is_err() {
        queue.purge_completed(Duration::ZERO, usize::MAX).await?;
    }
    Ok(())
}
