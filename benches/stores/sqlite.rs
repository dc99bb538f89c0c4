//! SQLite: `SqliteStore::connect` on a fresh file, against its floor: the store's claim
//! and complete statements (from `statements::SQLITE`) run with sqlx on a pool opened the
//! same way, without the store.

use stripe_webhooks::sqlx::SqlitePool;
use stripe_webhooks::{SqliteStore, DEFAULT_TABLE};

use crate::{sql_pair, statements, Bench, Pair, PairSql, Row, StorePair, STORE};

const FLOOR: &str = "same 2 statements via sqlx, no store";

/// The store's two statements with sqlx on a pool, without the store.
struct RawSqlite {
    pool: SqlitePool,
    sql: PairSql,
}

impl Pair for RawSqlite {
    async fn pair(&self, task: usize, i: u64) -> Result<(), String> {
        sql_pair!(self.sql, task, i, &self.pool)
    }
}

pub(crate) fn run(b: &Bench) -> Vec<Row> {
    let dir = std::env::temp_dir().join(b.fresh_name());
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!(
        "sqlite: SqliteStore::connect (WAL, synchronous=NORMAL, 8 connections) on a fresh file in {}",
        dir.display()
    );
    println!("  floor: the store's claim and complete SQL, run with sqlx on a pool opened the same way (a fresh file), without the store");
    // `connect` migrates and uses the default table.
    let sql = PairSql::new(&statements::SQLITE, DEFAULT_TABLE);
    let open = |what: &str| {
        b.rt.block_on(SqliteStore::connect(dir.join(b.fresh_name() + ".db")))
            .unwrap_or_else(|e| panic!("open the SQLite {what}: {e}"))
    };
    let rows = b.rows("sqlite", &[FLOOR], |conc, best| {
        let m = b.drive(StorePair(open("store")), conc);
        best.add(STORE, "SqliteStore", conc, m);

        let raw = RawSqlite {
            pool: open("floor file").pool().clone(),
            sql: sql.clone(),
        };
        let f = b.drive(raw, conc);
        best.add(FLOOR, "floor: same SQL, sqlx direct", conc, f);
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    rows
}
