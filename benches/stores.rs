//! Claim+complete pairs per second, and each pair's p50 and p99 latency, for every store
//! at concurrency 1 and 16 on 127.0.0.1, next to the database's own floor for the same
//! work, measured in the same run:
//!
//! - memory: no floor;
//! - SQLite (a file in a temp dir): the store's two statements (claim, fenced complete)
//!   run with sqlx directly on a pool opened by `SqliteStore::connect`, without the store;
//! - PostgreSQL: the store's two statements run by `pgbench -M prepared` from a script
//!   file (one pgbench transaction = one pair), `-c 1`, and `-c 16 -j 2`;
//! - Redis: the store's two Lua scripts sent as raw `EVALSHA` by the `redis` crate, one
//!   request at a time per task, over one connection per task and over one shared
//!   multiplexed connection; the better of the two is the floor.
//!
//! The SQL and Lua are read from `src/idempotency/*.rs` at compile time, so the floors run
//! exactly what the stores run; the run checks it against `pg_prepared_statements` and
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

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stripe_webhooks::{Claim, EventId, IdempotencyStore, MemoryStore};

const LEASE: Duration = Duration::from_secs(30);
const EVENT_TYPE: &str = "invoice.paid";
const CONCURRENCY: [usize; 2] = [1, 16];

/// One claim+complete pair on a fresh event id.
trait Pair: Send + Sync + 'static {
    fn pair(&self, task: usize, i: u64) -> impl Future<Output = Result<(), String>> + Send;
}

fn event_id(task: usize, i: u64) -> String {
    format!("evt_{task}_{i}")
}

/// A store, driven through `IdempotencyStore`.
struct StorePair<S>(S);

impl<S: IdempotencyStore> Pair for StorePair<S> {
    async fn pair(&self, task: usize, i: u64) -> Result<(), String> {
        let id = EventId::new(event_id(task, i));
        match self.0.claim(&id, EVENT_TYPE, LEASE).await {
            Ok(Claim::Acquired(token)) => self.0.complete(&token).await.map_err(|e| e.to_string()),
            Ok(other) => Err(format!("claim answered {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

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

/// The text of the string literal that follows `marker` in `src`, with Rust's escapes and
/// line continuations (`\`, newline, indentation) applied. Handles `"…"` and `r"…"`.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
fn literal_after(src: &str, marker: &str) -> String {
    let at = src
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} is no longer in the store's source"));
    let rest = &src[at + marker.len()..];
    let open = rest.find('"').expect("no string literal after the marker");
    let raw = rest[..open].trim_end().ends_with('r');
    let mut out = String::new();
    let mut chars = rest[open + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' if !raw => match chars.next() {
                Some('\n') => while chars.next_if(|c| c.is_whitespace()).is_some() {},
                Some('n') => out.push('\n'),
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                other => panic!("unexpected escape \\{other:?} after {marker:?}"),
            },
            c => out.push(c),
        }
    }
    panic!("unterminated string literal after {marker:?}")
}

/// The claim and complete statements of a SQL store's `Sql::new`, for table `t`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn store_sql(src: &str, t: &str, now_ms: &str) -> (String, String) {
    let fill = |field: &str| {
        let s = literal_after(src, &format!("{field}: format!("))
            .replace("{t}", t)
            .replace("{NOW_MS}", now_ms);
        assert!(
            !s.contains(['{', '}']),
            "unfilled placeholder in the {field} SQL: {s}"
        );
        s
    };
    (fill("claim"), fill("complete"))
}

struct Bench {
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
}

fn bench_memory(rt: &tokio::runtime::Runtime, b: &Bench) -> Vec<Row> {
    println!("memory: MemoryStore::new() (no floor: there is no database)");
    CONCURRENCY
        .iter()
        .map(|&conc| {
            let mut best = Best::default();
            for _ in 0..b.rounds {
                let store = Arc::new(StorePair(MemoryStore::new()));
                let m = rt.block_on(drive(store, conc, b.secs));
                best.add(STORE, "MemoryStore", conc, m);
            }
            best.row("memory", conc, &[])
        })
        .collect()
}

#[cfg(feature = "sqlite")]
mod sqlite_bench {
    use super::*;
    use sqlx::{Row as _, SqlitePool};
    use stripe_webhooks::SqliteStore;

