//! The web console over a demo queue, with a worker whose handler fails some events
//! until you fix it.
//!
//! Run with: `CONSOLE_PASSWORD=… cargo run --example console --features axum,console,testing`
//! then open <http://127.0.0.1:4243/admin/webhooks> and sign in as `admin` with that
//! password (it is never printed).
//!
//! - `CONSOLE_PASSWORD` (required): the console's basic-auth password, user `admin`.
//! - `PORT` (default 4243) on 127.0.0.1.
//! - `CONSOLE_PAGE_SIZE`: rows per overview section (a state page shows four times as
//!   many), the console's default when unset; a small one shows the pages' links.
//! - `STRIPE_WEBHOOK_SECRET`: for `POST /webhook` (the local development secret of the
//!   other examples when unset, in a debug build or with `STRIPE_WEBHOOKS_DEV=1`), so
//!   `send_event --url http://127.0.0.1:4243/webhook` can deliver more events.
//!
//! At start a few demo events are queued in memory. The demo handler fails every event
//! whose id contains `fail` (they retry twice, fast, then are dead) until
//! `POST /demo/fix` (same password, with the header `X-Demo-Fix: 1`); then requeue them
//! in the console and watch them complete. One more event waits as *retrying* for an
//! hour, to show its *Run now* button.
//!
//! Routes: `/admin/webhooks` (the console), `POST /webhook` (ack fast into the queue),
//! `POST /demo/fix`, `GET /healthz`, and `/` (a redirect to the console).

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use stripe_webhooks::console::{self, Console};
use stripe_webhooks::queue::{MemoryQueue, NewJob, Queue, RetryPolicy, Worker};
use stripe_webhooks::{
    async_trait, testing, Event, EventHandler, HandlerError, Processor, Verifier,
};

/// The secret `POST /webhook` verifies with when `STRIPE_WEBHOOK_SECRET` is unset (the
/// same as the other examples'); never use it for a real endpoint.
const DEV_SECRET: &str = "whsec_local_development_only";
const REALM: &str = "Stripe webhooks console (demo)";

/// The demo handler: fails events whose id contains `fail` until `fixed`.
struct Demo {
    fixed: Arc<AtomicBool>,
}

#[async_trait]
impl EventHandler for Demo {
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        if event.id().as_str().contains("fail") && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandlerError::new(format!(
                "billing service answered 502 Bad Gateway for {} (demo: fails until POST /demo/fix)",
                event.event_type()
            )));
        }
        Ok(())
    }
}

type Check = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// The service: the console behind basic auth, the webhook route, the demo's fix switch.
fn app(
    queue: MemoryQueue,
    fixed: Arc<AtomicBool>,
    password: &str,
    secret: &str,
    page_size: Option<usize>,
) -> Result<axum::Router, Box<dyn Error>> {
    let check: Check = Arc::new(console::basic_auth("admin", password));
    let mut console = Console::new(queue.clone(), {
        let check = Arc::clone(&check);
        move |parts: &Parts| check(parts)
    })
    .with_basic_auth_realm(REALM);
    if let Some(n) = page_size {
        console = console.with_page_size(n);
    }
    let processor = Arc::new(Processor::queued(
        Verifier::from_secrets_list(secret)?,
        queue,
    ));
    let fix = post(move |parts: Parts| async move {
        if !check(&parts) {
            let challenge = format!("Basic realm=\"{REALM}\"");
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                "unauthorized",
            )
                .into_response();
        }
        // A header a cross-site form cannot send.
        if !demo_header(&parts.headers) {
            return (StatusCode::FORBIDDEN, "send X-Demo-Fix: 1").into_response();
        }
        fixed.store(true, Ordering::SeqCst);
        "fixed: requeue the dead events in the console\n".into_response()
    });
    Ok(axum::Router::new()
        .nest("/admin/webhooks", console.router())
        .merge(stripe_webhooks::axum::router("/webhook", processor))
        .route("/demo/fix", fix)
        .route("/healthz", get(|| async { "ok" }))
        .route("/", get(|| async { Redirect::to("/admin/webhooks") })))
}

fn demo_header(headers: &HeaderMap) -> bool {
    headers.get("x-demo-fix").is_some_and(|v| v == "1")
}

