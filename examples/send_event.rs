//! An offline `stripe trigger`: builds an event of any type from the Stripe fixtures
//! shipped in the crate, signs it like Stripe, POSTs it, and prints each response status
//! and a summary.
//!
//! Run with: `cargo run --example send_event --features testing -- --type checkout.session.completed`
//!
//! Flags: `--url URL` (default `http://127.0.0.1:4242/webhook`), `--type TYPE`,
//! `--id EVENT_ID`, `--count N` distinct events, `--duplicates N` copies of each,
//! `--concurrency N` requests in flight, `--bad-signature`, `--stale` (timestamp an hour
//! old), `--secret S` (default `STRIPE_WEBHOOK_SECRET`, else the examples' development
//! secret). Exits non-zero if a request could not be sent.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;

use stripe_webhooks::testing;
use tokio::sync::Semaphore;

const DEV_SECRET: &str = "whsec_local_development_only";

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
        secret: std::env::var("STRIPE_WEBHOOK_SECRET")
            .ok()
            .and_then(|s| s.split(',').next().map(str::to_owned))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEV_SECRET.to_owned()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--type" => a.event_type = value()?,
            "--id" => a.id = Some(value()?),
            "--count" => a.count = value()?.parse()?,
            "--duplicates" => a.duplicates = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse::<usize>()?.max(1),
            "--secret" => a.secret = value()?,
            "--bad-signature" => a.bad_signature = true,
            "--stale" => a.stale = true,
            "-h" | "--help" => {
                println!("see the top of examples/send_event.rs for the flags");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let a = parse_args()?;
    let client = reqwest::Client::new();
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
        let body = testing::event_for_type(&id, &a.event_type)
            .ok_or_else(|| format!("{} is not a documented event type", a.event_type))?;
        let t = if a.stale {
            testing::now() - 3600
        } else {
            testing::now()
        };
        let secret = if a.bad_signature {
            "whsec_not_the_right_secret"
        } else {
            a.secret.as_str()
        };
        let header = testing::sign(body.as_bytes(), secret, t);
        for _ in 0..a.duplicates {
            requests.push((id.clone(), header.clone(), body.clone()));
        }
    }

    let limit = Arc::new(Semaphore::new(a.concurrency));
    let mut tasks = Vec::new();
    for (id, header, body) in requests {
        let (client, url, limit) = (client.clone(), a.url.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
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