    const SRC: &str = include_str!("../src/idempotency/sqlite.rs");
    const FLOOR: &str = "same 2 statements via sqlx, no store";

    /// The store's two statements with sqlx on a pool, without the store.
    struct RawSqlite {
        pool: SqlitePool,
        claim: String,
        complete: String,
    }

    impl Pair for RawSqlite {
        async fn pair(&self, task: usize, i: u64) -> Result<(), String> {
            let id = event_id(task, i);
            let fence = format!("{:032x}", (u128::from(task as u64) << 64) | u128::from(i));
            let row = sqlx::query(&self.claim)
                .bind(&id)
                .bind(EVENT_TYPE)
                .bind(&fence)
                .bind(LEASE.as_millis() as i64)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
            let attempts: i64 = row
                .ok_or("claim returned no row")?
                .try_get(0)
                .map_err(|e| e.to_string())?;
            if attempts != 1 {
                return Err(format!("attempts {attempts}"));
            }
            let done = sqlx::query(&self.complete)
                .bind(&id)
                .bind(&fence)
                .execute(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err("complete touched no row".to_owned())
            }
        }
    }

    pub(super) fn run(rt: &tokio::runtime::Runtime, b: &Bench) -> Vec<Row> {
        let dir = std::env::temp_dir().join(b.fresh_name());
        std::fs::create_dir_all(&dir).expect("temp dir");
        println!(
            "sqlite: SqliteStore::connect (WAL, synchronous=NORMAL, 8 connections) on a fresh file in {}",
            dir.display()
        );
        println!("  floor: the store's claim and complete SQL, run with sqlx on a pool opened the same way (a fresh file), without the store");
        let now_ms = literal_after(SRC, "const NOW_MS: &str = ");
        let rows = CONCURRENCY
            .iter()
            .map(|&conc| {
                let mut best = Best::default();
                for _ in 0..b.rounds {
                    let store = rt
                        .block_on(SqliteStore::connect(dir.join(b.fresh_name() + ".db")))
                        .expect("open the SQLite store");
                    let m = rt.block_on(drive(Arc::new(StorePair(store)), conc, b.secs));
                    best.add(STORE, "SqliteStore", conc, m);

                    let floor_store = rt
                        .block_on(SqliteStore::connect(dir.join(b.fresh_name() + ".db")))
                        .expect("open the SQLite floor file");
                    let (claim, complete) =
                        store_sql(SRC, stripe_webhooks::DEFAULT_TABLE, now_ms.as_str());
                    let raw = RawSqlite {
                        pool: floor_store.pool().clone(),
                        claim,
                        complete,
                    };
                    let f = rt.block_on(drive(Arc::new(raw), conc, b.secs));
                    best.add(FLOOR, "floor: same SQL, sqlx direct", conc, f);
                }
                best.row("sqlite", conc, &[FLOOR])
            })
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        rows
    }
}

#[cfg(feature = "postgres")]
mod postgres_bench {
    use super::*;
    use sqlx::{Connection as _, PgConnection, PgPool, Row as _};
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use stripe_webhooks::PostgresStore;

    const SRC: &str = include_str!("../src/idempotency/postgres.rs");
    const FLOOR: &str = "pgbench -M prepared, same 2 statements";
    const RAW_POOL: &str = "same SQL via sqlx, same pool, no store";
    const STORE_PING: &str = "PostgresStore, sqlx default pool (test_before_acquire on)";
    const RAW_CONNS: &str = "same SQL via sqlx, a connection per task";
    const POOL: u32 = 16;

    /// The store's two statements with sqlx, without the store: not the floor, but it
    /// splits the gap between the store and pgbench into store, pool and driver.
    struct RawPg {
        target: Target,
        claim: String,
        complete: String,
    }

