//! The statements of the SQL stores, one set per dialect.
//!
//! Both stores run the same code (`super::SqlCore`) over these statements, which take
//! their parameters in the same order and return the same column types (`BIGINT` /
//! `INTEGER` as `i64`, times as Unix milliseconds). `{t}` stands for the table name and
//! `{now}` for the dialect's clock in Unix milliseconds; [`render`] fills both in.
//!
//! This file has no dependencies, so `benches/stores` includes it as it is and times the
//! very statements the stores run (hence its `pub` items, reachable there).
// A build with one SQL store uses one dialect.
#![allow(unreachable_pub, dead_code)]

/// One dialect's statements. Parameters, in order:
///
/// | statement | parameters | returns |
/// |---|---|---|
/// | `claim` | event id, event type, fence, lease ms | `attempts` when acquired |
/// | `claim_completed` | event id, event type, fence | `attempts` when acquired |
/// | `state` | event id | status, lease ms left |
/// | `complete` | event id, fence | |
/// | `completed_by` | event id, fence | a row when the record is completed with that fence |
/// | `release` | event id, fence, reason | |
/// | `extend` | event id, fence, lease ms | |
/// | `record_failure` | event id, event type, attempts, fence, reason | |
/// | `record` | event id | the record columns |
/// | `failed` | limit | the record columns |
/// | `failed_after` | limit, event id | the record columns after that event's |
/// | `purge` | retention ms, batch size | |
/// | `abandoned` | ms since the lease ended, batch size | event ids |
/// | `abandon` | ms since the lease ended, error, event id | |
/// | `lock_object` | object id, holder, lease ms | `created`, `event_id` when locked |
/// | `object_lock_left` | object id | lock ms left |
/// | `advance` | object id, created, event id | |
/// | `unlock_object` | object id, holder | |
/// | `watermark` | object id | `created`, `event_id` |
/// | `lock_row` | object id | `created`, `event_id`, ms left on a lease lock, at least 1 while it runs (the row stays locked; PostgreSQL frees a lease lock that ran out, SQLite's inbox does it itself; on SQLite no row when none) |
/// | `lock_and_claim` | object id, holder, lease ms, event id, event type, fence | no row when not locked, else `created`, `event_id`, `attempts` (null when the claim was refused) |
/// | `complete_applied` | event id, fence, object id, holder, created, applied event id | a row when completed; no row, or raises [`LEASE_LOST`], when not |
/// | `lock_and_claim_step` | as `lock_and_claim` | `attempts`, `created`, `event_id`; raises when refused |
/// | `settle_step` | as `complete_applied` | nothing; raises when the lease is lost |
/// | `purge_objects_upto` | after object id, batch size, 1 on the first batch (which includes `after`) | the last object id of the next batch |
/// | `purge_objects` | retention ms, after object id, up to object id, 1 on the first batch | |
#[derive(Debug)]
pub struct Statements {
    /// The dialect's current time in Unix milliseconds, as an SQL expression.
    pub now: &'static str,
    /// Takes a new, failed or expired record: one `INSERT … ON CONFLICT DO UPDATE … WHERE`.
    pub claim: &'static str,
    /// As `claim`, but writes the record completed at once: for inbox mode, inside the
    /// transaction that also holds the handler's writes.
    pub claim_completed: &'static str,
    /// Why a claim was refused: status and the milliseconds left on the lease.
    pub state: &'static str,
    /// Fenced: marks the claim completed.
    pub complete: &'static str,
    /// Whether the claim of this fence completed the record (a completion tried again
    /// after its answer was lost finds it so).
    pub completed_by: &'static str,
    /// Fenced: marks the claim failed, with the reason.
    pub release: &'static str,
    /// Fenced: moves the lease's end.
    pub extend: &'static str,
    /// Records a failure without a live claim (after a transaction that rolled back),
    /// unless another delivery holds a live lease or the event completed.
    pub record_failure: &'static str,
    /// One record.
    pub record: &'static str,
    /// Failed records, oldest first.
    pub failed: &'static str,
    /// Failed records after one event's place (its `first_seen`, then its id) in that
    /// order, whatever its own status.
    pub failed_after: &'static str,
    /// Deletes one batch of completed and failed records past retention.
    pub purge: &'static str,
    /// Claims whose lease ended long ago (abandoned): a read, which takes no write lock
    /// while it walks the table (no index lists the claims in progress).
    pub abandoned: &'static str,
    /// Records one abandoned claim as failed, if it still is one.
    pub abandon: &'static str,
    /// Takes or renews an object's lock when free, expired or the holder's; returns
    /// the watermark when it did. It leaves `updated_at` as it is: the purge keeps an
    /// object while it is locked and for the retention after its lock ran out (its
    /// holder may still complete), so a lock need not write the watermark's time.
    pub lock_object: &'static str,
    /// How long another holder's lock on an object has left.
    pub object_lock_left: &'static str,
    /// Moves an object's watermark forward (never back).
    pub advance: &'static str,
    /// Frees the holder's lock on an object.
    pub unlock_object: &'static str,
    /// An object's watermark.
    pub watermark: &'static str,
    /// Inbox mode: writes the object's row, so it stays locked until the transaction
    /// ends, and reads its watermark and how long a lease lock on it (a guarded route
    /// outside the inbox) has left.
    pub lock_row: &'static str,
    /// Deletes one batch of unlocked objects untouched for the retention.
    pub purge_objects: &'static str,
    /// Where the next batch of `purge_objects` ends: it walks the objects table in key
    /// order, a bounded batch at a time, so the table needs no index on `updated_at`
    /// (whose entry every completion would otherwise move).
    pub purge_objects_upto: &'static str,
    /// Where the dialect can (data-modifying CTEs): the object lock and the claim in
    /// one statement.
    pub lock_and_claim: Option<&'static str>,
    /// Where the dialect can: the completion, the watermark and the unlock in one
    /// statement, answering a row when the claim was completed; nothing changes unless
    /// the object's lock still names the holder and the claim is still the fence's (no
    /// row when the lock is not the holder's; raises [`LEASE_LOST`] when it is but the
    /// claim is gone).
    pub complete_applied: Option<&'static str>,
    /// Where the dialect has no data-modifying CTEs (SQLite): `lock_and_claim` as one
    /// `INSERT` into a view whose trigger locks and claims, raising
    /// [`OBJECT_BUSY`] or [`CLAIM_REFUSED`] (which undoes the statement), followed in
    /// the same query (one round trip) by a read of what it took: the claim's attempts
    /// and the object's watermark.
    pub lock_and_claim_step: Option<&'static str>,
    /// Likewise `complete_applied`, raising [`LEASE_LOST`] when the fence does not match
    /// or the lock names another holder.
    pub settle_step: Option<&'static str>,
}

