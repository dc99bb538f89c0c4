//! Redis: `RedisStore` on a `ConnectionManager`, against its floor: the store's claim and
//! complete Lua (the files under `src/idempotency/redis/`, put together as the store does)
//! sent as raw `EVALSHA`.

use std::time::Duration;

use stripe_webhooks::redis::aio::{ConnectionManager, MultiplexedConnection};
use stripe_webhooks::{redis, RedisStore};

use crate::{
    event_id, fence, loud, server_url, skip_all, Bench, Pair, Row, StorePair, EVENT_TYPE, LEASE,
    STORE,
};

const PRELUDE: &str = include_str!("../../src/idempotency/redis/prelude.lua");
const CLAIM: &str = include_str!("../../src/idempotency/redis/claim.lua");
const FENCED: &str = include_str!("../../src/idempotency/redis/fenced.lua");
const COMPLETE: &str = include_str!("../../src/idempotency/redis/complete_body.lua");
const PER_TASK: &str = "raw EVALSHA, one connection per task";
const SHARED: &str = "raw EVALSHA, one shared connection";
/// Short, so the bench's keys expire by themselves; it is deleted at the end anyway.
const RETENTION: Duration = Duration::from_secs(600);

/// The store's claim and complete scripts, put together as `CLAIM_SCRIPT` and
/// `COMPLETE_SCRIPT` in `src/idempotency/redis/mod.rs` are.
fn scripts() -> (String, String) {
    (
        [PRELUDE, CLAIM].concat(),
        [PRELUDE, FENCED, COMPLETE, "return 1\n"].concat(),
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
        let fence = fence(task, i);
        let retention = RETENTION.as_millis() as u64;
        let (kind, _n): (i64, i64) = redis::cmd("EVALSHA")
            .arg(&self.claim_sha)
            .arg(2)
            .arg(&key)
            .arg(&failed)
            .arg(&id)
            .arg(EVENT_TYPE.as_str())
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
            let _: Result<i64, _> = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

pub(crate) fn run(b: &Bench) -> Vec<Row> {
    let url = match server_url("redis", "REDIS_URL_TEST") {
        Ok(url) => url,
        Err(skipped) => return skipped,
    };
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            let why = format!("bad REDIS_URL_TEST: {e}");
            return skip_all("redis", &why, &format!("SKIPPED redis: {why}"));
        }
    };
    let (claim_text, complete_text) = scripts();
    let claim_sha = redis::Script::new(&claim_text).get_hash().to_owned();
    let complete_sha = redis::Script::new(&complete_text).get_hash().to_owned();
    println!("redis: RedisStore on one ConnectionManager (one multiplexed connection, shared by all tasks), a fresh key prefix per run");
    println!("  floor: the store's claim and complete Lua, sent as raw EVALSHA by the redis crate, each task awaiting every reply (no pipelining); over one connection per task and over one shared multiplexed connection; the better one is the floor");
    b.rows("redis", &[PER_TASK, SHARED], |conc, best| {
        let prefix = b.fresh_name();
        let conn = match b.rt.block_on(ConnectionManager::new(client.clone())) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("cannot connect to REDIS_URL_TEST: {e}");
                loud(&format!("SKIPPED redis c={conc}: {why}"));
                return Err(why);
            }
        };
        let store = RedisStore::new(conn)
            .with_prefix(&prefix)
            .expect("valid prefix")
            .with_retention(RETENTION);
        best.add(STORE, "RedisStore", conc, b.drive(StorePair(store), conc));
        b.rt.block_on(cleanup(&client, &prefix));

        // The floor never loads a script: EVALSHA only works if the store loaded exactly
        // this text.
        let loaded: Vec<bool> =
            b.rt.block_on(async {
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
            "the Lua put together from src/idempotency/redis/*.lua is not what RedisStore \
             loaded ({loaded:?}); fix benches/stores/redis.rs"
        );

        // At concurrency 1 both variants are one connection: run one.
        let variants: &[(&str, usize)] = if conc == 1 {
            &[(PER_TASK, 1)]
        } else {
            &[(PER_TASK, conc), (SHARED, 1)]
        };
        for &(what, n_conns) in variants {
            let prefix = b.fresh_name();
            let conns = b.rt.block_on(async {
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
            best.add(what, &format!("floor: {what}"), conc, b.drive(raw, conc));
            b.rt.block_on(cleanup(&client, &prefix));
        }
        Ok(())
    })
}
