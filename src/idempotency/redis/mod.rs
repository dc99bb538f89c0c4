//! The Redis store (feature `redis`).

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;

use super::{
    truncate_error, validate_name, Claim, ClaimToken, EventRecord, IdempotencyStore, LockedClaim,
    ObjectLock, OrderingStore, RecordStatus, StoreAdmin, StoreError, Watermark, DEFAULT_RETENTION,
};
use crate::event::{EventId, EventType};

/// The key prefix a [`RedisStore`] uses unless told otherwise.
const DEFAULT_PREFIX: &str = "stripe_webhooks";

/// The longest lease or retention passed to Redis, in milliseconds (about 31,700 years):
/// every sum the scripts make stays far below 2^63 (what `PEXPIRE` takes and `%d`
/// writes). Past 2^53 a Lua number rounds, by up to 128 ms on these sums, which only
/// leases of thousands of years reach.
pub(crate) const MAX_MS: u64 = 1_000_000_000_000_000;

/// How many failed-set members one `purge_expired` script looks at.
const PURGE_BATCH: i64 = 1000;

/// The fields [`RedisStore::record`](StoreAdmin::record) and `failed_events` read,
/// in this order.
const RECORD_FIELDS: usize = 6;

/// Every script starts by reading the server's clock, in Unix milliseconds: leases are
/// judged by Redis, never by the application's clock. `fmt` writes an integer without
/// Lua's `%.14g` rounding.
pub(crate) const PRELUDE: &str = include_str!("prelude.lua");

/// KEYS: event hash, failed set. ARGV: event id, event type, lease ms, fence hex,
/// retention ms. Returns `{0, 0}` completed, `{1, ms left}` in progress, `{2, attempt}`
/// acquired.
const CLAIM: &str = include_str!("claim.lua");

/// Reads the record's `status` and `fence` (as `h`) for the scripts of `complete`,
/// `release` and `extend`. KEYS: event hash, failed set. ARGV: event id, fence hex,
/// retention ms, then each script's own.
const FENCE_READ: &str = include_str!("fence_read.lua");

/// After `FENCE_READ`, the check those scripts share: the record is processing and holds
/// the token's fence, else nothing changes and the script answers 0.
const FENCED: &str = include_str!("fenced.lua");

/// Marks the fenced claim completed (the caller's script returns).
const COMPLETE_BODY: &str = include_str!("complete_body.lua");

/// Between `FENCE_READ` and `FENCED` in the completion scripts: a record already
/// completed with this fence (a completion tried again after its answer was lost)
/// answers 1, done.
const COMPLETED_BY: &str = include_str!("completed_by.lua");

/// After `COMPLETE_BODY`: KEYS[3] the object hash; ARGV[4] holder, ARGV[5] created,
/// ARGV[6] event id. Moves the watermark forward (never back) and frees the holder's lock.
const APPLY: &str = include_str!("apply.lua");
/// The object lock's check before a guarded completion (KEYS[3], ARGV[4]: the holder).
const HELD: &str = include_str!("held.lua");

/// KEYS: object hash. ARGV: holder, lease ms, retention ms. Returns `{'ok', created,
/// event id}` (empty strings: no watermark yet) or `{'busy', ms left, ''}`.
const LOCK_OBJECT: &str = include_str!("lock_object.lua");

/// `lock_and_claim`: KEYS event hash, failed set, object hash; ARGV as `CLAIM`'s, then
/// ARGV[6] the holder. The object's lock is checked first and taken only after the claim
/// (`CLAIM`, run as a function between the two parts), so a busy object or a refused
/// claim changes nothing (an expired lock stays its holder's). Returns `{3, ms left,
/// '', ''}` busy, `CLAIM`'s `{0 | 1, n}` refused (with two empty strings), or
/// `{2, attempt, created, event id}`.
const LOCK_AND_CLAIM_HEAD: &str = include_str!("lock_and_claim_head.lua");
const LOCK_AND_CLAIM_TAIL: &str = include_str!("lock_and_claim_tail.lua");

/// KEYS: object hash. ARGV: holder.
const UNLOCK_OBJECT: &str = include_str!("unlock_object.lua");