    enum Target {
        /// A pool, one acquire per statement, as the store does.
        Pool(PgPool),
        /// One connection per task, no pool.
        Conns(Vec<tokio::sync::Mutex<PgConnection>>),
    }

    /// Claim then complete on `$exec` (evaluated once per statement).
    macro_rules! raw_pair {
        ($self:ident, $task:ident, $i:ident, $exec:expr) => {{
            let id = event_id($task, $i);
            let fence = format!("{:032x}", (u128::from($task as u64) << 64) | u128::from($i));
            let row = sqlx::query(&$self.claim)
                .bind(&id)
                .bind(EVENT_TYPE)
                .bind(&fence)
                .bind(LEASE.as_millis() as f64)
                .fetch_optional($exec)
                .await
                .map_err(|e| e.to_string())?;
            let attempts: i32 = row
                .ok_or("claim returned no row")?
                .try_get(0)
                .map_err(|e| e.to_string())?;
            if attempts != 1 {
                return Err(format!("attempts {attempts}"));
            }
            let done = sqlx::query(&$self.complete)
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

    impl Pair for RawPg {
        async fn pair(&self, task: usize, i: u64) -> Result<(), String> {
            match &self.target {
                Target::Pool(pool) => raw_pair!(self, task, i, pool),
                Target::Conns(conns) => {
                    let mut conn = conns[task % conns.len()].lock().await;
                    raw_pair!(self, task, i, &mut *conn)
                }
            }
        }
    }

    fn find_pgbench() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PG_BIN")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
            v.sort();
            dirs.extend(v.into_iter().rev());
        }
        dirs.into_iter()
            .map(|d| d.join("pgbench"))
            .find(|p| p.is_file())
            .or_else(|| {
                std::env::var_os("PATH").and_then(|path| {
                    std::env::split_paths(&path)
                        .map(|d| d.join("pgbench"))
                        .find(|p| p.is_file())
                })
            })
    }

    /// The pgbench script: the store's claim and complete, with `$n` as pgbench
    /// variables, on an id no other transaction of the run uses.
    fn script(claim: &str, complete: &str) -> String {
        let claim = claim
            .replace("$4", ":lease")
            .replace("$3", ":fence")
            .replace("$2", ":etype")
            .replace("$1", ":id");
        let complete = complete.replace("$2", ":fence").replace("$1", ":id");
        format!(
            "\\set id :client_id * 1000000000000000 + random(1, 999999999999999)\n\
             \\set fence random(1000000000000000000, 9000000000000000000)\n\
             {claim};\n{complete};\n"
        )
    }

    fn pgbench(
        bin: &Path,
        url: &str,
        dir: &Path,
        script_text: &str,
        conc: usize,
        secs: Duration,
    ) -> Result<Measured, String> {
        // A fresh directory, so the per-transaction logs are this run's only.
        let run_dir = dir.join(format!("c{conc}"));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
        let file = run_dir.join("pair.sql");
        std::fs::write(&file, script_text).map_err(|e| e.to_string())?;
        let threads = conc.min(2);
        let out = Command::new(bin)
            .args(["-n", "-M", "prepared", "-l", "--log-prefix"])
            .arg(run_dir.join("log"))
            .args(["-c", &conc.to_string(), "-j", &threads.to_string()])
            .args(["-T", &secs.as_secs().max(1).to_string()])
            .args(["-D", &format!("etype={EVENT_TYPE}")])
            .args(["-D", &format!("lease={}", LEASE.as_millis())])
            .arg("-f")
            .arg(&file)
            .arg(url)
            .output()
            .map_err(|e| format!("could not run {}: {e}", bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "pgbench failed ({}):\n{stdout}\n{stderr}",
                out.status
            ));
        }
        let tps: f64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no tps in pgbench output:\n{stdout}"))?;
        let failed: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Per-transaction log: client_id transaction_no time_us script_no epoch epoch_us.
        let mut lat = Vec::new();
        for entry in std::fs::read_dir(&run_dir)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            if !entry.file_name().to_string_lossy().starts_with("log.") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).map_err(|e| e.to_string())?;
            lat.extend(
                text.lines()
                    .filter_map(|l| l.split_whitespace().nth(2))
                    .filter_map(|v| v.parse::<f64>().ok()),
            );
        }
        if lat.is_empty() {
            return Err("pgbench wrote no per-transaction log".to_owned());
        }
        let n = lat.len() as f64;
        let mut m = Measured::from_latencies(lat, n / tps);
        m.errors = failed;
        if failed > 0 {
            m.first_error = Some(format!("{failed} failed pgbench transactions"));
        }
        Ok(m)
    }

    /// A pool of [`POOL`] connections, all open, with the settings the crate ships
    /// ([`PostgresStore::pool_options`]); `ping` turns sqlx's `test_before_acquire` back
    /// on (its default: one extra round trip each time a statement takes a connection).
    async fn open_pool(url: &str, ping: bool) -> Result<PgPool, sqlx::Error> {
        let pool = PostgresStore::pool_options()
            .max_connections(POOL)
            .min_connections(POOL)
            .test_before_acquire(ping)
            .connect(url)
            .await?;
        // Open every connection now, so no run times connection setup.
        let mut held = Vec::new();
        for _ in 0..POOL {
            held.push(pool.acquire().await?);
        }
        drop(held);
        Ok(pool)
    }

    async fn migrate(pool: &PgPool, table: &str) -> PostgresStore {
        let store = PostgresStore::new(pool.clone())
            .with_table(table)
            .expect("valid table name");
        store.migrate().await.expect("create the bench table");
        store
    }

    async fn drop_table(pool: &PgPool, table: &str) {
        let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute(pool)
            .await;
    }

    /// Checks that the SQL read from the source is what the store prepared on its
    /// connections.
    async fn check_prepared(pool: &PgPool, claim: &str, complete: &str) {
        let mut found = (false, false);
        // Hold each connection, so every one of the pool's is asked once.
        let mut held = Vec::new();
        for _ in 0..POOL {
            let Ok(mut conn) = pool.acquire().await else {
                continue;
            };
            let rows: Vec<String> =
                sqlx::query_scalar("SELECT statement FROM pg_prepared_statements")
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap_or_default();
            found.0 |= rows.iter().any(|s| s == claim);
            found.1 |= rows.iter().any(|s| s == complete);
            held.push(conn);
        }
        assert!(
            found.0 && found.1,
            "the SQL read from src/idempotency/postgres.rs is not what PostgresStore prepared \
             (claim found: {}, complete found: {}); fix benches/stores.rs",
            found.0,
            found.1
        );
    }

    pub(super) fn run(rt: &tokio::runtime::Runtime, b: &Bench) -> Vec<Row> {
        let Ok(url) = std::env::var("DATABASE_URL_TEST") else {
            let why = "DATABASE_URL_TEST is not set";
            loud(&format!(
                "SKIPPED postgres: {why}. Start a server with `eval \"$(scripts/services.sh start)\"` \
                 or run benches/load/stores.sh"
            ));
            return CONCURRENCY
                .iter()
                .map(|&c| Row::skipped("postgres", c, why))
                .collect();
        };
        let pool = match rt.block_on(open_pool(&url, true)) {
            Ok(p) => p,
            Err(e) => {
                let why = format!("cannot connect to DATABASE_URL_TEST: {e}");
                loud(&format!("SKIPPED postgres: {why}"));
                return CONCURRENCY
                    .iter()
                    .map(|&c| Row::skipped("postgres", c, &why))
                    .collect();
            }
        };
        let pgbench_bin = find_pgbench();
        let no_ping = rt.block_on(open_pool(&url, false)).expect("second pool");
        println!("postgres: PostgresStore on a pool of {POOL} connections with PostgresStore::pool_options()'s settings (no test_before_acquire; all opened before timing), a fresh table per run");
        println!("  diagnostics (not in the table): the same SQL through sqlx without the store; the store on sqlx's default pool (test_before_acquire on); sqlx on one connection per task");
        match &pgbench_bin {
            Some(p) => println!(
                "  floor: {} -M prepared running the store's claim and complete SQL (one pgbench transaction = one pair), -c 1 / -c 16 -j 2",
                p.display()
            ),
            None => loud("NO FLOOR for postgres: pgbench not found (set PG_BIN to PostgreSQL's bin directory)"),
        }
        let tmp = std::env::temp_dir().join(b.fresh_name());
        let rows = CONCURRENCY
            .iter()
            .map(|&conc| {
                let raw = |table: &str, target: Target| {
                    let (claim, complete) = store_sql(SRC, table, "");
                    Arc::new(RawPg {
                        target,
                        claim,
                        complete,
                    })
                };
                let mut best = Best::default();
                for _ in 0..b.rounds {
                    let table = b.fresh_name();
                    let store = rt.block_on(migrate(&no_ping, &table));
                    let (claim, complete) = store_sql(SRC, &table, "");
                    let m = rt.block_on(drive(Arc::new(StorePair(store)), conc, b.secs));
                    best.add(STORE, "PostgresStore", conc, m);
                    rt.block_on(check_prepared(&no_ping, &claim, &complete));
                    rt.block_on(drop_table(&pool, &table));

                    if let Some(bin) = &pgbench_bin {
                        let table = b.fresh_name();
                        rt.block_on(migrate(&pool, &table));
                        let (claim, complete) = store_sql(SRC, &table, "");
                        let script = script(&claim, &complete);
                        match pgbench(bin, &url, &tmp, &script, conc, b.secs) {
                            Ok(f) => {
                                best.add(FLOOR, "floor: pgbench -M prepared, same SQL", conc, f)
                            }
                            Err(e) => loud(&format!("NO FLOOR for postgres c={conc}: {e}")),
                        }
                        rt.block_on(drop_table(&pool, &table));
                    }

                    let table = b.fresh_name();
                    rt.block_on(migrate(&pool, &table));
                    let target = Target::Pool(pool.clone());
                    let r = rt.block_on(drive(raw(&table, target), conc, b.secs));
                    best.add(RAW_POOL, RAW_POOL, conc, r);
                    rt.block_on(drop_table(&pool, &table));

                    let table = b.fresh_name();
                    let store = rt.block_on(migrate(&pool, &table));
                    let r = rt.block_on(drive(Arc::new(StorePair(store)), conc, b.secs));
                    best.add(STORE_PING, STORE_PING, conc, r);
                    rt.block_on(drop_table(&pool, &table));

                    let table = b.fresh_name();
                    rt.block_on(migrate(&pool, &table));
                    let conns = rt.block_on(async {
                        let mut v = Vec::new();
                        for _ in 0..conc {
                            v.push(tokio::sync::Mutex::new(PgConnection::connect(&url).await?));
                        }
                        Ok::<_, sqlx::Error>(v)
                    });
                    match conns {
                        Ok(conns) => {
                            let target = Target::Conns(conns);
                            let r = rt.block_on(drive(raw(&table, target), conc, b.secs));
                            best.add(RAW_CONNS, RAW_CONNS, conc, r);
                        }
                        Err(e) => loud(&format!("{RAW_CONNS}: cannot connect: {e}")),
                    }
                    rt.block_on(drop_table(&pool, &table));
                }
                best.row("postgres", conc, &[FLOOR])
            })
            .collect();
        let _ = std::fs::remove_dir_all(&tmp);
        rows
    }
}

