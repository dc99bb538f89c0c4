//! The Redis queue (feature `redis`): Redis Streams with one consumer group, and a hash
//! per job. Every operation is one Lua script, judged by the server's clock.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::Script;
use async_trait::async_trait;

use super::{
    Enqueued, Job, JobRecord, JobState, NewJob, PayloadKind, Queue, QueueAdmin, QueueCounts,
};
use crate::event::EventId;
use crate::idempotency::redis::{ms, PRELUDE};

/// The largest count a script is given: Lua's numbers are doubles, and one that large
/// would come back to Redis as `1e+17`, which `ZRANGE … LIMIT` refuses.
const MAX_LIMIT: u64 = 1 << 40;
use crate::idempotency::{truncate_error, ClaimToken, StoreError};

/// The most jobs one `take` hands out; a larger `max` is cut to it.
const MAX_TAKE: usize = 500;

/// How many stream entries (and due retries) one `take` looks at, at most: parked and
/// stale entries are looked at once and leave the stream, so a later take goes on.
const SCAN_BUDGET: u64 = 1000;

/// How many dead jobs one `requeue_dead` script requeues.
const REQUEUE_BATCH: u64 = 500;

/// The fields of a record reply: the key, then `records.lua`'s fields in its order.
const RECORD_FIELDS: usize = 11;

/// The queue's key names and helpers (`ack`, `add_entry`, `stop`, `wake`), after
/// the store's prelude (`now`, `fmt`). ARGV[1] is the key prefix.
const LIB: &str = include_str!("lib.lua");

/// ARGV: prefix, key, event id, type, kind, object id ('' for none), created, body.
/// Returns 1 queued, 0 duplicate.
const ENQUEUE: &str = include_str!("enqueue.lua");

/// ARGV: prefix, consumer, lease ms, per-object order ('1'/'0'), max, scan budget, then
/// `max` fences. Returns `{index, key, event id, type, kind, body, attempts, created}`
/// per job taken, where the fence written was ARGV[6 + index]: jobs whose lease ended
/// first, then new ones in stream order.
const TAKE: &str = include_str!("take.lua");

/// The fence check the settling scripts share: ARGV prefix, key, fence, then each
/// script's own; answers 0 unless the job is running under that fence.
const FENCED: &str = include_str!("fenced.lua");

/// ARGV[4]: the new lease in ms.
const EXTEND: &str = include_str!("extend.lua");

/// Completed: acked, listed in `{prefix}:q:completed` by finish time.
const COMPLETE: &str = include_str!("complete.lua");

/// Run before `FENCED` by the completion: answers 1 when the job is completed under the
/// token's fence already.
const COMPLETE_AGAIN: &str = include_str!("complete_again.lua");

/// ARGV[4]: the error; ARGV[5]: the delay in ms. Retrying, in `{prefix}:q:delayed`.
const RETRY: &str = include_str!("retry.lua");

/// ARGV[4]: the error. Dead.
const BURY: &str = include_str!("bury.lua");

/// Queued again at once, with a new entry; the attempt is given back.
const RELEASE: &str = include_str!("release.lua");

/// Returns the counts (queued, running, retrying, dead, completed) and the age in ms of
/// the oldest queued job (-1: none).
const COUNTS: &str = include_str!("counts.lua");

/// ARGV: prefix, then `one` and a key, `recent` and a limit, `after`, a state, a key and a
/// limit, or a state and a limit.
const RECORDS: &str = include_str!("records.lua");

/// ARGV: prefix, then `one` and a key, or `dead` and a batch size. Returns `{requeued,
/// looked at}`.
const REQUEUE: &str = include_str!("requeue.lua");

/// ARGV: prefix, age ms, batch size. Returns how many were deleted.
const PURGE: &str = include_str!("purge.lua");

fn script(parts: &[&str]) -> Script {
    Script::new(&parts.concat())
}

static ENQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LIB, ENQUEUE]));
static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LIB, TAKE]));
static EXTEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LIB, FENCED, EXTEND]));
static COMPLETE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[PRELUDE, LIB, COMPLETE_AGAIN, FENCED, COMPLETE]));
static RETRY_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LIB, FENCED, RETRY]));
static BURY_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LIB, FENCED, BURY]));
static RELEASE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[PRELUDE, LIB, FENCED, RELEASE]));
static COUNTS_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LIB, COUNTS]));
static RECORDS_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LIB, RECORDS]));
static REQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LIB, REQUEUE]));
static PURGE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[PRELUDE, LIB, PURGE]));

