//! The `stripe-webhooks` command-line tool, run as a user runs it: the built binary
//! against a SQLite file, the PostgreSQL of `DATABASE_URL_TEST` and the Redis of
//! `REDIS_URL_TEST` (`eval "$(scripts/services.sh start)"` or `scripts/test.sh` set them),
//! and `send` against a small local HTTP server.
//!
//! Run with: `cargo test --features cli,testing --test cli`

#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{unique, TempDir};
use serde_json::Value;
use stripe_webhooks::queue::{Enqueued, NewJob, Queue};
use stripe_webhooks::testing;
use stripe_webhooks::{
    Claim, EventId, EventType, IdempotencyStore, SqliteStore, StoreAdmin, Verifier,
};

const BIN: &str = env!("CARGO_BIN_EXE_stripe-webhooks");

/// What one run of the tool printed, and its exit code.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }
}

/// Runs the tool with `args` and no store settings from the environment.
async fn cli(args: &[&str]) -> Out {
    cli_with_env(args, &[]).await
}

/// Runs the tool with `args`, no store settings from the environment but `env`'s.
async fn cli_with_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut command = tokio::process::Command::new(BIN);
    command.args(args);
    run(command, env).await
}

/// Runs `command` with no store settings from the environment but `env`'s.
async fn run(mut command: tokio::process::Command, env: &[(&str, &str)]) -> Out {
    let out = command
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("STRIPE_WEBHOOKS_TABLE")
        .env_remove("SQLITE_PATH")
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .env_remove("STRIPE_THIN_WEBHOOK_SECRET")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `command` (which starts `stripe-webhooks`) in `sh`, as an operator's shell would:
/// the tool on the path, no store settings from the environment but `env`'s.
async fn in_shell(command: &str, env: &[(&str, &str)]) -> Out {
    let dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut all = vec![("PATH", path.as_str())];
    all.extend_from_slice(env);
    let mut sh = tokio::process::Command::new("sh");
    sh.arg("-c").arg(command);
    run(sh, &all).await
}

/// The command a `show` output suggests to rerun its job.
fn rerun_hint(shown: &str) -> String {
    shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("rerun it"))
        .unwrap_or_else(|| panic!("no rerun hint: {shown}"))
        .trim()
        .to_owned()
}

/// The store flags `store` with a URL flag moved to the variable the tool reads instead
/// (`DATABASE_URL`, `REDIS_URL`): the other flags, and the variable.
fn from_environment(store: &[String]) -> (Vec<String>, Vec<(&'static str, &str)>) {
    let mut flags = Vec::new();
    let mut env = Vec::new();
    let mut it = store.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--database-url" => env.push(("DATABASE_URL", it.next().unwrap().as_str())),
            "--redis-url" => env.push(("REDIS_URL", it.next().unwrap().as_str())),
            _ => flags.push(flag.clone()),
        }
    }
    (flags, env)
}

/// Runs the tool with the store flags `store` followed by `args`.
async fn on(store: &[String], args: &[&str]) -> Out {
    let mut all: Vec<&str> = store.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    cli(&all).await
}

/// Queues an event of `event_type`, takes it (the queue holds nothing else due) and fails
/// it with `error`, to run again after `retry_in` (`None`: dead).
async fn fail_once(
    queue: &impl Queue,
    id: &str,
    event_type: &str,
    error: &str,
    retry_in: Option<Duration>,
) {
    let body = testing::event_for_type(id, event_type).unwrap();
    let job = NewJob::parse(body.as_bytes()).unwrap();
    assert_eq!(queue.enqueue(&job).await.unwrap(), Enqueued::Queued);
    let taken = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    assert_eq!(taken.len(), 1);
    queue.fail(&taken[0].token, error, retry_in).await.unwrap();
}

/// A dead job.
async fn make_dead(queue: &impl Queue, id: &str) {
    let error = "handler failed: card_declined";
    fail_once(queue, id, "invoice.payment_failed", error, None).await;
}

/// A retrying job, due again in ten minutes.
async fn make_retrying(queue: &impl Queue, id: &str, error: &str) {
    let retry_in = Some(Duration::from_secs(600));
    fail_once(queue, id, "invoice.paid", error, retry_in).await;
}

/// Claims an event in a store and releases it with an error: a failed event.
async fn make_failed(store: &impl IdempotencyStore, id: &str) {
    let ty = EventType::from_wire("invoice.payment_failed");
    let Claim::Acquired(token) = store
        .claim(&EventId::new(id), &ty, Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("claim on {id} was not acquired")
    };
    store
        .release(&token, "inline handler: timeout")
        .await
        .unwrap();
}

