//! PostgreSQL: `PostgresStore` on a pool, against its floor: the store's claim and
//! complete statements (from `statements::POSTGRES`) run by `pgbench -M prepared`. Also
//! prints diagnostics that split the gap: the same SQL through sqlx without the store, the
//! store with `test_before_acquire`, and sqlx on a connection per task.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stripe_webhooks::sqlx::{self, Connection as _, PgConnection, PgPool};
use stripe_webhooks::PostgresStore;

use crate::{
    loud, server_url, skip_all, sql_pair, statements, Bench, Measured, Pair, PairSql, Row,
    StorePair, EVENT_TYPE, LEASE, STORE,
};

const FLOOR: &str = "pgbench -M prepared, same 2 statements";
const RAW_POOL: &str = "same SQL via sqlx, same pool, no store";
const STORE_PING: &str = "PostgresStore, sqlx default pool (test_before_acquire on)";
const RAW_CONNS: &str = "same SQL via sqlx, a connection per task";
const POOL: u32 = 16;

/// The store's two statements with sqlx, without the store: not the floor, but it
/// splits the gap between the store and pgbench into store, pool and driver.
struct RawPg {
    target: Target,
    sql: PairSql,
}

enum Target {
    /// A pool, one acquire per statement, as the store does.
    Pool(PgPool),
    /// One connection per task, no pool.
    Conns(Vec<tokio::sync::Mutex<PgConnection>>),
}

impl Pair for RawPg {
    async fn pair(&self, task: usize, i: u64) -> Result<(), String> {
        match &self.target {
            Target::Pool(pool) => sql_pair!(self.sql, task, i, pool),
            Target::Conns(conns) => {
                let mut conn = conns[task % conns.len()].lock().await;
                sql_pair!(self.sql, task, i, &mut *conn)
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
/// variables, on an id no other transaction of the run uses. pgbench reads `:lease::bigint`
/// as the variable `lease` and a cast.
fn script(sql: &PairSql) -> String {
    let claim = sql
        .claim
        .replace("$4", ":lease")
        .replace("$3", ":fence")
        .replace("$2", ":etype")
        .replace("$1", ":id");
    let complete = sql.complete.replace("$2", ":fence").replace("$1", ":id");
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
        .args(["-D", &format!("etype={}", EVENT_TYPE.as_str())])
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

/// Checks that the SQL the floors run, rendered from `statements.rs`, is what the store
/// prepared on its connections.
async fn check_prepared(pool: &PgPool, sql: &PairSql) {
    let mut found = (false, false);
    // Hold each connection, so every one of the pool's is asked once.
    let mut held = Vec::new();
    for _ in 0..POOL {
        let Ok(mut conn) = pool.acquire().await else {
            continue;
        };
        let rows: Vec<String> = sqlx::query_scalar("SELECT statement FROM pg_prepared_statements")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
        found.0 |= rows.contains(&sql.claim);
        found.1 |= rows.contains(&sql.complete);
        held.push(conn);
    }
    assert!(
        found.0 && found.1,
        "the SQL rendered from src/idempotency/sql/statements.rs is not what PostgresStore \
         prepared (claim found: {}, complete found: {}); fix benches/stores/postgres.rs",
        found.0,
        found.1
    );
}

/// Creates a fresh table through `pool`, runs `f` with its name and a store on it, then
/// drops it.
fn on_fresh_table<T>(b: &Bench, pool: &PgPool, f: impl FnOnce(&str, PostgresStore) -> T) -> T {
    let table = b.fresh_name();
    let store = b.rt.block_on(migrate(pool, &table));
    let out = f(&table, store);
    b.rt.block_on(drop_table(pool, &table));
    out
}

pub(crate) fn run(b: &Bench) -> Vec<Row> {
    let url = match server_url("postgres", "DATABASE_URL_TEST") {
        Ok(url) => url,
        Err(skipped) => return skipped,
    };
    let pool = match b.rt.block_on(open_pool(&url, true)) {
        Ok(p) => p,
        Err(e) => {
            let why = format!("cannot connect to DATABASE_URL_TEST: {e}");
            return skip_all("postgres", &why, &format!("SKIPPED postgres: {why}"));
        }
    };
    let pgbench_bin = find_pgbench();
    let no_ping = b.rt.block_on(open_pool(&url, false)).expect("second pool");
    println!("postgres: PostgresStore on a pool of {POOL} connections with PostgresStore::pool_options()'s settings (no test_before_acquire; all opened before timing), a fresh table per run");
    println!("  diagnostics (not in the table): the same SQL through sqlx without the store; the store on sqlx's default pool (test_before_acquire on); sqlx on one connection per task");
    match &pgbench_bin {
        Some(p) => println!(
            "  floor: {} -M prepared running the store's claim and complete SQL (one pgbench transaction = one pair), -c 1 / -c 16 -j 2",
            p.display()
        ),
        None => loud("NO FLOOR for postgres: pgbench not found (set PG_BIN to PostgreSQL's bin directory)"),
    }
    let sql = |table: &str| PairSql::new(&statements::POSTGRES, table);
    let tmp = std::env::temp_dir().join(b.fresh_name());
    let rows = b.rows("postgres", &[FLOOR], |conc, best| {
        on_fresh_table(b, &no_ping, |table, store| {
            let m = b.drive(StorePair(store), conc);
            best.add(STORE, "PostgresStore", conc, m);
            b.rt.block_on(check_prepared(&no_ping, &sql(table)));
        });

        if let Some(bin) = &pgbench_bin {
            on_fresh_table(b, &pool, |table, _| {
                let script = script(&sql(table));
                match pgbench(bin, &url, &tmp, &script, conc, b.secs) {
                    Ok(f) => best.add(FLOOR, "floor: pgbench -M prepared, same SQL", conc, f),
                    Err(e) => loud(&format!("NO FLOOR for postgres c={conc}: {e}")),
                }
            });
        }

        on_fresh_table(b, &pool, |table, _| {
            let raw = RawPg {
                target: Target::Pool(pool.clone()),
                sql: sql(table),
            };
            best.add(RAW_POOL, RAW_POOL, conc, b.drive(raw, conc));
        });

        on_fresh_table(b, &pool, |_, store| {
            best.add(
                STORE_PING,
                STORE_PING,
                conc,
                b.drive(StorePair(store), conc),
            );
        });

        on_fresh_table(b, &pool, |table, _| {
            let conns = b.rt.block_on(async {
                let mut v = Vec::new();
                for _ in 0..conc {
                    v.push(tokio::sync::Mutex::new(PgConnection::connect(&url).await?));
                }
                Ok::<_, sqlx::Error>(v)
            });
            match conns {
                Ok(conns) => {
                    let raw = RawPg {
                        target: Target::Conns(conns),
                        sql: sql(table),
                    };
                    best.add(RAW_CONNS, RAW_CONNS, conc, b.drive(raw, conc));
                }
                Err(e) => loud(&format!("{RAW_CONNS}: cannot connect: {e}")),
            }
        });
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&tmp);
    rows
}