/// A [`Queue`] and [`QueueAdmin`] on Redis Streams (feature `redis`): for several
/// replicas sharing one Redis server, beside a [`RedisStore`](crate::RedisStore).
///
/// # How it works
///
/// Each job is a hash at `{prefix}:q:job:{key}` (event id, type, kind, object id,
/// `created`, body, state, attempts, fence, `run_at`, last error, `enqueued_at`,
/// `finished_at`, enqueue sequence and its current stream entry). A job waiting for a
/// worker has one entry in the stream `{prefix}:q:stream`, which workers read with
/// `XREADGROUP` in the consumer group `workers`, created with `MKSTREAM` on first use.
/// Every queue value has its own consumer name (host, process id and a random part),
/// and a running job's entry stays pending in its consumer's list until the job
/// completes, fails or is released, when it is acknowledged and deleted.
///
/// Every operation is one Lua script, so an enqueue checks and writes the job's hash and
/// adds its entry atomically, and leases and retry times are judged by the Redis
/// server's clock (`TIME`), never the application's:
///
/// - `take` first moves retrying jobs whose time came from the sorted set
///   `{prefix}:q:delayed` back into the stream, then takes over jobs whose lease ended
///   (`{prefix}:q:leases`, scored by lease end: their entry moves to this consumer with
///   `XCLAIM`) and entries another consumer read and kept longer than the lease
///   (`XAUTOCLAIM`, a consumer that died), then reads new entries. A job is taken with a
///   fresh fence, its attempts counted; an entry that is not its job's current one is
///   acknowledged and skipped, never run.
/// - With per-object order, each object keeps its pending jobs (queued, retrying,
///   running) in `{prefix}:q:obj:{object id}`, ordered by `created` then enqueue order,
///   and its running jobs in `{prefix}:q:objrun:{object id}` by lease end. A job that is
///   not first, or whose object has another job under a live lease, is *parked*: its
///   entry is acknowledged, and when the jobs before it leave (complete, die, release,
///   or lose their lease) the first one gets a new entry. A parked job shows as queued.
///   Workers sharing a queue should agree on per-object order: a parked job waits for
///   its object even if another worker takes without order.
/// - Each state has a sorted set, `{prefix}:q:{state}` (queued, running, retrying,
///   dead by enqueue order; completed by finish time), for counts, lists and
///   [`purge_completed`](QueueAdmin::purge_completed), `{prefix}:q:all` holds
///   every job by enqueue order, for [`recent`](QueueAdmin::recent), and
///   `{prefix}:q:queued_since` the queued jobs by when they were queued last, for the
///   age of the oldest ([`counts`](QueueAdmin::counts)). Dead jobs are kept
///   until an operator requeues them; nothing in the queue expires by itself.
///
/// Needs Redis 7 or later (`XAUTOCLAIM`, and scripts that read `TIME` before writing).
/// As for the store, run Redis with `maxmemory-policy noeviction` and `appendonly yes`;
/// the scripts touch keys named inside them, so Redis Cluster is not supported. A full
/// Redis refuses enqueues (answered 503: Stripe retries them) and takes alike, so
/// workers stop until it has room; nothing in the queue expires by itself, so free it
/// with [`purge_completed`](QueueAdmin::purge_completed) (`stripe-webhooks purge`) or a
/// higher `maxmemory`.
///
/// An enqueue is answered (and Stripe gets its 200) once its script ran on the server.
/// Unlike the store's records, whose loss only lets an event run again, a job is the
/// event's only copy: with `appendfsync everysec` a crash of the server's host loses up
/// to a second of acknowledged jobs, and a failover loses those not yet replicated. Run
/// the queue's Redis with `appendfsync always` and without failover to a replica that
/// may lag, or queue on PostgreSQL or SQLite, where an enqueue is answered after its
/// commit.
///
/// Idle workers poll, or with [`with_wakeups`](RedisQueue::with_wakeups) block on the
/// stream until a job is queued. Consumers of queues that were dropped stay in the group, with no pending
/// entries once their jobs were taken over; `XGROUP DELCONSUMER` removes them.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use stripe_webhooks::queue::{NewJob, Queue, RedisQueue};
/// use stripe_webhooks::{redis, testing, RedisStore};
///
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let conn = redis::aio::ConnectionManager::new(client).await?;
/// // Beside a store, under its prefix:
/// let _beside = RedisStore::new(conn.clone()).with_prefix("billing")?.queue();
/// // Or on its own, with the same keys:
/// let queue = RedisQueue::new(conn, "billing")?;
///
/// let body = testing::event_json("evt_1", "customer.created", r#"{"id":"cus_1","object":"customer"}"#);
/// queue.enqueue(&NewJob::parse(body.as_bytes())?).await?;
/// for job in queue.take(10, Duration::from_secs(30), true).await? {
///     // ... run the job ...
///     queue.complete(&job.token).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[derive(Clone)]
pub struct RedisQueue {
    conn: ConnectionManager,
    /// `{prefix}:q:`, the start of every key.
    keys: Arc<str>,
    consumer: Arc<str>,
    /// Where idle workers block for new entries ([`RedisQueue::with_wakeups`]).
    wakeups: Option<Arc<Wakeups>>,
}

