//! Catches up on events the webhook route never got: one reconciler pass (or one every
//! `--every` seconds) through the same processor, store and demo handler as
//! `examples/axum.rs`, so an event the service already handled is skipped.
//!
//! Run against Stripe: `STRIPE_API_KEY=sk_test_… cargo run --example reconcile --features client,sqlite,tracing,testing`
//!
//! Run offline, against the crate's fake Stripe API seeded with a few events, one of
//! them already handled by the "webhook": `… -- --fake`. Its cursor is named `fake`
//! and its store defaults to `stripe-webhooks-fake.db`, so a later run against Stripe
//! does not start from the fake events' cursor. The seeded events' ids carry the second
//! the run started (`RECONCILE_FAKE_STAMP` sets it), so each run seeds new events.
//!
//! - `SQLITE_PATH`: the store (default `stripe-webhooks.db`, the axum example's). It
//!   reconciles the SQLite store only, and refuses to start when `DATABASE_URL`,
//!   `REDIS_URL` or `STRIPE_WEBHOOKS_STORE` names another: a pass over an empty store
//!   would run three days of events that the service's own store had already
//!   completed. For those, build the `Reconciler` on the service's processor and store
//!   (its docs show how).
//! - `--every SECS`: pass after pass (at least 1 s apart), as a service would schedule
//!   it, until SIGINT or SIGTERM; the `Reconciler` docs show the same loop inside a
//!   service.
//! - `--undelivered`: list only the events Stripe could not deliver, instead of a cursor
//!   pass.
//! - `STRIPE_API_BASE`: the API's base URL (default `https://api.stripe.com`), e.g. a
//!   proxy or a fake of your own.
//!
//! Without `--every`, a pass that failed, or that left events failed, exits 1 (a cron
//! job sees it); the next pass takes them again.