/// KEYS: object hash. ARGV: created, event id, retention ms. Moves the watermark
/// forward (never back), outside any claim.
const ADVANCE: &str = include_str!("advance.lua");

/// KEYS: object hash. Returns `{created, event id}` (empty strings: none).
const WATERMARK: &str = include_str!("watermark.lua");

/// ARGV[4]: the reason, already cut to `MAX_ERROR_LEN`.
const RELEASE: &str = include_str!("release.lua");

/// ARGV[4]: the new lease in ms.
const EXTEND: &str = include_str!("extend.lua");

/// KEYS: event hash.
const RECORD: &str = include_str!("record.lua");

/// KEYS: failed set. ARGV: event key prefix, limit, start, and optionally an event id to
/// start just after instead (`FAILED_PLACE`). Returns whether it stopped early (`'1'`: it
/// looked at its budget of members), where it started (`''` when the event is neither in
/// the set nor has a record), then, oldest first from there, up to `limit` failed
/// records as `id` and the six `RECORD` fields each; drops from the set the ids whose
/// record is gone (expired) or no longer failed.
const FAILED_EVENTS: &str = include_str!("failed_events.lua");

/// `failed_place(set, prefix, id)`: how many members of the failed set come up to and
/// including that event's place (its rank while it is in the set, even with its record
/// expired and not yet purged from it), or nil when it is neither in the set nor has a
/// record.
const FAILED_PLACE: &str = include_str!("failed_place.lua");

/// KEYS: failed set. ARGV: event key prefix, start, count. Drops the ids in
/// `[start, start + count)` whose record is gone or no longer failed; returns
/// `{dropped, looked at}`.
const PURGE: &str = include_str!("purge.lua");

/// KEYS: failed set. ARGV: ms since the lease ended, error, retention ms, event key
/// prefix, then event keys (from `SCAN`). Records those still processing whose lease
/// ended before that as failed; returns how many.
const ABANDON: &str = include_str!("abandon.lua");

fn script(parts: &[&str]) -> Script {
    Script::new(&parts.concat())
}

static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, CLAIM]));
static COMPLETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        PRELUDE,
        FENCE_READ,
        COMPLETED_BY,
        FENCED,
        COMPLETE_BODY,
        "return 1\n",
    ])
});
static COMPLETE_APPLIED_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        PRELUDE,
        FENCE_READ,
        COMPLETED_BY,
        FENCED,
        HELD,
        COMPLETE_BODY,
        APPLY,
    ])
});
static LOCK_OBJECT_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LOCK_OBJECT]));
static LOCK_AND_CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        PRELUDE,
        LOCK_AND_CLAIM_HEAD,
        CLAIM,
        "end\n",
        LOCK_AND_CLAIM_TAIL,
    ])
});
static UNLOCK_OBJECT_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[UNLOCK_OBJECT]));
static WATERMARK_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[WATERMARK]));
static ADVANCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, ADVANCE]));
static RELEASE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[PRELUDE, FENCE_READ, FENCED, RELEASE]));
static EXTEND_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[PRELUDE, FENCE_READ, FENCED, EXTEND]));
static RECORD_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[RECORD]));
static FAILED_EVENTS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[FAILED_PLACE, FAILED_EVENTS]));
static PURGE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PURGE]));
static ABANDON_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, ABANDON]));

