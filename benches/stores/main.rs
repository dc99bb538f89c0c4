//! Claim+complete pairs per second, and each pair's p50 and p99 latency, for every store
//! at concurrency 1 and 16 on 127.0.0.1, next to the database's own floor for the same
//! work, measured in the same run:
//!
//! - memory ([`memory`]): no floor;
//! - SQLite ([`sqlite`], a file in a temp dir): the store's two statements (claim, fenced
//!   complete) run with sqlx directly on a pool opened by `SqliteStore::connect`, without
//!   the store;
//! - PostgreSQL ([`postgres`]): the store's two statements run by `pgbench -M prepared`
//!   from a script file (one pgbench transaction = one pair), `-c 1`, and `-c 16 -j 2`;
//! - Redis ([`redis`]): the store's two Lua scripts sent as raw `EVALSHA` by the `redis`
//!   crate, one request at a time per task, over one connection per task and over one
//!   shared multiplexed connection; the better of the two is the floor.
//!
//! The floors run the stores' own sources: the SQL comes from
//! `src/idempotency/sql/statements.rs` (included here as the module `statements`, and
//! rendered with its `render`, as the stores do), the Lua from the files under
//! `src/idempotency/redis/`. The run checks it against `pg_prepared_statements` and
//! Redis's script cache.
//!
//! Each measurement is the best of `STORES_BENCH_ROUNDS` (default 3) rounds, and every
//! round runs the store and then its floor, so load from elsewhere on the machine hits a
//! round rather than one side of the comparison. Diagnostics that split the Postgres gap
//! (the same SQL through sqlx without the store; the store on a pool without
//! `test_before_acquire`; sqlx on a connection per task) are printed, not tabled.
//!
//! Run with: `bash benches/load/stores.sh`, or
//! `cargo bench --bench stores --all-features` with `DATABASE_URL_TEST` and
//! `REDIS_URL_TEST` set. `STORES_BENCH_SECS` (default 5) sets each run's length,
//! `STORES_BENCH_ONLY=memory,sqlite,postgres,redis` picks stores, `PG_BIN` says where
//! pgbench is. A store whose URL is missing is skipped, loudly. Without `--bench` (as
//! `cargo test --benches` runs it) it only smoke-tests the memory store for 100 ms.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

/// The SQL stores' statements, as they are: the floors time exactly what the stores run
/// (the file allows its own unused items: the bench runs only claim and complete).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[path = "../../src/idempotency/sql/statements.rs"]
mod statements;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stripe_webhooks::{Claim, EventId, EventType, IdempotencyStore};

const LEASE: Duration = Duration::from_secs(30);
static EVENT_TYPE: EventType = EventType::InvoicePaid;
const CONCURRENCY: [usize; 2] = [1, 16];

/// One claim+complete pair on a fresh event id.
trait Pair: Send + Sync + 'static {
    fn pair(&self, task: usize, i: u64) -> impl Future<Output = Result<(), String>> + Send;
}

fn event_id(task: usize, i: u64) -> String {
    format!("evt_{task}_{i}")
}

/// The floors' fence for pair `i` of `task`: 32 hex digits, as `ClaimToken::fence_hex`
/// writes them, distinct across the run.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]
fn fence(task: usize, i: u64) -> String {
    format!("{:032x}", (u128::from(task as u64) << 64) | u128::from(i))
}

/// A store, driven through `IdempotencyStore`.
struct StorePair<S>(S);