#[cfg(feature = "redis")]
mod redis_bench {
    use super::*;
    use redis::aio::{ConnectionManager, MultiplexedConnection};
    use stripe_webhooks::RedisStore;

    const SRC: &str = include_str!("../src/idempotency/redis.rs");
    const PER_TASK: &str = "raw EVALSHA, one connection per task";
    const SHARED: &str = "raw EVALSHA, one shared connection";
    /// Short, so the bench's keys expire by themselves; it is deleted at the end anyway.
    const RETENTION: Duration = Duration::from_secs(600);

    /// The store's claim and complete scripts, as `script(&[…])` assembles them.
    fn scripts() -> (String, String) {
        let part = |name: &str| literal_after(SRC, &format!("const {name}: &str = "));
        (
            [part("PRELUDE"), part("CLAIM")].concat(),
            [part("PRELUDE"), part("FENCED"), part("COMPLETE")].concat(),
        )
    }

    /// The two scripts as raw `EVALSHA`s, one request at a time per task.
    struct RawRedis {
        conns: Vec<MultiplexedConnection>,
        prefix: String,
        claim_sha: String,
        complete_sha: String,
    }

    impl Pair for RawRedis {
        async fn pair(&self, task: usize, i: u64) -> Result<(), String> {
            let mut conn = self.conns[task % self.conns.len()].clone();
            let id = event_id(task, i);
            let key = format!("{}:evt:{id}", self.prefix);
            let failed = format!("{}:failed", self.prefix);
            let fence = format!("{:032x}", (u128::from(task as u64) << 64) | u128::from(i));
            let retention = RETENTION.as_millis() as u64;
            let (kind, _n): (i64, i64) = redis::cmd("EVALSHA")
                .arg(&self.claim_sha)
                .arg(2)
                .arg(&key)
                .arg(&failed)
                .arg(&id)
                .arg(EVENT_TYPE)
                .arg(LEASE.as_millis() as u64)
                .arg(&fence)
                .arg(retention)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if kind != 2 {
                return Err(format!("claim answered {kind}"));
            }
            let done: i64 = redis::cmd("EVALSHA")
                .arg(&self.complete_sha)
                .arg(2)
                .arg(&key)
                .arg(&failed)
                .arg(&id)
                .arg(&fence)
                .arg(retention)
                .arg("")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if done == 1 {
                Ok(())
            } else {
                Err("complete answered 0".to_owned())
            }
        }
    }