/// The client and the dedicated connections on which idle workers block with `XREAD`: a
/// blocking read on the shared `ConnectionManager` would hold up every other command,
/// and so would one on another waiter's. Each wait takes a connection of its own (an
/// idle one, or a new one) and puts it back when done, so workers on clones of one queue
/// wait side by side rather than in turn.
struct Wakeups {
    client: ::redis::Client,
    idle: std::sync::Mutex<Vec<::redis::aio::MultiplexedConnection>>,
}

impl Wakeups {
    /// The idle connections. (A poisoned lock only means a waiter panicked holding it,
    /// between two plain `Vec` calls: the list is fine.)
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<::redis::aio::MultiplexedConnection>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How many idle wakeup connections a queue keeps for its next waits.
const MAX_IDLE_WAKEUP_CONNECTIONS: usize = 16;

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("keys", &self.keys)
            .field("consumer", &self.consumer)
            // Not the client: its connection info may hold a password.
            .field("wakeups", &self.wakeups.is_some())
            .finish_non_exhaustive()
    }
}

/// A consumer name no other queue value shares: host, process id and a fresh fence.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let random = ClaimToken::new(EventId::new(""), 0).fence_hex();
    format!("{host}-{}-{random}", std::process::id())
}

/// The consumer group of the workers, as the scripts name it (`lib.lua`).
const GROUP: &str = "workers";

/// The id of the last entry of `stream` given to the workers' group (`XINFO GROUPS`);
/// `None` when the stream or the group does not exist yet (no take made it).
async fn last_delivered(
    conn: &mut ::redis::aio::MultiplexedConnection,
    stream: &str,
) -> ::redis::RedisResult<Option<String>> {
    let groups = match ::redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async::<Vec<::redis::Value>>(conn)
        .await
    {
        Ok(groups) => groups,
        // No such stream yet.
        Err(e) if e.kind() == ::redis::ErrorKind::ResponseError => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(groups.iter().find_map(|g| {
        let fields = group_fields(g)?;
        let field = |name: &str| fields.iter().find(|(k, _)| k == name)?.1.clone();
        if field("name").as_deref() != Some(GROUP) {
            return None;
        }
        field("last-delivered-id")
    }))
}

/// One group of an `XINFO GROUPS` reply as (field, text value) pairs: a flat array of
/// fields and values (RESP2) or a map (RESP3). A value that is not text is `None`.
fn group_fields(group: &::redis::Value) -> Option<Vec<(String, Option<String>)>> {
    use ::redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let pairs: Vec<(&Value, &Value)> = match group {
        Value::Array(items) => items.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    Some(
        pairs
            .into_iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v))))
            .collect(),
    )
}

fn corrupt(key: &str, what: &str) -> StoreError {
    StoreError::unavailable(format!("unreadable job {key:?} in the Redis queue: {what}"))
}

fn lease_lost(token: &ClaimToken) -> StoreError {
    StoreError::LeaseLost {
        event_id: token.event_id().clone(),
    }
}

