//! The example services themselves, spawned as processes on 127.0.0.1 with a SQLite file:
//! effects land in the `access` table exactly once, whatever is sent.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(
    feature = "axum",
    feature = "actix-web",
    feature = "sqlite",
    feature = "postgres",
    feature = "redis",
    feature = "tracing"
))]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use stripe_webhooks::sqlx::SqlitePool;
use stripe_webhooks::testing;

const SECRET: &str = "whsec_examples_e2e";
const THIN_SECRET: &str = "whsec_examples_e2e_thin";

struct Service {
    child: Child,
    base: String,
    db: PathBuf,
    client: reqwest::Client,
    /// Removed once the service is stopped (fields drop after `drop`).
    _dir: common::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(name: &str) -> Service {
    start_with(name, Some(THIN_SECRET)).await
}

/// The example `name`, with `STRIPE_THIN_WEBHOOK_SECRET` set to `thin` (or unset).
#[allow(clippy::zombie_processes)] // Service::drop kills and waits
async fn start_with(name: &str, thin: Option<&str>) -> Service {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = common::TempDir::new(&format!("ex_{name}"));
    let db = dir.join("stripe-webhooks.db");
    let mut command = Command::new(common::example_binary(name));
    command.env(
        "STRIPE_WEBHOOK_SECRET",
        format!("{SECRET},whsec_old_secret"),
    );
    match thin {
        Some(t) => command.env("STRIPE_THIN_WEBHOOK_SECRET", t),
        None => command.env_remove("STRIPE_THIN_WEBHOOK_SECRET"),
    };
    let mut child = command
        .env("PORT", port.to_string())
        .env("SQLITE_PATH", &db)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "info")
        // Not a terminal: the log must come out without colour codes.
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        // Its own process answers, not another test's that took the port meanwhile.
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited before it answered: {status}");
        }
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            assert_eq!(r.status(), 200);
            return Service {
                child,
                base,
                db,
                client,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} did not answer /healthz");
}

impl Service {
    /// Posts `body` to the thin route, signed with `secret`.
    async fn post_thin(&self, body: &str, secret: &str) -> u16 {
        let header = testing::sign(body.as_bytes(), secret, testing::now());
        self.post_to("/webhook/thin", Some(&header), "application/json", body)
            .await
    }

    async fn post(&self, header: Option<&str>, content_type: &str, body: &str) -> u16 {
        self.post_to("/webhook", header, content_type, body).await
    }

    async fn post_to(
        &self,
        path: &str,
        header: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> u16 {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body.to_owned());
        if let Some(h) = header {
            req = req.header("stripe-signature", h);
        }
        req.send().await.unwrap().status().as_u16()
    }

    async fn deliver(&self, id: &str, ty: &str) -> u16 {
        let body = testing::event_for_type(id, ty).unwrap();
        let header = testing::sign(body.as_bytes(), SECRET, testing::now());
        self.post(Some(&header), "application/json; charset=utf-8", &body)
            .await
    }

    async fn pool(&self) -> SqlitePool {
        SqlitePool::connect_with(stripe_webhooks::SqliteStore::connect_options(&self.db))
            .await
            .unwrap()
    }