/// An [`IdempotencyStore`] in Redis (feature `redis`): for several replicas sharing one
/// Redis server.
///
/// Each event is one hash at `{prefix}:evt:{event_id}` with the fields `status`, `type`,
/// `attempts`, `fence`, `lease_until_ms`, `last_error`, `first_seen_ms` and
/// `completed_at_ms`; failed events are also listed in the sorted set `{prefix}:failed`,
/// scored by `first_seen_ms`. The event id is always the end of the key, so no id can
/// reach another key. Every operation on a record is one Lua script (sent with `EVALSHA`,
/// loaded on first use; only the purge's search for abandoned claims also sends `SCAN`),
/// so a claim is atomic, and leases are judged by the Redis server's clock
/// (`TIME`), never the application's.
///
/// Redis expires records itself: a completed or failed record lives for the retention
/// ([`with_retention`](Self::with_retention), [`DEFAULT_RETENTION`] by default) after it
/// was completed or released, and a processing record for its lease plus the retention,
/// so it never vanishes while its lease is live.
/// [`purge_expired`](crate::StoreAdmin::purge_expired) first records claims abandoned
/// over [`ABANDONED_AFTER`](crate::ABANDONED_AFTER) as failed (a `SCAN` of the store's
/// event keys; not those of ids holding a `:`, which Stripe's never do, since such a key
/// may be another store's under a longer prefix: their records expire unlisted), then drops the ids of expired records from `{prefix}:failed`
/// ([`failed_events`](crate::StoreAdmin::failed_events) drops those it meets too); run
/// it now and then, for example daily, so that set does not grow.
///
/// Needs Redis 5 or later (scripts that read `TIME` and then write rely on script
/// effects replication, the default since 5).
///
/// # Server settings
///
/// A completed record is what stops an event from running twice, so Redis must not lose
/// it:
///
/// - `maxmemory-policy noeviction`. Every record has a TTL, so a `volatile-*` policy may
///   evict completed records under memory pressure, and an `allkeys-*` policy may evict
///   anything. With `noeviction` a full Redis refuses a script whose first write could
///   grow memory: claims fail with [`StoreError::Unavailable`], write nothing, and
///   Stripe retries later; so do releases of failed handlers (the claim is left to its
///   lease) and lease renewals (a handler whose renewals fail until nine tenths of its
///   lease is stopped). The completions of handlers that already ran are still written
///   (their scripts begin with a write a full Redis lets through), so those events do
///   not run again. Alert on memory well before `maxmemory`.
/// - Persistence: `appendonly yes`. With `appendfsync everysec` a crash of the host (not
///   of the Redis process alone, whose writes the kernel already holds) loses up to about
///   two seconds of claims and completions; `appendfsync always` loses
///   none, at a cost in latency. RDB snapshots alone lose everything since the last one.
/// - Failover: replication is asynchronous. A completion written just before the
///   primary fails may be missing on the promoted replica, so that event may run again;
///   a claim lost the same way lets a second delivery run the event while the first is
///   still running. Handlers should stay safe to run twice (most of Stripe's own objects
///   carry ids to deduplicate on).
/// - Connection: a `ConnectionManager` reconnects to the address it was opened with. It
///   does not follow a Sentinel failover to a primary at another address: every call
///   then fails (`READONLY`: 503, and Stripe retries; nothing is lost) until the process
///   reconnects there. Give it an address that always reaches the primary (a managed
///   service's primary endpoint, or a proxy). A connection that died silently (an idle
///   timeout in a NAT or load balancer) is kept until the operating system gives up on
///   it: calls fail at the store timeout meanwhile; TCP keepalives shorten that.
/// - Whatever loses data (a restart without persistence, `FLUSHALL`, eviction, a
///   failover's lost writes) loses the ordering guard's watermarks and the reconciler's
///   cursors too: a late retry of an older event is then applied as the object's first,
///   over the newer one already applied, and a reconciler starts again from its
///   lookback. After such a loss, resync the objects the guard keeps from Stripe.
/// - Clock: leases end by the Redis host's clock (`TIME`). A step forward of that
///   clock, or a failover to a host whose clock is ahead, by more than a tenth of a
///   lease can end a lease that the handler's process still holds, and a redelivery
///   may then run beside it.
///
/// The scripts touch keys named inside them (the records listed by `failed_events` and
/// `purge_expired`), so Redis Cluster is not supported.
///
/// A call dropped by a timeout may still reach the server afterwards: a claim that timed
/// out can take effect later, and the event is then in progress until that lease ends.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use stripe_webhooks::{redis, Claim, EventId, EventType, IdempotencyStore, RedisStore};
///
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let conn = redis::aio::ConnectionManager::new(client).await?;
/// let store = RedisStore::new(conn)
///     .with_prefix("billing:webhooks")?
///     .with_retention(Duration::from_secs(7 * 24 * 3600));
///
/// let id = EventId::new("evt_1");
/// let lease = Duration::from_secs(30);
/// if let Claim::Acquired(token) = store.claim(&id, &EventType::InvoicePaid, lease).await? {
///     // ... handle the event ...
///     store.complete(&token).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) conn: ConnectionManager,
    pub(crate) prefix: String,
    retention: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// The server settings that decide whether Redis keeps what the store writes, as
