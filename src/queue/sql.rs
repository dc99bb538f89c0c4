//! The SQL queues: a `{table}_jobs` table beside the SQL store's, in the same database,
//! created by the store's `migrate()`. SQLite and PostgreSQL run one code path
//! ([`SqlQueue`]) over their dialect's statements.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::worker::{Ran, Runner};
use super::{Enqueued, Job, JobRecord, JobState, NewJob, PayloadKind, QueueCounts, Worker};
use crate::event::EventId;
use crate::idempotency::sql::{attempts_from, db_err, millis, Dialect, HandlerRunning};
use crate::idempotency::{truncate_error, ClaimToken, StoreError};
use crate::processor::{handler_future, run_handler};

/// One dialect's queue statements. `{j}` is the jobs table, `{now}` the clock in Unix
/// milliseconds. Parameters:
///
/// | statement | parameters | returns |
/// |---|---|---|
/// | `enqueue` | key, event id, type, kind, object id, created, body | a row when queued |
/// | `take` | fence, lease ms, limit | the job columns |
/// | `park` | window | |
/// | `extend` | key, fence, lease ms | |
/// | `complete` | key, fence | |
/// | `completed_by` | key, fence | a row when that fence completed the job |
/// | `retry` | key, fence, error, delay ms | |
/// | `bury` | key, fence, error | |
/// | `bury_seq` | seq, fence, error | |
/// | `release` | key, fence | |
/// | `counts` | | state, count, ms since the oldest was queued |
/// | `list` | state, limit | the record columns |
/// | `list_after` | state, limit, key | the record columns after the key's job |
/// | `record` | key | the record columns |
/// | `recent` | limit | the record columns, newest first |
/// | `requeue` | key | |
/// | `requeue_dead` | | |
/// | `purge` | age ms, limit | |
pub(crate) struct Statements {
    now: &'static str,
    enqueue: &'static str,
    take: &'static str,
    /// The extra condition of per-object order, on the candidate row `j`.
    in_order: &'static str,
    /// Run after a take in per-object order that was slow
    /// ([`with_parking_after`](crate::queue::PostgresQueue::with_parking_after)), in a
    /// transaction of its own after the order lock: *parks* the queued and retrying jobs
    /// that an earlier pending job of their object holds back, among the due jobs before
    /// the first one a take could have now (the jobs the take read past, since it took
    /// the first it could), at most a window of them. Parking moves a job's `run_at`
    /// [`PARKED`] ahead, so that every later take passes it by the due index's bound
    /// rather than row by row. The migration's trigger gives an object's first queued or
    /// retrying job its `run_at` back when a pending job of the object completes or dies
    /// (`migrations/*/…_park_held_back_jobs.sql`). `{order}` is
    /// [`in_order`](Self::in_order).
    park: &'static str,
    /// A row when the migration's trigger that wakes parked jobs is in the database: a
    /// job parked without it would never be woken (a schema not yet migrated).
    park_ready: &'static str,
    /// Run first, in the same transaction, by a take in per-object order where takes
    /// can run at once (PostgreSQL): it waits for any other such take to commit, so this
    /// take's statement reads a snapshot that has the other's jobs as running. Without
    /// it, two takes could each pick a job of one object that the other's snapshot did
    /// not show (one enqueued between their starts), and run both at once.
    order_lock: Option<&'static str>,
    extend: &'static str,
    complete: &'static str,
    completed_by: &'static str,
    retry: &'static str,
    bury: &'static str,
    /// As `bury`, for a taken job whose key cannot be read: by its `seq`.
    bury_seq: &'static str,
    release: &'static str,
    counts: &'static str,
    list: &'static str,
    list_after: &'static str,
    record: &'static str,
    recent: &'static str,
    requeue: &'static str,
    requeue_dead: &'static str,
    purge: &'static str,
}

/// How far a parked job's `run_at` is moved ahead ([`Statements::park`]): 10^15 ms, past
/// any time a job is due (the clock plus at most [`MAX_SQL_MILLIS`](crate::idempotency::sql::MAX_SQL_MILLIS),
/// about 5 × 10^12 ms), so a parked job is never due, and its own `run_at` is what is left
/// after taking it away. The migrations' triggers hold the same number.
const PARKED: i64 = 1_000_000_000_000_000;

// A job that is not parked is due within the clock (under 10,000 years from 1970) plus
// a century: never at `PARKED` or later.
const _: () =
    assert!(crate::idempotency::sql::MAX_SQL_MILLIS + 10_000 * 365 * 24 * 3600 * 1000 < PARKED);

/// A job's `run_at` as it would be unparked: what the listings and counts show.
macro_rules! unparked_run_at {
    () => {
        "CASE WHEN run_at >= {parked} THEN run_at - {parked} ELSE run_at END"
    };
}

/// `counts`: one count per state, each a range of the `(state, seq)` index, so that only
/// the queued jobs' rows are read (for the oldest one's age). A `GROUP BY state` over the
/// table read every row, completed ones and their bodies included, at every metrics
/// scrape: 0.21 s against 0.01 s for 200,000 completed jobs on SQLite, warm.
macro_rules! counts {
    () => {
        concat!(
            "SELECT 'queued', COUNT(*), {now} - MIN(",
            unparked_run_at!(),
            ") FROM {j} WHERE state = 'queued' \
            UNION ALL SELECT 'running', COUNT(*), NULL FROM {j} WHERE state = 'running' \
            UNION ALL SELECT 'retrying', COUNT(*), NULL FROM {j} WHERE state = 'retrying' \
            UNION ALL SELECT 'dead', COUNT(*), NULL FROM {j} WHERE state = 'dead' \
            UNION ALL SELECT 'completed', COUNT(*), NULL FROM {j} WHERE state = 'completed'"
        )
    };
}

const RECORD_COLUMNS: &str = concat!(
    "job_key, event_id, event_type, kind, state, attempts, last_error, enqueued_at, ",
    unparked_run_at!(),
    ", finished_at, body"
);

/// The condition of [`Statements::park`] on a candidate `j`: before the row in `bound`
/// (the first due job a take could have), or due if there is none. One range of the due
/// index, from its start, whichever it is (two values from the CTE, each read once): a
/// condition that joined `bound` would be checked row by row, and the scan would read
/// every due job.
const BEFORE_BOUND: &str = "(j.run_at, j.seq) < ((SELECT coalesce(max(run_at), {now} + 1) \
    FROM bound), (SELECT coalesce(max(seq), 0) FROM bound))";

/// [`with_parking_after`](PostgresQueue::with_parking_after)'s default: a take that read
/// a few hundred held-back jobs, or one on a machine too busy to answer at once (whose
/// park then finds little to do, and reads one job for it).
const DEFAULT_PARK_AFTER: Duration = Duration::from_millis(10);

/// How many jobs one park looks at, at most: a bound on the rows it writes (under
/// SQLite's write lock) when a long backlog is first held back.
const PARK_WINDOW: i64 = 1000;

const IN_ORDER: &str = " AND (j.object_id IS NULL OR NOT EXISTS (SELECT 1 FROM {j} o \
    WHERE o.object_id = j.object_id AND o.seq <> j.seq \
    AND o.state IN ('queued', 'retrying', 'running') \
    AND ((o.state = 'running' AND o.run_at > {now}) OR o.created < j.created \
    OR (o.created = j.created AND o.seq < j.seq))))";