impl<S: IdempotencyStore> Pair for StorePair<S> {
    async fn pair(&self, task: usize, i: u64) -> Result<(), String> {
        let id = EventId::new(event_id(task, i));
        match self.0.claim(&id, &EVENT_TYPE, LEASE).await {
            Ok(Claim::Acquired(token)) => self.0.complete(&token).await.map_err(|e| e.to_string()),
            Ok(other) => Err(format!("claim answered {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A SQL store's claim and complete statements, rendered for one table from
/// `statements.rs` as the store renders them.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Clone)]
struct PairSql {
    claim: String,
    complete: String,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl PairSql {
    fn new(dialect: &statements::Statements, table: &str) -> Self {
        let fill = |what: &str, sql: &str| {
            let s = statements::render(sql, dialect, table);
            assert!(
                !s.contains(['{', '}']),
                "unfilled placeholder in the {what} SQL: {s}"
            );
            s
        };
        Self {
            claim: fill("claim", dialect.claim),
            complete: fill("complete", dialect.complete),
        }
    }
}

/// Claim then complete with `$sql` (a [`PairSql`]) straight through sqlx, on `$exec`
/// (evaluated once per statement: a pool, or `&mut *conn`). Both dialects bind the lease
/// as `BIGINT` milliseconds and return `attempts` as `BIGINT`. Returns from the enclosing
/// `Pair::pair` on error.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! sql_pair {
    ($sql:expr, $task:expr, $i:expr, $exec:expr) => {{
        use ::stripe_webhooks::sqlx::{self, Row as _};
        let id = $crate::event_id($task, $i);
        let fence = $crate::fence($task, $i);
        let row = sqlx::query(&$sql.claim)
            .bind(&id)
            .bind($crate::EVENT_TYPE.as_str())
            .bind(&fence)
            .bind($crate::LEASE.as_millis() as i64)
            .fetch_optional($exec)
            .await
            .map_err(|e| e.to_string())?;
        let attempts: i64 = row
            .ok_or("claim returned no row")?
            .try_get(0)
            .map_err(|e| e.to_string())?;
        if attempts != 1 {
            return Err(format!("attempts {attempts}"));
        }
        let done = sqlx::query(&$sql.complete)
            .bind(&id)
            .bind(&fence)
            .execute($exec)
            .await
            .map_err(|e| e.to_string())?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err("complete touched no row".to_owned())
        }
    }};
}
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use sql_pair;

/// What one timed run measured.
#[derive(Debug, Clone, Default)]
struct Measured {
    pairs: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    first_error: Option<String>,
}

impl Measured {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.pairs as f64 / self.secs
        } else {
            0.0
        }
    }

    fn from_latencies(mut lat_us: Vec<f64>, secs: f64) -> Self {
        lat_us.sort_by(f64::total_cmp);
        Self {
            pairs: lat_us.len() as u64,
            secs,
            p50_us: percentile(&lat_us, 0.50),
            p99_us: percentile(&lat_us, 0.99),
            ..Self::default()
        }
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `conc` tasks, each doing pairs one after the other until `dur` after the first
/// one starts, and records every pair's latency. With several tasks, each yields after
/// every pair, so a store that never waits (memory) still interleaves its tasks.
async fn drive<P: Pair>(p: Arc<P>, conc: usize, dur: Duration) -> Measured {
    let barrier = Arc::new(tokio::sync::Barrier::new(conc));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::with_capacity(conc);
    for task in 0..conc {
        let (p, barrier, start) = (p.clone(), barrier.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let (mut errors, mut first_error) = (0u64, None);
            barrier.wait().await;
            let deadline = *start.get_or_init(Instant::now) + dur;
            let mut i = 0u64;
            loop {
                let t0 = Instant::now();
                let r = p.pair(task, i).await;
                let t1 = Instant::now();
                i += 1;
                match r {
                    Ok(()) => lat.push((t1 - t0).as_secs_f64() * 1e6),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                if t1 >= deadline {
                    break;
                }
                if conc > 1 {
                    tokio::task::yield_now().await;
                }
            }
            (lat, errors, first_error, Instant::now())
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut first_error, mut end) = (0, None, None);
    for t in tasks {
        let (lat, e, fe, done) = t.await.expect("bench task panicked");
        all.extend(lat);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
        end = end.max(Some(done));
    }
    let start = *start.get().expect("a task started");
    let secs = end.map_or(0.0, |end| (end - start).as_secs_f64());
    let mut m = Measured::from_latencies(all, secs);
    m.errors = errors;
    m.first_error = first_error;
    m
}

/// A database's own floor for the same work.
#[derive(Debug, Clone)]
struct Floor {
    what: String,
    m: Measured,
}

/// The label of the store's own run in a [`Best`].
const STORE: &str = "store";

/// Per label, the round with the most pairs/s. Rounds alternate the store's run with its
/// floor's, so a burst of load from elsewhere on the machine costs one round, not one
/// side of the comparison.
#[derive(Debug, Default)]
struct Best(Vec<Floor>);

impl Best {
    fn add(&mut self, what: &str, label: &str, conc: usize, m: Measured) {
        report(label, conc, &m);
        match self.0.iter_mut().find(|f| f.what == what) {
            Some(f) => {
                let errors = f.m.errors + m.errors;
                if m.rate() > f.m.rate() {
                    f.m = m;
                }
                f.m.errors = errors;
            }
            None => self.0.push(Floor {
                what: what.to_owned(),
                m,
            }),
        }
    }

    fn take(&mut self, what: &str) -> Option<Floor> {
        let i = self.0.iter().position(|f| f.what == what)?;
        Some(self.0.remove(i))
    }

    /// The row: the store's best round, the floor's best round (the best of `floors`),
    /// and the rest as notes.
    fn row(mut self, store: &'static str, conc: usize, floors: &[&str]) -> Row {
        let run = self.take(STORE).map(|f| f.m);
        let floor = self
            .0
            .iter()
            .filter(|f| floors.contains(&f.what.as_str()) && f.m.errors == 0)
            .max_by(|a, b| a.m.rate().total_cmp(&b.m.rate()))
            .cloned();
        Row {
            store,
            conc,
            run,
            floor,
            notes: self.0,
            skipped: None,
        }
    }
}

#[derive(Debug)]
struct Row {
    store: &'static str,
    conc: usize,
    run: Option<Measured>,
    floor: Option<Floor>,
    /// Extra measurements that explain the gap; printed, not in the table.
    notes: Vec<Floor>,
    skipped: Option<String>,
}

impl Row {
    fn skipped(store: &'static str, conc: usize, why: &str) -> Self {
        Self {
            store,
            conc,
            run: None,
            floor: None,
            notes: Vec::new(),
            skipped: Some(why.to_owned()),
        }
    }
}

fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn report(label: &str, conc: usize, m: &Measured) {
    println!(
        "  {label:<44} c={conc:<2} {:>9.0} pairs/s  p50 {:>9}  p99 {:>9}  ({} pairs in {:.2}s{})",
        m.rate(),
        fmt_us(m.p50_us),
        fmt_us(m.p99_us),
        m.pairs,
        m.secs,
        if m.errors > 0 {
            format!(
                ", {} ERRORS, first: {}",
                m.errors,
                m.first_error.as_deref().unwrap_or("?")
            )
        } else {
            String::new()
        }
    );
}

fn loud(msg: &str) {
    let bar = "!".repeat(78);
    println!("{bar}\n!!! {msg}\n{bar}");
}

/// The run's settings, and the runtime every measurement runs on.
struct Bench {
    rt: tokio::runtime::Runtime,
    secs: Duration,
    rounds: usize,
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
        allow(dead_code)
    )]
    run_no: std::sync::atomic::AtomicU32,
}

impl Bench {
    /// A name no earlier run used: `bench_stores_<pid>_<n>`.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
        allow(dead_code)
    )]
    fn fresh_name(&self) -> String {
        let n = self
            .run_no
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("bench_stores_{}_{n}", std::process::id())
    }

    /// Times `p` at concurrency `conc` for the run's length.
    fn drive<P: Pair>(&self, p: P, conc: usize) -> Measured {
        self.rt.block_on(drive(Arc::new(p), conc, self.secs))
    }

    /// One row of `store` per concurrency: `round` runs [`Bench::rounds`] times, adding
    /// the store's run (as [`STORE`]) and its floors to the best-of; the row's floor is
    /// the best of `floors`. An `Err` from `round` skips that concurrency, with the reason.
    fn rows(
        &self,
        store: &'static str,
        floors: &[&str],
        mut round: impl FnMut(usize, &mut Best) -> Result<(), String>,
    ) -> Vec<Row> {
        CONCURRENCY
            .iter()
            .map(|&conc| {
                let mut best = Best::default();
                for _ in 0..self.rounds {
                    if let Err(why) = round(conc, &mut best) {
                        return Row::skipped(store, conc, &why);
                    }
                }
                best.row(store, conc, floors)
            })
            .collect()
    }
}

/// The server URL in the environment variable `var`; when it is unset, `store` skipped at
/// every concurrency, loudly, with how to start a server.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn server_url(store: &'static str, var: &str) -> Result<String, Vec<Row>> {
    std::env::var(var).map_err(|_| {
        let why = format!("{var} is not set");
        skip_all(
            store,
            &why,
            &format!(
                "SKIPPED {store}: {why}. Start a server with `eval \"$(scripts/services.sh start)\"` \
                 or run benches/load/stores.sh"
            ),
        )
    })
}

/// `store` skipped at every concurrency, saying `msg` loudly first.
fn skip_all(store: &'static str, why: &str, msg: &str) -> Vec<Row> {
    loud(msg);
    CONCURRENCY
        .iter()
        .map(|&c| Row::skipped(store, c, why))
        .collect()
}

fn selected(name: &str) -> bool {
    match std::env::var("STORES_BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|s| s.trim() == name),
        _ => true,
    }
}

fn print_table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str("| store | concurrency | pairs/s | p50 | p99 | floor pairs/s | % of floor |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let Some(m) = &r.run else {
            let _ = writeln!(
                t,
                "| {} | {} | skipped: {} | | | | |",
                r.store,
                r.conc,
                r.skipped.as_deref().unwrap_or("?")
            );
            continue;
        };
        let (floor, pct) = match &r.floor {
            Some(f) => (
                format!("{:.0}", f.m.rate()),
                format!("{:.0}%", 100.0 * m.rate() / f.m.rate()),
            ),
            None if r.store == "memory" => ("n/a".to_owned(), "n/a".to_owned()),
            None => ("not measured".to_owned(), "?".to_owned()),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            r.store,
            r.conc,
            m.rate(),
            fmt_us(m.p50_us),
            fmt_us(m.p99_us),
            floor,
            pct
        );
    }
    t
}

