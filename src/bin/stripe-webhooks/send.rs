//! `send`: an offline `stripe trigger`. Builds events from the Stripe fixtures shipped in
//! the crate, signs them like Stripe and posts them to a local service.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;
use stripe_webhooks::{testing, EventType, ThinEventType};
use tokio::sync::Semaphore;

use crate::error::{redact_url, CliError, Redactor};
use crate::output::print_json;

/// The examples' development secrets, used when no secret is given.
const DEV_SECRET: &str = "whsec_local_development_only";
const DEV_THIN_SECRET: &str = "whsec_local_thin_development_only";

/// The most distinct events one run sends: each body is built before the first is sent.
const MAX_COUNT: usize = 100_000;
/// The most copies of one event one run sends.
const MAX_DUPLICATES: usize = 1_000;
/// The most requests one run sends (count × duplicates): each answer is kept for the
/// summary.
const MAX_REQUESTS: usize = 100_000;

/// What to send, and where.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Where to post [default: http://127.0.0.1:4242/webhook, or …/webhook/thin with --thin].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The event type (a documented Stripe type; with --thin, a thin type or a snapshot
    /// type's `v1.` twin).
    #[arg(
        long = "type",
        default_value = "checkout.session.completed",
        value_name = "TYPE"
    )]
    event_type: String,
    /// The event id (with --count, suffixed `_0`, `_1`, …) [default: a fresh one per run].
    #[arg(long, value_name = "EVENT_ID")]
    id: Option<String>,
    /// Distinct events to send (at most 100000: each is built before the first is sent).
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Copies of each event (Stripe delivers at least once), sent one after another
    /// (at most 1000).
    #[arg(long, default_value_t = 1)]
    duplicates: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// The signing secret [default: STRIPE_WEBHOOK_SECRET (STRIPE_THIN_WEBHOOK_SECRET with
    /// --thin), else the examples' development secret]. A comma-separated list, as the
    /// service takes while secrets rotate, signs with its first. Never printed.
    #[arg(long, value_name = "SECRET")]
    pub(crate) secret: Option<String>,
    /// Send a thin event notification instead of a snapshot event.
    #[arg(long)]
    thin: bool,
    /// Sign with a wrong secret (the service should answer 400; 401 and 403 pass too).
    #[arg(long)]
    bad_signature: bool,
    /// Sign with a timestamp an hour old (the service should answer 400; 401 and 403
    /// pass too).
    #[arg(long)]
    stale: bool,
}

/// One response.
#[derive(Debug, Serialize)]
struct Response {
    id: String,
    status: Option<u16>,
    body: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    url: &'a str,
    sent: usize,
    statuses: BTreeMap<u16, usize>,
    failed_to_send: usize,
    responses: Vec<Response>,
}

fn first_secret(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .and_then(|s| first_of(&s))
        .unwrap_or_else(|| default.to_owned())
}