impl RedisQueue {
    /// A queue on `conn` with its keys under `{prefix}:q:`; each value gets its own
    /// consumer name (its clones share it).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidConfig`] unless `prefix` is 1 to 63 ASCII letters, digits,
    /// underscores, `:` or `-`, not starting with a digit, with no segment `q` after a
    /// `:` (as [`RedisStore::with_prefix`](crate::RedisStore::with_prefix)).
    pub fn new(conn: ConnectionManager, prefix: &str) -> Result<Self, StoreError> {
        crate::idempotency::redis::validate_redis_prefix(prefix)?;
        Ok(Self::with_valid_prefix(conn, prefix))
    }

    fn with_valid_prefix(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            keys: Arc::from(format!("{prefix}:q:")),
            consumer: Arc::from(consumer_name()),
            wakeups: None,
        }
    }

    /// Wakes idle workers as soon as a job is queued, instead of at their next poll: an
    /// idle worker blocks in `XREAD BLOCK` on the queue's stream, on a connection of its
    /// own that `client` opens (one per worker waiting at once, shared by the queue's
    /// clones and kept for their next waits; pass the client the
    /// `ConnectionManager` was made from). Retries that come due are still found by the
    /// poll. Without it, workers poll every
    /// [`poll interval`](super::Worker::with_poll_interval).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use stripe_webhooks::{redis, RedisStore};
    ///
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let conn = redis::aio::ConnectionManager::new(client.clone()).await?;
    /// let queue = RedisStore::new(conn).queue().with_wakeups(client);
    /// # let _ = queue;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_wakeups(mut self, client: ::redis::Client) -> Self {
        self.wakeups = Some(Arc::new(Wakeups {
            client,
            idle: std::sync::Mutex::new(Vec::new()),
        }));
        self
    }

    /// Blocks for a new entry in the stream, at most `max_wait`: `true` when one came or
    /// the time passed (the caller looks again), `false` when it cannot wait (no
    /// wakeups, or the connection failed: it is dropped, and the next wait connects
    /// again).
    async fn wait(&self, max_wait: Duration) -> bool {
        let Some(w) = &self.wakeups else {
            return false;
        };
        let idle = w.idle().pop();
        let mut conn = match idle {
            Some(c) => c,
            None => {
                match tokio::time::timeout(max_wait, w.client.get_multiplexed_async_connection())
                    .await
                {
                    Ok(Ok(c)) => c,
                    _ => return false,
                }
            }
        };
        let block = u64::try_from(max_wait.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let stream = format!("{}stream", self.keys);
        let margin = max_wait.saturating_add(Duration::from_secs(1));
        // From the last entry the workers' group was given, not from the stream's end
        // (`$`): a job queued after the caller's take found nothing, but before this
        // read, is past it, and wakes the caller at once. A connection that failed (or
        // was cut mid-command) is dropped, never put back.
        let after = match tokio::time::timeout(margin, last_delivered(&mut conn, &stream)).await {
            Ok(Ok(id)) => id,
            Ok(Err(_)) | Err(_) => return false,
        };
        let mut read = ::redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(&stream)
            .arg(after.as_deref().unwrap_or("$"));
        let read = read.query_async::<::redis::Value>(&mut conn);
        // A margin over the block, for a server that never answers.
        match tokio::time::timeout(margin, read).await {
            Ok(Ok(_)) => {
                let mut idle = w.idle();
                if idle.len() < MAX_IDLE_WAKEUP_CONNECTIONS {
                    idle.push(conn);
                }
                true
            }
            Ok(Err(_)) | Err(_) => false,
        }
    }

    /// This queue's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Runs a fenced script; 0 means the token lost the job.
    async fn fenced(
        &self,
        script: &Script,
        token: &ClaimToken,
        extra: &[&str],
    ) -> Result<(), StoreError> {
        self.fenced_key(script, token.event_id().as_str().as_bytes(), token, extra)
            .await
    }

    /// [`fenced`](Self::fenced) for the job under `key` (its bytes: a job whose key is
    /// not text is buried this way), with `token`'s fence.
    async fn fenced_key(
        &self,
        script: &Script,
        key: &[u8],
        token: &ClaimToken,
        extra: &[&str],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut call = script.prepare_invoke();
        call.arg(&*self.keys).arg(key).arg(token.fence_hex());
        for a in extra {
            call.arg(*a);
        }
        let held: i64 = call
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::unavailable)?;
        if held == 1 {
            Ok(())
        } else {
            Err(lease_lost(token))
        }
    }

    async fn records(&self, what: &str, args: &[&str]) -> Result<Vec<JobRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let rows: Vec<Vec<Option<Vec<u8>>>> = RECORDS_SCRIPT
            .arg(&*self.keys)
            .arg(what)
            .arg(args)
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.extend(parse_record(row)?);
        }
        Ok(out)
    }
}