// `take` names its index: with a long queue SQLite's planner picks `state_idx` and sorts
// every queued row by `run_at` for each take, holding the write lock throughout (measured:
// the ack path's p99 went from 344 ms to 16 ms at c=64 with this alone).
#[cfg(feature = "sqlite")]
const SQLITE: Statements = Statements {
    now: "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    enqueue: "INSERT INTO {j} (job_key, event_id, event_type, kind, object_id, created, body, \
        state, attempts, run_at, enqueued_at) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', 0, {now}, {now}) \
        ON CONFLICT (job_key) DO NOTHING RETURNING seq",
    take: "UPDATE {j} SET state = 'running', attempts = attempts + 1, fence = ?1, \
        run_at = {now} + ?2 \
        WHERE seq IN (SELECT seq FROM {j} j INDEXED BY {j}_due_idx \
        WHERE j.state IN ('queued', 'retrying', 'running') \
        AND j.run_at <= {now}{order} ORDER BY j.run_at, j.seq LIMIT ?3) \
        RETURNING seq, job_key, event_id, event_type, kind, body, attempts, created",
    in_order: IN_ORDER,
    park: "WITH bound AS MATERIALIZED (SELECT j.run_at, j.seq FROM {j} j INDEXED BY {j}_due_idx \
        WHERE j.state IN ('queued', 'retrying', 'running') AND j.run_at <= {now}{order} \
        ORDER BY j.run_at, j.seq LIMIT 1) \
        UPDATE {j} SET run_at = run_at + {parked} WHERE seq IN (SELECT j.seq \
        FROM {j} j INDEXED BY {j}_due_idx \
        WHERE j.state IN ('queued', 'retrying', 'running') AND j.state <> 'running' \
        AND {before_bound} AND j.object_id IS NOT NULL \
        AND EXISTS (SELECT 1 FROM {j} o WHERE o.object_id = j.object_id AND o.seq <> j.seq \
        AND o.state IN ('queued', 'retrying', 'running') \
        AND (o.created < j.created OR (o.created = j.created AND o.seq < j.seq))) \
        ORDER BY j.run_at, j.seq LIMIT ?1)",
    park_ready: "SELECT 1 FROM sqlite_master WHERE type = 'trigger' \
        AND name = '{j}_wake' COLLATE NOCASE",
    // One writer at a time: a take's statement always sees the takes before it.
    order_lock: None,
    extend: "UPDATE {j} SET run_at = {now} + ?3 \
        WHERE job_key = ?1 AND fence = ?2 AND state = 'running'",
    complete: "UPDATE {j} SET state = 'completed', finished_at = {now}, run_at = {now} \
        WHERE job_key = ?1 AND fence = ?2 AND state = 'running'",
    completed_by: "SELECT 1 FROM {j} WHERE job_key = ?1 AND fence = ?2 AND state = 'completed'",
    retry: "UPDATE {j} SET state = 'retrying', last_error = ?3, run_at = {now} + ?4 \
        WHERE job_key = ?1 AND fence = ?2 AND state = 'running'",
    bury: "UPDATE {j} SET state = 'dead', last_error = ?3, finished_at = {now} \
        WHERE job_key = ?1 AND fence = ?2 AND state = 'running'",
    bury_seq: "UPDATE {j} SET state = 'dead', last_error = ?3, finished_at = {now} \
        WHERE seq = ?1 AND fence = ?2 AND state = 'running'",
    release: "UPDATE {j} SET state = 'queued', attempts = MAX(attempts - 1, 0), run_at = {now} \
        WHERE job_key = ?1 AND fence = ?2 AND state = 'running'",
    counts: counts!(),
    list: "SELECT {cols} FROM {j} WHERE state = ?1 ORDER BY seq LIMIT ?2",
    list_after: "SELECT {cols} FROM {j} WHERE state = ?1 \
        AND seq > (SELECT seq FROM {j} WHERE job_key = ?3) ORDER BY seq LIMIT ?2",
    record: "SELECT {cols} FROM {j} WHERE job_key = ?1",
    recent: "SELECT {cols} FROM {j} ORDER BY seq DESC LIMIT ?1",
    requeue: "UPDATE {j} SET state = 'queued', attempts = 0, run_at = {now}, finished_at = NULL \
        WHERE job_key = ?1 AND state IN ('dead', 'retrying') RETURNING seq",
    requeue_dead: "UPDATE {j} SET state = 'queued', attempts = 0, run_at = {now}, \
        finished_at = NULL WHERE state = 'dead' AND seq IN (SELECT seq FROM {j} \
        WHERE state = 'dead' AND seq > ?1 ORDER BY seq LIMIT ?2) RETURNING seq, 1",
    purge: "DELETE FROM {j} WHERE seq IN (SELECT seq FROM {j} WHERE state = 'completed' \
        AND finished_at <= {now} - ?1 LIMIT ?2)",
};

#[cfg(feature = "postgres")]
const POSTGRES: Statements = Statements {
    // A subquery, so PostgreSQL reads the clock once per statement (an InitPlan) and can
    // use it as an index condition: with `clock_timestamp()` inline (volatile) a take
    // walked every pending row whose `run_at` was still ahead (measured: 37 ms a take
    // over 100,000 retrying jobs, against 0.04 ms), and a purge every completed row.
    now: "(SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
    enqueue: "WITH ins AS (INSERT INTO {j} (job_key, event_id, event_type, kind, object_id, \
        created, body, state, attempts, run_at, enqueued_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', 0, {now}, {now}) \
        ON CONFLICT (job_key) DO NOTHING RETURNING seq) \
        SELECT seq, pg_notify('{j}', '') FROM ins",
    take:
        "WITH picked AS (SELECT seq FROM {j} j WHERE j.state IN ('queued', 'retrying', 'running') \
        AND j.run_at <= {now}{order} ORDER BY j.run_at, j.seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
        UPDATE {j} t SET state = 'running', attempts = t.attempts + 1, fence = $1, \
        run_at = {now} + $2 FROM picked WHERE t.seq = picked.seq \
        RETURNING t.seq, t.job_key, t.event_id, t.event_type, t.kind, t.body, t.attempts, t.created",
    in_order: IN_ORDER,
    // Each held-back job's blocker, its object's first pending job, is marked `wakes`
    // (`marked`), and the job parked only if that mark was written: a blocker that
    // completed or died meanwhile fails the mark's re-check of its state (read committed
    // re-reads a changed row), and its trigger, which runs only for marked jobs, will
    // have seen the mark otherwise. The first pending job is never parked itself
    // (nothing is before it), so no row is both marked and parked.
    park: "WITH bound AS MATERIALIZED (SELECT j.run_at, j.seq FROM {j} j \
        WHERE j.state IN ('queued', 'retrying', 'running') AND j.run_at <= {now}{order} \
        ORDER BY j.run_at, j.seq LIMIT 1), \
        cand AS MATERIALIZED (SELECT j.seq, (SELECT o.seq FROM {j} o \
        WHERE o.object_id = j.object_id AND o.seq <> j.seq \
        AND o.state IN ('queued', 'retrying', 'running') \
        AND (o.created < j.created OR (o.created = j.created AND o.seq < j.seq)) \
        ORDER BY o.created, o.seq LIMIT 1) AS blocker FROM {j} j \
        WHERE j.state IN ('queued', 'retrying', 'running') AND j.state <> 'running' \
        AND {before_bound} AND j.object_id IS NOT NULL \
        ORDER BY j.run_at, j.seq LIMIT $1), \
        marked AS (UPDATE {j} a SET wakes = true \
        WHERE a.seq = ANY (ARRAY(SELECT blocker FROM cand WHERE blocker IS NOT NULL)) \
        AND a.state IN ('queued', 'retrying', 'running') RETURNING a.seq) \
        UPDATE {j} p SET run_at = p.run_at + {parked} \
        WHERE p.seq = ANY (ARRAY(SELECT cand.seq FROM cand JOIN marked ON marked.seq = cand.blocker)) \
        AND p.state IN ('queued', 'retrying') AND p.run_at <= {now}",
    park_ready: "SELECT 1 FROM pg_trigger WHERE tgname = lower('{j}_wake') \
        AND tgrelid = to_regclass('{j}')",
    order_lock: Some("SELECT pg_advisory_xact_lock(hashtext('stripe_webhooks take {j}'))"),
    extend: "UPDATE {j} SET run_at = {now} + $3 \
        WHERE job_key = $1 AND fence = $2 AND state = 'running'",
    complete: "UPDATE {j} SET state = 'completed', finished_at = {now}, run_at = {now} \
        WHERE job_key = $1 AND fence = $2 AND state = 'running'",
    completed_by: "SELECT 1 FROM {j} WHERE job_key = $1 AND fence = $2 AND state = 'completed'",
    retry: "UPDATE {j} SET state = 'retrying', last_error = $3, run_at = {now} + $4 \
        WHERE job_key = $1 AND fence = $2 AND state = 'running'",
    bury: "UPDATE {j} SET state = 'dead', last_error = $3, finished_at = {now} \
        WHERE job_key = $1 AND fence = $2 AND state = 'running'",
    bury_seq: "UPDATE {j} SET state = 'dead', last_error = $3, finished_at = {now} \
        WHERE seq = $1 AND fence = $2 AND state = 'running'",
    release: "UPDATE {j} SET state = 'queued', attempts = GREATEST(attempts - 1, 0), \
        run_at = {now} WHERE job_key = $1 AND fence = $2 AND state = 'running'",
    counts: counts!(),
    list: "SELECT {cols} FROM {j} WHERE state = $1 ORDER BY seq LIMIT $2",
    list_after: "SELECT {cols} FROM {j} WHERE state = $1 \
        AND seq > (SELECT seq FROM {j} WHERE job_key = $3) ORDER BY seq LIMIT $2",
    record: "SELECT {cols} FROM {j} WHERE job_key = $1",
    recent: "SELECT {cols} FROM {j} ORDER BY seq DESC LIMIT $1",
    requeue: "WITH up AS (UPDATE {j} SET state = 'queued', attempts = 0, run_at = {now}, \
        finished_at = NULL WHERE job_key = $1 AND state IN ('dead', 'retrying') RETURNING seq) \
        SELECT seq, pg_notify('{j}', '') FROM up",
    // `state = 'dead'` on the updated row too: PostgreSQL re-checks a row that changed
    // meanwhile against the UPDATE's own conditions, not the subquery's, and a job
    // requeued and taken meanwhile must not be reset while it runs.
    // Answers every candidate, requeued or not: a candidate that left `dead` meanwhile
    // (requeued by key and taken) is skipped by the re-check, and a batch short by it
    // must not end the walk.
    requeue_dead: "WITH cand AS MATERIALIZED (SELECT seq FROM {j} \
        WHERE state = 'dead' AND seq > $1 ORDER BY seq LIMIT $2), \
        up AS (UPDATE {j} SET state = 'queued', attempts = 0, run_at = {now}, \
        finished_at = NULL WHERE state = 'dead' AND seq IN (SELECT seq FROM cand) RETURNING seq), \
        woke AS (SELECT count(pg_notify('{j}', '')) AS n FROM (SELECT 1 FROM up LIMIT 1) AS one) \
        SELECT cand.seq, CASE WHEN up.seq IS NULL THEN 0::int8 ELSE 1::int8 END FROM cand LEFT JOIN up ON up.seq = cand.seq \
        CROSS JOIN woke",
    purge: "DELETE FROM {j} WHERE seq IN (SELECT seq FROM {j} WHERE state = 'completed' \
        AND finished_at <= {now} - $1 LIMIT $2)",
};

/// Dead jobs requeued per statement by `requeue_dead`.
const REQUEUE_BATCH: i64 = 500;

