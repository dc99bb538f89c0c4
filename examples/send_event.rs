//! An offline `stripe trigger`: builds an event of any type from the Stripe fixtures
//! shipped in the crate, signs it like Stripe, POSTs it, and prints each response status
//! and a summary.
//!
//! Run with: `cargo run --example send_event --features testing -- --type checkout.session.completed`
//!
//! Flags: `--url URL` (default `http://127.0.0.1:4242/webhook`), `--type TYPE`,
//! `--id EVENT_ID`, `--count N` distinct events, `--duplicates N` copies of each,
//! `--concurrency N` requests in flight (copies in flight together, as Stripe may send
//! them to several replicas: one runs; on the default SQLite inbox the others wait for
//! the one writer and are answered 200 `duplicate`, on PostgreSQL's inbox they wait on
//! the claim's row lock (up to the store timeout, then 409) and are answered 200
//! `duplicate`, and on Redis or in memory they are answered 409 while it runs and 200 `duplicate`
//! after), `--bad-signature`, `--stale` (timestamp an hour old; each
//! request is signed as it is sent), `--secret S` (default `STRIPE_WEBHOOK_SECRET`,
//! else the examples' development secret). Exits non-zero if a request could not be
//! sent.
//!
//! Thin events: `--thin` sends a thin event notification of `--type` (any of the 326 thin
//! types, `v1.customer.created`; a snapshot type gets its `v1.` twin) to `--thin-url`
//! (default `http://127.0.0.1:4242/webhook/thin`), signed with `--thin-secret` (default
//! `STRIPE_THIN_WEBHOOK_SECRET`, else the examples' thin development secret). `--both`
//! sends each change both ways at once, a snapshot event to `--url` and its thin twin
//! (whose `snapshot_event` names it) to `--thin-url`: the service runs its work once.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;

use stripe_webhooks::testing;
use tokio::sync::Semaphore;

const DEV_SECRET: &str = "whsec_local_development_only";
const DEV_THIN_SECRET: &str = "whsec_local_thin_development_only";

/// Which payloads to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Snapshot,
    Thin,
    Both,
}

#[derive(Debug)]
struct Args {
    url: String,
    event_type: String,
    id: Option<String>,
    count: usize,
    duplicates: usize,
    concurrency: usize,
    bad_signature: bool,
    stale: bool,
    secret: String,
    mode: Mode,
    thin_url: String,
    thin_secret: String,
}

/// The first secret of `var`'s list, else (unset) `default`. Set but empty is an error,
/// as the example services take it: signing with the development secret instead would
/// send requests the service refuses.
fn first_secret(var: &str, default: &str) -> Result<String, Box<dyn Error>> {
    match std::env::var(var) {
        Ok(s) => s
            .split(',')
            .next()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                format!("{var} is set but empty (unset it for the development secret)").into()
            }),
        Err(_) => Ok(default.to_owned()),
    }
}