/// The first secret of a comma-separated list, if it is not empty; as it is, untrimmed,
/// as the service's `Verifier::from_secrets_list` reads it (which refuses whitespace).
fn first_of(list: &str) -> Option<String> {
    list.split(',')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A thin notification of `event_type` (a thin type, or a snapshot type's `v1.` twin).
fn thin_body(id: &str, event_type: &str) -> Result<String, CliError> {
    let mut ty = ThinEventType::from_wire(event_type);
    if ty.is_unknown() {
        ty = ThinEventType::from_wire(&format!("v1.{event_type}"));
    }
    if ty.is_unknown() {
        return Err(CliError::Usage(format!(
            "{event_type} is not a documented thin event type (try v1.customer.created)"
        )));
    }
    let mut b = testing::ThinEventBuilder::new(id, ty.as_str());
    if let Some(object) = ty.related_object_type() {
        let object_id = format!("obj_{id}");
        let url = testing::related_object_url(object, &object_id);
        b = b.related(&object_id, object, &url);
    }
    Ok(b.build())
}

fn body_for(a: &SendArgs, id: &str) -> Result<String, CliError> {
    if a.thin {
        return thin_body(id, &a.event_type);
    }
    if EventType::from_wire(&a.event_type).is_unknown() {
        return Err(CliError::Usage(format!(
            "{} is not a documented event type (try checkout.session.completed)",
            a.event_type
        )));
    }
    testing::event_for_type(id, &a.event_type).ok_or_else(|| {
        CliError::Usage(format!(
            "{} has no fixture to build an event from",
            a.event_type
        ))
    })
}

/// Sends the events and prints each status and a summary.
///
/// # Errors
///
/// [`CliError::Usage`] for an unknown type; [`CliError::Other`] when a request could not
/// be sent (the message names the URL, without any password).
pub(crate) async fn run(a: SendArgs, json: bool) -> Result<(), CliError> {
    // Its exit code is the smoke test's result, whoever reads the output.
    crate::output::finish_without_stdout();
    let url = a.url.clone().unwrap_or_else(|| {
        if a.thin {
            "http://127.0.0.1:4242/webhook/thin".to_owned()
        } else {
            "http://127.0.0.1:4242/webhook".to_owned()
        }
    });
    if a.count == 0 || a.duplicates == 0 {
        return Err(CliError::Usage(
            "--count and --duplicates must be at least 1".to_owned(),
        ));
    }
    if a.count > MAX_COUNT
        || a.duplicates > MAX_DUPLICATES
        || a.count.saturating_mul(a.duplicates) > MAX_REQUESTS
    {
        return Err(CliError::Usage(format!(
            "--count is at most {MAX_COUNT}, --duplicates at most {MAX_DUPLICATES}, and \
             --count × --duplicates at most {MAX_REQUESTS} (run it again for more)"
        )));
    }
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        // Not echoed: a value without `http://` may still hold a password
        // (`user:pass@host` reads as scheme `user`) that nothing could find to hide.
        _ => {
            return Err(CliError::Usage(
                "--url is not an http:// or https:// URL (for example \
                 http://127.0.0.1:4242/webhook)"
                    .to_owned(),
            ))
        }
    }
    let secret = match (&a.secret, a.thin) {
        (Some(s), _) => first_of(s).ok_or_else(|| {
            CliError::Usage("--secret is empty (or starts with a comma)".to_owned())
        })?,
        (None, false) => first_secret("STRIPE_WEBHOOK_SECRET", DEV_SECRET),
        (None, true) => first_secret("STRIPE_THIN_WEBHOOK_SECRET", DEV_THIN_SECRET),
    };
    let signing = if a.bad_signature {
        "whsec_not_the_right_secret".to_owned()
    } else {
        secret
    };
    let (shown_url, hidden) = shown_endpoint(&url);
    let mut redactor = Redactor::default();
    redactor.add_url(Some(&url));
    for part in &hidden {
        redactor.add_secret(Some(part));
    }
    redactor.add_secret(Some(&signing));
    let redactor = Arc::new(redactor);
    // No redirect is followed: Stripe counts a 3xx as a failed delivery, so a smoke test
    // that followed one would pass where every real delivery fails.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CliError::Other(format!("cannot build the HTTP client: {e}")))?;
    // Distinct ids on every run, so a second run is not all duplicates.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or_default();
    let mut events = Vec::new();
    for i in 0..a.count {
        let id = match (&a.id, a.count) {
            (Some(id), 1) => id.clone(),
            (Some(id), _) => format!("{id}_{i}"),
            (None, _) => format!("evt_local_{stamp:08x}_{i}"),
        };
        let body = body_for(&a, &id)?;
        events.push((id, body));
    }

    // One task per event, sending its copies one after another (as Stripe's retries
    // come): copies in flight together would find the first still running and get the
    // service's 409. Each request is signed when it is sent, so a long run is not
    // refused as stale.
    let limit = Arc::new(Semaphore::new(usize::from(a.concurrency)));
    let signing: Arc<str> = signing.into();
    let (stale, copies) = (a.stale, a.duplicates);
    let mut tasks = Vec::new();
    for (id, body) in events {
        let (client, limit, url) = (client.clone(), Arc::clone(&limit), url.clone());
        let (redactor, signing) = (Arc::clone(&redactor), Arc::clone(&signing));
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..copies {
                let _permit = limit.acquire().await;
                let t = if stale {
                    testing::now() - 3600
                } else {
                    testing::now()
                };
                let header = testing::sign(body.as_bytes(), &signing, t);
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json; charset=utf-8")
                    .header("stripe-signature", header)
                    .body(body.clone())
                    .send()
                    .await;
                answers.push(match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let text = redactor.scrub(&r.text().await.unwrap_or_default());
                        Response {
                            id: id.clone(),
                            status: Some(status),
                            body: Some(text),
                            error: None,
                        }
                    }
                    Err(e) => Response {
                        id: id.clone(),
                        status: None,
                        body: None,
                        error: Some(redactor.scrub(&crate::error::chain(&e))),
                    },
                });
            }
            answers
        }));
    }
    let mut responses = Vec::new();
    for t in tasks {
        let answers = t
            .await
            .map_err(|e| CliError::Other(format!("a request task failed: {e}")))?;
        for r in answers {
            if !json {
                match (r.status, &r.body, &r.error) {
                    (Some(s), body, _) => {
                        crate::outln!("{} {s} {}", r.id, body.as_deref().unwrap_or(""))
                    }
                    (None, _, error) => {
                        crate::outln!("{} error {}", r.id, error.as_deref().unwrap_or(""))
                    }
                }
            }
            responses.push(r);
        }
    }
    let mut statuses = BTreeMap::new();
    for s in responses.iter().filter_map(|r| r.status) {
        *statuses.entry(s).or_insert(0) += 1;
    }
    let failed_to_send = responses.iter().filter(|r| r.status.is_none()).count();
    let summary = Summary {
        url: &shown_url,
        sent: responses.len(),
        statuses,
        failed_to_send,
        responses,
    };
    if json {
        print_json(&summary)?;
    } else {
        let parts: Vec<String> = summary
            .statuses
            .iter()
            .map(|(s, n)| format!("{n}×{s}"))
            .collect();
        crate::outln!(
            "summary: {} sent to {shown_url}: {}{}",
            summary.sent,
            parts.join(", "),
            if failed_to_send > 0 {
                format!(
                    "{}{failed_to_send} could not be sent",
                    if parts.is_empty() { "" } else { ", " }
                )
            } else {
                String::new()
            }
        );
    }
    if failed_to_send > 0 {
        return Err(CliError::Other(format!(
            "{failed_to_send} of {} requests could not be sent to {shown_url}: is the service \
             running there? (`cargo run --example queue --features axum,sqlite,tracing`)",
            summary.sent
        )));
    }
    // A smoke test passes only when the service answered as it should: 2xx for a good
    // signature, a refusal for a bad or stale one (400, as Stripe's SDKs answer; 401 or
    // 403 from a service that answers so). Another 4xx (404, 405, 413, 429…) says the
    // request never reached the signature check.
    let refusal_expected = a.bad_signature || a.stale;
    let unexpected: BTreeMap<u16, usize> = summary
        .statuses
        .iter()
        .filter(|(s, _)| {
            if refusal_expected {
                !matches!(*s, 400 | 401 | 403)
            } else {
                !(200..300).contains(*s)
            }
        })
        .map(|(s, n)| (*s, *n))
        .collect();
    if !unexpected.is_empty() {
        let answered: Vec<String> = unexpected.iter().map(|(s, n)| format!("{n}×{s}")).collect();
        let count: usize = unexpected.values().sum();
        return Err(CliError::Other(if refusal_expected {
            format!(
                "{count} of {} deliveries signed {} were answered {}, not refused with a 400 \
                 (or 401, 403): the service does not check signatures as it should, or the \
                 URL does not reach its check",
                summary.sent,
                if a.bad_signature {
                    "with a wrong secret"
                } else {
                    "an hour ago"
                },
                answered.join(", ")
            )
        } else {
            format!(
                "{count} of {} deliveries were answered {}, not 2xx: a 400 is a secret that \
                 does not match the service's (--secret, STRIPE_WEBHOOK_SECRET), a 3xx a \
                 redirect (Stripe follows none: give the URL it leads to), a 5xx the \
                 handler or its store failing",
                summary.sent,
                answered.join(", ")
            )
        }));
    }
    Ok(())
}