/// [`RedisStore::check_server`] read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisServerSettings {
    /// `maxmemory-policy`; `None` when the server does not let `CONFIG GET` read it
    /// (managed services often rename or disable `CONFIG`).
    pub maxmemory_policy: Option<String>,
    /// `maxmemory`, in bytes (0: no limit, so nothing is evicted); `None` likewise.
    pub maxmemory: Option<u64>,
    /// `appendonly`; `None` likewise.
    pub appendonly: Option<bool>,
}

impl RedisServerSettings {
    /// What in these settings can lose the store's records, one sentence each: empty
    /// when nothing was found wrong (or nothing could be read).
    ///
    /// ```
    /// use stripe_webhooks::RedisServerSettings;
    ///
    /// let mut settings = RedisServerSettings::default();
    /// assert!(settings.problems().is_empty());
    /// settings.maxmemory_policy = Some("volatile-lru".into());
    /// assert!(settings.problems()[0].contains("volatile-lru"));
    /// // With no memory limit, nothing is evicted.
    /// settings.maxmemory = Some(0);
    /// assert!(settings.problems().is_empty());
    /// ```
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        // With no memory limit nothing is evicted, whatever the policy.
        let limited = self.maxmemory != Some(0);
        if let Some(policy) = self
            .maxmemory_policy
            .as_deref()
            .filter(|p| *p != "noeviction" && limited)
        {
            problems.push(format!(
                "Redis's maxmemory-policy is {policy}: under memory pressure it may evict \
                 completed records, and their events then run again; set it to noeviction"
            ));
        }
        if self.appendonly == Some(false) {
            problems.push(
                "Redis's appendonly is no: a restart loses every record written since the \
                 last snapshot, and their events then run again; set appendonly yes"
                    .to_owned(),
            );
        }
        problems
    }
}

/// A Redis key prefix: a valid name (`:` and `-` allowed too) with no `q` segment
/// inside or at its end. A queue keeps its keys under `{prefix}:q:`, so a store or queue
/// prefix `app:q` would share keys (`app:q:obj:…`) with the queue of prefix `app`.
pub(crate) fn validate_redis_prefix(prefix: &str) -> Result<(), StoreError> {
    validate_name(prefix, &[':', '-'])?;
    if prefix.split(':').skip(1).any(|segment| segment == "q") {
        return Err(StoreError::InvalidConfig(format!(
            "{prefix:?} is not a valid key prefix: a segment `q` after a `:` is where \
             queues keep their keys (`{{prefix}}:q:`)"
        )));
    }
    Ok(())
}

/// Whole milliseconds, rounded up ([`ceil_millis`](crate::clock::ceil_millis)).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(crate::clock::ceil_millis(d))
        .unwrap_or(u64::MAX)
        .min(MAX_MS)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn corrupt(key: &str, what: &str) -> StoreError {
    StoreError::unavailable(format!("unreadable record at {key}: {what}"))
}

fn lease_lost(token: &ClaimToken) -> StoreError {
    StoreError::LeaseLost {
        event_id: token.event_id().clone(),
    }
}