impl crate::RedisStore {
    /// The queue beside this store: the same connection, its keys under `{prefix}:q:`.
    /// Each call makes a queue with its own consumer name.
    pub fn queue(&self) -> RedisQueue {
        RedisQueue::with_valid_prefix(self.conn.clone(), &self.prefix)
    }
}

fn text(key: &str, what: &str, v: Option<Vec<u8>>) -> Result<Option<String>, StoreError> {
    v.map(|b| String::from_utf8(b).map_err(|_| corrupt(key, what)))
        .transpose()
}

/// Text shown to operators (a key, an id, a type, an error): bytes that are not UTF-8 (a
/// corrupt hash) are shown replaced, so that one such job does not fail the listing of
/// every job beside it.
fn lossy(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|b| match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// A number shown to operators (attempts, times): one that is not a number (a corrupt
/// hash) is shown as none, for the same reason as [`lossy`].
fn int(v: Option<Vec<u8>>) -> Option<i64> {
    std::str::from_utf8(&v?).ok()?.parse().ok()
}

/// A record from `records.lua`'s reply; `None` when the job's hash is gone.
fn parse_record(row: Vec<Option<Vec<u8>>>) -> Result<Option<JobRecord>, StoreError> {
    let Ok(
        [key, event_id, event_type, kind, state, attempts, last_error, enqueued_at, run_at, finished_at, body],
    ) = <[Option<Vec<u8>>; RECORD_FIELDS]>::try_from(row)
    else {
        return Err(StoreError::unavailable(
            "unreadable reply from the Redis queue: wrong field count",
        ));
    };
    let key = lossy(key).unwrap_or_default();
    let Some(state) = text(&key, "state", state)? else {
        return Ok(None);
    };
    let state: JobState = state.parse().map_err(|_| corrupt(&key, "state"))?;
    let kind_name = lossy(kind).unwrap_or_default();
    let kind = PayloadKind::from_name(&kind_name).unwrap_or(PayloadKind::Snapshot);
    let attempts = int(attempts).unwrap_or(0);
    let pending = matches!(
        state,
        JobState::Queued | JobState::Retrying | JobState::Running
    );
    let run_at = int(run_at);
    Ok(Some(
        JobRecord::new(
            EventId::new(key.clone()),
            EventId::new(lossy(event_id).unwrap_or_default()),
            lossy(event_type).unwrap_or_default(),
            kind,
            state,
            u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
            lossy(last_error),
            int(enqueued_at).unwrap_or(0),
            run_at.filter(|_| pending),
            int(finished_at),
            body.unwrap_or_default(),
        )
        .with_kind_name(&kind_name),
    ))
}

/// One job `take.lua` handed out: index of its fence, key, event id, type, kind, body,
/// attempts, created.
/// A taken job as `take.lua` gives it: text as bytes, so that one job's bytes that are
/// not UTF-8 (a corrupt hash) fail that job, not the decoding of the whole take.
type Taken = (i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, i64, i64);

#[async_trait]
impl Queue for RedisQueue {
    async fn last_error(&self, key: &EventId) -> Result<Option<String>, StoreError> {
        crate::queue::recorded_error(self, key).await
    }
    async fn enqueue(&self, job: &NewJob<'_>) -> Result<Enqueued, StoreError> {
        let mut conn = self.conn.clone();
        let queued: i64 = ENQUEUE_SCRIPT
            .arg(&*self.keys)
            .arg(job.key.as_str())
            .arg(job.event_id.as_str())
            .arg(job.event_type.as_str())
            .arg(job.kind.as_str())
            .arg(job.object_id.as_deref().unwrap_or(""))
            .arg(job.created)
            .arg(job.body)
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(if queued == 1 {
            Enqueued::Queued
        } else {
            Enqueued::Duplicate
        })
    }

    async fn take(
        &self,
        max: usize,
        lease: Duration,
        per_object_order: bool,
    ) -> Result<Vec<Job>, StoreError> {
        let max = max.min(MAX_TAKE);
        if max == 0 {
            return Ok(Vec::new());
        }
        // Fences are drawn here and written by the script, which picks the keys.
        let fences: Vec<ClaimToken> = (0..max)
            .map(|_| ClaimToken::new(EventId::new(""), 0))
            .collect();
        let mut call = TAKE_SCRIPT.prepare_invoke();
        call.arg(&*self.keys)
            .arg(&*self.consumer)
            // At least 1 ms: a job taken now is never due again within the same script.
            .arg(ms(lease).max(1))
            .arg(if per_object_order { "1" } else { "0" })
            .arg(max)
            .arg(SCAN_BUDGET);
        for f in &fences {
            call.arg(f.fence_hex());
        }
        let mut conn = self.conn.clone();
        let taken: Vec<Taken> = call
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::unavailable)?;
        let mut jobs = Vec::with_capacity(taken.len());
        let mut unreadable = Vec::new();
        for (index, key, event_id, event_type, kind, body, attempts, created) in taken {
            // Without its fence a job cannot be settled: its lease's end gives it back.
            let Some(fence) = usize::try_from(index)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| fences.get(i))
            else {
                continue;
            };
            // A key that is not text cannot be run or settled by token (`EventId` is text):
            // it is buried by its bytes, as the SQL queues bury such a row by its `seq`.
            // (Left to its lease, it was taken again at each lease's end, for ever.)
            let key = match String::from_utf8(key) {
                Ok(key) => key,
                Err(e) => {
                    let why = "the queued job cannot be read by this version: its key is not text";
                    let bytes = e.into_bytes();
                    let _ = self.fenced_key(&BURY_SCRIPT, &bytes, fence, &[why]).await;
                    continue;
                }
            };
            let attempt = u32::try_from(attempts.max(0)).unwrap_or(u32::MAX);
            let token = fence.with_key(EventId::new(&key)).with_attempt(attempt);
            // A job this version cannot read does not cost the batch its other jobs.
            let Some(kind) = std::str::from_utf8(&kind)
                .ok()
                .and_then(PayloadKind::from_name)
            else {
                unreadable.push((token, corrupt(&key, "kind")));
                continue;
            };
            let (Ok(event_id), Ok(event_type)) =
                (String::from_utf8(event_id), String::from_utf8(event_type))
            else {
                unreadable.push((token, corrupt(&key, "event id or type")));
                continue;
            };
            jobs.push(
                Job::new(token, EventId::new(event_id), event_type, kind, body)
                    .with_created(created),
            );
        }
        for (token, e) in unreadable {
            let why = format!("the queued job cannot be read by this version: {e}");
            let _ = self.fail(&token, &why, None).await;
        }
        Ok(jobs)
    }

    async fn extend(&self, token: &ClaimToken, lease: Duration) -> Result<(), StoreError> {
        // At least 1 ms, as a take's.
        let lease = ms(lease).max(1).to_string();
        self.fenced(&EXTEND_SCRIPT, token, &[&lease]).await
    }

    async fn complete(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.fenced(&COMPLETE_SCRIPT, token, &[]).await
    }

    async fn fail(
        &self,
        token: &ClaimToken,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        let error = &*truncate_error(error);
        match retry_in {
            Some(delay) => {
                let delay = ms(delay).to_string();
                self.fenced(&RETRY_SCRIPT, token, &[error, &delay]).await
            }
            None => self.fenced(&BURY_SCRIPT, token, &[error]).await,
        }
    }

    async fn release(&self, token: &ClaimToken) -> Result<(), StoreError> {
        self.fenced(&RELEASE_SCRIPT, token, &[]).await
    }

    async fn wait_for_jobs(&self, max_wait: Duration) -> bool {
        self.wait(max_wait).await
    }
}

