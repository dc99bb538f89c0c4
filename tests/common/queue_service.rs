//! The `queue` example as real processes: start several on one database, deliver signed
//! events to them over HTTP as Stripe would (retrying a delivery that did not get a 2xx),
//! kill and restart them, and read the queue's counts.
#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "whsec_queue_process_tests";

/// One `queue` example process.
pub struct Service {
    pub port: u16,
    example: &'static str,
    env: Vec<(String, String)>,
    child: Child,
}

impl Service {
    /// Starts the example on a free port with `env` (plus the secret and quiet logs), and
    /// waits until it answers.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_example("queue", env).await
    }

    /// Starts another example service the same way.
    pub async fn start_example(example: &'static str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let child = spawn(example, port, &env);
        let mut s = Self {
            port,
            example,
            env,
            child,
        };
        s.wait_ready().await;
        s
    }

    /// SIGKILL: the process dies holding whatever jobs it had.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits (at most `within`) for the process to exit: its status.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "the {} example did not stop within {within:?} of SIGTERM",
                self.example
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the process again on the same port with the same settings.
    pub async fn restart(&mut self) {
        self.child = spawn(self.example, self.port, &self.env);
        self.wait_ready().await;
    }

    /// Waits for its `/healthz`, from its own process: one that exited (its port taken
    /// meanwhile by another test's service, say) fails here rather than let the test
    /// talk to the other.
    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the {} example exited before it answered: {status}",
                    self.example
                );
            }
            if let Ok(r) = client.get(self.url("/healthz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the queue example on port {} did not start", self.port);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The queue's counts, as `GET /queue` gives them.
    pub async fn counts(&self) -> Option<serde_json::Value> {
        let r = reqwest::get(self.url("/queue")).await.ok()?;
        r.json().await.ok()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(example: &str, port: u16, env: &[(String, String)]) -> Child {
    Command::new(super::example_binary(example))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `n` distinct `customer.updated` events about 50 customers, each body as Stripe sends
/// it.
pub fn events(prefix: &str, n: usize) -> Vec<(String, String)> {
    let now = stripe_webhooks::testing::now();
    (0..n)
        .map(|i| {
            let id = format!("evt_{prefix}_{i:05}");
            let object = format!(r#"{{"id":"cus_{prefix}_{}","object":"customer"}}"#, i % 50);
            let body = stripe_webhooks::testing::event_json(&id, "customer.updated", &object);
            let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["created"] = (now + i as i64 / 100).into();
            (id, v.to_string())
        })
        .collect()
}

/// What the deliveries got.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Answers by status (a failed connection is 0).
    pub statuses: Mutex<std::collections::HashMap<u16, usize>>,
    /// Deliveries that got their 2xx.
    pub done: AtomicUsize,
}

/// Delivers every body `copies` times, spread over the services' ports (each copy to a
/// different one), `concurrency` at a time, all released together. Like Stripe, a
/// delivery that gets no 2xx (or no answer) is sent again, to the next port, until it
/// does.
pub async fn deliver(
    ports: Vec<u16>,
    events: Arc<Vec<(String, String)>>,
    copies: usize,
    concurrency: usize,
    delivered: Arc<Delivered>,
) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (_, body)) in events.iter().enumerate() {
        for c in 0..copies {
            let (client, permits, delivered) =
                (client.clone(), Arc::clone(&permits), Arc::clone(&delivered));
            let (body, ports) = (body.clone(), ports.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                let started = Instant::now();
                let mut port = i + c;
                loop {
                    let header = stripe_webhooks::testing::sign(
                        body.as_bytes(),
                        SECRET,
                        stripe_webhooks::testing::now(),
                    );
                    let url = format!("http://127.0.0.1:{}/webhook", ports[port % ports.len()]);
                    let status = match client
                        .post(url)
                        .header("content-type", "application/json")
                        .header("stripe-signature", header)
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    *delivered
                        .statuses
                        .lock()
                        .unwrap()
                        .entry(status)
                        .or_default() += 1;
                    if (200..300).contains(&status) {
                        delivered.done.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "a delivery got no 2xx for two minutes (last {status})"
                    );
                    port += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// Waits until the queue holds `completed` completed jobs and nothing queued, running or
/// retrying; returns the last counts.
pub async fn wait_drained(
    service: &Service,
    completed: u64,
    within: Duration,
) -> serde_json::Value {
    let started = Instant::now();
    let mut last = serde_json::Value::Null;
    while started.elapsed() < within {
        if let Some(c) = service.counts().await {
            let get = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
            if get("completed") >= completed
                && get("queued") == 0
                && get("running") == 0
                && get("retrying") == 0
            {
                return c;
            }
            last = c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the queue did not drain in {within:?}: {last}");
}