impl RedisStore {
    /// A store on `conn`, with the key prefix `stripe_webhooks` and
    /// [`DEFAULT_RETENTION`]. Cloning the store shares the connection.
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: DEFAULT_PREFIX.to_owned(),
            retention: DEFAULT_RETENTION,
        }
    }

    /// Replaces the key prefix (`stripe_webhooks` by default), so several applications
    /// can share one Redis: keys become `{prefix}:evt:{event_id}` and `{prefix}:failed`.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidConfig`] unless `prefix` is 1 to 63 ASCII letters, digits,
    /// underscores, `:` or `-`, not starting with a digit, with no segment `q` after a
    /// `:` (`app:q`, `app:q:x`): queues keep their keys under `{prefix}:q:`, and such a
    /// prefix would share keys with the queue of prefix `app`.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, StoreError> {
        validate_redis_prefix(prefix)?;
        prefix.clone_into(&mut self.prefix);
        Ok(self)
    }

    /// How long completed and failed records are kept ([`DEFAULT_RETENTION`] by
    /// default), counted from completion or release. Redis expires them itself; keep it
    /// longer than an event may come back (Stripe retries it for 3 days, and a
    /// [`Reconciler`](crate::reconcile::Reconciler) may list it again for the 30 days
    /// Stripe lists events), or the completed event runs again, and longer than
    /// [`ABANDONED_AFTER`](crate::ABANDONED_AFTER), or an abandoned claim's record may
    /// expire before `purge_expired` records it failed. Objects' watermarks expire the
    /// retention after the last event applied or the end of the last lock taken on the
    /// object, whichever is later; a reconciler's cursors never do.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Reads the server's `maxmemory-policy`, `maxmemory` and `appendonly` (`CONFIG GET`), so that a
    /// service can check at start-up that Redis keeps what the store writes (see
    /// [Server settings](Self#server-settings)) and log what
    /// [`problems`](RedisServerSettings::problems) finds, as the CLI's `status` does.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the server cannot be reached. A server that refuses
    /// `CONFIG` is no error: what it does not answer reads as `None`.
    pub async fn check_server(&self) -> Result<RedisServerSettings, StoreError> {
        let read = |name: &'static str| {
            let mut conn = self.conn.clone();
            async move {
                let answer: redis::RedisResult<std::collections::HashMap<String, String>> =
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg(name)
                        .query_async(&mut conn)
                        .await;
                match answer {
                    Ok(mut values) => Ok(values.remove(name)),
                    Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                        Err(unavailable(e))
                    }
                    // Refused (`CONFIG` disabled or renamed): not known.
                    Err(_) => Ok(None),
                }
            }
        };
        let maxmemory_policy = read("maxmemory-policy").await?;
        let maxmemory = read("maxmemory").await?.and_then(|v| v.parse().ok());
        let appendonly = read("appendonly").await?.map(|v| v == "yes");
        Ok(RedisServerSettings {
            maxmemory_policy,
            maxmemory,
            appendonly,
        })
    }

    fn event_key(&self, id: &EventId) -> String {
        format!("{}:evt:{}", self.prefix, id.as_str())
    }

    fn event_key_prefix(&self) -> String {
        format!("{}:evt:", self.prefix)
    }

    fn object_key(&self, object_id: &str) -> String {
        format!("{}:obj:{}", self.prefix, object_id)
    }

    fn failed_key(&self) -> String {
        format!("{}:failed", self.prefix)
    }

    /// Runs one of the fenced scripts; 0 means the token lost the claim.
    async fn fenced(
        &self,
        script: &Script,
        token: &ClaimToken,
        extra: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let held: i64 = script
            .key(self.event_key(token.event_id()))
            .key(self.failed_key())
            .arg(token.event_id().as_str())
            .arg(token.fence_hex())
            .arg(ms(self.retention))
            .arg(extra)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if held == 1 {
            Ok(())
        } else {
            Err(lease_lost(token))
        }
    }
}

/// Builds a record from the `RECORD` fields; `None` when the hash is gone.
fn parse_record(
    key: &str,
    id: EventId,
    fields: &[Option<String>],
) -> Result<Option<EventRecord>, StoreError> {
    let [status, event_type, attempts, last_error, first_seen_ms, completed_at_ms] = fields else {
        return Err(corrupt(key, "wrong field count"));
    };
    let Some(status) = status else {
        return Ok(None);
    };
    let status: RecordStatus = status.parse().map_err(|_| corrupt(key, "status"))?;
    let int = |v: &Option<String>, what: &str| -> Result<Option<i64>, StoreError> {
        v.as_deref()
            .map(|s| s.parse::<i64>().map_err(|_| corrupt(key, what)))
            .transpose()
    };
    let attempts = int(attempts, "attempts")?.unwrap_or(0);
    Ok(Some(EventRecord::new(
        id,
        EventType::from_wire(event_type.as_deref().unwrap_or_default()),
        status,
        u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        last_error.clone(),
        int(first_seen_ms, "first_seen_ms")?.unwrap_or(0),
        int(completed_at_ms, "completed_at_ms")?,
    )))
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        id: &EventId,
        event_type: &EventType,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let token = ClaimToken::new(id.clone(), 0);
        let mut conn = self.conn.clone();
        let (kind, n): (i64, i64) = CLAIM_SCRIPT
            .key(self.event_key(id))
            .key(self.failed_key())
            .arg(id.as_str())
            .arg(event_type.as_str())
            .arg(ms(lease))
            .arg(token.fence_hex())
            .arg(ms(self.retention))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let n = u64::try_from(n).unwrap_or(0);
        Ok(match kind {
            0 => Claim::Completed,
            1 => Claim::InProgress {
                retry_after: Duration::from_millis(n),
            },
            _ => Claim::Acquired(token.with_attempt(u32::try_from(n).unwrap_or(u32::MAX))),
        })
    }

    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.fenced(&COMPLETE_SCRIPT, token, "").await
    }

    async fn release(&self, token: &ClaimToken, reason: &str) -> Result<(), StoreError> {
        self.fenced(&RELEASE_SCRIPT, token, &truncate_error(reason))
            .await
    }

    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        self.fenced(&EXTEND_SCRIPT, token, &ms(lease).to_string())
            .await
    }
}