mod common;

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use stripe_webhooks::client::{ApiKey, HttpClient, StripeClient};
use stripe_webhooks::reconcile::Reconciler;
use stripe_webhooks::sqlx;
use stripe_webhooks::testing::{self, FakeStripe};
use stripe_webhooks::{Processor, SqliteStore, Verifier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    common::init_logging();
    let (mut fake, mut undelivered, mut every) = (false, false, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--fake" => fake = true,
            "--undelivered" => undelivered = true,
            "--every" => {
                let secs = args.next().ok_or("--every needs a number of seconds")?;
                every = match secs.parse::<u64>() {
                    Ok(n) if n >= 1 => Some(Duration::from_secs(n)),
                    _ => return Err(format!("--every {secs:?}: seconds, at least 1").into()),
                };
            }
            // A misspelt `--every` would run one pass and exit 0 where a schedule was
            // wanted.
            other => {
                return Err(format!(
                    "unknown argument {other:?}: the arguments are --fake, --undelivered \
                     and --every SECONDS"
                )
                .into())
            }
        }
    }

    // The verifier is not used by a reconciler (the API is authenticated by the key),
    // but a processor has one: the service's. The fake's demo signs its one webhook with
    // the development secret, whatever STRIPE_WEBHOOK_SECRET says (which is checked all
    // the same: an empty one is a mistake either way).
    let configured = common::webhook_secrets()?;
    let secrets = if fake {
        common::DEV_SECRET.to_owned()
    } else {
        configured
    };
    let verifier = Verifier::from_secrets_list(&secrets)?;

    // The store the service's processor keys its events in, or the handlers run again.
    for other in ["DATABASE_URL", "REDIS_URL", "STRIPE_WEBHOOKS_STORE"] {
        let names_another = match std::env::var(other) {
            Ok(v) if other == "STRIPE_WEBHOOKS_STORE" => v == "memory",
            Ok(_) => true,
            Err(_) => false,
        };
        if names_another && !fake {
            return Err(format!(
                "{other} is set: this example reconciles the SQLite store only; \
                 build the Reconciler on your service's processor and store"
            )
            .into());
        }
    }
    let default_path = if fake {
        "stripe-webhooks-fake.db"
    } else {
        "stripe-webhooks.db"
    };
    let path = common::sqlite_path(default_path)?;
    let store = SqliteStore::connect(&path).await?;
    sqlx::query(common::SQLITE_ACCESS)
        .execute(store.pool())
        .await?;
    let processor = Arc::new(Processor::with_inbox(verifier, store.inbox(common::Demo)));

    let server;
    let client: Arc<dyn StripeClient> = if fake {
        server = FakeStripe::start().await?;
        seed(&server, &processor).await?;
        tracing::info!(url = %server.base_url(), "fake Stripe API");
        Arc::new(server.client()?)
    } else {
        let key =
            std::env::var("STRIPE_API_KEY").map_err(|_| "set STRIPE_API_KEY, or pass --fake")?;
        let client = HttpClient::new(ApiKey::new(key)?)?;
        Arc::new(match std::env::var("STRIPE_API_BASE") {
            Ok(base) => client.with_base_url(base),
            Err(_) => client,
        })
    };
    let mut reconciler = Reconciler::new(client, Arc::clone(&processor), store);
    if fake {
        reconciler = reconciler.with_name("fake");
    }
    let stop = common::shutdown_signal();
    tokio::pin!(stop);
    loop {
        // A signal stops a pass too (its claim in flight is released): a pass after a
        // long outage may take a while.
        let pass = async {
            if undelivered {
                reconciler.undelivered().await
            } else {
                reconciler.since_cursor().await
            }
        };
        let pass = tokio::select! {
            pass = pass => pass,
            () = &mut stop => {
                // The pass's delivery in flight was dropped. In inbox mode (as here) its
                // transaction rolls back with it; over an idempotency store its claim is
                // released from a task of its own, which `drain` waits for before the
                // runtime ends.
                if !processor.drain(Duration::from_secs(10)).await {
                    eprintln!("a claim was left to its lease; its event runs again after it");
                }
                return Ok(());
            }
        };
        let failed = match pass {
            Ok(r) => {
                println!(
                    "listed {} in {} pages: {} processed, {} already done, {} running elsewhere, {} failed, {} skipped; cursor {:?}",
                    r.listed, r.pages, r.processed, r.duplicates, r.in_progress, r.failed, r.skipped,
                    r.cursor.map(|c| c.created)
                );
                (r.failed > 0).then(|| format!("{} events failed", r.failed))
            }
            Err(e) => Some(format!("reconcile failed: {e}")),
        };
        match every {
            Some(d) => {
                if let Some(failed) = failed {
                    eprintln!("{failed} (the next pass retries)");
                }
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = &mut stop => return Ok(()),
                }
            }
            // One pass, as a cron job runs it: a failure is the exit code's to say.
            None => {
                return match failed {
                    Some(failed) => Err(format!("{failed}; the next pass takes them again").into()),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Three events the demo acts on, in the fake API; the first also arrives as a webhook.
/// The other two are the ones Stripe could not deliver (`delivery_success=false`), so
/// `--undelivered` lists them too.
async fn seed(server: &FakeStripe, processor: &Processor) -> Result<(), Box<dyn Error>> {
    let stamp = std::env::var("RECONCILE_FAKE_STAMP")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(testing::now);
    let mut first = None;
    for (i, ty) in [
        "checkout.session.completed",
        "invoice.payment_failed",
        "customer.subscription.deleted",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("evt_reconcile_{stamp}_{i}");
        let body = testing::event_for_type(&id, ty).ok_or("unknown type")?;
        if first.is_none() {
            server.add_event(&body)?;
            first = Some(body);
        } else {
            server.add_event_with_delivery(&body, false)?;
        }
    }
    if let Some(body) = first {
        let header = testing::sign(body.as_bytes(), common::DEV_SECRET, testing::now());
        let o = processor.process(Some(&header), body.as_bytes()).await;
        println!("webhook delivered the first event: {}", o.kind().name());
    }
    Ok(())
}