    async fn cleanup(client: &redis::Client, prefix: &str) {
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(5000)
                .query_async(&mut conn)
                .await
            else {
                return;
            };
            if !keys.is_empty() {
                let _: Result<i64, _> =
                    redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await;
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }

    pub(super) fn run(rt: &tokio::runtime::Runtime, b: &Bench) -> Vec<Row> {
        let Ok(url) = std::env::var("REDIS_URL_TEST") else {
            let why = "REDIS_URL_TEST is not set";
            loud(&format!(
                "SKIPPED redis: {why}. Start a server with `eval \"$(scripts/services.sh start)\"` \
                 or run benches/load/stores.sh"
            ));
            return CONCURRENCY
                .iter()
                .map(|&c| Row::skipped("redis", c, why))
                .collect();
        };
        let client = match redis::Client::open(url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("bad REDIS_URL_TEST: {e}");
                loud(&format!("SKIPPED redis: {why}"));
                return CONCURRENCY
                    .iter()
                    .map(|&c| Row::skipped("redis", c, &why))
                    .collect();
            }
        };
        let (claim_text, complete_text) = scripts();
        let claim_sha = redis::Script::new(&claim_text).get_hash().to_owned();
        let complete_sha = redis::Script::new(&complete_text).get_hash().to_owned();
        println!("redis: RedisStore on one ConnectionManager (one multiplexed connection, shared by all tasks), a fresh key prefix per run");
        println!("  floor: the store's claim and complete Lua, sent as raw EVALSHA by the redis crate, each task awaiting every reply (no pipelining); over one connection per task and over one shared multiplexed connection; the better one is the floor");
        CONCURRENCY
            .iter()
            .map(|&conc| {
                let mut best = Best::default();
                for _ in 0..b.rounds {
                    let prefix = b.fresh_name();
                    let built = rt.block_on(ConnectionManager::new(client.clone()));
                    let conn = match built {
                        Ok(c) => c,
                        Err(e) => {
                            let why = format!("cannot connect to REDIS_URL_TEST: {e}");
                            loud(&format!("SKIPPED redis c={conc}: {why}"));
                            return Row::skipped("redis", conc, &why);
                        }
                    };
                    let store = RedisStore::new(conn)
                        .with_prefix(&prefix)
                        .expect("valid prefix")
                        .with_retention(RETENTION);
                    let m = rt.block_on(drive(Arc::new(StorePair(store)), conc, b.secs));
                    best.add(STORE, "RedisStore", conc, m);
                    rt.block_on(cleanup(&client, &prefix));

                    // The floor never loads a script: EVALSHA only works if the store
                    // loaded exactly this text.
                    let loaded: Vec<bool> = rt
                        .block_on(async {
                            let mut c = client.get_multiplexed_async_connection().await?;
                            redis::cmd("SCRIPT")
                                .arg("EXISTS")
                                .arg(&claim_sha)
                                .arg(&complete_sha)
                                .query_async(&mut c)
                                .await
                        })
                        .unwrap_or_default();
                    assert!(
                        loaded == [true, true],
                        "the Lua read from src/idempotency/redis.rs is not what RedisStore \
                         loaded ({loaded:?}); fix benches/stores.rs"
                    );

                    // At concurrency 1 both variants are one connection: run one.
                    let variants: &[(&str, usize)] = if conc == 1 {
                        &[(PER_TASK, 1)]
                    } else {
                        &[(PER_TASK, conc), (SHARED, 1)]
                    };
                    for &(what, n_conns) in variants {
                        let prefix = b.fresh_name();
                        let conns = rt.block_on(async {
                            let mut v = Vec::new();
                            for _ in 0..n_conns {
                                v.push(client.get_multiplexed_async_connection().await?);
                            }
                            Ok::<_, redis::RedisError>(v)
                        });
                        let conns = match conns {
                            Ok(c) => c,
                            Err(e) => {
                                loud(&format!("redis floor ({what}): cannot connect: {e}"));
                                continue;
                            }
                        };
                        let raw = RawRedis {
                            conns,
                            prefix: prefix.clone(),
                            claim_sha: claim_sha.clone(),
                            complete_sha: complete_sha.clone(),
                        };
                        let f = rt.block_on(drive(Arc::new(raw), conc, b.secs));
                        best.add(what, &format!("floor: {what}"), conc, f);
                        rt.block_on(cleanup(&client, &prefix));
                    }
                }
                best.row("redis", conc, &[PER_TASK, SHARED])
            })
            .collect()
    }
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
        secs,
        rounds,
        run_no: std::sync::atomic::AtomicU32::new(0),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "stores bench: claim+complete pairs on distinct event ids, {secs:?} per run, concurrency \
         {CONCURRENCY:?}, best of {rounds} interleaved rounds per measurement, tokio \
         multi-thread runtime with {cpus} workers on {cpus} CPUs"
    );
    if smoke {
        println!("(not run by `cargo bench`: a {secs:?} smoke run of the memory store only)");
        let rows = bench_memory(&rt, &b);
        print!("{}", print_table(&rows));
        return;
    }

    let mut rows = Vec::new();
    if selected("memory") {
        rows.extend(bench_memory(&rt, &b));
    }
    if selected("sqlite") {
        #[cfg(feature = "sqlite")]
        rows.extend(sqlite_bench::run(&rt, &b));
        #[cfg(not(feature = "sqlite"))]
        {
            loud("SKIPPED sqlite: built without the `sqlite` feature (use --all-features)");
            rows.extend(
                CONCURRENCY
                    .iter()
                    .map(|&c| Row::skipped("sqlite", c, "feature off")),
            );
        }
    }
    if selected("postgres") {
        #[cfg(feature = "postgres")]
        rows.extend(postgres_bench::run(&rt, &b));
        #[cfg(not(feature = "postgres"))]
        {
            loud("SKIPPED postgres: built without the `postgres` feature (use --all-features)");
            rows.extend(
                CONCURRENCY
                    .iter()
                    .map(|&c| Row::skipped("postgres", c, "feature off")),
            );
        }
    }
    if selected("redis") {
        #[cfg(feature = "redis")]
        rows.extend(redis_bench::run(&rt, &b));
        #[cfg(not(feature = "redis"))]
        {
            loud("SKIPPED redis: built without the `redis` feature (use --all-features)");
            rows.extend(
                CONCURRENCY
                    .iter()
                    .map(|&c| Row::skipped("redis", c, "feature off")),
            );
        }
    }

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