/// The whole operator flow on one store whose queue exists: migrate, an empty status, a
/// dead job in `status` and `dead`, `show`, `requeue ID`, `requeue --all-dead`, a
/// missing table and unknown ids.
async fn operator_flow(store: &[String], queue: &impl Queue, prefix: &str) {
    let migrated = on(store, &["migrate", "--json"]).await.ok().json();
    let message = migrated["message"].as_str().unwrap();
    assert!(
        message.contains("up to date") || message.contains("nothing to do"),
        "{message}"
    );
    // Again: migrating is safe to repeat.
    on(store, &["migrate"]).await.ok();

    let status = on(store, &["status", "--json"]).await.ok().json();
    for state in ["queued", "running", "retrying", "dead", "completed"] {
        assert_eq!(status["queue"][state], 0, "{status}");
    }
    assert_eq!(status["failed_events"], 0);
    assert_eq!(status["lag_ms"], Value::Null);
    let text = on(store, &["status"]).await.ok().stdout;
    assert!(text.contains("dead       0"), "{text}");
    assert!(text.contains("lag        none"), "{text}");

    let id = format!("evt_{prefix}_dead");
    make_dead(queue, &id).await;

    let status = on(store, &["status", "--json"]).await.ok().json();
    assert_eq!(status["queue"]["dead"], 1, "{status}");
    let text = on(store, &["status"]).await.ok().stdout;
    assert!(text.contains("dead       1"), "{text}");
    assert!(text.contains("requeue ID` reruns it"), "{text}");

    let dead = on(store, &["dead"]).await.ok().stdout;
    let mut lines = dead.lines();
    let header = lines.next().unwrap();
    for column in ["ID", "TYPE", "ATTEMPTS", "LAST ERROR", "FIRST SEEN"] {
        assert!(header.contains(column), "{dead}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with(&id), "{dead}");
    assert!(row.contains("invoice.payment_failed"), "{dead}");
    assert!(row.contains("handler failed: card_declined"), "{dead}");
    let dead = on(store, &["dead", "--json"]).await.ok().json();
    assert_eq!(dead["data"].as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(dead["data"][0]["id"], id.as_str());
    assert_eq!(dead["data"][0]["state"], "dead");
    assert_eq!(dead["data"][0]["attempts"], 1);
    assert!(dead["next_after"].is_null(), "{dead}");

    let shown = on(store, &["show", &id]).await.ok().stdout;
    assert!(shown.contains("state        dead"), "{shown}");
    assert!(shown.contains("handler failed: card_declined"), "{shown}");
    assert!(
        shown.contains(&format!("  \"id\": \"{id}\"")),
        "pretty body: {shown}"
    );
    let out = on(store, &["show", &id, "--json"]).await.ok();
    // The body as stored: Stripe's member order, not sorted.
    let (object, version) = (
        out.stdout.find(r#""object":"event""#),
        out.stdout.find(r#""api_version":"#),
    );
    assert!(object.is_some() && object < version, "{}", out.stdout);
    let shown = out.json();
    assert_eq!(shown["job"]["state"], "dead");
    assert_eq!(shown["body"]["id"], id.as_str());
    assert_eq!(shown["body"]["type"], "invoice.payment_failed");

    // `show` suggests the command that reruns the job on this very store, with the
    // store's flags as typed: run as a shell runs it, in a shell with no store variable,
    // it does. A URL read from the environment is named by its variable instead.
    let typed = rerun_hint(&on(store, &["show", &id]).await.ok().stdout);
    let (unflagged, env) = from_environment(store);
    let mut args: Vec<&str> = unflagged.iter().map(String::as_str).collect();
    args.extend(["show", &id]);
    let from_env = rerun_hint(&cli_with_env(&args, &env).await.ok().stdout);
    if env.is_empty() {
        assert_eq!(from_env, typed);
    } else {
        assert!(
            from_env.contains(&format!("=\"${}\"", env[0].0)),
            "{from_env}"
        );
        assert!(!from_env.contains(env[0].1), "{from_env}");
    }
    // A typed URL's password is not repeated (PostgreSQL here trusts loopback, so any
    // password connects).
    if let Some(i) = store.iter().position(|f| f == "--database-url") {
        let mut with_password = store.to_vec();
        with_password[i + 1] = store[i + 1].replacen("postgres@", "postgres:hunter2@", 1);
        assert!(with_password[i + 1].contains("hunter2"));
        let hint = rerun_hint(&on(&with_password, &["show", &id]).await.ok().stdout);
        assert!(!hint.contains("hunter2"), "{hint}");
        assert!(hint.contains("postgres:***@"), "{hint}");
    }
    let out = in_shell(&format!("{typed} --json"), &[]).await.ok().json();
    assert_eq!(out["requeued"], 1);
    // The variable's form reaches the same store: the job is queued there now (another
    // store would answer "not found", 3).
    let out = in_shell(&from_env, &env).await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("is queued"), "{out:#?}");
    let shown = on(store, &["show", &id, "--json"]).await.ok().json();
    assert_eq!(shown["job"]["state"], "queued");
    assert_eq!(shown["job"]["attempts"], 0);
    // A queued job cannot be requeued: an error (1), not "not found".
    let again = on(store, &["requeue", &id]).await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(again.stderr.contains("is queued"), "{again:#?}");

    // Take the requeued job out of the way, then make two more dead jobs.
    let taken = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    queue.complete(&taken[0].token).await.unwrap();
    make_dead(queue, &format!("evt_{prefix}_dead_a")).await;
    make_dead(queue, &format!("evt_{prefix}_dead_b")).await;
    // A page at a time: a page that more follow says how to get the next.
    let (a, b) = (
        format!("evt_{prefix}_dead_a"),
        format!("evt_{prefix}_dead_b"),
    );
    let page = on(store, &["dead", "--limit", "1"]).await.ok().stdout;
    assert!(page.contains(&a) && !page.contains(&b), "{page}");
    assert!(
        page.contains(&format!("run this command again with --after={a}")),
        "{page}"
    );
    // In JSON, the next page's `--after` value, then `null` on the last page.
    let page = on(store, &["dead", "--limit", "1", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(page["data"][0]["id"], a.as_str(), "{page}");
    assert_eq!(page["next_after"], a.as_str(), "{page}");
    let after_a = format!("--after={a}");
    let page = on(store, &["dead", "--limit", "1", &after_a, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["data"][0]["id"], b.as_str());
    assert!(page["next_after"].is_null(), "{page}");
    // The last page, full: nothing follows, so no hint.
    let page = on(store, &["dead", "--limit", "1", &after_a])
        .await
        .ok()
        .stdout;
    assert!(page.contains(&b) && !page.contains("again with"), "{page}");
    let page = on(store, &["dead", "--after", &b]).await.ok().stdout;
    assert!(
        page.contains(&format!("no dead jobs after {b}")) && !page.contains("again with"),
        "{page}"
    );
    // A key the queue does not hold is an error (exit 3), in text and in JSON, rather
    // than the end of the list.
    for json in [false, true] {
        let mut args = vec!["dead", "--after", "evt_typo"];
        if json {
            args.push("--json");
        }
        let typo = on(store, &args).await;
        assert_eq!(typo.code, 3, "{typo:#?}");
        assert!(
            typo.stderr.contains("no job evt_typo to page after"),
            "{typo:#?}"
        );
        assert!(!typo.stdout.contains("no dead jobs"), "{typo:#?}");
    }
    let requeued = on(store, &["requeue", "--all-dead", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(requeued["requeued"], 2);
    assert!(
        requeued.get("ids").is_none(),
        "counted, not listed: {requeued}"
    );
    let status = on(store, &["status", "--json"]).await.ok().json();
    assert_eq!(status["queue"]["dead"], 0);
    assert_eq!(status["queue"]["queued"], 2);
    assert_eq!(status["queue"]["completed"], 1);
    assert!(status["lag_ms"].is_u64(), "{status}");

    // Unknown ids: exit code 3.
    let missing = on(store, &["show", "evt_no_such_event"]).await;
    assert_eq!(missing.code, 3, "{missing:#?}");
    assert!(missing.stderr.contains("evt_no_such_event"));
    let missing = on(store, &["requeue", "evt_no_such_event"]).await;
    assert_eq!(missing.code, 3, "{missing:#?}");

    // Purge: under the 30 days an event may come back (Stripe's retries, a reconciler's
    // relisting) only with --force (the refused purge deletes nothing: the forced one
    // below still finds the job).
    tokio::time::sleep(Duration::from_millis(20)).await;
    for young in ["1h", "7d"] {
        let refused = on(store, &["purge", "--older-than", young]).await;
        assert_eq!(refused.code, 2, "{refused:#?}");
        assert!(refused.stderr.contains("--force"), "{refused:#?}");
    }
    // Then the completed job, with nothing newer than it kept.
    let purged = on(
        store,
        &[
            "purge",
            "--older-than",
            "0s",
            "--batch",
            "1",
            "--force",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(purged["completed_jobs"], 1, "{purged}");
    // A batch so large it would hold the store for long is refused.
    for batch in ["0", "10001"] {
        let refused = on(store, &["purge", "--batch", batch]).await;
        assert_eq!(refused.code, 2, "{refused:#?}");
        assert!(
            refused.stderr.contains("--batch must be 1 to 10000"),
            "{refused:#?}"
        );
    }
    let purged = on(store, &["purge"]).await.ok().stdout;
    assert!(purged.contains("purged 0 completed jobs"), "{purged}");

    // A table that was never migrated: the hint, and exit 1.
    let mut other: Vec<String> = Vec::new();
    let mut flags = store.iter();
    while let Some(flag) = flags.next() {
        if flag == "--table" {
            flags.next();
        } else {
            other.push(flag.clone());
        }
    }
    // In capitals: the store reads the unquoted name in lower case, and says so.
    let never = unique("cli_never_migrated").to_ascii_uppercase();
    other.extend(["--table".to_owned(), never.clone()]);
    // Redis has no schema: nothing to migrate, nothing missing.
    let commands: &[&str] = if store.iter().any(|f| f == "--redis-url") {
        &[]
    } else {
        &["status", "dead", "failed"]
    };
    for &command in commands {
        let out = on(&other, &[command]).await;
        assert_eq!(out.code, 1, "{out:#?}");
        assert!(
            out.stderr.contains("run `stripe-webhooks migrate`"),
            "{command}: {out:#?}"
        );
        assert!(
            out.stderr.contains(&never.to_ascii_lowercase()) && !out.stderr.contains(&never),
            "{command}: {out:#?}"
        );
    }
}

// ---- SQLite ----

/// `show` prints what the console shows: a client secret in the body, and an API key in
/// the last error, redacted; `--raw` prints the body as stored. A body that is not JSON
/// cannot be searched, so only `--raw` prints it.
#[tokio::test]
async fn show_redacts_credentials_unless_raw() {
    const CLIENT_SECRET: &str = "pi_3Qx_secret_Zy9VtW8u";
    const API_KEY: &str = "sk_live_51HxQ2bY3a8cDeFgHiJkLmN";
    let dir = TempDir::new("cli-redact");
    let flags = sqlite_flags(&dir);
    let store = SqliteStore::connect(dir.join("cli.db")).await.unwrap();
    let queue = store.queue();
    let mut body: Value = serde_json::from_str(
        &testing::event_for_type("evt_pi_secret", "payment_intent.succeeded").unwrap(),
    )
    .unwrap();
    body["data"]["object"]["client_secret"] = Value::from(CLIENT_SECRET);
    queue
        .enqueue(&NewJob::parse(body.to_string().as_bytes()).unwrap())
        .await
        .unwrap();
    let taken = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    let error = format!("handler failed: Stripe refused {API_KEY}");
    queue.fail(&taken[0].token, &error, None).await.unwrap();

    for args in [
        &["show", "evt_pi_secret"][..],
        &["show", "evt_pi_secret", "--json"][..],
        &["dead"][..],
        &["dead", "--json"][..],
    ] {
        let out = on(&flags, args).await.ok().stdout;
        assert!(!out.contains(CLIENT_SECRET), "{args:?}: {out}");
        assert!(!out.contains(API_KEY), "{args:?}: {out}");
        assert!(
            out.contains("handler failed: Stripe refused"),
            "{args:?}: {out}"
        );
    }
    let shown = on(&flags, &["show", "evt_pi_secret", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(
        shown["body"]["data"]["object"]["client_secret"],
        "<redacted>"
    );
    assert_eq!(shown["body"]["id"], "evt_pi_secret");
    let text = on(&flags, &["show", "evt_pi_secret"]).await.ok().stdout;
    assert!(text.contains("\"client_secret\": \"<redacted>\""), "{text}");

    let raw = on(&flags, &["show", "evt_pi_secret", "--raw", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(
        raw["body"]["data"]["object"]["client_secret"],
        CLIENT_SECRET
    );
    let raw = on(&flags, &["show", "evt_pi_secret", "--raw"])
        .await
        .ok()
        .stdout;
    assert!(raw.contains(CLIENT_SECRET), "{raw}");
    // The error stays redacted even then: `--raw` is about the body.
    assert!(!raw.contains(API_KEY), "{raw}");

    // A body that is not JSON (written by something other than this crate's queue).
    stripe_webhooks::sqlx::query(
        "UPDATE stripe_webhook_events_jobs SET body = ?1 WHERE job_key = ?2",
    )
    .bind(format!("client_secret={CLIENT_SECRET}").into_bytes())
    .bind("evt_pi_secret")
    .execute(store.pool())
    .await
    .unwrap();
    let hidden = on(&flags, &["show", "evt_pi_secret"]).await.ok().stdout;
    assert!(!hidden.contains(CLIENT_SECRET), "{hidden}");
    assert!(hidden.contains("--raw prints it"), "{hidden}");
    let hidden = on(&flags, &["show", "evt_pi_secret", "--json"])
        .await
        .ok()
        .json();
    assert!(hidden["body"].is_null(), "{hidden}");
    let raw = on(&flags, &["show", "evt_pi_secret", "--raw"])
        .await
        .ok()
        .stdout;
    assert!(raw.contains(CLIENT_SECRET), "{raw}");

    // JSON that skipping over reads but the redaction's parse refuses (a number out of
    // range): not searched, so not shown either.
    stripe_webhooks::sqlx::query(
        "UPDATE stripe_webhook_events_jobs SET body = ?1 WHERE job_key = ?2",
    )
    .bind(format!(r#"{{"client_secret":"{CLIENT_SECRET}","x":1e400}}"#).into_bytes())
    .bind("evt_pi_secret")
    .execute(store.pool())
    .await
    .unwrap();
    for args in [
        &["show", "evt_pi_secret"][..],
        &["show", "evt_pi_secret", "--json"][..],
    ] {
        let out = on(&flags, args).await.ok().stdout;
        assert!(!out.contains(CLIENT_SECRET), "{args:?}: {out}");
    }
}

/// Text from outside (a handler's error quoting what a customer typed) reaches the
/// terminal with its control characters escaped; a reader that goes away early ends the
/// tool quietly (exit 0), not with a panic.
#[tokio::test]
async fn output_is_safe_for_terminals_and_pipes() {
    use tokio::io::AsyncReadExt;
    let dir = TempDir::new("cli-terminal");
    let flags = sqlite_flags(&dir);
    let store = SqliteStore::connect(dir.join("cli.db")).await.unwrap();
    let queue = store.queue();
    let body = testing::event_for_type("evt_esc", "invoice.payment_failed").unwrap();
    queue
        .enqueue(&NewJob::parse(body.as_bytes()).unwrap())
        .await
        .unwrap();
    let taken = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    let error = "handler failed: no customer \u{1b}]0;pwned\u{7}\u{1b}[2J named \u{7f}\u{9b} \u{202e}gnp.exe\n  state        completed";
    queue.fail(&taken[0].token, error, None).await.unwrap();
    for args in [&["show", "evt_esc"][..], &["dead"][..]] {
        let out = on(&flags, args).await.ok();
        assert!(
            !out.stdout.contains('\u{202e}'),
            "{args:?}: {:?}",
            out.stdout
        );
        assert!(!out.stdout.contains('\u{1b}'), "{args:?}: {:?}", out.stdout);
        assert!(!out.stdout.contains('\u{7}'), "{args:?}: {:?}", out.stdout);
        assert!(!out.stdout.contains('\u{9b}'), "{args:?}: {:?}", out.stdout);
        assert!(out.stdout.contains("\\u{1b}"), "{args:?}: {:?}", out.stdout);
        // A newline in the error cannot add a line that reads as another field.
        let states = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("  state "))
            .count();
        assert!(states <= 1, "{args:?}: {:?}", out.stdout);
    }
    // With --json the output stays JSON (DEL and the C1 controls as JSON escapes), and
    // still has no raw control for the terminal.
    for args in [&["show", "evt_esc", "--json"][..], &["dead", "--json"][..]] {
        let out = on(&flags, args).await.ok();
        assert!(
            !out.stdout.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?}: {:?}",
            out.stdout
        );
        let parsed: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {:?}", out.stdout));
        assert!(parsed.to_string().contains("\\u001b]0;pwned"), "{parsed}");
        assert!(parsed.to_string().contains('\u{9b}'), "{parsed}");
    }
    // The command `show` suggests to rerun a job is one the shell runs as it reads.
    let odd = testing::event_for_type("evt_odd;$(id)", "invoice.payment_failed").unwrap();
    queue
        .enqueue(&NewJob::parse(odd.as_bytes()).unwrap())
        .await
        .unwrap();
    let taken = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    queue.fail(&taken[0].token, "boom", None).await.unwrap();
    let shown = on(&flags, &["show", "evt_odd;$(id)"]).await.ok().stdout;
    assert!(
        shown.contains(&format!(
            "stripe-webhooks --sqlite={} requeue 'evt_odd;$(id)'",
            flags[1]
        )),
        "{shown}"
    );

    // A 1 MB body, and a reader that takes a few bytes and leaves.
    let mut big: Value = serde_json::from_str(
        &testing::event_for_type("evt_big", "invoice.payment_failed").unwrap(),
    )
    .unwrap();
    big["data"]["object"]["metadata"] = serde_json::json!({ "note": "x".repeat(1 << 20) });
    let big = big.to_string();
    queue
        .enqueue(&NewJob::parse(big.as_bytes()).unwrap())
        .await
        .unwrap();
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend(["show", "evt_big"]);
    let mut child = tokio::process::Command::new(BIN)
        .args(&all)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).await.unwrap();
    drop(stdout);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn sqlite_flags(dir: &TempDir) -> Vec<String> {
    vec![
        "--sqlite".to_owned(),
        dir.join("cli.db").display().to_string(),
    ]
}

/// A path that cannot be looked at (here, under a file) is not a missing database: the
/// error says why, rather than suggest `migrate`, which would fail on it too.
#[tokio::test]
async fn an_sqlite_path_that_cannot_be_looked_at_is_not_missing() {
    let dir = TempDir::new("cli-sqlite-enotdir");
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let path = file.join("x.db").display().to_string();
    let out = cli(&["--sqlite", &path, "status"]).await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(!out.stderr.contains("no SQLite database"), "{out:#?}");
    assert!(
        out.stderr.to_lowercase().contains("not a directory"),
        "{out:#?}"
    );
    assert!(
        out.stderr.contains("cannot open the SQLite file"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("check the path"), "{out:#?}");
}

#[tokio::test]
async fn sqlite_operator_flow() {
    let dir = TempDir::new("cli-sqlite");
    let flags = sqlite_flags(&dir);
    // `migrate` creates the file and says which migrations it applied; the queue is opened
    // after it, as the service does.
    let first = on(&flags, &["migrate", "--json"]).await.ok().json();
    assert_eq!(
        first["applied"],
        serde_json::json!([1, 2, 3, 4, 5, 6, 7]),
        "{first}"
    );
    let first = first["message"].as_str().unwrap();
    assert!(
        first.contains("applied migration(s) 1, 2, 3, 4, 5, 6, 7"),
        "{first}"
    );
    let again = on(&flags, &["migrate"]).await.ok().stdout;
    assert!(again.contains("no migration to apply"), "{again}");
    // A database a newer release migrated (after a rollback) is not "up to date".
    let store = SqliteStore::connect(dir.join("cli.db")).await.unwrap();
    stripe_webhooks::sqlx::query(
        "INSERT INTO stripe_webhook_events_migrations (version, name, applied_at) \
         VALUES (99, '0099_future.sql', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let newer = on(&flags, &["migrate"]).await.ok().stdout;
    assert!(
        newer.contains(
            "no migration to apply; the database also has migration(s) 99 from a newer release"
        ) && !newer.contains("up to date"),
        "{newer}"
    );
    stripe_webhooks::sqlx::query("DELETE FROM stripe_webhook_events_migrations WHERE version = 99")
        .execute(store.pool())
        .await
        .unwrap();
    let queue = SqliteStore::connect(dir.join("cli.db"))
        .await
        .unwrap()
        .queue();
    operator_flow(&flags, &queue, "sqlite").await;
}

#[tokio::test]
async fn sqlite_failed_lists_store_failures_and_retrying_jobs() {
    let dir = TempDir::new("cli-failed");
    let flags = sqlite_flags(&dir);
    on(&flags, &["migrate"]).await.ok();
    let store = SqliteStore::connect(dir.join("cli.db")).await.unwrap();
    assert!(on(&flags, &["failed"])
        .await
        .ok()
        .stdout
        .contains("no failed events"));

    make_failed(&store, "evt_inline_failed").await;
    let queue = store.queue();
    make_retrying(&queue, "evt_retrying", "upstream 502").await;

    let page = on(&flags, &["failed", "--json"]).await.ok().json();
    assert!(page["next_after_event"].is_null(), "{page}");
    assert!(page["next_after_job"].is_null(), "{page}");
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let inline = rows
        .iter()
        .find(|r| r["id"] == "evt_inline_failed")
        .unwrap();
    assert_eq!(inline["source"], "store");
    assert_eq!(inline["last_error"], "inline handler: timeout");
    let retrying = rows.iter().find(|r| r["id"] == "evt_retrying").unwrap();
    assert_eq!(retrying["state"], "retrying");
    assert!(retrying["next_run_ms"].is_i64());
    let text = on(&flags, &["failed"]).await.ok().stdout;
    assert!(
        text.contains("upstream 502") && text.contains("inline handler: timeout"),
        "{text}"
    );

    let status = on(&flags, &["status", "--json"]).await.ok().json();
    assert_eq!(status["failed_events"], 1);
    assert_eq!(status["queue"]["retrying"], 1);

    // The store record of an inline event: shown, but it has no body to show and is not
    // in the queue to requeue.
    let shown = on(&flags, &["show", "evt_inline_failed"]).await.ok().stdout;
    assert!(shown.contains("status       failed"), "{shown}");
    let requeue = on(&flags, &["requeue", "evt_inline_failed"]).await;
    assert_eq!(requeue.code, 1, "{requeue:#?}");
    assert!(requeue.stderr.contains("not in the queue"), "{requeue:#?}");
    // A retrying job can be requeued.
    on(&flags, &["requeue", "evt_retrying"]).await.ok();

    // Paged: two more of each, one first seen after the other (the requeued job out of
    // the way first). Each list with more after its page names its own flag for its
    // next, and that flag pages that list only.
    let taken = queue.take(1, Duration::from_secs(60), false).await.unwrap();
    queue.complete(&taken[0].token).await.unwrap();
    for id in ["evt_inline_b", "evt_inline_c"] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        make_failed(&store, id).await;
    }
    for id in ["evt_retry_b", "evt_retry_c"] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        make_retrying(&queue, id, "upstream 503").await;
    }
    let ids = |v: serde_json::Value| -> Vec<String> {
        let rows = v["data"].as_array().unwrap().iter();
        rows.map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    };
    let page = on(&flags, &["failed", "--limit", "1"]).await.ok().stdout;
    for hint in [
        "more failed events follow: run this command again with --after-event=evt_inline_failed",
        "more retrying jobs follow: run this command again with --after-job=evt_retry_b",
    ] {
        assert!(page.contains(hint), "{hint}\n{page}");
    }
    let page = on(&flags, &["failed", "--limit", "1", "--json"]).await.ok();
    let page = page.json();
    // In JSON, each list's next value for its own flag.
    assert_eq!(page["next_after_event"], "evt_inline_failed", "{page}");
    assert_eq!(page["next_after_job"], "evt_retry_b", "{page}");
    assert_eq!(ids(page), ["evt_inline_failed", "evt_retry_b"]);
    let next = ["failed", "--after-event=evt_inline_failed", "--json"];
    assert_eq!(
        ids(on(&flags, &next).await.ok().json()),
        ["evt_inline_b", "evt_inline_c"]
    );
    let last = ["failed", "--after-event", "evt_inline_b", "--limit", "1"];
    let page = on(&flags, &last).await.ok().stdout;
    assert!(
        page.contains("evt_inline_c") && !page.contains("again with"),
        "the last page, full: {page}"
    );
    let next = ["failed", "--after-job=evt_retry_b", "--json"];
    assert_eq!(ids(on(&flags, &next).await.ok().json()), ["evt_retry_c"]);
    // Both at once: each list from its own place.
    let both = [
        "failed",
        "--after-event=evt_inline_b",
        "--after-job=evt_retry_b",
        "--json",
    ];
    assert_eq!(
        ids(on(&flags, &both).await.ok().json()),
        ["evt_inline_c", "evt_retry_c"]
    );
    let page = on(&flags, &["failed", "--after-job=evt_retry_c"])
        .await
        .ok()
        .stdout;
    assert!(
        page.contains("no more retrying jobs after evt_retry_c") && !page.contains("again with"),
        "{page}"
    );
    // After an id neither list holds: exit 3, not the end of the list.
    for (flag, what) in [
        ("--after-job=evt_typo", "no job evt_typo"),
        ("--after-event=evt_typo", "no store record evt_typo"),
    ] {
        let typo = on(&flags, &["failed", flag, "--json"]).await;
        assert_eq!(typo.code, 3, "{typo:#?}");
        assert!(typo.stderr.contains(what), "{typo:#?}");
    }
}

#[tokio::test]
async fn sqlite_missing_file_says_to_migrate_and_creates_nothing() {
    let dir = TempDir::new("cli-nofile");
    let path = dir.join("absent.db");
    let out = cli(&["--sqlite", &path.display().to_string(), "status"]).await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("stripe-webhooks migrate"), "{out:#?}");
    assert!(out.stderr.contains("absent.db"), "{out:#?}");
    assert!(!path.exists());
}

#[tokio::test]
async fn usage_errors_exit_2_and_help_documents_exit_codes() {
    assert_eq!(cli(&["requeue"]).await.code, 2);
    assert_eq!(cli(&["requeue", "evt_1", "--all-dead"]).await.code, 2);
    assert_eq!(cli(&["purge", "--older-than", "soon"]).await.code, 2);
    assert_eq!(cli(&["purge", "--older-than", "3600"]).await.code, 2);
    // Purge's flags are checked before the store is opened (here, one that cannot be).
    let nowhere = "postgres://127.0.0.1:9/db";
    for args in [
        &["--batch", "0"][..],
        &["--older-than", "7d"],
        &["--records-older-than", "1h"],
    ] {
        let out = cli(&[&["--database-url", nowhere, "purge"][..], args].concat()).await;
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
    }
    assert_eq!(cli(&["--redis-url", "notaurl", "status"]).await.code, 2);
    assert_eq!(cli(&["no-such-command"]).await.code, 2);
    assert_eq!(cli(&["dead", "--limit", "0"]).await.code, 2);
    assert_eq!(cli(&["failed", "--limit", "0"]).await.code, 2);
    let help = cli(&["--help"]).await.ok().stdout;
    for line in ["Exit codes", "3  not found", "2  usage"] {
        assert!(help.contains(line), "{help}");
    }
}

#[tokio::test]
async fn the_env_names_the_store_like_the_examples() {
    let dir = TempDir::new("cli-env");
    let path = dir.join("env.db").display().to_string();
    let out = tokio::process::Command::new(BIN)
        .args(["migrate"])
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("SQLITE_PATH", &path)
        .env("STRIPE_WEBHOOKS_TABLE", "svc_events")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let store = SqliteStore::connect(&path)
        .await
        .unwrap()
        .with_table("svc_events")
        .unwrap();
    make_dead(&store.queue(), "evt_env").await;
    let dead = cli(&["--sqlite", &path, "--table", "svc_events", "dead", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(dead["data"][0]["id"], "evt_env");
}

/// A store flag typed on the command line beats the store variables of the
/// environment (before or after the subcommand); two typed store flags are a usage
/// error; with no flag the environment's order stands.
#[tokio::test]
async fn a_typed_store_flag_beats_the_environment() {
    let dir = TempDir::new("cli-precedence");
    let path = dir.join("p.db").display().to_string();
    // Nothing listens on port 1: opening either would fail.
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_with_env(
            &args,
            &[
                ("DATABASE_URL", "postgres://ops:pw@127.0.0.1:1/prod"),
                ("REDIS_URL", "redis://127.0.0.1:1"),
            ],
        )
        .await
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let migrated = run(args(&["--sqlite", &path, "migrate"])).await.ok();
    assert!(migrated.stdout.contains(&path), "{migrated:#?}");
    let store = SqliteStore::connect(&path).await.unwrap();
    make_dead(&store.queue(), "evt_here").await;
    for typed in [
        args(&["--sqlite", &path, "dead", "--json"]),
        args(&["dead", "--json", "--sqlite", &path]),
    ] {
        let dead = run(typed).await.ok().json();
        assert_eq!(dead["data"][0]["id"], "evt_here");
    }
    let requeued = run(args(&["requeue", "evt_here", "--sqlite", &path]))
        .await
        .ok();
    assert!(
        requeued.stdout.contains(&path),
        "names the store: {requeued:#?}"
    );

    let both = run(args(&[
        "--sqlite",
        &path,
        "--redis-url",
        "redis://x",
        "dead",
    ]))
    .await;
    assert_eq!(both.code, 2, "{both:#?}");
    assert!(
        both.stderr.contains("--redis-url and --sqlite"),
        "{both:#?}"
    );
    // `--redis-url` beats DATABASE_URL: the error is Redis's.
    let redis = run(args(&["--redis-url", "redis://127.0.0.1:1", "dead"])).await;
    assert_eq!(redis.code, 1, "{redis:#?}");
    assert!(redis.stderr.contains("Redis"), "{redis:#?}");
    assert!(!redis.stderr.contains("PostgreSQL"), "{redis:#?}");
    // A store flag typed empty (`--database-url "$UNSET"`) is refused: it would have
    // fallen through to the environment's store.
    for flag in ["--database-url", "--redis-url"] {
        let empty = run(args(&[flag, "", "requeue", "--all-dead"])).await;
        assert_eq!(empty.code, 2, "{empty:#?}");
        assert!(
            empty.stderr.contains(&format!("{flag} is empty")),
            "{empty:#?}"
        );
    }
    let empty = run(args(&["--sqlite", "", "requeue", "--all-dead"])).await;
    assert_eq!(empty.code, 2, "{empty:#?}");
    // Nor is a store variable set but empty (a compose file's unset host variable),
    // which the examples refuse: the SQLite file here is not the service's store. A
    // typed store flag still beats it.
    for var in ["DATABASE_URL", "REDIS_URL"] {
        let env = [(var, ""), ("SQLITE_PATH", path.as_str())];
        let empty = cli_with_env(&["requeue", "--all-dead"], &env).await;
        assert_eq!(empty.code, 2, "{empty:#?}");
        assert!(
            empty.stderr.contains(&format!("{var} is set but empty")),
            "{empty:#?}"
        );
        let typed = cli_with_env(&["--sqlite", &path, "show", "evt_here", "--json"], &env).await;
        assert_eq!(typed.ok().json()["id"], "evt_here");
        // `send` opens no store: the variable is nothing to it (here it fails on the
        // URL, exit 1, not on the variable, exit 2).
        let send = cli_with_env(
            &[
                "send",
                "--url",
                "http://127.0.0.1:1/",
                "--secret",
                "whsec_x",
            ],
            &env,
        )
        .await;
        assert_eq!(send.code, 1, "{send:#?}");
        assert!(!send.stderr.contains("set but empty"), "{send:#?}");
    }
    // So is an empty table (`--table "$UNSET"`): not the default table, which may be
    // another service's.
    for table in ["", "  "] {
        let empty = run(args(&["--table", table, "requeue", "--all-dead"])).await;
        assert_eq!(empty.code, 2, "{empty:#?}");
        assert!(empty.stderr.contains("--table"), "{empty:#?}");
    }
    // No flag: DATABASE_URL, as documented (and its password is not shown).
    let env = run(args(&["dead"])).await;
    assert_eq!(env.code, 1, "{env:#?}");
    assert!(env.stderr.contains("PostgreSQL"), "{env:#?}");
    assert!(!env.stderr.contains(":pw@"), "{env:#?}");
}

/// `purge` deletes store records only when told their age (`--records-older-than`),
/// never on the store's default retention (30 days), which may be shorter than the
/// service's; an age under 30 days (Stripe lists events for 30, which a reconciler may
/// run again) needs `--force`; Redis records expire on their own.
#[tokio::test]
async fn purge_deletes_store_records_only_by_the_age_given() {
    let dir = TempDir::new("cli-purge-age");
    let flags = sqlite_flags(&dir);
    on(&flags, &["migrate"]).await.ok();
    let store = SqliteStore::connect(dir.join("cli.db")).await.unwrap();
    make_failed(&store, "evt_failed").await;
    let record = || async { store.record(&EventId::new("evt_failed")).await.unwrap() };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Jobs only, even with `--force` and a zero age: the records are kept.
    let kept = on(
        &flags,
        &["purge", "--older-than", "0s", "--force", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(kept["store_records"], Value::Null, "{kept}");
    assert!(record().await.is_some());
    let kept = on(&flags, &["purge", "--records-older-than", "30d", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(kept["store_records"], 0, "{kept}");
    assert_eq!(kept["records_older_than_secs"], 30 * 86_400, "{kept}");
    for young in ["1h", "4d", "29d"] {
        let refused = on(&flags, &["purge", "--records-older-than", young]).await;
        assert_eq!(refused.code, 2, "{refused:#?}");
        assert!(
            refused
                .stderr
                .contains(&format!("--records-older-than {young}"))
                && refused.stderr.contains("under 30 days"),
            "{refused:#?}"
        );
    }
    assert!(record().await.is_some());
    let purged = on(
        &flags,
        &["purge", "--records-older-than", "0s", "--force", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(purged["store_records"], 1, "{purged}");
    assert!(
        purged["target"].as_str().unwrap().contains("cli.db"),
        "{purged}"
    );
    assert!(record().await.is_none());
    let text = on(&flags, &["purge"]).await.ok().stdout;
    assert!(
        text.contains("no store records (give --records-older-than"),
        "{text}"
    );
}

// ---- PostgreSQL ----

fn database_url() -> String {
    std::env::var("DATABASE_URL_TEST").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL_TEST is not set: start PostgreSQL with `eval \"$(scripts/services.sh start)\"` \
             or run the whole suite with `scripts/test.sh`"
        )
    })
}

#[tokio::test]
async fn postgres_operator_flow() {
    use stripe_webhooks::sqlx::postgres::PgPoolOptions;
    use stripe_webhooks::PostgresStore;

    let url = database_url();
    let table = unique("cli_pg");
    let flags = vec![
        "--database-url".to_owned(),
        url.clone(),
        "--table".to_owned(),
        table.clone(),
    ];
    // Before `migrate`, the table is missing.
    let out = on(&flags, &["status"]).await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("run `stripe-webhooks migrate`"),
        "{out:#?}"
    );

    on(&flags, &["migrate"]).await.ok();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let store = PostgresStore::new(pool.clone()).with_table(&table).unwrap();
    operator_flow(&flags, &store.queue(), &table).await;

    make_failed(&store, "evt_pg_inline").await;
    let status = on(&flags, &["status", "--json"]).await.ok().json();
    assert_eq!(status["failed_events"], 1);

    for t in [format!("{table}_jobs"), table] {
        let _ = stripe_webhooks::sqlx::query(&format!("DROP TABLE IF EXISTS {t}"))
            .execute(&pool)
            .await;
    }
}

#[tokio::test]
async fn unreachable_postgres_names_the_url_without_its_password() {
    let out = cli(&[
        "--database-url",
        "postgres://app:pg-pass-never-shown@127.0.0.1:1/app",
        "status",
    ])
    .await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr
            .contains("cannot connect to PostgreSQL at postgres://app:***@127.0.0.1:1/app"),
        "{out:#?}"
    );
    assert!(
        !out.stderr.contains("pg-pass-never-shown") && !out.stdout.contains("pg-pass-never-shown")
    );
}

/// Passwords the URL parser cannot find (a `/` or `#` left unescaped) and libpq
/// key/value strings (not URLs, refused with the value named) are hidden too.
#[tokio::test]
async fn odd_database_urls_are_named_without_their_passwords() {
    for (url, parts) in [
        (
            "postgres://app:pg/pass#never?shown@127.0.0.1:1/app",
            &["pg/pass", "never?shown"][..],
        ),
        (
            "host=127.0.0.1 user=app password=pg/pass#never?shown dbname=app",
            &["pg/pass", "never?shown"],
        ),
        (
            "redis://:pg/pass#never?shown@127.0.0.1:1/0",
            &["pg/pass", "never?shown"],
        ),
        // No scheme: `user:password@host` all the same.
        ("app:pg-never-shown@127.0.0.1:1/app", &["pg-never-shown"]),
        (
            "postgres:/app:typo-never-shown@127.0.0.1:1/app",
            &["typo-never-shown"],
        ),
        // The redis crate's password for a Unix socket is a `pass` parameter.
        (
            "redis+unix:///nonexistent/redis.sock?db=0&pass=unix-never-shown",
            &["unix-never-shown"],
        ),
    ] {
        let flag = if url.starts_with("redis") {
            "--redis-url"
        } else {
            "--database-url"
        };
        let out = cli(&[flag, url, "status"]).await;
        assert_ne!(out.code, 0, "{out:#?}");
        assert!(out.stderr.contains("***"), "{url}: {out:#?}");
        for part in parts {
            assert!(
                !out.stderr.contains(part) && !out.stdout.contains(part),
                "{url}: {out:#?}"
            );
        }
    }
}

// ---- Redis ----

fn redis_url() -> String {
    std::env::var("REDIS_URL_TEST").unwrap_or_else(|_| {
        panic!(
            "REDIS_URL_TEST is not set: start a Redis server with \
             `eval \"$(scripts/services.sh start)\"` and run again, or run `scripts/test.sh`"
        )
    })
}

/// The store's and the queue's parts on Redis.
#[tokio::test]
async fn redis_operator_flow() {
    use stripe_webhooks::redis::{self, aio::ConnectionManager};
    use stripe_webhooks::RedisStore;

    let url = redis_url();
    let prefix = unique("cli_redis");
    let flags = vec![
        "--redis-url".to_owned(),
        url.clone(),
        "--table".to_owned(),
        prefix.clone(),
    ];
    let migrated = on(&flags, &["migrate"]).await.ok().stdout;
    assert!(migrated.contains("nothing to do"), "{migrated}");

    let conn = ConnectionManager::new(redis::Client::open(url).unwrap())
        .await
        .unwrap();
    let store = RedisStore::new(conn).with_prefix(&prefix).unwrap();
    operator_flow(&flags, &store.queue(), &prefix).await;

    make_failed(&store, "evt_redis_failed").await;
    let status = on(&flags, &["status", "--json"]).await.ok().json();
    assert_eq!(status["store"], "redis");
    assert_eq!(status["failed_events"], 1, "{status}");
    // The test server evicts nothing and keeps an append-only file: no warning. An
    // eviction policy that may drop completed records is warned of. (No test of this
    // binary fills the server, so the policy changes nothing else; it is put back.)
    assert_eq!(status["warnings"], serde_json::json!([]), "{status}");
    let admin = ConnectionManager::new(redis::Client::open(redis_url()).unwrap())
        .await
        .unwrap();
    let config = |key: &'static str, value: String| {
        let mut admin = admin.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(key)
                .arg(value)
                .query_async(&mut admin)
                .await
                .unwrap();
        }
    };
    let memory: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut admin.clone())
        .await
        .unwrap();
    config("maxmemory", "1gb".to_owned()).await;
    config("maxmemory-policy", "allkeys-lru".to_owned()).await;
    let text = on(&flags, &["status"]).await;
    config("maxmemory-policy", "noeviction".to_owned()).await;
    config("maxmemory", memory[1].clone()).await;
    let text = text.ok().stdout;
    assert!(
        text.contains("warning    Redis's maxmemory-policy is allkeys-lru"),
        "{text}"
    );
    let failed = on(&flags, &["failed", "--json"]).await.ok().json();
    assert!(
        failed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "evt_redis_failed" && f["last_error"] == "inline handler: timeout"),
        "{failed}"
    );
    let shown = on(&flags, &["show", "evt_redis_failed", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["record"]["status"], "failed");
    let missing = on(&flags, &["show", "evt_redis_nothing"]).await;
    assert_eq!(missing.code, 3, "{missing:#?}");
    // Redis records expire on their own: no age to purge them by, whatever the age
    // (one under 30 days is not sent off to add --force first).
    for age in ["30d", "1d"] {
        let refused = on(&flags, &["purge", "--records-older-than", age]).await;
        assert_eq!(refused.code, 2, "{refused:#?}");
        assert!(
            refused.stderr.contains("expire on their own"),
            "{refused:#?}"
        );
    }
    // And a purge without it does not suggest it.
    let text = on(&flags, &["purge"]).await.ok().stdout;
    assert!(text.contains("Redis expires them on its own"), "{text}");
    assert!(!text.contains("--records-older-than"), "{text}");
}

#[tokio::test]
async fn unreachable_redis_names_the_url_without_its_password() {
    let out = cli(&[
        "--redis-url",
        "redis://:redis-pass-never-shown@127.0.0.1:1/0",
        "status",
    ])
    .await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr
            .contains("cannot connect to Redis at redis://:***@127.0.0.1:1/0"),
        "{out:#?}"
    );
    assert!(!out.stderr.contains("redis-pass-never-shown"));
}

// ---- send ----

/// A webhook endpoint on 127.0.0.1 that verifies signatures with `secret`: 200 when
/// the signature is good, 400 otherwise. Returns its URL and how many requests it got.
async fn endpoint(secret: &str) -> (String, Arc<AtomicUsize>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};

    let verifier = Arc::new(Verifier::from_secrets_list(secret).unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let verifier = Arc::clone(&verifier);
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let header = headers
                    .get("stripe-signature")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                match verifier.verify(&body, header) {
                    Ok(_) => (StatusCode::OK, "ok"),
                    Err(_) => (StatusCode::BAD_REQUEST, "bad signature"),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/webhook"), hits)
}

/// `send` against a processor (memory store) whose verifier takes timestamps of the last
/// two seconds only and whose handler takes 1.5 s: the copies of one event go one after
/// another (a copy sent while the first still runs would get the processor's 409), and
/// each request is signed when it is sent (a request signed at the start of the run
/// would be refused as stale by the third round). Before, both failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signs_each_request_when_it_goes_and_sends_copies_in_turn() {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use stripe_webhooks::{EventRouter, MemoryStore, Processor};

    let secret = "whsec_cli_send_in_turn";
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let processor = Arc::new(Processor::new(
        Verifier::from_secrets_list(secret)
            .unwrap()
            .with_tolerance(Duration::from_secs(2)),
        MemoryStore::new(),
        EventRouter::new().fallback(move |_e| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(())
            })
        }),
    ));
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let processor = Arc::clone(&processor);
            async move {
                let header = headers
                    .get("stripe-signature")
                    .and_then(|h| h.to_str().ok());
                let o = processor.process(header, &body).await;
                (StatusCode::from_u16(o.status()).unwrap(), o.kind().name())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let url = format!("http://{addr}/webhook");
    let send = |count: &'static str, duplicates: &'static str, concurrency: &'static str| {
        let url = url.clone();
        async move {
            cli(&[
                "send",
                "--url",
                &url,
                "--secret",
                secret,
                "--count",
                count,
                "--duplicates",
                duplicates,
                "--concurrency",
                concurrency,
                "--json",
            ])
            .await
            .ok()
            .json()
        }
    };
    // One at a time: the third is sent 3 s into the run.
    let summary = send("3", "1", "1").await;
    assert_eq!(summary["statuses"]["200"], 3, "{summary}");
    // Two copies each, two requests at a time.
    let summary = send("2", "2", "2").await;
    assert_eq!(summary["sent"], 4, "{summary}");
    assert_eq!(summary["statuses"]["200"], 4, "{summary}");
    assert_eq!(runs.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn send_signs_and_posts_events() {
    let secret = "whsec_cli_send_test_secret";
    let (url, hits) = endpoint(secret).await;

    let out = cli(&[
        "send",
        "--url",
        &url,
        "--secret",
        secret,
        "--type",
        "invoice.paid",
        "--count",
        "2",
        "--duplicates",
        "2",
        "--concurrency",
        "2",
        "--json",
    ])
    .await
    .ok();
    let summary = out.json();
    assert_eq!(summary["sent"], 4, "{summary}");
    assert_eq!(summary["statuses"]["200"], 4, "{summary}");
    assert_eq!(summary["failed_to_send"], 0);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));

    // A rotation list, as the service takes it: signed with its first secret.
    let list = format!("{secret},whsec_cli_old_secret");
    let rotated = cli(&["send", "--url", &url, "--secret", &list, "--json"]).await;
    assert_eq!(rotated.code, 0, "{rotated:#?}");
    assert_eq!(rotated.json()["statuses"]["200"], 1, "{rotated:#?}");
    assert!(!rotated.stdout.contains("whsec_cli_old") && !rotated.stderr.contains("whsec_cli_old"));
    assert_eq!(hits.load(Ordering::SeqCst), 5);
    let empty = cli(&["send", "--url", &url, "--secret", ",whsec_x"]).await;
    assert_eq!(empty.code, 2, "{empty:#?}");

    let text = cli(&[
        "send",
        "--url",
        &url,
        "--secret",
        secret,
        "--id",
        "evt_cli_send",
    ])
    .await
    .ok()
    .stdout;
    assert!(text.contains("evt_cli_send 200"), "{text}");
    assert!(text.contains("summary: 1 sent"), "{text}");

    // A wrong signature is the service's 400, not an error of the tool.
    let bad = cli(&[
        "send",
        "--url",
        &url,
        "--secret",
        secret,
        "--bad-signature",
        "--json",
    ])
    .await
    .ok()
    .json();
    assert_eq!(bad["statuses"]["400"], 1, "{bad}");

    // An unknown type is a usage error.
    assert_eq!(
        cli(&["send", "--url", &url, "--type", "no.such.type"])
            .await
            .code,
        2
    );
    // So are nothing to send and a URL that is not one (named without its password).
    for args in [
        &["send", "--url", &url, "--count", "0"][..],
        &["send", "--url", &url, "--duplicates", "0"],
        &[
            "send",
            "--url",
            &url,
            "--duplicates",
            "18446744073709551615",
        ],
        &["send", "--url", &url, "--count", "100001"],
        &[
            "send",
            "--url",
            &url,
            "--count",
            "1000",
            "--duplicates",
            "101",
        ],
        &["send", "--url", "ops:s3cret@localhost:4242/webhook"],
    ] {
        let out = cli(args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
        assert!(!out.stderr.contains("s3cret"), "{out:#?}");
    }

    // Answers a smoke test must not pass: the service refused good deliveries (a
    // secret that does not match), or took a bad signature.
    let refused = cli(&["send", "--url", &url, "--secret", "whsec_another_secret"]).await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(refused.stdout.contains(" 400 "), "{refused:#?}");
    assert!(
        refused
            .stderr
            .contains("1 of 1 deliveries were answered 1×400"),
        "{refused:#?}"
    );
    let (lax, _) = endpoint("whsec_not_the_right_secret").await;
    let took = cli(&["send", "--url", &lax, "--bad-signature"]).await;
    assert_eq!(took.code, 1, "{took:#?}");
    assert!(took.stderr.contains("not refused with a 400"), "{took:#?}");
    // Another 4xx is no refusal: the request never reached the signature check.
    let wrong_path = url.replace("/webhook", "/no-such-path");
    let missed = cli(&["send", "--url", &wrong_path, "--bad-signature"]).await;
    assert_eq!(missed.code, 1, "{missed:#?}");
    assert!(missed.stderr.contains("1×404"), "{missed:#?}");
}

/// A redirect is not followed: Stripe counts a 3xx as a failed delivery, so a smoke
/// test must not pass where every real delivery fails.
#[tokio::test]
async fn send_fails_on_a_redirect_it_does_not_follow() {
    use axum::http::{header::LOCATION, StatusCode};
    let secret = "whsec_cli_send_redirect";
    let (target, hits) = endpoint(secret).await;
    let moved = target.clone();
    let app = axum::Router::new().route(
        "/old",
        axum::routing::post(move || {
            let moved = moved.clone();
            async move { (StatusCode::PERMANENT_REDIRECT, [(LOCATION, moved)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let out = cli(&[
        "send",
        "--url",
        &format!("http://{addr}/old"),
        "--secret",
        secret,
    ])
    .await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("1×308") && out.stderr.contains("redirect"),
        "{out:#?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
}

/// A token in the endpoint's query or user information is never shown: the summary,
/// the JSON and errors name the endpoint without them.
#[tokio::test]
async fn send_never_shows_a_token_in_the_url() {
    let secret = "whsec_cli_send_token_test";
    let (url, hits) = endpoint(secret).await;
    let token = "tok_9f8e7d6c5b4a";
    let with_token = format!("{url}?token={token}");
    let out = cli(&["send", "--url", &with_token, "--secret", secret, "--json"]).await;
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(
        out.json()["url"]
            .as_str()
            .unwrap()
            .ends_with("/webhook?***"),
        "{out:#?}"
    );
    let out = cli(&["send", "--url", &with_token, "--secret", secret]).await;
    assert!(out.stdout.contains("/webhook?***"), "{out:#?}");
    // Unreachable: the error names the endpoint without its token.
    for unreachable in [
        format!("http://127.0.0.1:1/webhook?token={token}"),
        format!("http://{token}@127.0.0.1:1/webhook"),
    ] {
        let out = cli(&["send", "--url", &unreachable, "--json"]).await;
        assert_eq!(out.code, 1, "{out:#?}");
        assert!(
            !out.stdout.contains(token) && !out.stderr.contains(token),
            "{out:#?}"
        );
    }
}

/// A send that fails names the URL without its password, in any spelling (as typed or
/// percent-encoded: `p@ss` as `p%40ss`).
#[tokio::test]
async fn send_errors_never_show_the_urls_password() {
    let out = cli(&[
        "send",
        "--url",
        "http://ops:p@ss^w:rd@127.0.0.1:1/webhook",
        "--json",
    ])
    .await;
    assert_eq!(out.code, 1, "{out:#?}");
    for shown in ["p@ss", "p%40ss", "w:rd", "%5Ew", "^w"] {
        assert!(
            !out.stdout.contains(shown) && !out.stderr.contains(shown),
            "{shown}: {out:#?}"
        );
    }
}

/// `send` is a smoke test: a reader that goes away (`send | head -1`) stops its output,
/// not its verdict, which still fails when the deliveries did.
#[tokio::test]
async fn send_fails_when_deliveries_did_even_if_its_reader_left() {
    let (url, hits) = endpoint("whsec_the_endpoints_own_secret").await;
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "send",
            "--url",
            &url,
            "--secret",
            "whsec_another_secret",
            "--count",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The reader leaves before the first line.
    drop(child.stdout.take());
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(1), "every delivery got a 400");
    assert_eq!(hits.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn send_to_nothing_names_the_url() {
    let out = cli(&["send", "--url", "http://127.0.0.1:1/webhook"]).await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("http://127.0.0.1:1/webhook"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("is the service running"), "{out:#?}");
}