/// Queues the demo events; the first is made to wait as retrying for an hour.
async fn seed(queue: &MemoryQueue) -> Result<(), Box<dyn Error>> {
    let events = [
        ("evt_1QdemoCrmSync", "customer.updated"),
        ("evt_1QdemoCheckout", "checkout.session.completed"),
        ("evt_1QdemoInvoicePaid", "invoice.paid"),
        ("evt_1Qdemo_fail_PaymentFailed", "invoice.payment_failed"),
        ("evt_1QdemoCustomer", "customer.created"),
        (
            "evt_1Qdemo_fail_Subscription",
            "customer.subscription.updated",
        ),
        ("evt_1QdemoCharge", "charge.succeeded"),
    ];
    for (i, (id, event_type)) in events.into_iter().enumerate() {
        let body = testing::event_for_type(id, event_type).ok_or("an undocumented demo type")?;
        queue.enqueue(&NewJob::parse(body.as_bytes())?).await?;
        if i == 0 {
            let job = queue.take(1, Duration::from_secs(30), false).await?;
            for job in job {
                let error = "CRM rate limit: 429 Too Many Requests (demo)";
                queue
                    .fail(&job.token, error, Some(Duration::from_secs(3600)))
                    .await?;
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The console's requeues (who requeued what) and the queue errors behind its 503
    // pages, on stderr; `RUST_LOG` sets the level (default `info`).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let password = std::env::var("CONSOLE_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .ok_or("set CONSOLE_PASSWORD: the console's password (user admin)")?;
    // As the other examples: unset, the public development secret only in a debug build
    // or with STRIPE_WEBHOOKS_DEV=1; set but empty, an error.
    let dev_allowed =
        cfg!(debug_assertions) || std::env::var("STRIPE_WEBHOOKS_DEV").is_ok_and(|v| v == "1");
    let secret = match std::env::var("STRIPE_WEBHOOK_SECRET") {
        Ok(s) if s.trim().is_empty() => {
            return Err(
                "STRIPE_WEBHOOK_SECRET is set but empty: give the endpoint's signing \
                        secret (whsec_…), or unset it for the local development secret"
                    .into(),
            )
        }
        Ok(s) => s,
        Err(_) if dev_allowed => DEV_SECRET.to_owned(),
        Err(_) => {
            return Err(
                "STRIPE_WEBHOOK_SECRET is not set, and a release build does not run \
                        on the public development secret (set STRIPE_WEBHOOKS_DEV=1 to allow \
                        it anyway)"
                    .into(),
            )
        }
    };
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|e| format!("PORT={p:?}: {e}"))?,
        Err(_) => 4243,
    };
    let page_size = match std::env::var("CONSOLE_PAGE_SIZE") {
        Ok(n) => Some(
            n.parse::<usize>()
                .map_err(|e| format!("CONSOLE_PAGE_SIZE={n:?}: {e}"))?,
        ),
        Err(_) => None,
    };

    let queue = MemoryQueue::new();
    let fixed = Arc::new(AtomicBool::new(false));
    seed(&queue).await?;
    let worker = Worker::new(
        queue.clone(),
        Demo {
            fixed: Arc::clone(&fixed),
        },
    )
    .with_retry(
        RetryPolicy::new(3, Duration::from_millis(300), Duration::from_secs(1)).with_jitter(0.0),
    )
    .with_poll_interval(Duration::from_millis(50))
    .spawn();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "console: http://{}/admin/webhooks (user admin, the password in CONSOLE_PASSWORD)",
        listener.local_addr()?
    );
    axum::serve(listener, app(queue, fixed, &password, &secret, page_size)?)
        .with_graceful_shutdown(async {
            // SIGINT or, where there is one, SIGTERM (what a service manager sends).
            #[cfg(unix)]
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    worker.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::Request;
    use stripe_webhooks::queue::{JobState, QueueAdmin};
    use tower::ServiceExt;

    use super::*;

    const AUTH: &str = "Basic YWRtaW46ZGVtby1wYXNzd29yZA=="; // admin:demo-password

    #[tokio::test]
    async fn the_console_is_behind_the_password_and_the_fix_makes_requeues_complete() {
        let queue = MemoryQueue::new();
        seed(&queue).await.unwrap();
        let fixed = Arc::new(AtomicBool::new(false));
        let app = app(
            queue.clone(),
            Arc::clone(&fixed),
            "demo-password",
            DEV_SECRET,
            None,
        )
        .unwrap();
        let worker = Worker::new(
            queue.clone(),
            Demo {
                fixed: Arc::clone(&fixed),
            },
        )
        .with_retry(RetryPolicy::new(
            1,
            Duration::from_millis(1),
            Duration::from_millis(1),
        ));
        while worker.run_once().await.unwrap() > 0 {}
        assert_eq!(queue.counts().await.unwrap().dead, 2);

        let call = |req: Request<Body>| app.clone().oneshot(req);
        let res = call(Request::get("/admin/webhooks").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm="));
        let res = call(
            Request::get("/admin/webhooks")
                .header("authorization", AUTH)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);

        let fix = |auth: Option<&str>, header: bool| {
            let mut req = Request::post("/demo/fix");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            if header {
                req = req.header("x-demo-fix", "1");
            }
            call(req.body(Body::empty()).unwrap())
        };
        assert_eq!(
            fix(None, true).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            fix(Some(AUTH), false).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        assert!(!fixed.load(Ordering::SeqCst));
        assert_eq!(
            fix(Some(AUTH), true).await.unwrap().status(),
            StatusCode::OK
        );

        assert_eq!(queue.requeue_dead().await.unwrap(), 2);
        while worker.run_once().await.unwrap() > 0 {}
        let job = queue
            .job(&"evt_1Qdemo_fail_PaymentFailed".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.state, JobState::Completed);
    }
}