/// The endpoint as shown in the summary and the JSON: its user information and query
/// hidden, with the parts hidden (to scrub from errors too). A webhook URL may carry a
/// token there (`https://hook.example/stripe?token=…`, `https://token@host/…`).
fn shown_endpoint(url: &str) -> (String, Vec<String>) {
    let Ok(u) = reqwest::Url::parse(url) else {
        return (redact_url(url), Vec::new());
    };
    let mut hidden = Vec::new();
    let mut shown = format!("{}://", u.scheme());
    if !u.username().is_empty() || u.password().is_some() {
        // The password, or a user name that stands alone (a token); not so short that
        // scrubbing it would blank common letters elsewhere.
        hidden.extend(
            Some(u.password().unwrap_or(u.username()))
                .filter(|s| s.len() > 3)
                .map(str::to_owned),
        );
        shown.push_str("***@");
    }
    shown.push_str(u.host_str().unwrap_or(""));
    if let Some(port) = u.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(u.path());
    if let Some(query) = u.query().filter(|q| !q.is_empty()) {
        if query.len() > 3 {
            hidden.push(query.to_owned());
        }
        // Each value too, as it may be quoted decoded.
        hidden.extend(
            u.query_pairs()
                .map(|(_, v)| v.into_owned())
                .filter(|v| v.len() > 3),
        );
        shown.push_str("?***");
    }
    (shown, hidden)
}

#[cfg(test)]
mod tests {
    /// A thin event's `related_object.url` follows Stripe's naming where the client's
    /// path table has no entry (it was `/v1/{object}s/…`: `/v1/v2.core.accounts/…`).
    #[test]
    fn thin_urls_follow_stripes_naming() {
        let account = super::thin_body("evt_1", "v2.core.account.created").unwrap();
        assert!(
            account.contains(r#""url":"/v2/core/accounts/obj_evt_1""#),
            "{account}"
        );
        let customer = super::thin_body("evt_2", "customer.created").unwrap();
        assert!(
            customer.contains(r#""url":"/v1/customers/obj_evt_2""#),
            "{customer}"
        );
    }
}