/// A database the queue runs on.
pub(crate) trait QueueDialect: Dialect {
    const QUEUE: &'static Statements;
    /// How an inbox transaction begins. Deferred on SQLite: SQLite has one writer, and
    /// `BEGIN IMMEDIATE` would hold the write lock (and every enqueue behind it) for the
    /// whole handler; deferred, it takes the lock at the transaction's first write.
    /// Read committed on PostgreSQL, whatever the database's default: the job's lease is
    /// renewed beside the transaction, and under a stricter isolation the completion
    /// would fail on that renewal.
    const BEGIN: &'static str;
    /// How an inbox transaction that lost its snapshot ([`snapshot_lost`](Self::snapshot_lost))
    /// begins again, once, at once; `None` where that cannot happen.
    const BEGIN_AGAIN: Option<&'static str>;
    /// A savepoint an inbox transaction opens after it begins (an empty statement: opened
    /// by [`inbox_begin`](Self::inbox_begin)'s statement) and releases after the
    /// handler, before the completion. The transaction may have ended under the
    /// handler: SQLite rolls a whole transaction back by itself after some failed writes
    /// (`OR ROLLBACK`, a full disk); on PostgreSQL, sqlx rolls the whole transaction
    /// back when a handler that hid a failed statement begins a transaction of its own
    /// (the `SAVEPOINT` fails in the aborted transaction, and sqlx's undo of a failed
    /// begin at depth one is `ROLLBACK`); and a handler may run `ROLLBACK` or `COMMIT`
    /// itself. The completion would then run on its own, outside any transaction, and
    /// commit: the job completed, its effects gone. The savepoint is gone with the
    /// transaction, so its release fails instead.
    const INBOX_SAVEPOINT: Option<(&'static str, &'static str)>;
    /// How a take's transaction begins, where a take may run in one: PostgreSQL's, read
    /// committed whatever the database's default, for an in-order take (after its lock)
    /// and for a take on its own that failed because the default is stricter (under
    /// `repeatable read` or `serializable`, a take that meets a job another take changed
    /// after its snapshot began fails with 40001 instead of skipping it). `None`: one
    /// statement on its own.
    const TAKE_BEGIN: Option<&'static str>;
    /// Whether `error` (or one of its sources) says the transaction read a snapshot that
    /// a write elsewhere made stale, so its own write was refused: SQLite's
    /// `SQLITE_BUSY_SNAPSHOT`, when a deferred transaction that read first writes after
    /// another connection committed, or `SQLITE_BUSY`, when it writes while another
    /// connection holds the write lock. Everything it did rolls back, so it runs again.
    fn snapshot_lost(error: &(dyn std::error::Error + 'static)) -> bool;
    /// Whether `error` (or one of its sources) is a serialization failure or a deadlock
    /// (PostgreSQL's 40001 and 40P01): a database whose default isolation is
    /// `serializable` gives them even to one statement on its own, which then changed
    /// nothing and may run again at once.
    fn serialization_failure(error: &(dyn std::error::Error + 'static)) -> bool;
    /// [`Queue::min_take_timeout`](super::Queue::min_take_timeout).
    const MIN_TAKE_TIMEOUT: Duration;
    /// The statement that begins an inbox transaction `begin` whose handler has
    /// `deadline`: `begin` itself, or, where the database can, `begin` with a bound on
    /// how long any one statement in it may run. A handler stopped at its deadline
    /// mid-statement leaves the statement running on the server (a lock wait, a long
    /// `UPDATE`), and the rollback waits for it, holding the job's slot meanwhile.
    fn inbox_begin(begin: &'static str, deadline: Option<Duration>) -> Cow<'static, str> {
        let _ = deadline;
        Cow::Borrowed(begin)
    }
    /// Readies `conn` (in an inbox transaction) so that a statement a handler cut at its
    /// deadline left running can be stopped ([`interrupt`](Self::interrupt)): the flag
    /// that stops it, where the database leaves such a statement running (SQLite, in the
    /// driver's thread, holding the write lock with the rollback queued behind it).
    /// `None` where [`inbox_begin`](Self::inbox_begin) bounds it already.
    fn arm_interrupt(
        conn: &mut <Self as sqlx::Database>::Connection,
    ) -> impl std::future::Future<Output = Option<Arc<std::sync::atomic::AtomicBool>>> + Send {
        let _ = conn;
        std::future::ready(None)
    }
    /// A flag that, while up, makes `conn` refuse every commit (SQLite:
    /// `veto_commits_while`), held up while the handler runs, and one that goes up when a
    /// commit was refused. `None` where none is needed: PostgreSQL refuses every
    /// statement of a transaction after an error.
    fn arm_commit_gate(
        conn: &mut <Self as sqlx::Database>::Connection,
    ) -> impl std::future::Future<Output = Option<CommitGate>> + Send {
        let _ = conn;
        std::future::ready(None)
    }
    /// Stops the statement left running on `conn` (armed with `flag`), waiting at most
    /// `wait` for it to end: whether the connection is idle (else it is closed rather
    /// than rolled back, which would wait behind the statement).
    fn interrupt(
        conn: &mut <Self as sqlx::Database>::Connection,
        flag: &std::sync::atomic::AtomicBool,
        wait: Duration,
    ) -> impl std::future::Future<Output = bool> + Send {
        let _ = (conn, flag, wait);
        std::future::ready(true)
    }
}

#[cfg(feature = "sqlite")]
impl QueueDialect for sqlx::Sqlite {
    const QUEUE: &'static Statements = &SQLITE;
    const BEGIN: &'static str = "BEGIN";
    /// Holds the write lock from the start, so no write can make its snapshot stale.
    const BEGIN_AGAIN: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const INBOX_SAVEPOINT: Option<(&'static str, &'static str)> = Some((
        "SAVEPOINT stripe_webhooks_inbox",
        "RELEASE stripe_webhooks_inbox",
    ));
    const TAKE_BEGIN: Option<&'static str> = None;
    /// A take waits up to the busy timeout for the write lock.
    const MIN_TAKE_TIMEOUT: Duration =
        crate::idempotency::sql::sqlite::BUSY_TIMEOUT.saturating_add(Duration::from_secs(1));
    /// `SQLITE_BUSY_SNAPSHOT`, and plain `SQLITE_BUSY`: a read transaction that must
    /// become a write transaction while another connection holds the write lock gets it
    /// at once, since SQLite never waits for a lock from inside a transaction.
    fn snapshot_lost(error: &(dyn std::error::Error + 'static)) -> bool {
        /// `SQLITE_BUSY`.
        const BUSY: i32 = 5;
        /// `SQLITE_BUSY_SNAPSHOT`.
        const BUSY_SNAPSHOT: i32 = 517;
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(e) = e.downcast_ref::<sqlx::Error>() {
                if let Some(BUSY | BUSY_SNAPSHOT) = crate::idempotency::sql::sqlite::sqlite_code(e)
                {
                    return true;
                }
            }
            next = e.source();
        }
        false
    }
    fn serialization_failure(_: &(dyn std::error::Error + 'static)) -> bool {
        false
    }
    async fn arm_interrupt(
        conn: &mut sqlx::SqliteConnection,
    ) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let armed = crate::idempotency::sql::sqlite::stop_on_flag(conn, &flag).await;
        armed.ok().map(|()| flag)
    }
    async fn arm_commit_gate(conn: &mut sqlx::SqliteConnection) -> Option<CommitGate> {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let vetoed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let armed = crate::idempotency::sql::sqlite::veto_commits_while(conn, &flag, &vetoed);
        armed.await.ok().map(|()| (flag, vetoed))
    }
    async fn interrupt(
        conn: &mut sqlx::SqliteConnection,
        flag: &std::sync::atomic::AtomicBool,
        wait: Duration,
    ) -> bool {
        crate::idempotency::sql::sqlite::interrupt(conn, flag, wait).await
    }
}

#[cfg(feature = "postgres")]
impl QueueDialect for sqlx::Postgres {
    const QUEUE: &'static Statements = &POSTGRES;
    const BEGIN: &'static str = "BEGIN ISOLATION LEVEL READ COMMITTED";
    const BEGIN_AGAIN: Option<&'static str> = None;
    /// Opened in the begin's own round trip ([`inbox_begin`](QueueDialect::inbox_begin)).
    const INBOX_SAVEPOINT: Option<(&'static str, &'static str)> =
        Some(("", "RELEASE SAVEPOINT stripe_webhooks_inbox"));
    const TAKE_BEGIN: Option<&'static str> = Some(Self::BEGIN);
    const MIN_TAKE_TIMEOUT: Duration = Duration::ZERO;
    /// `begin` and the savepoint ([`INBOX_SAVEPOINT`](QueueDialect::INBOX_SAVEPOINT)),
    /// then the transaction's `statement_timeout` set to the deadline and a second (in
    /// the one round trip of a simple query), unless the session has one of its own: no
    /// statement of the handler outlives the handler by more, so the rollback after a
    /// deadline waits at most a second for the statement it cut. (The second lets the
    /// deadline come first, so the job's error says so rather than the server's
    /// `canceling statement due to statement timeout`.)
    fn inbox_begin(begin: &'static str, deadline: Option<Duration>) -> Cow<'static, str> {
        match deadline {
            Some(d) => Cow::Owned(format!(
                "{begin}; SAVEPOINT stripe_webhooks_inbox; {}",
                crate::idempotency::sql::postgres::statement_timeout_within(d)
            )),
            None => Cow::Owned(format!("{begin}; SAVEPOINT stripe_webhooks_inbox")),
        }
    }
    fn snapshot_lost(_: &(dyn std::error::Error + 'static)) -> bool {
        false
    }
    fn serialization_failure(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            let code = e
                .downcast_ref::<sqlx::Error>()
                .and_then(sqlx::Error::as_database_error)
                .and_then(|d| d.code());
            if code.is_some_and(|c| c == "40001" || c == "40P01") {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// How many times a statement on its own runs after a serialization failure or a
/// deadlock ([`QueueDialect::serialization_failure`]) before the error is the caller's:
/// after waits of 1, 2, 4… ms (127 ms in all), so that the transactions it met end.
const SERIALIZATION_TRIES: u32 = 8;

/// The statements, rendered for one jobs table.
#[derive(Debug)]
struct Rendered {
    /// PostgreSQL's enqueue; SQLite's goes through `sqlite_batch`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    enqueue: String,
    take: String,
    take_in_order: String,
    park: String,
    park_ready: String,
    order_lock: Option<String>,
    extend: String,
    complete: String,
    completed_by: String,
    retry: String,
    bury: String,
    bury_seq: String,
    release: String,
    counts: String,
    list: String,
    list_after: String,
    record: String,
    recent: String,
    requeue: String,
    requeue_dead: String,
    purge: String,
}

impl Rendered {
    fn new(s: &Statements, jobs: &str) -> Self {
        let parked = PARKED.to_string();
        let r = |q: &str| {
            q.replace("{cols}", RECORD_COLUMNS)
                .replace("{parked}", &parked)
                .replace("{now}", s.now)
                .replace("{j}", jobs)
        };
        Self {
            enqueue: r(s.enqueue),
            take: r(&s.take.replace("{order}", "")),
            take_in_order: r(&s.take.replace("{order}", s.in_order)),
            park: r(&s
                .park
                .replace("{order}", s.in_order)
                .replace("{before_bound}", BEFORE_BOUND)),
            park_ready: r(s.park_ready),
            order_lock: s.order_lock.map(r),
            extend: r(s.extend),
            complete: r(s.complete),
            completed_by: r(s.completed_by),
            retry: r(s.retry),
            bury: r(s.bury),
            bury_seq: r(s.bury_seq),
            release: r(s.release),
            counts: r(s.counts),
            list: r(s.list),
            list_after: r(s.list_after),
            record: r(s.record),
            recent: r(s.recent),
            requeue: r(s.requeue),
            requeue_dead: r(s.requeue_dead),
            purge: r(s.purge),
        }
    }
}

/// What the SQLite and PostgreSQL queues share: the pool, the table and every operation.
#[derive(Debug)]
pub(crate) struct SqlQueue<DB: QueueDialect> {
    pub(crate) pool: Pool<DB>,
    pub(crate) jobs: Arc<str>,
    sql: Arc<Rendered>,
    /// A take in per-object order that took at least this long parks the jobs it read
    /// past ([`Statements::park`]).
    park_after: Duration,
    /// Whether the trigger that wakes parked jobs was seen in the database (shared by
    /// the clones): until it is, nothing is parked.
    park_ready: Arc<std::sync::atomic::AtomicBool>,
    _db: PhantomData<fn() -> DB>,
}

impl<DB: QueueDialect> Clone for SqlQueue<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            jobs: Arc::clone(&self.jobs),
            sql: Arc::clone(&self.sql),
            park_after: self.park_after,
            park_ready: Arc::clone(&self.park_ready),
            _db: PhantomData,
        }
    }
}

/// A fenced statement changed no row: the job is no longer the token's.
fn lost(token: &ClaimToken) -> StoreError {
    StoreError::LeaseLost {
        event_id: token.event_id().clone(),
    }
}

fn state_from(s: &str) -> Result<JobState, StoreError> {
    s.parse().map_err(StoreError::unavailable)
}

fn kind_from(s: &str) -> Result<PayloadKind, StoreError> {
    PayloadKind::from_name(s)
        .ok_or_else(|| StoreError::unavailable(format!("unknown job kind {s:?} in the queue")))
}

impl<DB: QueueDialect> SqlQueue<DB>
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// The queue beside the store table `table`: `{table}_jobs`.
    pub(crate) fn new(pool: Pool<DB>, table: &str) -> Self {
        let jobs = format!("{table}_jobs");
        Self {
            pool,
            sql: Arc::new(Rendered::new(DB::QUEUE, &jobs)),
            jobs: Arc::from(jobs),
            park_after: DEFAULT_PARK_AFTER,
            park_ready: Arc::default(),
            _db: PhantomData,
        }
    }

    /// Runs `statement` (one statement, a transaction of its own) again after a
    /// serialization failure or a deadlock, at most [`SERIALIZATION_TRIES`] times in all.
    async fn serialized<T, F, Fut>(statement: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut tries = 1;
        loop {
            match statement().await {
                Err(e) if tries < SERIALIZATION_TRIES && DB::serialization_failure(&e) => {
                    tokio::time::sleep(Duration::from_millis(1 << (tries - 1))).await;
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) async fn enqueue(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError> {
        let row = Self::serialized(|| async {
            sqlx::query(&self.sql.enqueue)
                .bind(job.key.as_str())
                .bind(job.event_id.as_str())
                .bind(job.event_type.as_str())
                .bind(job.kind.as_str())
                .bind(job.object_id.as_deref())
                .bind(job.created)
                .bind(job.body)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)
        })
        .await?;
        Ok(if row.is_some() {
            Enqueued::Queued
        } else {
            Enqueued::Duplicate
        })
    }

    pub(crate) async fn take(
        &self,
        max: usize,
        lease: Duration,
        per_object_order: bool,
    ) -> Result<Vec<Job>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let batch = ClaimToken::new(EventId::new(""), 0);
        let statement = if per_object_order {
            &self.sql.take_in_order
        } else {
            &self.sql.take
        };
        let fence = batch.fence_hex();
        let take = || {
            sqlx::query(statement)
                .bind(fence.as_str())
                // At least a millisecond: a lease that ends as it is taken would let a
                // take that starts a moment later take the job again.
                .bind(millis(lease.max(Duration::from_millis(1))))
                .bind(i64::try_from(max).unwrap_or(i64::MAX))
        };
        let lock = self.sql.order_lock.as_deref().filter(|_| per_object_order);
        // How long the take's statement ran, from after any wait for the order lock.
        let started = std::time::Instant::now();
        let mut took = None;
        // The rows of a take on its own: none yet for one that runs in a transaction.
        let alone = match (lock, DB::TAKE_BEGIN) {
            (Some(_), Some(_)) => None,
            // One statement on its own: read committed (PostgreSQL's default) skips a job
            // another take changed meanwhile; a stricter default fails the statement
            // instead, with nothing changed, and the take runs again in a transaction.
            (_, begin) => match take().fetch_all(&self.pool).await {
                Ok(rows) => Some(rows),
                Err(e) if begin.is_some() && DB::serialization_failure(&e) => None,
                Err(e) => return Err(db_err(e)),
            },
        };
        let rows = match (alone, DB::TAKE_BEGIN) {
            (Some(rows), _) => rows,
            // Only a dialect with a transaction to take in leaves `alone` empty.
            (None, None) => Vec::new(),
            (None, Some(begin)) => {
                // Read committed: each statement reads a fresh snapshot, so the take's
                // starts after the lock is held, and a job changed meanwhile is skipped.
                let mut tx = self.pool.begin_with(begin).await.map_err(db_err)?;
                if let Some(lock) = lock {
                    sqlx::query(lock).execute(&mut *tx).await.map_err(db_err)?;
                }
                let statement = std::time::Instant::now();
                let rows = take().fetch_all(&mut *tx).await.map_err(db_err)?;
                took = Some(statement.elapsed());
                tx.commit().await.map_err(db_err)?;
                rows
            }
        };
        let took = took.unwrap_or_else(|| started.elapsed());
        if per_object_order && took >= self.park_after {
            // The jobs are taken: a park that fails costs the next takes their time only.
            if let Err(e) = self.park(lock).await {
                #[cfg(feature = "tracing")]
                tracing::debug!(error = %e, "could not park the jobs a take read past");
                #[cfg(not(feature = "tracing"))]
                let _ = e;
            }
        }
        let mut jobs = Vec::with_capacity(rows.len());
        let mut unreadable = Vec::new();
        let mut unnamed = Vec::new();
        for row in rows {
            // A row that cannot be read does not cost the batch its other jobs: it is
            // dead (below), by its key or, when that cannot be read, by its `seq` (taken
            // again at each lease's end, it would never run nor die); a row without even
            // a `seq` is left to its lease's end.
            let Ok(seq) = row.try_get::<i64, _>(0) else {
                continue;
            };
            let (Ok(key), Ok(attempts)) = (row.try_get::<String, _>(1), row.try_get::<i64, _>(6))
            else {
                unnamed.push(seq);
                continue;
            };
            let token = batch
                .with_key(EventId::new(key))
                .with_attempt(attempts_from(attempts));
            let read = (|| {
                let event_id: String = row.try_get(2)?;
                let event_type: String = row.try_get(3)?;
                let kind: String = row.try_get(4)?;
                let body: Vec<u8> = row.try_get(5)?;
                let created: i64 = row.try_get(7)?;
                Ok::<_, sqlx::Error>((event_id, event_type, kind, body, created))
            })();
            match read
                .map_err(db_err)
                .and_then(|(id, ty, kind, body, created)| {
                    Ok((id, ty, kind_from(&kind)?, body, created))
                }) {
                Ok((event_id, event_type, kind, body, created)) => jobs.push((
                    seq,
                    Job::new(token, EventId::new(event_id), event_type, kind, body)
                        .with_created(created),
                )),
                Err(e) => unreadable.push((token, e)),
            }
        }
        for (token, e) in unreadable {
            let why = format!("the queued job cannot be read by this version: {e}");
            let _ = self.fail(&token, &why, None).await;
        }
        for seq in unnamed {
            let why = "the queued job cannot be read by this version: its key or attempts";
            // If this fails, the lease's end gives the job back, to be buried then.
            let _ = sqlx::query(&self.sql.bury_seq)
                .bind(seq)
                .bind(batch.fence_hex())
                .bind(why)
                .execute(&self.pool)
                .await;
        }
        // RETURNING gives no order; the oldest first.
        jobs.sort_by_key(|(seq, _)| *seq);
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    /// Parks the held-back jobs a take in per-object order read past
    /// ([`Statements::park`]): after the order `lock`, where the dialect has one.
    async fn park(&self, lock: Option<&str>) -> Result<(), sqlx::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.park_ready.load(Relaxed) {
            let ready = sqlx::query(&self.sql.park_ready)
                .fetch_optional(&self.pool)
                .await?;
            if ready.is_none() {
                return Ok(());
            }
            self.park_ready.store(true, Relaxed);
        }
        let park = sqlx::query(&self.sql.park).bind(PARK_WINDOW);
        match (lock, DB::TAKE_BEGIN) {
            (Some(lock), Some(begin)) => {
                let mut tx = self.pool.begin_with(begin).await?;
                sqlx::query(lock).execute(&mut *tx).await?;
                park.execute(&mut *tx).await?;
                tx.commit().await
            }
            _ => park.execute(&self.pool).await.map(|_| ()),
        }
    }

    /// Runs a fenced statement: one row changes, or the lease is lost.
    async fn fenced<'c, E>(
        &self,
        conn: E,
        statement: &str,
        token: &ClaimToken,
        text: Option<&str>,
        ms: Option<i64>,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let text = text.map(truncate_error);
        let mut q = sqlx::query(statement)
            .bind(token.event_id().as_str())
            .bind(token.fence_hex());
        if let Some(text) = &text {
            q = q.bind(&**text);
        }
        if let Some(ms) = ms {
            q = q.bind(ms);
        }
        let done = q.execute(conn).await.map_err(db_err)?;
        if DB::rows_affected(&done) == 1 {
            Ok(())
        } else {
            Err(lost(token))
        }
    }

    /// [`fenced`](Self::fenced) on the pool, each statement a transaction of its own,
    /// run again after a serialization failure ([`serialized`](Self::serialized)).
    async fn fenced_on_pool(
        &self,
        statement: &str,
        token: &ClaimToken,
        text: Option<&str>,
        ms: Option<i64>,
    ) -> Result<(), StoreError> {
        Self::serialized(|| self.fenced(&self.pool, statement, token, text, ms)).await
    }

    pub(crate) async fn extend(
        &self,
        token: &ClaimToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let lease = millis(lease.max(Duration::from_millis(1)));
        self.fenced_on_pool(&self.sql.extend, token, None, Some(lease))
            .await
    }

    /// Completes the job; a completion this token made already (a retry whose first
    /// answer was lost) answers `Ok` too.
    pub(crate) async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        match self
            .fenced_on_pool(&self.sql.complete, token, None, None)
            .await
        {
            Err(StoreError::LeaseLost { .. }) if self.completed_by(token).await? => Ok(()),
            done => done,
        }
    }

    /// Whether `token`'s fence completed the job.
    async fn completed_by(&self, token: &ClaimToken) -> Result<bool, StoreError> {
        let row = sqlx::query(&self.sql.completed_by)
            .bind(token.event_id().as_str())
            .bind(token.fence_hex())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.is_some())
    }

    /// Completes the job on `conn`: inside an inbox transaction.
    pub(crate) async fn complete_on(
        &self,
        conn: &mut DB::Connection,
        token: &ClaimToken,
    ) -> Result<(), StoreError> {
        self.fenced(conn, &self.sql.complete, token, None, None)
            .await
    }

    pub(crate) async fn fail(
        &self,
        token: &ClaimToken,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        match retry_in {
            Some(delay) => {
                self.fenced_on_pool(&self.sql.retry, token, Some(error), Some(millis(delay)))
                    .await
            }
            None => {
                self.fenced_on_pool(&self.sql.bury, token, Some(error), None)
                    .await
            }
        }
    }

    pub(crate) async fn release(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.fenced_on_pool(&self.sql.release, token, None, None)
            .await
    }

    pub(crate) async fn counts(&self) -> Result<QueueCounts, StoreError> {
        let rows = sqlx::query(&self.sql.counts)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let mut c = [0u64; 5];
        let mut oldest = None;
        for row in rows {
            let state: String = row.try_get(0).map_err(db_err)?;
            let n: i64 = row.try_get(1).map_err(db_err)?;
            let age: Option<i64> = row.try_get(2).map_err(db_err)?;
            let state = state_from(&state)?;
            if let Some(i) = JobState::ALL.iter().position(|s| *s == state) {
                c[i] = u64::try_from(n).unwrap_or(0);
            }
            if state == JobState::Queued {
                oldest = age.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            }
        }
        Ok(QueueCounts::new(c[0], c[1], c[2], c[4], c[3], oldest))
    }

    fn record_from(row: &DB::Row) -> Result<JobRecord, StoreError> {
        // A key or a count that cannot be read (a row written by hand, or by another
        // version) is shown as best it can be, rather than fail the listing of every
        // job beside it.
        let key: String = row
            .try_get::<String, _>(0)
            .or_else(|_| {
                row.try_get::<Vec<u8>, _>(0)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
            .map_err(db_err)?;
        let event_id: String = row.try_get(1).map_err(db_err)?;
        let event_type: String = row.try_get(2).map_err(db_err)?;
        let kind: String = row.try_get(3).map_err(db_err)?;
        let state: String = row.try_get(4).map_err(db_err)?;
        let attempts: i64 = row.try_get(5).unwrap_or(0);
        let last_error: Option<String> = row.try_get(6).map_err(db_err)?;
        let enqueued_at: i64 = row.try_get(7).map_err(db_err)?;
        let run_at: i64 = row.try_get(8).map_err(db_err)?;
        let finished_at: Option<i64> = row.try_get(9).map_err(db_err)?;
        let body: Vec<u8> = row.try_get(10).map_err(db_err)?;
        let state = state_from(&state)?;
        let pending = matches!(
            state,
            JobState::Queued | JobState::Retrying | JobState::Running
        );
        Ok(JobRecord::new(
            EventId::new(key),
            EventId::new(event_id),
            event_type,
            PayloadKind::from_name(&kind).unwrap_or(PayloadKind::Snapshot),
            state,
            attempts_from(attempts),
            last_error,
            enqueued_at,
            pending.then_some(run_at),
            finished_at,
            body,
        )
        .with_kind_name(&kind))
    }

    pub(crate) async fn jobs(
        &self,
        state: JobState,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(&self.sql.list)
            .bind(state.as_str())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(Self::record_from).collect()
    }

    pub(crate) async fn jobs_after(
        &self,
        state: JobState,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(&self.sql.list_after)
            .bind(state.as_str())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(after.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(Self::record_from).collect()
    }

    pub(crate) async fn job(&self, key: &EventId) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(&self.sql.record)
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(Self::record_from).transpose()
    }

    pub(crate) async fn recent(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(&self.sql.recent)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(Self::record_from).collect()
    }

    pub(crate) async fn requeue(&self, key: &EventId) -> Result<bool, StoreError> {
        let rows = sqlx::query(&self.sql.requeue)
            .bind(key.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(!rows.is_empty())
    }

    /// In batches of [`REQUEUE_BATCH`], each one statement, in seq order from where the
    /// last one ended: no statement locks every dead job, and a requeued job that fails
    /// and is buried again meanwhile is not requeued twice by one call. Each statement
    /// answers its candidates (seq, and 1 when requeued), so a batch in which another
    /// operator's requeue took a job first still leads to the next.
    pub(crate) async fn requeue_dead(&self) -> Result<u64, StoreError> {
        let mut total = 0_u64;
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query(&self.sql.requeue_dead)
                .bind(after)
                .bind(REQUEUE_BATCH)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
            for row in &rows {
                after = after.max(row.try_get::<i64, _>(0).map_err(db_err)?);
                let requeued = row.try_get::<i64, _>(1).map_err(db_err)?;
                total = total.saturating_add(u64::from(requeued == 1));
            }
            if rows.len() < REQUEUE_BATCH as usize {
                return Ok(total);
            }
        }
    }

    pub(crate) async fn purge_completed(
        &self,
        older_than: Duration,
        batch: usize,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(&self.sql.purge)
            .bind(millis(older_than))
            .bind(i64::try_from(batch).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(DB::rows_affected(&done))
    }
}

/// Inbox mode: the handler runs inside a transaction on the queue's database, and the
/// job's completion is written in that same transaction.
struct InboxRunner<DB: QueueDialect, H> {
    queue: SqlQueue<DB>,
    handler: H,
}

/// The connection of one inbox attempt. Dropped before the attempt ended (the worker
/// stopped the run: its lease was lost, or its shutdown grace ran out), it raises the
/// flag that stops a statement left running on it (SQLite, in the driver's thread,
/// holding the write lock the job's settlement then waits for) and is closed rather
/// than pooled, since the flag stays up.
/// A connection's commit gate (see `QueueDialect::arm_commit_gate`): closed while up,
/// and whether it refused a commit.
type CommitGate = (
    Arc<std::sync::atomic::AtomicBool>,
    Arc<std::sync::atomic::AtomicBool>,
);

struct AttemptConn<DB: sqlx::Database> {
    conn: sqlx::pool::PoolConnection<DB>,
    flag: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Whether a commit gate was armed on it (SQLite): dropped mid-run, the gate stays
    /// closed (`HandlerRunning`), so the connection must not go back to the pool.
    gated: bool,
    ended: bool,
}

impl<DB: sqlx::Database> Drop for AttemptConn<DB> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Some(flag) = &self.flag {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if self.flag.is_some() || self.gated {
            self.conn.close_on_drop();
        }
    }
}

macro_rules! inbox_runner {
    ($db:ty) => {
        #[async_trait::async_trait]
        impl<H: crate::TransactionalHandler<$db>> Runner for InboxRunner<$db, H> {
            fn handles(&self, event_type: &crate::EventType) -> bool {
                self.handler.handles(event_type)
            }

            fn handles_thin(&self, _: &crate::ThinEventType) -> bool {
                false
            }

            fn unknown_types(&self) -> [Vec<String>; 2] {
                [self.handler.unknown_types(), Vec::new()]
            }

            async fn run(&self, job: &Job, deadline: Option<Duration>) -> Ran {
                if job.kind == PayloadKind::Thin {
                    return Ran::permanent(
                        "an inbox worker has no thin event handler (add one with \
                 Worker::with_thin_handler), then requeue the job"
                            .to_owned(),
                    );
                }
                let event = match crate::Event::from_slice(&job.body) {
                    Ok(e) => e,
                    Err(e) => {
                        return Ran::permanent(format!("the queued body is not an event: {e}"))
                    }
                };
                if let Some(ran) = super::worker::screen_job("handles", || {
                    self.handler.handles(event.event_type())
                }) {
                    return ran;
                }
                // How one attempt ended: with how the job ran, or lost its snapshot and
                // runs once more, begun with this statement.
                enum Step {
                    Done(Ran),
                    Again(&'static str),
                }
                let begun = |e: &dyn std::fmt::Display| Ran::Failed {
                    error: format!("could not begin the inbox transaction: {e}"),
                    permanent: false,
                };
                let mut begin = <$db as QueueDialect>::BEGIN;
                loop {
                    // A transaction that lost its snapshot runs once more, begun so that
                    // it cannot lose it again.
                    let again = <$db as QueueDialect>::BEGIN_AGAIN.filter(|b| *b != begin);
                    let retry = |e: &(dyn std::error::Error + 'static)| match again {
                        Some(b) if <$db as QueueDialect>::snapshot_lost(e) => Some(b),
                        _ => None,
                    };
                    let mut conn = match self.queue.pool.acquire().await {
                        Ok(conn) => AttemptConn {
                            conn,
                            flag: None,
                            gated: false,
                            ended: false,
                        },
                        Err(e) => return begun(&e),
                    };
                    // One attempt, and whether its connection must be closed rather than
                    // given back to the pool: one whose transaction could not be ended
                    // as sqlx expects (SQLite rolled it back by itself, so sqlx's
                    // `ROLLBACK` fails and its count of open transactions stays at one,
                    // and every later `BEGIN` on it would fail).
                    let (step, discard) = async {
                        let statement = <$db as QueueDialect>::inbox_begin(begin, deadline);
                        // A begin of two statements that failed after its `BEGIN` ran leaves
                        // the server in a transaction sqlx does not count (and will not roll
                        // back): that connection is closed too.
                        let compound = statement.as_ref() != begin;
                        let mut tx = match sqlx::Connection::begin_with(&mut *conn.conn, statement).await {
                            Ok(tx) => tx,
                            // Closed only when sqlx still counts a transaction open on it
                            // (a busy database leaves it sound), or may not know of one:
                            // after any compound begin (PostgreSQL's always is: its
                            // savepoint rides along), whose `BEGIN` may have run.
                            Err(e) => {
                                let stuck = compound
                                    || matches!(e, sqlx::Error::InvalidSavePointStatement);
                                return (Step::Done(begun(&e)), stuck);
                            }
                        };
                        let savepoint = <$db as QueueDialect>::INBOX_SAVEPOINT;
                        if let Some((open, _)) = savepoint.filter(|(open, _)| !open.is_empty()) {
                            if let Err(e) = sqlx::Executor::execute(&mut *tx, open).await {
                                let discard = tx.rollback().await.is_err();
                                return (Step::Done(begun(&e)), discard);
                            }
                        }
                        let interrupt = <$db as QueueDialect>::arm_interrupt(&mut *tx).await;
                        conn.flag.clone_from(&interrupt);
                        let gate = <$db as QueueDialect>::arm_commit_gate(&mut *tx).await;
                        conn.gated = gate.is_some();
                        let mut running = gate
                            .as_ref()
                            .map(|(closed, _)| HandlerRunning::new(closed));
                        let mut handled = run_handler(
                            handler_future(|| self.handler.handle(&event, &mut *tx)),
                            deadline,
                        )
                        .await;
                        // A commit refused while the handler ran: the transaction is gone
                        // (SQLite rolled it back, and refused what the handler wrote after),
                        // and sqlx's count of open transactions is wrong: the connection
                        // is closed, and the run fails.
                        let vetoed = gate
                            .as_ref()
                            .is_some_and(|(_, v)| v.load(std::sync::atomic::Ordering::SeqCst));
                        if vetoed {
                            // The gate (this attempt's own) stays closed (`running` is
                            // dropped without `done`): a cut handler's statement may still
                            // run on this connection until it closes.
                            let error = "the handler's transaction was lost while it ran: \
                                the database rolled it back (after a write that failed, \
                                though the handler went on), or the handler ended it \
                                itself; nothing it wrote was kept";
                            let e = crate::HandlerError::new(error);
                            return (Step::Done(Ran::failed(&e)), true);
                        }
                        if handled.is_ok() {
                            if let Some(running) = running.take() {
                                running.done();
                            }
                        }
                        // Whether the handler's transaction ended under it: its connection
                        // is closed, whatever state the handler left it in.
                        let mut lost = false;
                        if let (Ok(()), Some((_, release))) = (&handled, savepoint) {
                            if let Err(e) = sqlx::Executor::execute(&mut *tx, release).await {
                                // PostgreSQL's aborted transaction (25P02) is still there:
                                // rolled back as any failed run's, not lost.
                                let aborted = e
                                    .as_database_error()
                                    .and_then(sqlx::error::DatabaseError::code)
                                    .is_some_and(|c| c == "25P02");
                                lost = !aborted;
                                handled = Err(crate::HandlerError::new(if aborted {
                                    format!(
                                        "the handler returned Ok, but one of its statements had \
                                         failed and aborted the transaction, so its writes were \
                                         rolled back: return the statement's error instead of \
                                         catching it: {e}"
                                    )
                                } else {
                                    format!(
                                    "the handler's transaction ended before its completion: \
                                     rolled back after a statement that failed, though the \
                                     handler returned Ok (by the database, or by sqlx when \
                                     the handler then began a transaction of its own), or \
                                     ended by the handler itself; what it wrote in the \
                                     transaction is gone: {e}"
                                    )
                                }));
                            }
                        }
                        if let Err(e) = handled {
                            // Cut mid-statement, maybe: stop what it left running before
                            // the rollback, which would wait behind it.
                            let cut = matches!(
                                e,
                                crate::HandlerError::DeadlineExceeded(_)
                                    | crate::HandlerError::Panicked(_)
                            );
                            let stuck = match (&interrupt, cut) {
                                (Some(flag), true) => {
                                    let wait = Duration::from_secs(5);
                                    !<$db as QueueDialect>::interrupt(&mut *tx, flag, wait).await
                                }
                                _ => false,
                            };
                            // A statement left running: the gate stays closed on this
                            // connection (its own flag), which is closed. Otherwise the
                            // connection is idle, and goes back to the pool unless the
                            // rollback fails: its gate opens.
                            if !stuck {
                                if let Some(running) = running.take() {
                                    running.done();
                                }
                            }
                            let discard = stuck || lost || tx.rollback().await.is_err();
                            let step = match retry(&e) {
                                Some(b) => Step::Again(b),
                                None => Step::Done(Ran::failed(&e)),
                            };
                            return (step, discard);
                        }
                        match self.queue.complete_on(&mut *tx, &job.token).await {
                            Ok(()) => match tx.commit().await {
                                Ok(()) => (Step::Done(Ran::Completed), false),
                                Err(e) => (
                                    Step::Done(Ran::Failed {
                                        error: format!(
                                            "could not commit the inbox transaction: {e}"
                                        ),
                                        permanent: false,
                                    }),
                                    true,
                                ),
                            },
                            Err(StoreError::LeaseLost { .. }) => {
                                let discard = tx.rollback().await.is_err();
                                (Step::Done(Ran::LeaseLost), discard)
                            }
                            Err(e) => {
                                let discard = tx.rollback().await.is_err();
                                let step = match retry(&e) {
                                    Some(b) => Step::Again(b),
                                    None => Step::Done(Ran::Failed {
                                        error: format!("could not complete the job: {e}"),
                                        permanent: false,
                                    }),
                                };
                                (step, discard)
                            }
                        }
                    }
                    .await;
                    conn.ended = true;
                    if discard {
                        conn.conn.close_on_drop();
                    }
                    match step {
                        Step::Done(ran) => return ran,
                        Step::Again(b) => begin = b,
                    }
                }
            }
        }
    };
}
#[cfg(feature = "sqlite")]
inbox_runner!(sqlx::Sqlite);
#[cfg(feature = "postgres")]
inbox_runner!(sqlx::Postgres);

/// The public queue types: a newtype over [`SqlQueue`] per database, with the traits.
macro_rules! queue_impls {
    ($queue:ident, $db:ty, $pool:ty) => {
        #[async_trait::async_trait]
        impl super::Queue for $queue {
            async fn last_error(&self, key: &EventId) -> Result<Option<String>, StoreError> {
                super::recorded_error(self, key).await
            }
            async fn enqueue(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError> {
                self.enqueue_one(job).await
            }
            async fn take(
                &self,
                max: usize,
                lease: Duration,
                per_object_order: bool,
            ) -> Result<Vec<Job>, StoreError> {
                self.core.take(max, lease, per_object_order).await
            }
            async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
                self.core.extend(token, lease).await
            }
            async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
                self.core.complete(token).await
            }
            async fn fail(
                &self,
                token: &ClaimToken,
                error: &str,
                retry_in: Option<Duration>,
            ) -> Result<(), StoreError> {
                self.core.fail(token, error, retry_in).await
            }
            async fn release(&self, token: &ClaimToken) -> Result<(), StoreError> {
                self.core.release(token).await
            }
            async fn wait_for_jobs(&self, max_wait: Duration) -> bool {
                self.wait(max_wait).await
            }
            fn min_take_timeout(&self) -> Duration {
                <$db as QueueDialect>::MIN_TAKE_TIMEOUT
            }
        }

        #[async_trait::async_trait]
        impl super::QueueAdmin for $queue {
            async fn counts(&self) -> Result<QueueCounts, StoreError> {
                self.core.counts().await
            }
            async fn jobs(
                &self,
                state: JobState,
                limit: usize,
            ) -> Result<Vec<JobRecord>, StoreError> {
                self.core.jobs(state, limit).await
            }
            async fn jobs_after(
                &self,
                state: JobState,
                after: &EventId,
                limit: usize,
            ) -> Result<Vec<JobRecord>, StoreError> {
                self.core.jobs_after(state, after, limit).await
            }
            async fn job(&self, key: &EventId) -> Result<Option<JobRecord>, StoreError> {
                self.core.job(key).await
            }
            async fn recent(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
                self.core.recent(limit).await
            }
            async fn requeue(&self, key: &EventId) -> Result<bool, StoreError> {
                self.core.requeue(key).await
            }
            async fn requeue_dead(&self) -> Result<u64, StoreError> {
                self.core.requeue_dead().await
            }
            async fn purge_completed(
                &self,
                older_than: Duration,
                batch: usize,
            ) -> Result<u64, StoreError> {
                self.core.purge_completed(older_than, batch).await
            }
        }

        impl $queue {
            /// The pool.
            pub fn pool(&self) -> &$pool {
                &self.core.pool
            }

            /// The jobs table's name.
            pub fn table(&self) -> &str {
                &self.core.jobs
            }

            /// How long a take in per-object order may take before it *parks* the jobs it
            /// read past (10 ms by default; `Duration::ZERO`: after every take in order).
            ///
            /// A take in per-object order reads the due jobs in order and passes those
            /// that an earlier pending job of their object holds back. Behind one object
            /// whose job keeps failing, thousands can pile up, and every take would read
            /// them all again (on SQLite, holding the write lock meanwhile). A slow take
            /// therefore parks them: they stay queued (or retrying), listed and counted
            /// as before, but no take reads them until a pending job of their object
            /// completes or dies, when the object's first queued or retrying job gets its
            /// place back (a trigger the store's migration installs; until the trigger is
            /// in the database, nothing is parked). Workers that take without per-object
            /// order do not take parked jobs either: workers sharing a queue should agree
            /// on per-object order.
            #[must_use]
            pub fn with_parking_after(mut self, after: Duration) -> Self {
                self.core.park_after = after;
                self
            }

            /// A [`Worker`] in **inbox mode**: each job's handler runs inside a
            /// transaction on this queue's database, and the job's completion is written in
            /// that same transaction, so the handler's writes and the "done" mark commit
            /// together or not at all. A failed handler rolls its writes back and the job
            /// is retried. Thin jobs need [`Worker::with_thin_handler`] (they run outside
            /// a transaction).
            ///
            /// Each running job holds one of the pool's connections for its whole run, and
            /// lease renewals need one too: keep the worker's concurrency below the pool's
            /// size. On SQLite the transaction takes the database's one write lock at its
            /// first write and keeps it until the commit, holding every other writer back
            /// meanwhile: do the slow work first and the writes last. On PostgreSQL, with
            /// a handler deadline ([`Worker::with_deadline`]), the transaction's
            /// `statement_timeout` is the deadline and a second (unless the session sets
            /// its own), so a statement the deadline cut (a lock wait) ends on the server
            /// too, rather than hold the job's connection and slot until it finishes. On
            /// SQLite such a statement is stopped (`SQLITE_INTERRUPT`) before the
            /// rollback, which would otherwise wait behind it holding the write lock; so is
            /// one left running by a run the worker stops (its lease lost, its shutdown
            /// grace over), whose connection is then closed rather than pooled. (To do so, and
            /// to refuse a commit while a handler runs, the SQLite worker sets SQLite's
            /// progress, commit and rollback hooks on the connections it runs handlers
            /// on, replacing any that a pool's `after_connect` set.)
            pub fn inbox_worker(&self, handler: impl crate::TransactionalHandler<$db>) -> Worker {
                let runner = Arc::new(InboxRunner {
                    queue: self.core.clone(),
                    handler,
                });
                Worker::with_runner(Arc::new(self.clone()), runner, None)
            }
        }
    };
}

/// A [`Queue`](super::Queue) in the SQLite file of a [`SqliteStore`](crate::SqliteStore):
/// the table `{store table}_jobs`, created by the store's `migrate()` (and `connect`), in
/// WAL mode. Take one with [`SqliteStore::queue`](crate::SqliteStore::queue).
///
/// Jobs are taken with one `UPDATE … WHERE seq IN (SELECT … LIMIT n) RETURNING`
/// statement; SQLite runs one writer at a time, so a take is atomic across processes
/// sharing the file. Workers poll (there is no notification in SQLite). Enqueues that
/// arrive together share one multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING`,
/// written by one task per queue (a burst pays for one transaction, not one each).
///
/// ```no_run
/// # async fn f() -> Result<(), stripe_webhooks::StoreError> {
/// use stripe_webhooks::SqliteStore;
///
/// let queue = SqliteStore::connect("stripe-webhooks.db").await?.queue();
/// # Ok(()) }
/// ```
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    pub(crate) core: SqlQueue<sqlx::Sqlite>,
    batcher: super::sqlite_batch::Batcher,
}

#[cfg(feature = "sqlite")]
impl SqliteQueue {
    /// The queue beside the store table `store_table` (`{store_table}_jobs`) on `pool`,
    /// a name the store checked (the public way in is [`SqliteStore::queue`](crate::SqliteStore::queue)).
    pub(crate) fn new(pool: sqlx::SqlitePool, store_table: &str) -> Self {
        let core = SqlQueue::new(pool.clone(), store_table);
        let batcher = super::sqlite_batch::Batcher::new(pool, Arc::clone(&core.jobs));
        Self { core, batcher }
    }

    /// Concurrent enqueues share one statement: see `sqlite_batch`.
    async fn enqueue_one(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError> {
        self.batcher.enqueue(job).await
    }

    async fn wait(&self, _max_wait: Duration) -> bool {
        false
    }
}

#[cfg(feature = "sqlite")]
queue_impls!(SqliteQueue, sqlx::Sqlite, sqlx::SqlitePool);

#[cfg(feature = "sqlite")]
impl crate::SqliteStore {
    /// The queue in this store's database (`{table}_jobs`), for
    /// [`Processor::queued`](crate::Processor::queued) and [`Worker`](super::Worker).
    ///
    /// An acknowledged event survives a process crash. With the pool of
    /// [`connect`](crate::SqliteStore::connect) (`synchronous = NORMAL`) a power cut or an
    /// OS crash can undo the last commits, which Stripe would not deliver again; a pool
    /// from [`connect_options`](crate::SqliteStore::connect_options) with
    /// `.synchronous(SqliteSynchronous::Full)` syncs each batch of acknowledgements.
    pub fn queue(&self) -> SqliteQueue {
        SqliteQueue::new(self.core.pool.clone(), &self.core.table)
    }
}

/// A [`Queue`](super::Queue) in the PostgreSQL database of a
/// [`PostgresStore`](crate::PostgresStore): the table `{store table}_jobs`, created by the
/// store's `migrate()`. Take one with [`PostgresStore::queue`](crate::PostgresStore::queue).
///
/// Workers take jobs with `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other's
/// rows, and are woken by `LISTEN`/`NOTIFY` (the enqueue statement notifies the channel
/// named after the table), polling only as a fallback and for retries that come due.
/// The `LISTEN` connection is the queue's own (made with the pool's options and hooks the
/// first time a worker waits, shared by the clones of this queue), not one of the pool's:
/// count one more server connection for each queue value that workers wait on.
///
/// ```no_run
/// # async fn f() -> Result<(), stripe_webhooks::StoreError> {
/// use stripe_webhooks::PostgresStore;
///
/// let queue = PostgresStore::connect("postgres://app@127.0.0.1/app").await?.queue();
/// # Ok(()) }
/// ```
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[derive(Debug, Clone)]
pub struct PostgresQueue {
    pub(crate) core: SqlQueue<sqlx::Postgres>,
    listener: Arc<tokio::sync::Mutex<Option<Listening>>>,
    /// When the last `LISTEN` connect failed: waits within LISTEN_RETRY_AFTER of it fall
    /// back to polling at once instead of each trying (and waiting) again.
    listen_failed_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How long a worker's wait may take to make the queue's `LISTEN` connection, at least.
#[cfg(feature = "postgres")]
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after a failed `LISTEN` connect the workers poll without trying again.
#[cfg(feature = "postgres")]
const LISTEN_RETRY_AFTER: Duration = Duration::from_secs(30);

/// What the task reading a queue's `LISTEN` connection tells the workers that wait.
#[cfg(feature = "postgres")]
#[derive(Debug, Default)]
struct Wakeups {
    notify: tokio::sync::Notify,
    /// A notification (or a lost connection, which may have lost some) that no waiting
    /// worker has seen yet: one that came while every worker was busy.
    pending: std::sync::atomic::AtomicBool,
    /// Set when the task has stopped (its connection failed and could not be made
    /// again); the next wait connects anew.
    stopped: std::sync::atomic::AtomicBool,
}

/// A queue's `LISTEN` connection, read all the time by a task of its own, not only while
/// a worker waits: a connection nobody reads while the workers are busy with a backlog
/// would leave PostgreSQL's server process blocked sending to it, and hold back the
/// server-wide notification queue for every database (it fills, and then every
/// `NOTIFY`, so every enqueue, fails). The task stops when the last clone of the queue is
/// dropped.
#[cfg(feature = "postgres")]
#[derive(Debug)]
struct Listening {
    wakeups: Arc<Wakeups>,
    task: tokio::task::AbortHandle,
}

#[cfg(feature = "postgres")]
impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads every notification as it comes, waking the workers that wait; a lost
/// connection is made again (sqlx's listener does it, and listens again) and wakes them
/// too, as notifications may have been missed meanwhile.
#[cfg(feature = "postgres")]
async fn read_notifications(mut listener: sqlx::postgres::PgListener, wakeups: Arc<Wakeups>) {
    use std::sync::atomic::Ordering::SeqCst;
    loop {
        let stop = listener.try_recv().await.is_err();
        if stop {
            wakeups.stopped.store(true, SeqCst);
        }
        wakeups.pending.store(true, SeqCst);
        wakeups.notify.notify_waiters();
        if stop {
            return;
        }
    }
}

#[cfg(feature = "postgres")]
impl PostgresQueue {
    /// The queue beside the store table `store_table` (`{store_table}_jobs`) on `pool`,
    /// a name the store checked (the public way in is [`PostgresStore::queue`](crate::PostgresStore::queue)).
    pub(crate) fn new(pool: sqlx::PgPool, store_table: &str) -> Self {
        Self {
            core: SqlQueue::new(pool, store_table),
            listener: Arc::default(),
            listen_failed_at: Arc::default(),
        }
    }

    async fn enqueue_one(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError> {
        self.core.enqueue(job).await
    }

    /// Waits for a `NOTIFY` on the queue's channel, at most `max_wait`; `true` when woken,
    /// when the time is up or when the listening connection died (the caller looks
    /// again, and its next wait connects anew), `false` when no listening connection
    /// could be made (the worker polls). A notification that came while no worker waited
    /// ends the next wait at once.
    async fn wait(&self, max_wait: Duration) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let wakeups = {
            let mut slot = self.listener.lock().await;
            match slot.as_ref() {
                // A task that ended (its connection failed for good, or its runtime shut
                // down under it) is replaced.
                Some(l) if !l.wakeups.stopped.load(SeqCst) && !l.task.is_finished() => {
                    Arc::clone(&l.wakeups)
                }
                _ => {
                    *slot = None;
                    let failed_at = *self
                        .listen_failed_at
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if failed_at.is_some_and(|at| at.elapsed() < LISTEN_RETRY_AFTER) {
                        return false;
                    }
                    let connected = async {
                        // On a pool of its own, of one connection: `PgListener` keeps the
                        // connection it takes for good, and one taken from the queue's pool
                        // would leave the takes, renewals and enqueues one fewer (none, on
                        // a pool of one).
                        // The pool's own options (its `after_connect` and other hooks
                        // included), for one connection.
                        let own = self
                            .core
                            .pool
                            .options()
                            .clone()
                            .min_connections(0)
                            .max_connections(1)
                            .connect_with((*self.core.pool.connect_options()).clone())
                            .await?;
                        let mut l = sqlx::postgres::PgListener::connect_with(&own).await?;
                        l.listen(&self.core.jobs).await?;
                        Ok::<_, sqlx::Error>(l)
                    };
                    // A connection of its own is a cold connect (TCP, TLS, auth): it
                    // gets at least LISTEN_CONNECT_TIMEOUT, however short the poll
                    // interval, or a short one would never let it finish.
                    let connect_for = max_wait.max(LISTEN_CONNECT_TIMEOUT);
                    let note_failed = |failed: Option<std::time::Instant>| {
                        *self
                            .listen_failed_at
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = failed;
                    };
                    let Ok(Ok(listener)) = tokio::time::timeout(connect_for, connected).await
                    else {
                        note_failed(Some(std::time::Instant::now()));
                        return false;
                    };
                    note_failed(None);
                    let wakeups = Arc::new(Wakeups::default());
                    let task = tokio::spawn(read_notifications(listener, Arc::clone(&wakeups)));
                    *slot = Some(Listening {
                        wakeups: Arc::clone(&wakeups),
                        task: task.abort_handle(),
                    });
                    wakeups
                }
            }
        };
        let notified = wakeups.notify.notified();
        tokio::pin!(notified);
        // Registered before `pending` is read, so a notification between the two still
        // wakes this wait.
        notified.as_mut().enable();
        if !wakeups.pending.swap(false, SeqCst) {
            // Woken, or waited the whole time: either way the caller looks again. (The
            // flag is left as it is: another worker's wait may need it.)
            let _ = tokio::time::timeout(max_wait, notified).await;
        }
        // A connection that died (notifications may have been missed) also has the
        // caller look again; its next wait connects anew, and only if that fails does
        // the worker fall back to its poll interval.
        true
    }
}

#[cfg(feature = "postgres")]
queue_impls!(PostgresQueue, sqlx::Postgres, sqlx::PgPool);

#[cfg(feature = "postgres")]
impl crate::PostgresStore {
    /// The queue in this store's database (`{table}_jobs`), for
    /// [`Processor::queued`](crate::Processor::queued) and [`Worker`](super::Worker).
    pub fn queue(&self) -> PostgresQueue {
        PostgresQueue::new(self.core.pool.clone(), &self.core.table)
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    /// PostgreSQL's plans for a take and a purge bound their index scans by the clock
    /// (`Index Cond`), instead of walking every pending or completed row and filtering.
    /// Needs `DATABASE_URL_TEST`, as the other PostgreSQL tests.
    #[tokio::test]
    async fn postgres_take_and_purge_scan_only_what_is_due() {
        let url = std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| {
            panic!("DATABASE_URL_TEST is not set: start the servers with scripts/services.sh")
        });
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let table = format!(
            "plan_{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let store = crate::PostgresStore::new(pool.clone())
            .with_table(&table)
            .unwrap();
        store.migrate().await.unwrap();
        let jobs = format!("{table}_jobs");
        // A backlog the planner sees: many retrying jobs due later, many completed.
        sqlx::query(&format!(
            "INSERT INTO {jobs} (job_key, event_id, event_type, kind, body, state, run_at, \
             enqueued_at, finished_at) \
             SELECT 'k' || g, 'k' || g, 't', 'snapshot', '\\x00', \
             CASE WHEN g % 2 = 0 THEN 'retrying' ELSE 'completed' END, \
             9000000000000, 0, 9000000000000 FROM generate_series(1, 20000) g"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!("ANALYZE {jobs}"))
            .execute(&pool)
            .await
            .unwrap();
        let sql = Rendered::new(&POSTGRES, &jobs);
        // One connection, with sequential scans priced out: the planner cannot know the
        // clock's value, and on a small table it may cost a scan below the index. The
        // check is whether the index can be bounded by the clock at all (an inline
        // `clock_timestamp()` never can).
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .unwrap();
        // The statements' parameters as literals: fence, lease, max; age, batch.
        for (what, statement, params) in [
            ("take", &sql.take, &["'fence'", "1000", "8"][..]),
            (
                "take in order",
                &sql.take_in_order,
                &["'fence'", "1000", "8"],
            ),
            ("purge", &sql.purge, &["1000", "8"]),
        ] {
            let mut literal = statement.clone();
            for (i, p) in params.iter().enumerate().rev() {
                literal = literal.replace(&format!("${}", i + 1), p);
            }
            let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {literal}"))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            let plan = plan.join("\n");
            let bounded = if what == "purge" {
                "Index Cond: (finished_at <= "
            } else {
                "Index Cond: (run_at <= "
            };
            assert!(plan.contains(bounded), "{what}:\n{plan}");
        }
        sqlx::query(&format!(
            "DROP TABLE {jobs}, {table}, {table}_objects, {table}_migrations"
        ))
        .execute(&pool)
        .await
        .ok();
    }
}

#[cfg(test)]
mod parked_tests {
    /// The triggers that wake parked jobs take away the very amount a park adds.
    #[test]
    fn the_migrations_unpark_by_what_a_park_adds() {
        let parked = super::PARKED.to_string();
        for (name, sql) in [
            (
                "sqlite",
                include_str!("../../migrations/sqlite/0007_park_held_back_jobs.sql"),
            ),
            (
                "postgres",
                include_str!("../../migrations/postgres/0005_park_held_back_jobs.sql"),
            ),
        ] {
            assert!(sql.contains(&format!("run_at - {parked}")), "{name}");
            assert!(sql.contains(&format!("run_at >= {parked}")), "{name}");
        }
    }
}