/// A flag's number, or an error naming the flag.
fn number<T: std::str::FromStr>(flag: &str, value: String) -> Result<T, Box<dyn Error>>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| format!("{flag} {value:?}: {e}").into())
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        url: "http://127.0.0.1:4242/webhook".to_owned(),
        event_type: "checkout.session.completed".to_owned(),
        id: None,
        count: 1,
        duplicates: 1,
        concurrency: 1,
        bad_signature: false,
        stale: false,
        secret: first_secret("STRIPE_WEBHOOK_SECRET", DEV_SECRET)?,
        mode: Mode::Snapshot,
        thin_url: "http://127.0.0.1:4242/webhook/thin".to_owned(),
        thin_secret: first_secret("STRIPE_THIN_WEBHOOK_SECRET", DEV_THIN_SECRET)?,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--type" => a.event_type = value()?,
            "--id" => a.id = Some(value()?),
            "--count" => a.count = number(&flag, value()?)?,
            "--duplicates" => a.duplicates = number(&flag, value()?)?,
            "--concurrency" => a.concurrency = number::<usize>(&flag, value()?)?.max(1),
            "--secret" => a.secret = value()?,
            "--bad-signature" => a.bad_signature = true,
            "--stale" => a.stale = true,
            "--thin" => a.mode = Mode::Thin,
            "--both" => a.mode = Mode::Both,
            "--thin-url" => a.thin_url = value()?,
            "--thin-secret" => a.thin_secret = value()?,
            "-h" | "--help" => {
                println!("see the top of examples/send_event.rs for the flags");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

/// A thin notification of `event_type` (a thin type, or a snapshot type's `v1.` twin).
fn thin_body(id: &str, event_type: &str) -> Result<String, Box<dyn Error>> {
    use stripe_webhooks::ThinEventType;
    let mut ty = ThinEventType::from_wire(event_type);
    if ty.is_unknown() {
        ty = ThinEventType::from_wire(&format!("v1.{event_type}"));
    }
    if ty.is_unknown() {
        return Err(format!("{event_type} is not a documented thin event type").into());
    }
    let mut b = testing::ThinEventBuilder::new(id, ty.as_str());
    if let Some(object) = ty.related_object_type() {
        let object_id = format!("obj_{id}");
        let url = testing::related_object_url(object, &object_id);
        b = b.related(&object_id, object, &url);
    }
    Ok(b.build())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let a = parse_args()?;
    // A server that stalls fails its request rather than hang the tool.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    // Distinct ids on every run, so a second run is not all duplicates.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or_default();
    let mut requests = Vec::new();
    for i in 0..a.count {
        let id = match (&a.id, a.count) {
            (Some(id), 1) => id.clone(),
            (Some(id), _) => format!("{id}_{i}"),
            (None, _) => format!("evt_local_{stamp:08x}_{i}"),
        };
        // The secret each request is signed with, when it is sent (so a long run is not
        // refused as stale).
        let secret_for = |secret: &str| {
            if a.bad_signature {
                "whsec_not_the_right_secret".to_owned()
            } else {
                secret.to_owned()
            }
        };
        let mut sends = Vec::new();
        match a.mode {
            Mode::Snapshot => {
                let body = testing::event_for_type(&id, &a.event_type)
                    .ok_or_else(|| format!("{} is not a documented event type", a.event_type))?;
                sends.push((a.url.clone(), secret_for(&a.secret), body));
            }
            Mode::Thin => {
                let body = thin_body(&id, &a.event_type)?;
                sends.push((a.thin_url.clone(), secret_for(&a.thin_secret), body));
            }
            Mode::Both => {
                let snapshot_type = a.event_type.strip_prefix("v1.").unwrap_or(&a.event_type);
                if stripe_webhooks::EventType::from_wire(snapshot_type).is_unknown() {
                    return Err(format!("{snapshot_type} is not a documented snapshot type").into());
                }
                let object_id = format!("obj_{id}");
                let (snapshot, thin) = testing::event_pair(&id, snapshot_type, &object_id);
                sends.push((a.url.clone(), secret_for(&a.secret), snapshot));
                sends.push((a.thin_url.clone(), secret_for(&a.thin_secret), thin));
            }
        }
        for _ in 0..a.duplicates {
            for (url, secret, body) in &sends {
                requests.push((id.clone(), url.clone(), secret.clone(), body.clone()));
            }
        }
    }

    let limit = Arc::new(Semaphore::new(a.concurrency));
    let stale = a.stale;
    let mut tasks = Vec::new();
    for (id, url, secret, body) in requests {
        let (client, limit) = (client.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let t = if stale {
                testing::now() - 3600
            } else {
                testing::now()
            };
            let header = testing::sign(body.as_bytes(), &secret, t);
            let resp = client
                .post(&url)
                .header("content-type", "application/json; charset=utf-8")
                .header("stripe-signature", header)
                .body(body)
                .send()
                .await;
            match resp {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    println!("{id} {status} {text}");
                    Ok(status)
                }
                Err(e) => {
                    println!("{id} error {e}");
                    Err(e)
                }
            }
        }));
    }
    let mut summary: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Ok(status) => *summary.entry(status.to_string()).or_insert(0) += 1,
            Err(_) => failed += 1,
        }
    }
    let parts: Vec<String> = summary.iter().map(|(s, n)| format!("{n}×{s}")).collect();
    println!(
        "summary: {} sent, {}{}",
        summary.values().sum::<usize>() + failed,
        parts.join(", "),
        if failed > 0 {
            format!(", {failed} failed to send")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        return Err(format!("{failed} requests could not be sent").into());
    }
    Ok(())
}