/// A watermark from the scripts' `created` and `event_id` strings (empty: none).
fn watermark_of(key: &str, created: &str, event_id: &str) -> Result<Option<Watermark>, StoreError> {
    if created.is_empty() || event_id.is_empty() {
        return Ok(None);
    }
    let created = created.parse().map_err(|_| corrupt(key, "created"))?;
    Ok(Some(Watermark::new(created, EventId::new(event_id))))
}

/// The ordering guard's objects: one hash per object at `{prefix}:obj:{object_id}` with
/// `created`, `event_id` (the watermark), `holder` and `lock_until_ms` (the lock); it
/// expires after the retention once its lock is free.
#[async_trait]
impl OrderingStore for RedisStore {
    async fn lock_object(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<ObjectLock, StoreError> {
        let key = self.object_key(object_id);
        let mut conn = self.conn.clone();
        let (kind, a, b): (String, String, String) = LOCK_OBJECT_SCRIPT
            .key(&key)
            .arg(holder)
            .arg(ms(lease))
            .arg(ms(self.retention))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if kind == "busy" {
            let left: u64 = a.parse().map_err(|_| corrupt(&key, "lock_until_ms"))?;
            return Ok(ObjectLock::Busy {
                retry_after: Duration::from_millis(left.max(1)),
            });
        }
        Ok(ObjectLock::Acquired {
            watermark: watermark_of(&key, &a, &b)?,
        })
    }

    async fn complete_applied(
        &self,
        token: &ClaimToken,
        object_id: &str,
        holder: &str,
        applied: &Watermark,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let held: i64 = COMPLETE_APPLIED_SCRIPT
            .key(self.event_key(token.event_id()))
            .key(self.failed_key())
            .key(self.object_key(object_id))
            .arg(token.event_id().as_str())
            .arg(token.fence_hex())
            .arg(ms(self.retention))
            .arg(holder)
            .arg(applied.created)
            .arg(applied.event_id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if held == 1 {
            Ok(())
        } else {
            Err(lease_lost(token))
        }
    }

    /// One script: the object's lock checked, the claim, then the lock taken; a busy
    /// object or a refused claim changes nothing.
    async fn lock_and_claim(
        &self,
        object_id: &str,
        holder: &str,
        lease: Duration,
        event_id: &EventId,
        event_type: &EventType,
    ) -> Result<LockedClaim, StoreError> {
        let token = ClaimToken::new(event_id.clone(), 0);
        let key = self.object_key(object_id);
        let mut conn = self.conn.clone();
        let (kind, n, created, applied): (i64, i64, String, String) = LOCK_AND_CLAIM_SCRIPT
            .key(self.event_key(event_id))
            .key(self.failed_key())
            .key(&key)
            .arg(event_id.as_str())
            .arg(event_type.as_str())
            .arg(ms(lease))
            .arg(token.fence_hex())
            .arg(ms(self.retention))
            .arg(holder)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let n = u64::try_from(n).unwrap_or(0);
        Ok(match kind {
            3 => LockedClaim::Busy {
                retry_after: Duration::from_millis(n.max(1)),
            },
            0 => LockedClaim::Refused(Claim::Completed),
            1 => LockedClaim::Refused(Claim::InProgress {
                retry_after: Duration::from_millis(n),
            }),
            _ => LockedClaim::Acquired {
                watermark: watermark_of(&key, &created, &applied)?,
                token: token.with_attempt(u32::try_from(n).unwrap_or(u32::MAX)),
            },
        })
    }

    async fn unlock_object(&self, object_id: &str, holder: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = UNLOCK_OBJECT_SCRIPT
            .key(self.object_key(object_id))
            .arg(holder)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn watermark(&self, object_id: &str) -> Result<Option<Watermark>, StoreError> {
        let key = self.object_key(object_id);
        let mut conn = self.conn.clone();
        let (created, event_id): (String, String) = WATERMARK_SCRIPT
            .key(&key)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        watermark_of(&key, &created, &event_id)
    }

    async fn advance_watermark(&self, key: &str, to: &Watermark) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = ADVANCE_SCRIPT
            .key(self.object_key(key))
            .arg(to.created)
            .arg(to.event_id.as_str())
            .arg(ms(self.retention).max(1))
            .arg(if super::is_cursor_key(key) { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl StoreAdmin for RedisStore {
    async fn record(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let key = self.event_key(id);
        let mut conn = self.conn.clone();
        let fields: Vec<Option<String>> = RECORD_SCRIPT
            .key(&key)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        parse_record(&key, id.clone(), &fields)
    }

    /// Walks the event keys with `SCAN` (`{prefix}:evt:*`, 1000 at a time), as no set
    /// lists the claims in progress (each claim would pay for one).
    async fn fail_abandoned(&self, lease_ended: Duration) -> Result<u64, StoreError> {
        let key_prefix = self.event_key_prefix();
        let pattern = format!("{key_prefix}*");
        let mut conn = self.conn.clone();
        let (mut cursor, mut total) = (0_u64, 0_u64);
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(PURGE_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            // A key that is not UTF-8 is not one of this store's (its event ids are
            // Stripe's): passed over, rather than failing every purge.
            let keys: Vec<String> = keys
                .into_iter()
                .filter_map(|k| String::from_utf8(k).ok())
                .collect();
            if !keys.is_empty() {
                let n: u64 = ABANDON_SCRIPT
                    .key(self.failed_key())
                    .arg(ms(lease_ended))
                    .arg(super::ABANDONED_ERROR)
                    .arg(ms(self.retention))
                    .arg(&key_prefix)
                    .arg(&keys)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                total = total.saturating_add(n);
            }
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }

    async fn failed_events(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.failed_from(None, limit).await
    }

    /// Lists from just after where `after` stands in the failed set (a member, or by its
    /// record's `first_seen_ms` and id once it left it), found by the same script that
    /// walks the set. (A walk that meets more than 10,000 stale ids goes on in further
    /// scripts from a position, as `failed_events` does, so an event released or dropped
    /// before that position meanwhile can shift that rare page by one.)
    async fn failed_events_after(
        &self,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        if after.as_str().is_empty() {
            return Ok(Vec::new()); // no record has an empty id
        }
        self.failed_from(Some(after), limit).await
    }

    /// Records abandoned claims as failed
    /// ([`fail_abandoned`](StoreAdmin::fail_abandoned) with
    /// [`ABANDONED_AFTER`](crate::ABANDONED_AFTER)). Redis deletes expired records
    /// itself (each key carries a `PEXPIRE` of the retention), so this then only drops
    /// the ids of expired records from the `{prefix}:failed` set, in batches of 1000, and
    /// returns how many it dropped.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        // The purge runs even when recording abandoned claims fails; that error is
        // reported after it.
        let abandoned = self.fail_abandoned(super::ABANDONED_AFTER).await;
        let purged = self.purge_failed_set().await;
        abandoned?;
        purged
    }
}

impl RedisStore {
    /// Up to `limit` failed records, from the head of the failed set or from just after
    /// the event `after`.
    async fn failed_from(
        &self,
        after: Option<&EventId>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = u64::try_from(limit).unwrap_or(u64::MAX).min(MAX_MS);
        let mut conn = self.conn.clone();
        let (mut out, mut found, mut start) = (Vec::new(), 0_u64, 0_u64);
        // Where the next script starts: after this event (the caller's, then the last one
        // found), found in that script, so that what other calls remove or add in between
        // (another walk's stale ids, a new failure) neither skips a record nor lists one
        // twice; else at the rank `start`.
        let mut cursor = after.map(|a| a.as_str().to_owned());
        let mut first = true;
        // Each script looks at a bounded number of set members and says whether it
        // stopped for that; the failed ones it found stay where they are, so the next one
        // starts after them.
        loop {
            // At most this many records per script, whatever the caller asked for: one
            // script must not stall the server (nor build a reply of a million records).
            let ask = (limit - found).min(FAILED_PER_SCRIPT);
            let flat: Vec<Option<String>> = FAILED_EVENTS_SCRIPT
                .key(self.failed_key())
                .arg(self.event_key_prefix())
                .arg(ask)
                .arg(start)
                .arg(cursor.as_deref().unwrap_or(""))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let Some(([more, began], rest)) = flat.split_first_chunk::<2>() else {
                return Err(corrupt(&self.failed_key(), "failed_events reply"));
            };
            let Some(began) = began.as_deref() else {
                return Err(corrupt(&self.failed_key(), "failed_events reply"));
            };
            if began.is_empty() {
                if first {
                    return Ok(out); // the caller's event to start after is gone
                }
                // The last one found is gone since (its record expired): from its rank.
                cursor = None;
                continue;
            }
            first = false;
            let Ok(offset) = began.parse::<u64>() else {
                return Err(corrupt(&self.failed_key(), "failed_events reply"));
            };
            let found_before = found;
            for chunk in rest.chunks(RECORD_FIELDS + 1) {
                let Some((Some(id), fields)) = chunk.split_first() else {
                    return Err(corrupt(&self.failed_key(), "failed_events reply"));
                };
                let id = EventId::new(id.clone());
                let key = self.event_key(&id);
                out.extend(parse_record(&key, id.clone(), fields)?);
                found += 1;
                cursor = Some(id.as_str().to_owned());
            }
            // This call started at `offset`; what it found stays there, before the next.
            start = offset + (found - found_before);
            let filled = found - found_before >= ask;
            if (more.as_deref() != Some("1") && !filled) || found >= limit {
                return Ok(out);
            }
        }
    }
}

/// The most failed records one `failed_events` script reads (see `failed_from`).
const FAILED_PER_SCRIPT: u64 = 1_000;

impl RedisStore {
    /// Drops the ids of expired records from the failed set, in batches.
    async fn purge_failed_set(&self) -> Result<u64, StoreError> {
        let failed_key = self.failed_key();
        let key_prefix = self.event_key_prefix();
        let mut conn = self.conn.clone();
        let mut start = 0_i64;
        let mut dropped = 0_u64;
        loop {
            let (removed, seen): (i64, i64) = PURGE_SCRIPT
                .key(&failed_key)
                .arg(&key_prefix)
                .arg(start)
                .arg(PURGE_BATCH)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            dropped = dropped.saturating_add(u64::try_from(removed).unwrap_or(0));
            if seen < PURGE_BATCH {
                return Ok(dropped);
            }
            start += seen - removed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_record() {
        let f = |s: &str| Some(s.to_owned());
        let fields = [
            f("failed"),
            f("invoice.paid"),
            f("2"),
            f("boom"),
            f("1700"),
            None,
        ];
        let rec = parse_record("k", EventId::new("evt_1"), &fields)
            .unwrap()
            .unwrap();
        assert_eq!(rec.status, RecordStatus::Failed);
        assert_eq!(rec.attempts, 2);
        assert_eq!(rec.last_error.as_deref(), Some("boom"));
        assert_eq!(rec.first_seen_ms, 1700);
        assert_eq!(rec.completed_at_ms, None);
        let gone = [None, None, None, None, None, None];
        assert!(parse_record("k", EventId::new("evt_1"), &gone)
            .unwrap()
            .is_none());
        let bad = [f("weird"), None, None, None, None, None];
        assert!(parse_record("k", EventId::new("evt_1"), &bad).is_err());
    }

    #[test]
    fn durations_are_clamped() {
        assert_eq!(ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ms(Duration::MAX), MAX_MS);
    }
}