#[async_trait]
impl QueueAdmin for RedisQueue {
    async fn counts(&self) -> Result<QueueCounts, StoreError> {
        let mut conn = self.conn.clone();
        let (queued, running, retrying, dead, completed, age): (u64, u64, u64, u64, u64, i64) =
            COUNTS_SCRIPT
                .arg(&*self.keys)
                .invoke_async(&mut conn)
                .await
                .map_err(StoreError::unavailable)?;
        let age = u64::try_from(age).ok().map(Duration::from_millis);
        Ok(QueueCounts::new(
            queued, running, retrying, dead, completed, age,
        ))
    }

    /// Up to `limit` jobs in `state`: by enqueue order, and completed jobs by the time
    /// they finished.
    async fn jobs(&self, state: JobState, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = u64::try_from(limit).unwrap_or(u64::MAX).min(MAX_LIMIT);
        self.records(state.as_str(), &[&limit.to_string()]).await
    }

    /// The jobs after `after`'s in [`jobs`](QueueAdmin::jobs)' order: from its place in
    /// `state`'s set or, when it left `state`, after the jobs queued before it; a
    /// completed job's place is only known while it is completed.
    async fn jobs_after(
        &self,
        state: JobState,
        after: &EventId,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = u64::try_from(limit).unwrap_or(u64::MAX).min(MAX_LIMIT);
        self.records(
            "after",
            &[state.as_str(), after.as_str(), &limit.to_string()],
        )
        .await
    }