/// What `lock_and_claim_step` raises when another holder has the object.
pub const OBJECT_BUSY: &str = "stripe_webhooks: object busy";
/// What `lock_and_claim_step` raises when the claim is refused (the lock is undone).
pub const CLAIM_REFUSED: &str = "stripe_webhooks: claim refused";
/// What `settle_step` raises when the claim is no longer the fence's or the lock the
/// holder's, and what PostgreSQL's `complete_applied` puts in its error when the claim
/// is gone.
pub const LEASE_LOST: &str = "stripe_webhooks: lease lost";

/// SQLite: `?N` parameters, times from SQLite's own clock.
pub const SQLITE: Statements = Statements {
    now: "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    claim: "INSERT INTO {t} (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at) \
        VALUES (?1, ?2, 'processing', 1, ?3, {now} + ?4, {now}, {now}) \
        ON CONFLICT (event_id) DO UPDATE SET status = 'processing', attempts = {t}.attempts + 1, \
        fence = excluded.fence, lease_until = excluded.lease_until, updated_at = excluded.updated_at \
        WHERE {t}.status = 'failed' OR ({t}.status = 'processing' AND {t}.lease_until <= excluded.updated_at) \
        RETURNING attempts",
    claim_completed: "INSERT INTO {t} (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at, completed_at) \
        VALUES (?1, ?2, 'completed', 1, ?3, NULL, {now}, {now}, {now}) \
        ON CONFLICT (event_id) DO UPDATE SET status = 'completed', attempts = {t}.attempts + 1, \
        fence = excluded.fence, lease_until = NULL, updated_at = excluded.updated_at, \
        completed_at = excluded.completed_at \
        WHERE {t}.status = 'failed' OR ({t}.status = 'processing' AND {t}.lease_until <= excluded.updated_at) \
        RETURNING attempts",
    state: "SELECT status, lease_until - {now} FROM {t} WHERE event_id = ?1",
    complete: "UPDATE {t} SET status = 'completed', completed_at = {now}, lease_until = NULL, updated_at = {now} \
        WHERE event_id = ?1 AND fence = ?2 AND status = 'processing'",
    completed_by: "SELECT 1 FROM {t} WHERE event_id = ?1 AND fence = ?2 AND status = 'completed'",
    release: "UPDATE {t} SET status = 'failed', last_error = ?3, lease_until = NULL, updated_at = {now} \
        WHERE event_id = ?1 AND fence = ?2 AND status = 'processing'",
    extend: "UPDATE {t} SET lease_until = {now} + ?3, updated_at = {now} \
        WHERE event_id = ?1 AND fence = ?2 AND status = 'processing'",
    record_failure: "INSERT INTO {t} (event_id, event_type, status, attempts, fence, lease_until, last_error, first_seen, updated_at) \
        VALUES (?1, ?2, 'failed', ?3, ?4, NULL, ?5, {now}, {now}) \
        ON CONFLICT (event_id) DO UPDATE SET status = 'failed', attempts = excluded.attempts, \
        fence = excluded.fence, lease_until = NULL, last_error = excluded.last_error, updated_at = excluded.updated_at \
        WHERE {t}.status = 'failed' OR ({t}.status = 'processing' AND {t}.lease_until <= excluded.updated_at)",
    record: "SELECT event_id, event_type, status, attempts, last_error, first_seen, completed_at \
        FROM {t} WHERE event_id = ?1",
    failed: "SELECT event_id, event_type, status, attempts, last_error, first_seen, completed_at \
        FROM {t} WHERE status = 'failed' ORDER BY first_seen, event_id LIMIT ?1",
    failed_after: "SELECT event_id, event_type, status, attempts, last_error, first_seen, completed_at \
        FROM {t} WHERE status = 'failed' \
        AND (first_seen, event_id) > (SELECT first_seen, event_id FROM {t} WHERE event_id = ?2) \
        ORDER BY first_seen, event_id LIMIT ?1",
    purge: "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE status <> 'processing' \
        AND updated_at < {now} - ?1 LIMIT ?2)",
    abandoned: "SELECT event_id FROM {t} WHERE status = 'processing' AND lease_until < {now} - ?1 LIMIT ?2",
    abandon: "UPDATE {t} SET status = 'failed', last_error = ?2, lease_until = NULL, updated_at = {now} \
        WHERE event_id = ?3 AND status = 'processing' AND lease_until < {now} - ?1",
    lock_object: "INSERT INTO {t}_objects AS o (object_id, holder, lock_until, updated_at) \
        VALUES (?1, ?2, {now} + ?3, {now}) \
        ON CONFLICT (object_id) DO UPDATE SET holder = excluded.holder, lock_until = excluded.lock_until \
        WHERE o.holder IS NULL OR o.holder = excluded.holder OR o.lock_until <= excluded.updated_at \
        RETURNING created, event_id",
    object_lock_left: "SELECT lock_until - {now} FROM {t}_objects WHERE object_id = ?1",
    advance: "INSERT INTO {t}_objects AS o (object_id, created, event_id, updated_at) VALUES (?1, ?2, ?3, {now}) \
        ON CONFLICT (object_id) DO UPDATE SET created = excluded.created, event_id = excluded.event_id, \
        updated_at = excluded.updated_at WHERE o.created IS NULL OR o.created <= excluded.created",
    unlock_object: "UPDATE {t}_objects SET holder = NULL, lock_until = NULL WHERE object_id = ?1 AND holder = ?2",
    watermark: "SELECT created, event_id FROM {t}_objects WHERE object_id = ?1",
    // A read: the inbox's transaction holds the database's write lock already, so no
    // other writer can touch the row before it ends.
    lock_row: "SELECT created, event_id, CASE WHEN holder IS NOT NULL THEN lock_until - {now} END \
        FROM {t}_objects WHERE object_id = ?1",
    purge_objects: "DELETE FROM {t}_objects WHERE object_id >= ?2 AND object_id <= ?3 \
        AND (object_id > ?2 OR ?4 = 1) \
        AND (holder IS NULL OR lock_until < {now} - ?1) AND updated_at < {now} - ?1 \
        AND substr(object_id, 1, 10) <> 'reconcile:'",
    purge_objects_upto: "SELECT max(object_id) FROM (SELECT object_id FROM {t}_objects \
        WHERE object_id >= ?1 AND (object_id > ?1 OR ?3 = 1) ORDER BY object_id LIMIT ?2)",
    lock_and_claim: None,
    complete_applied: None,
    // The views and their triggers: migrations/sqlite/0004_guard_steps.sql (the settle
    // trigger as of 0006_settle_updates_the_object_first.sql). Both statements take the
    // same arguments, by number: keep every parameter `?N` (sqlx fills an unnumbered `?`
    // by position, per statement).
    lock_and_claim_step: Some("INSERT INTO {t}_lock_claim (object_id, holder, lease_ms, event_id, event_type, fence) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6); \
        SELECT c.attempts, o.created, o.event_id FROM {t} c, {t}_objects o \
        WHERE c.event_id = ?4 AND c.fence = ?6 AND o.object_id = ?1"),
    settle_step: Some("INSERT INTO {t}_settle (event_id, fence, object_id, holder, created, applied_event) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
};

/// PostgreSQL: `$N` parameters, times from the server's `now()` (the transaction's
/// start) and `clock_timestamp()`.
pub const POSTGRES: Statements = Statements {
    now: "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
    claim: "INSERT INTO {t} AS e (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at) \
        VALUES ($1, $2, 'processing', 1, $3, now() + $4::bigint * interval '1 millisecond', now(), now()) \
        ON CONFLICT (event_id) DO UPDATE SET status = 'processing', attempts = e.attempts + 1, \
        fence = EXCLUDED.fence, lease_until = EXCLUDED.lease_until, updated_at = now() \
        WHERE e.status = 'failed' OR (e.status = 'processing' AND e.lease_until <= now()) \
        RETURNING attempts::bigint",
    claim_completed: "INSERT INTO {t} AS e (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at, completed_at) \
        VALUES ($1, $2, 'completed', 1, $3, NULL, now(), now(), now()) \
        ON CONFLICT (event_id) DO UPDATE SET status = 'completed', attempts = e.attempts + 1, \
        fence = EXCLUDED.fence, lease_until = NULL, updated_at = now(), completed_at = now() \
        WHERE e.status = 'failed' OR (e.status = 'processing' AND e.lease_until <= now()) \
        RETURNING attempts::bigint",
    state: "SELECT status, (extract(epoch FROM (lease_until - clock_timestamp())) * 1000)::bigint \
        FROM {t} WHERE event_id = $1",
    complete: "UPDATE {t} SET status = 'completed', completed_at = now(), lease_until = NULL, updated_at = now() \
        WHERE event_id = $1 AND fence = $2 AND status = 'processing'",
    completed_by: "SELECT 1::bigint FROM {t} WHERE event_id = $1 AND fence = $2 AND status = 'completed'",
    release: "UPDATE {t} SET status = 'failed', last_error = $3, lease_until = NULL, updated_at = now() \
        WHERE event_id = $1 AND fence = $2 AND status = 'processing'",
    extend: "UPDATE {t} SET lease_until = now() + $3::bigint * interval '1 millisecond', updated_at = now() \
        WHERE event_id = $1 AND fence = $2 AND status = 'processing'",
    record_failure: "INSERT INTO {t} AS e (event_id, event_type, status, attempts, fence, lease_until, last_error, first_seen, updated_at) \
        VALUES ($1, $2, 'failed', $3::bigint, $4, NULL, $5, now(), now()) \
        ON CONFLICT (event_id) DO UPDATE SET status = 'failed', attempts = EXCLUDED.attempts, \
        fence = EXCLUDED.fence, lease_until = NULL, last_error = EXCLUDED.last_error, updated_at = now() \
        WHERE e.status = 'failed' OR (e.status = 'processing' AND e.lease_until <= now())",
    record: "SELECT event_id, event_type, status, attempts::bigint, last_error, \
        (extract(epoch FROM first_seen) * 1000)::bigint, (extract(epoch FROM completed_at) * 1000)::bigint \
        FROM {t} WHERE event_id = $1",
    failed: "SELECT event_id, event_type, status, attempts::bigint, last_error, \
        (extract(epoch FROM first_seen) * 1000)::bigint, (extract(epoch FROM completed_at) * 1000)::bigint \
        FROM {t} WHERE status = 'failed' ORDER BY first_seen, event_id LIMIT $1",
    failed_after: "SELECT event_id, event_type, status, attempts::bigint, last_error, \
        (extract(epoch FROM first_seen) * 1000)::bigint, (extract(epoch FROM completed_at) * 1000)::bigint \
        FROM {t} WHERE status = 'failed' \
        AND (first_seen, event_id) > (SELECT first_seen, event_id FROM {t} WHERE event_id = $2) \
        ORDER BY first_seen, event_id LIMIT $1",
    purge: "DELETE FROM {t} WHERE event_id IN (SELECT event_id FROM {t} WHERE status <> 'processing' \
        AND updated_at < now() - $1::bigint * interval '1 millisecond' LIMIT $2 FOR UPDATE SKIP LOCKED)",
    abandoned: "SELECT event_id FROM {t} WHERE status = 'processing' \
        AND lease_until < now() - $1::bigint * interval '1 millisecond' LIMIT $2",
    abandon: "UPDATE {t} SET status = 'failed', last_error = $2, lease_until = NULL, updated_at = now() \
        WHERE event_id = $3 AND status = 'processing' AND lease_until < now() - $1::bigint * interval '1 millisecond'",
    lock_object: "INSERT INTO {t}_objects AS o (object_id, holder, lock_until, updated_at) \
        VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond', clock_timestamp()) \
        ON CONFLICT (object_id) DO UPDATE SET holder = EXCLUDED.holder, lock_until = EXCLUDED.lock_until \
        WHERE o.holder IS NULL OR o.holder = EXCLUDED.holder OR o.lock_until <= EXCLUDED.updated_at \
        RETURNING created, event_id",
    object_lock_left: "SELECT (extract(epoch FROM (lock_until - clock_timestamp())) * 1000)::bigint \
        FROM {t}_objects WHERE object_id = $1",
    advance: "INSERT INTO {t}_objects AS o (object_id, created, event_id, updated_at) VALUES ($1, $2, $3, now()) \
        ON CONFLICT (object_id) DO UPDATE SET created = EXCLUDED.created, event_id = EXCLUDED.event_id, \
        updated_at = now() WHERE o.created IS NULL OR o.created <= EXCLUDED.created",
    unlock_object: "UPDATE {t}_objects SET holder = NULL, lock_until = NULL WHERE object_id = $1 AND holder = $2",
    watermark: "SELECT created, event_id FROM {t}_objects WHERE object_id = $1",
    // A lease lock that ran out is taken over (freed), so that its holder, which may
    // apply an older event late, cannot complete; one still running answers at least
    // 1 ms left. Both columns are judged at one time, the transaction's start (`now()`,
    // a little early: a lock is kept, never freed, by the difference).
    lock_row: "INSERT INTO {t}_objects AS o (object_id, updated_at) VALUES ($1, now()) \
        ON CONFLICT (object_id) DO UPDATE SET updated_at = now(), \
        holder = CASE WHEN o.lock_until > now() THEN o.holder END, \
        lock_until = CASE WHEN o.lock_until > now() THEN o.lock_until END \
        RETURNING created, event_id, CASE WHEN holder IS NOT NULL THEN \
        greatest(1, (extract(epoch FROM (lock_until - clock_timestamp())) * 1000)::bigint) END",
    purge_objects: "DELETE FROM {t}_objects WHERE object_id IN (SELECT object_id FROM {t}_objects \
        WHERE object_id >= $2 AND object_id <= $3 AND (object_id > $2 OR $4::bigint = 1) \
        AND (holder IS NULL OR lock_until < now() - $1::bigint * interval '1 millisecond') \
        AND updated_at < now() - $1::bigint * interval '1 millisecond' \
        AND substr(object_id, 1, 10) <> 'reconcile:' FOR UPDATE SKIP LOCKED)",
    purge_objects_upto: "SELECT max(object_id) FROM (SELECT object_id FROM {t}_objects \
        WHERE object_id >= $1 AND (object_id > $1 OR $3::bigint = 1) ORDER BY object_id LIMIT $2) AS batch",
    lock_and_claim: Some("WITH lock AS (\
        INSERT INTO {t}_objects AS o (object_id, holder, lock_until, updated_at) \
        VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond', clock_timestamp()) \
        ON CONFLICT (object_id) DO UPDATE SET holder = EXCLUDED.holder, lock_until = EXCLUDED.lock_until \
        WHERE o.holder IS NULL OR o.holder = EXCLUDED.holder OR o.lock_until <= EXCLUDED.updated_at \
        RETURNING created, event_id), \
        claim AS (\
        INSERT INTO {t} AS e (event_id, event_type, status, attempts, fence, lease_until, first_seen, updated_at) \
        SELECT $4, $5, 'processing', 1, $6, now() + $3::bigint * interval '1 millisecond', now(), now() \
        FROM lock \
        ON CONFLICT (event_id) DO UPDATE SET status = 'processing', attempts = e.attempts + 1, \
        fence = EXCLUDED.fence, lease_until = EXCLUDED.lease_until, updated_at = now() \
        WHERE e.status = 'failed' OR (e.status = 'processing' AND e.lease_until <= now()) \
        RETURNING attempts::bigint) \
        SELECT lock.created, lock.event_id, claim.attempts FROM lock LEFT JOIN claim ON true"),
    // The object's row first, fenced by its holder: the update waits for any statement
    // writing that row and judges the holder on the row as it is after it, so a takeover
    // of a lapsed lock makes it (and so the completion) do nothing. The claim completes
    // only when that update took. When the update took but the claim did not complete
    // (it was released or marked failed meanwhile), the last line's cast fails on
    // purpose, raising LEASE_LOST: the whole statement is undone, so the watermark and
    // the lock are as they were. (`coalesce` evaluates the cast only then, and it casts
    // a value read from `obj`, which the planner cannot fold into a constant and raise
    // on every execution.) The statement before, which read the row `FOR NO KEY UPDATE`
    // first and wrote it by an upsert after the claim, cost the server 37 k more
    // instructions an event: benches/README.md.
    complete_applied: Some("WITH obj AS (\
        UPDATE {t}_objects AS o SET \
        created = CASE WHEN o.created IS NULL OR o.created <= $5 THEN $5 ELSE o.created END, \
        event_id = CASE WHEN o.created IS NULL OR o.created <= $5 THEN $6 ELSE o.event_id END, \
        holder = NULL, lock_until = NULL, updated_at = now() \
        WHERE o.object_id = $3 AND o.holder = $4 RETURNING 1 AS one), \
        done AS (\
        UPDATE {t} SET status = 'completed', completed_at = now(), lease_until = NULL, updated_at = now() \
        WHERE event_id = $1 AND fence = $2 AND status = 'processing' AND EXISTS (SELECT 1 FROM obj) RETURNING 1) \
        SELECT coalesce((SELECT 1::bigint FROM done), ('stripe_webhooks: lease lost ' || one)::bigint) FROM obj"),
    lock_and_claim_step: None,
    settle_step: None,
};

/// A statement with the table name and the dialect's clock filled in. `table` must be
/// validated first (the stores allow only letters, digits and underscores).
pub fn render(sql: &str, dialect: &Statements, table: &str) -> String {
    sql.replace("{now}", dialect.now).replace("{t}", table)
}