/// If `$store` is selected: its rows from the module `$m`, or, in a build without the
/// feature of that name, its rows skipped loudly.
macro_rules! by_feature {
    ($rows:ident, $b:expr, $store:literal, $m:ident) => {
        if selected($store) {
            #[cfg(feature = $store)]
            $rows.extend($m::run($b));
            #[cfg(not(feature = $store))]
            $rows.extend(skip_all(
                $store,
                "feature off",
                concat!(
                    "SKIPPED ",
                    $store,
                    ": built without the `",
                    $store,
                    "` feature (use --all-features)"
                ),
            ));
        }
    };
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs = if smoke {
        Duration::from_millis(100)
    } else {
        let s: f64 = std::env::var("STORES_BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5.0);
        Duration::from_secs_f64(s.max(0.1))
    };
    let rounds = if smoke {
        1
    } else {
        std::env::var("STORES_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3usize)
            .max(1)
    };
    let b = Bench {
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime"),
        secs,
        rounds,
        run_no: std::sync::atomic::AtomicU32::new(0),
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "stores bench: claim+complete pairs on distinct event ids, {secs:?} per run, concurrency \
         {CONCURRENCY:?}, best of {rounds} interleaved rounds per measurement, tokio \
         multi-thread runtime with {cpus} workers on {cpus} CPUs"
    );
    if smoke {
        println!("(not run by `cargo bench`: a {secs:?} smoke run of the memory store only)");
        let rows = memory::run(&b);
        print!("{}", print_table(&rows));
        return;
    }

    let mut rows = Vec::new();
    if selected("memory") {
        rows.extend(memory::run(&b));
    }
    by_feature!(rows, &b, "sqlite", sqlite);
    by_feature!(rows, &b, "postgres", postgres);
    by_feature!(rows, &b, "redis", redis);

    println!();
    println!("Details (floors and diagnostics, p50 / p99):");
    for r in &rows {
        let floor_what = r.floor.as_ref().map(|f| f.what.as_str());
        let notes = r
            .notes
            .iter()
            .filter(|n| Some(n.what.as_str()) != floor_what);
        for f in r.floor.iter().chain(notes) {
            println!(
                "  {} c={}: {} — {:.0} pairs/s, p50 {}, p99 {}{}",
                r.store,
                r.conc,
                f.what,
                f.m.rate(),
                fmt_us(f.m.p50_us),
                fmt_us(f.m.p99_us),
                if f.m.errors > 0 { " (HAD ERRORS)" } else { "" }
            );
        }
    }
    // Machine-readable lines for benches/load/stores.sh.
    for r in &rows {
        let run = r.run.as_ref();
        let floor = r.floor.as_ref();
        println!(
            "RESULT\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.store,
            r.conc,
            run.map_or(String::new(), |m| format!("{:.0}", m.rate())),
            run.map_or(String::new(), |m| fmt_us(m.p50_us)),
            run.map_or(String::new(), |m| fmt_us(m.p99_us)),
            floor.map_or(String::new(), |f| format!("{:.0}", f.m.rate())),
            floor.map_or(String::new(), |f| fmt_us(f.m.p99_us)),
            floor.map_or(String::new(), |f| f.what.clone()),
            run.map_or(0, |m| m.errors) + floor.map_or(0, |f| f.m.errors),
            r.skipped.as_deref().unwrap_or(""),
        );
    }
    println!();
    print!("{}", print_table(&rows));
    let errors: u64 = rows
        .iter()
        .filter_map(|r| r.run.as_ref())
        .map(|m| m.errors)
        .sum();
    if errors > 0 {
        loud(&format!("{errors} pairs FAILED; see the lines above"));
    }
    if rows.iter().any(|r| r.skipped.is_some()) {
        loud("some stores were SKIPPED; the table is incomplete");
    }
}