    async fn job(&self, key: &EventId) -> Result<Option<JobRecord>, StoreError> {
        Ok(self
            .records("one", &[key.as_str()])
            .await?
            .into_iter()
            .next())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = u64::try_from(limit).unwrap_or(u64::MAX).min(MAX_LIMIT);
        self.records("recent", &[&limit.to_string()]).await
    }

    async fn requeue(&self, key: &EventId) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let (requeued, _, _): (i64, i64, i64) = REQUEUE_SCRIPT
            .arg(&*self.keys)
            .arg("one")
            .arg(key.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::unavailable)?;
        if requeued == 2 {
            // Kept dead: its hash cannot give it a place in the queue.
            return Err(corrupt(key.as_str(), "seq or created (it stays dead)"));
        }
        Ok(requeued == 1)
    }

    /// Requeues every dead job, in batches of 500 (one script each).
    async fn requeue_dead(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let mut total = 0_u64;
        // Batches in seq order from where the last one ended: a requeued job that fails
        // and is buried again meanwhile is not requeued twice by one call.
        let mut after = 0_i64;
        loop {
            let (requeued, seen, last): (u64, u64, i64) = REQUEUE_SCRIPT
                .arg(&*self.keys)
                .arg("dead")
                .arg(REQUEUE_BATCH)
                .arg(after)
                .invoke_async(&mut conn)
                .await
                .map_err(StoreError::unavailable)?;
            total = total.saturating_add(requeued);
            if seen < REQUEUE_BATCH {
                return Ok(total);
            }
            after = last;
        }
    }

    async fn purge_completed(&self, older_than: Duration, batch: usize) -> Result<u64, StoreError> {
        if batch == 0 {
            return Ok(0);
        }
        let batch = u64::try_from(batch).unwrap_or(u64::MAX).min(MAX_LIMIT);
        let mut conn = self.conn.clone();
        let deleted: u64 = PURGE_SCRIPT
            .arg(&*self.keys)
            .arg(ms(older_than))
            .arg(batch)
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: Option<&str>) -> Vec<Option<Vec<u8>>> {
        let f = |s: &str| Some(s.as_bytes().to_vec());
        vec![
            f("evt_1"),
            f("evt_1"),
            f("invoice.paid"),
            f("snapshot"),
            state.map(|s| s.as_bytes().to_vec()),
            f("2"),
            f("boom"),
            f("1700"),
            f("1800"),
            f("1900"),
            f("{}"),
        ]
    }

    #[test]
    fn parses_a_record() {
        let rec = parse_record(row(Some("dead"))).unwrap().unwrap();
        assert_eq!((rec.key.as_str(), rec.state), ("evt_1", JobState::Dead));
        assert_eq!((rec.attempts, rec.last_error.as_deref()), (2, Some("boom")));
        assert_eq!(
            (rec.enqueued_at_ms, rec.run_at_ms, rec.finished_at_ms),
            (1700, None, Some(1900))
        );
        assert_eq!(rec.body, b"{}");
        let rec = parse_record(row(Some("retrying"))).unwrap().unwrap();
        assert_eq!(rec.run_at_ms, Some(1800));
        assert!(parse_record(row(None)).unwrap().is_none(), "gone");
        assert!(parse_record(row(Some("weird"))).is_err());
        assert!(parse_record(vec![None; 3]).is_err());
    }

    #[test]
    fn consumer_names_differ() {
        assert_ne!(consumer_name(), consumer_name());
    }
}