    async fn effects(&self, id: &str) -> i64 {
        let pool = self.pool().await;
        let n =
            stripe_webhooks::sqlx::query_scalar("SELECT count(*) FROM access WHERE event_id = ?1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        n
    }
}

async fn end_to_end(name: &str) {
    let s = start(name).await;

    // A valid event: 200 and its effect.
    assert_eq!(
        s.deliver("evt_e2e_1", "checkout.session.completed").await,
        200
    );
    assert_eq!(s.effects("evt_e2e_1").await, 1);
    // The same event again: 200 and no second effect.
    assert_eq!(
        s.deliver("evt_e2e_1", "checkout.session.completed").await,
        200
    );
    assert_eq!(s.effects("evt_e2e_1").await, 1);

    // A handled type whose object no longer fits its struct (here, an amount sent as a
    // string): 500, nothing done, and Stripe delivers it again.
    let mut drifted: serde_json::Value = serde_json::from_str(
        &testing::event_for_type("evt_e2e_drift", "checkout.session.completed").unwrap(),
    )
    .unwrap();
    drifted["data"]["object"]["amount_total"] = "100".into();
    let drifted = drifted.to_string();
    let header = testing::sign(drifted.as_bytes(), SECRET, testing::now());
    assert_eq!(
        s.post(Some(&header), "application/json", &drifted).await,
        500
    );
    assert_eq!(s.effects("evt_e2e_drift").await, 0);

    // 64 concurrent copies of one new event: one effect, only 200 or 409.
    let body = testing::event_for_type("evt_e2e_burst", "invoice.payment_failed").unwrap();
    let header = testing::sign(body.as_bytes(), SECRET, testing::now());
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, url, h, b) = (
            s.client.clone(),
            format!("{}/webhook", s.base),
            header.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .header("stripe-signature", h)
                .body(b)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 200 || status == 409, "{status}");
    }
    assert_eq!(s.effects("evt_e2e_burst").await, 1);

    // Bad signature, stale timestamp, missing header: 400 and no effect.
    let body = testing::event_for_type("evt_e2e_bad", "checkout.session.completed").unwrap();
    let forged = testing::sign(body.as_bytes(), "whsec_attacker", testing::now());
    let stale = testing::sign(body.as_bytes(), SECRET, testing::now() - 3600);
    assert_eq!(s.post(Some(&forged), "application/json", &body).await, 400);
    assert_eq!(s.post(Some(&stale), "application/json", &body).await, 400);
    assert_eq!(s.post(None, "application/json", &body).await, 400);
    assert_eq!(s.effects("evt_e2e_bad").await, 0);

    // The previous secret still verifies during a rotation.
    let body = testing::event_for_type("evt_e2e_old", "customer.subscription.deleted").unwrap();
    let old = testing::sign(body.as_bytes(), "whsec_old_secret", testing::now());
    assert_eq!(s.post(Some(&old), "application/json", &body).await, 200);
    assert_eq!(s.effects("evt_e2e_old").await, 1);

    // GET → 405 with Allow: POST; text/plain → 415; 1 MiB + 1 byte → 413.
    let r = s
        .client
        .get(format!("{}/webhook", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers().get("allow").unwrap(), "POST");
    let valid = testing::event_for_type("evt_e2e_ct", "checkout.session.completed").unwrap();
    let valid_h = testing::sign(valid.as_bytes(), SECRET, testing::now());
    assert_eq!(s.post(Some(&valid_h), "text/plain", &valid).await, 415);
    let big = " ".repeat(1024 * 1024 + 1);
    assert_eq!(s.post(Some(&valid_h), "application/json", &big).await, 413);
    assert_eq!(s.effects("evt_e2e_ct").await, 0);

    // A handler failure (its table is gone for a moment) → 500; after repair, the
    // redelivery → 200 with exactly one effect.
    let pool = s.pool().await;
    stripe_webhooks::sqlx::query("ALTER TABLE access RENAME TO access_away")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        s.deliver("evt_e2e_fail", "invoice.payment_failed").await,
        500
    );
    stripe_webhooks::sqlx::query("ALTER TABLE access_away RENAME TO access")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(s.effects("evt_e2e_fail").await, 0);
    assert_eq!(
        s.deliver("evt_e2e_fail", "invoice.payment_failed").await,
        200
    );
    assert_eq!(s.effects("evt_e2e_fail").await, 1);
    assert_eq!(
        s.deliver("evt_e2e_fail", "invoice.payment_failed").await,
        200
    );
    assert_eq!(s.effects("evt_e2e_fail").await, 1);

    // An event type the demo does not act on: 200, no effect.
    assert_eq!(s.deliver("evt_e2e_other", "customer.created").await, 200);
    assert_eq!(s.effects("evt_e2e_other").await, 0);

    // One change sent both ways at once by `send_event --both`: the snapshot event to
    // /webhook, its thin twin to /webhook/thin. The work runs once: one delivery is
    // processed, the other is a duplicate (or 409 while the first runs).
    let out = Command::new(common::example_binary("send_event"))
        .args([
            "--both",
            "--type",
            "customer.subscription.deleted",
            "--id",
            "evt_e2e_both",
        ])
        .args(["--url", &format!("{}/webhook", s.base)])
        .args(["--thin-url", &format!("{}/webhook/thin", s.base)])
        .args(["--secret", SECRET, "--thin-secret", THIN_SECRET])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let statuses: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("evt_e2e_both "))
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    assert_eq!(statuses.len(), 2, "{stdout}");
    assert!(
        statuses.iter().all(|s| *s == "200" || *s == "409"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("\"processed\"").count(),
        1,
        "one of the two runs the work: {stdout}"
    );
    // And the work is the demo's: the `revoke` row, whichever route came first (the thin
    // route leaves this type to the snapshot route, which writes it).
    assert_eq!(s.effects("evt_e2e_both").await, 1, "{stdout}");
    // A thin event on its own route, with its own secret; the snapshot secret fails there.
    let thin = testing::ThinEventBuilder::new("evt_e2e_thin", "v1.customer.created").build();
    assert_eq!(s.post_thin(&thin, SECRET).await, 400);
    assert_eq!(s.post_thin(&thin, THIN_SECRET).await, 200);

    // SIGTERM: a graceful exit.
    let mut s = s;
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = s.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("the service stops on SIGTERM");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    // Its log went to a file: plain text, one line per delivery.
    let log = std::fs::read_to_string(s._dir.join("stdout.log")).unwrap();
    assert!(log.contains("webhook delivery"), "{log}");
    // A refused delivery says why, and nothing secret is ever written.
    assert!(log.contains("no signature matched"), "{log}");
    for secret in [SECRET, THIN_SECRET, "whsec_old_secret"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(
        !log.contains('\u{1b}'),
        "ANSI codes in a log that is not a terminal: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_example_end_to_end() {
    end_to_end("axum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_example_end_to_end() {
    end_to_end("actix").await;
}

/// With a real `STRIPE_WEBHOOK_SECRET` and no thin secret, the thin route refuses a
/// request signed with the development thin secret (it is public), and with anything
/// else; the snapshot route works as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_secret_without_a_thin_one_closes_the_thin_route() {
    let s = start_with("axum", None).await;
    let (_, thin) = testing::event_pair("evt_closed_thin", "customer.created", "cus_1");
    for secret in ["whsec_local_thin_development_only", SECRET, THIN_SECRET] {
        assert_eq!(
            s.post_thin(&thin, secret).await,
            400,
            "thin signed with {secret}"
        );
    }
    assert_eq!(
        s.deliver("evt_open_snapshot", "customer.created").await,
        200
    );
}

/// A secret list the verifier refuses stops the example at once, naming the variable.
#[test]
fn a_bad_secret_list_names_its_variable() {
    let dir = common::TempDir::new("ex_bad_secret");
    let out = Command::new(common::example_binary("axum"))
        .env("STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b")
        .env("SQLITE_PATH", dir.join("m.db"))
        .env("PORT", "0")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("STRIPE_WEBHOOK_SECRET"), "{stderr}");
    assert!(!stderr.contains("whsec_b"), "{stderr}");
}

/// An empty `SQLITE_PATH` stops the service (SQLite would give each connection a
/// private temporary database: no shared store, nothing kept), so do two stores named
/// at once, and the reconcile
/// example refuses an argument it does not know (a misspelt `--every` ran one pass and
/// exited 0 where a schedule was wanted).
#[test]
fn an_empty_sqlite_path_or_an_unknown_argument_stops_the_example() {
    let axum = || {
        let mut c = Command::new(common::example_binary("axum"));
        c.env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("STRIPE_WEBHOOKS_STORE")
            .env("PORT", "0");
        c
    };
    refused(
        axum().env("SQLITE_PATH", ""),
        "SQLITE_PATH is set but empty",
    );
    // Two stores named (a leftover variable): refused, rather than one picked silently.
    refused(
        axum()
            .env("DATABASE_URL", "postgres://u:pw@127.0.0.1:1/app")
            .env("REDIS_URL", "redis://127.0.0.1:1"),
        "more than one store is named",
    );
    let stderr = refused(
        Command::new(common::example_binary("reconcile")).args(["--fake", "--evry", "300"]),
        "unknown argument",
    );
    assert!(stderr.contains("--evry"), "{stderr}");
}

/// Runs `command`, which must fail saying `said` (and never a URL's password); its
/// standard error.
fn refused(command: &mut Command, said: &str) -> String {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{said}: {stderr}");
    assert!(stderr.contains(said), "{stderr}");
    assert!(!stderr.contains(":pw@"), "{stderr}");
    stderr
}

/// A secret variable set but empty (a secret reference that resolved to nothing) stops
/// the example, instead of it running on the public development secret; so does a
/// `DATABASE_URL` that is not PostgreSQL's (each replica would otherwise use a SQLite
/// file of its own).
#[test]
fn an_empty_secret_or_a_foreign_database_url_stops_the_example() {
    let dir = common::TempDir::new("ex_empty_secret");
    for (name, value, said) in [
        (
            "STRIPE_WEBHOOK_SECRET",
            " ",
            "STRIPE_WEBHOOK_SECRET is set but empty",
        ),
        (
            "STRIPE_THIN_WEBHOOK_SECRET",
            "",
            "STRIPE_THIN_WEBHOOK_SECRET is set but empty",
        ),
        (
            "DATABASE_URL",
            "mysql://u:pw@db/app",
            "DATABASE_URL is not a postgres://",
        ),
        ("DATABASE_URL", "", "DATABASE_URL is set but empty"),
        ("REDIS_URL", "", "REDIS_URL is set but empty"),
    ] {
        refused(
            Command::new(common::example_binary("axum"))
                .env_remove("STRIPE_WEBHOOK_SECRET")
                .env_remove("STRIPE_THIN_WEBHOOK_SECRET")
                .env_remove("DATABASE_URL")
                .env_remove("REDIS_URL")
                .env(name, value)
                .env("SQLITE_PATH", dir.join("m.db"))
                .env("PORT", "0"),
            said,
        );
    }
    // The examples that read the secret without the shared configuration do the same.
    // (Spawned with a deadline: one that took the secret as unset would serve on.)
    for (example, args) in [("console", &[][..]), ("reconcile", &["--fake"][..])] {
        let mut child = Command::new(common::example_binary(example))
            .args(args)
            .env("STRIPE_WEBHOOK_SECRET", "")
            .env("CONSOLE_PASSWORD", "pw")
            .env("SQLITE_PATH", dir.join(&format!("{example}.db")))
            .env("PORT", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(&format!("{example}.err"))).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{example} kept running on an empty secret");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "{example}");
        assert!(
            !dir.join(&format!("{example}.db")).exists(),
            "{example} made its database before checking the secret"
        );
        let stderr = std::fs::read_to_string(dir.join(&format!("{example}.err"))).unwrap();
        assert!(
            stderr.contains("STRIPE_WEBHOOK_SECRET is set but empty"),
            "{example}: {stderr}"
        );
    }
    // The reconcile example keys events in its SQLite store only: pointed at a service on
    // another store, it refuses to start rather than run three days of events again.
    for (name, value) in [
        ("DATABASE_URL", "postgres://u:pw@db/app"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("STRIPE_WEBHOOKS_STORE", "memory"),
    ] {
        let out = Command::new(common::example_binary("reconcile"))
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("STRIPE_WEBHOOKS_STORE")
            // No key: were the store not refused first, it would stop on the missing key
            // (never reaching for the network).
            .env_remove("STRIPE_API_KEY")
            .env(name, value)
            .env("SQLITE_PATH", dir.join("reconcile_other.db"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}={value:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{name} is set: this example reconciles the SQLite store"
            )),
            "{stderr}"
        );
        assert!(!dir.join("reconcile_other.db").exists(), "{name}");
    }
    // The queue example keeps its jobs durable: told to keep them in memory, it refuses
    // (it opened its SQLite file instead, and said nothing).
    let out = Command::new(common::example_binary("queue"))
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .env("STRIPE_WEBHOOKS_STORE", "memory")
        .env("SQLITE_PATH", dir.join("queue_memory.db"))
        .env("PORT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("STRIPE_WEBHOOKS_STORE=memory"), "{stderr}");
    assert!(!dir.join("queue_memory.db").exists());
}

/// Runs an example with `--print-enabled-events` and reads the manifest it prints.
fn printed_manifest(name: &str) -> serde_json::Value {
    let dir = common::TempDir::new(&format!("ex_manifest_{name}"));
    let out = Command::new(common::example_binary(name))
        .arg("--print-enabled-events")
        .env("SQLITE_PATH", dir.join("m.db"))
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The ack-fast example prints its workers' types: its demo handlers take every type.
#[test]
fn the_queue_example_prints_its_workers_enabled_events() {
    assert_eq!(
        printed_manifest("queue"),
        serde_json::json!({"snapshot": ["*"], "thin": ["*"]})
    );
}

/// `--print-enabled-events` prints what both Stripe destinations need for the demo's
/// handlers, as JSON, and exits.
#[test]
fn examples_print_their_enabled_events() {
    for name in ["axum", "actix"] {
        let v = printed_manifest(name);
        let snapshot: Vec<&str> = v["snapshot"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        assert_eq!(
            snapshot,
            [
                "checkout.session.completed",
                "customer.subscription.deleted",
                "invoice.payment_failed"
            ],
            "{name}"
        );
        let thin = v["thin"].as_array().unwrap();
        assert!(thin.iter().any(|t| t == "v1.customer.created"), "{name}");
        assert!(
            thin.iter().any(|t| t == "v1.checkout.session.expired"),
            "{name}"
        );
        // The snapshot route's three types are left to it (see `thin_demo`).
        for twin in [
            "v1.checkout.session.completed",
            "v1.invoice.payment_failed",
            "v1.customer.subscription.deleted",
        ] {
            assert!(thin.iter().all(|t| t != twin), "{name}: {twin}");
        }
        assert!(thin.iter().all(|t| {
            let t = t.as_str().unwrap();
            t.starts_with("v1.customer.") || t.starts_with("v1.checkout.session.")
        }));
    }
}

/// `examples/reconcile.rs` run once, as a cron job runs it, against an API that refuses
/// its key: the pass fails, and so does the process (it exited 0, and cron saw success).
#[cfg(feature = "client")]
#[test]
fn reconcile_example_exits_1_when_its_one_pass_fails() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(testing::FakeStripe::start()).unwrap();
    server.require_api_key(testing::FAKE_API_KEY);
    let dir = common::TempDir::new("ex_reconcile_fails");
    let out = Command::new(common::example_binary("reconcile"))
        .env("STRIPE_API_KEY", "sk_test_revoked_key_0000")
        .env("STRIPE_API_BASE", server.base_url())
        .env("SQLITE_PATH", dir.join("r.db"))
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("STRIPE_WEBHOOKS_STORE")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("reconcile failed"), "{stderr}");
    assert!(!stderr.contains("sk_test_revoked_key_0000"), "{stderr}");
    // It asked the API named, with the key given.
    assert!(!server.requests().is_empty());
}

/// `examples/reconcile.rs --fake`: the pass runs the two events the webhook missed and
/// skips the one it handled; a second pass over the same events runs nothing; with
/// `--undelivered`, it lists the two Stripe could not deliver. (The same
/// stamp for both runs: the example names its seeded events after the second it starts
/// in, and two runs a second boundary apart would seed different ones.)
#[cfg(feature = "client")]
#[test]
fn reconcile_example_catches_up_once() {
    let dir = common::TempDir::new("ex_reconcile");
    let stamp = testing::now().to_string();
    let run = |more: &[&str]| {
        let out = Command::new(common::example_binary("reconcile"))
            .arg("--fake")
            .args(more)
            .env("RECONCILE_FAKE_STAMP", &stamp)
            .env("SQLITE_PATH", dir.join("r.db"))
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run(&[]);
    assert!(first.contains("2 processed, 1 already done"), "{first}");
    let second = run(&[]);
    assert!(second.contains("0 processed"), "{second}");
    // `--undelivered` lists only the two events Stripe could not deliver (it listed
    // none: the fake's events were all seeded as delivered).
    let dir = common::TempDir::new("ex_reconcile_undelivered");
    let stamp = testing::now().to_string();
    let undelivered = Command::new(common::example_binary("reconcile"))
        .args(["--fake", "--undelivered"])
        .env("RECONCILE_FAKE_STAMP", &stamp)
        .env("SQLITE_PATH", dir.join("r.db"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(undelivered.status.success(), "{undelivered:?}");
    let out = String::from_utf8_lossy(&undelivered.stdout);
    assert!(
        out.contains("listed 2 in 1 pages: 2 processed, 0 already done"),
        "{out}"
    );
}
