//! The HTTP behaviour every framework adapter must have, run over real sockets on
//! 127.0.0.1 with reqwest. Each adapter's test file provides two functions that start a
//! server and return its URL, then invokes [`adapter_tests!`].
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use stripe_webhooks::{
    async_trait, testing, Event, EventHandler, HandlerError, MemoryStore, Processor, SigningSecret,
    Verifier, DEFAULT_MAX_BODY,
};

pub const SECRET: &str = "whsec_adapter_test_secret";
pub const JSON: &str = "application/json; charset=utf-8";

/// Counts handler runs and successful effects; can sleep and fail.
#[derive(Default)]
pub struct Counting {
    pub runs: AtomicUsize,
    pub effects: AtomicUsize,
    pub fail_first: AtomicUsize,
    pub sleep: Option<Duration>,
}

#[async_trait]
impl EventHandler for Counting {
    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = self.sleep {
            tokio::time::sleep(d).await;
        }
        let failing = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(HandlerError::new("downstream unavailable"));
        }
        self.effects.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Counting {
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    pub fn effects(&self) -> usize {
        self.effects.load(Ordering::SeqCst)
    }
}

pub fn processor(handler: Arc<Counting>) -> Arc<Processor> {
    let verifier = Verifier::new(SigningSecret::new(SECRET).unwrap());
    Arc::new(Processor::new(verifier, MemoryStore::new(), handler))
}

pub fn signed(id: &str) -> (String, String) {
    let body = testing::event_for_type(id, "invoice.paid").unwrap();
    let header = testing::sign(body.as_bytes(), SECRET, testing::now());
    (header, body)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

pub async fn post(
    url: &str,
    content_type: Option<&str>,
    header: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut request = client().post(url).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if let Some(h) = header {
        request = request.header("stripe-signature", h);
    }
    reply(request.send().await.unwrap()).await
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

fn assert_json(reply: &Reply) {
    let ct = reply.headers.get("content-type").unwrap().to_str().unwrap();
    assert_eq!(ct, "application/json");
}

fn assert_error(reply: &Reply, status: u16, name: &str) {
    assert_eq!(reply.status.as_u16(), status, "body: {}", reply.body);
    assert_eq!(reply.body, format!(r#"{{"error":"{name}"}}"#));
    assert_json(reply);
}

fn assert_ok(reply: &Reply, name: &str) {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    assert_eq!(reply.body, format!(r#"{{"status":"{name}"}}"#));
    assert_json(reply);
}

pub async fn valid_event_runs_once<Fut: Future<Output = String>>(
    serve: impl FnOnce(Arc<Processor>) -> Fut,
) {
    let handler = Arc::new(Counting::default());
    let url = serve(processor(handler.clone())).await;
    let (header, body) = signed("evt_valid");

    let first = post(&url, Some(JSON), Some(&header), body.clone()).await;
    assert_ok(&first, "processed");
    assert_eq!(handler.runs(), 1);

    let again = post(&url, Some(JSON), Some(&header), body).await;
    assert_ok(&again, "duplicate");
    assert_eq!(handler.runs(), 1);
}

pub async fn concurrent_copies_run_once<Fut: Future<Output = String>>(
    serve: impl FnOnce(Arc<Processor>) -> Fut,
) {
    let handler = Arc::new(Counting {
        sleep: Some(Duration::from_millis(50)),
        ..Counting::default()
    });
    let url = serve(processor(handler.clone())).await;
    let (header, body) = signed("evt_concurrent");

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (url, header, body) = (url.clone(), header.clone(), body.clone());
        tasks.spawn(async move { post(&url, Some(JSON), Some(&header), body).await });
    }
    let mut ok = 0;
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        match reply.status.as_u16() {
            200 => ok += 1,
            409 => {
                assert_error(&reply, 409, "in_progress");
                let secs: u64 = reply
                    .headers
                    .get("retry-after")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(secs >= 1);
            }
            other => panic!("unexpected status {other}: {}", reply.body),
        }
    }
    assert!(ok >= 1);
    assert_eq!(handler.runs(), 1);
    assert_eq!(handler.effects(), 1);
}

pub async fn bad_signatures_are_400<Fut: Future<Output = String>>(
    serve: impl FnOnce(Arc<Processor>) -> Fut,
) {
    let handler = Arc::new(Counting::default());
    let url = serve(processor(handler.clone())).await;
    let (_, body) = signed("evt_bad");

    let wrong_secret = testing::sign(body.as_bytes(), "whsec_someone_else", testing::now());
    let stale = testing::sign(body.as_bytes(), SECRET, testing::now() - 301);
    for header in [
        Some(wrong_secret.as_str()),
        Some(stale.as_str()),
        Some("t=1,v1=zz"),
        None,
    ] {
        let reply = post(&url, Some(JSON), header, body.clone()).await;
        assert_error(&reply, 400, "bad_signature");
        assert!(!reply.body.contains(SECRET));
    }

    // A signed body that is not an event.
    let not_event = r#"{"hello":"world"}"#;
    let header = testing::sign(not_event.as_bytes(), SECRET, testing::now());
    let reply = post(&url, Some(JSON), Some(&header), not_event).await;
    assert_error(&reply, 400, "not_an_event");
    assert_eq!(handler.runs(), 0);
}

pub async fn other_methods_are_405<Fut: Future<Output = String>>(
    serve: impl FnOnce(Arc<Processor>) -> Fut,
) {
    let handler = Arc::new(Counting::default());
    let url = serve(processor(handler.clone())).await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let reply = reply(client().request(method, &url).send().await.unwrap()).await;
        assert_error(&reply, 405, "method_not_allowed");
        assert_eq!(reply.headers.get("allow").unwrap(), "POST");
    }
    assert_eq!(handler.runs(), 0);
}

pub async fn content_types<Fut: Future<Output = String>>(
    serve: impl FnOnce(Arc<Processor>) -> Fut,
) {
    let handler = Arc::new(Counting::default());
    let url = serve(processor(handler.clone())).await;
    let (header, body) = signed("evt_content_type");

    for refused in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        None,
    ] {
        let reply = post(&url, refused, Some(&header), body.clone()).await;
        assert_error(&reply, 415, "unsupported_media_type");
    }
    assert_eq!(handler.runs(), 0);

    // An encoded body, whatever it holds (here the signed JSON as it is, so only the
    // encoding is wrong), is refused before it is read: a framework that inflates
    // bodies would do so before the size check.
    for encoding in ["gzip", "identity, br", "Zstd"] {
        let reply = post_encoded(&url, encoding, &header, body.clone()).await;
        assert_error(&reply, 415, "unsupported_media_type");
    }
    assert_eq!(handler.runs(), 0);
    let reply = post_encoded(&url, "identity", &header, body.clone()).await;
    assert_ok(&reply, "processed");

    let reply = post(
        &url,
        Some("Application/JSON; Charset=UTF-8"),
        Some(&header),
        body,
    )
    .await;
    assert_ok(&reply, "duplicate");
    assert_eq!(handler.runs(), 1);
}

/// A signed JSON POST with `Content-Encoding: encoding` (the body sent as it is).
pub async fn post_encoded(url: &str, encoding: &str, header: &str, body: String) -> Reply {
    let request = client()
        .post(url)
        .header("content-type", JSON)
        .header("content-encoding", encoding)
        .header("stripe-signature", header)
        .body(body);
    reply(request.send().await.unwrap()).await
}

pub async fn body_limit<Fut: Future<Output = String>>(serve: impl FnOnce(Arc<Processor>) -> Fut) {
    let handler = Arc::new(Counting::default());
    let url = serve(processor(handler.clone())).await;

    // Exactly the limit: a real event padded with trailing whitespace, above actix-web's
    // 256 KiB default.
    let mut body = testing::event_for_type("evt_at_limit", "invoice.paid").unwrap();
    body.push_str(&" ".repeat(DEFAULT_MAX_BODY - body.len()));
    assert_eq!(body.len(), DEFAULT_MAX_BODY);
    let header = testing::sign(body.as_bytes(), SECRET, testing::now());
    let reply = post(&url, Some(JSON), Some(&header), body.clone()).await;
    assert_ok(&reply, "processed");

    // One byte more.
    body.push(' ');
    let header = testing::sign(body.as_bytes(), SECRET, testing::now());
    let reply = post(&url, Some(JSON), Some(&header), body).await;
    assert_error(&reply, 413, "payload_too_large");
    assert_eq!(handler.runs(), 1);
}

pub async fn failure_then_redelivery<Fut: Future<Output = String>>(
    serve: impl FnOnce(Arc<Processor>) -> Fut,
) {
    let handler = Arc::new(Counting {
        fail_first: AtomicUsize::new(1),
        ..Counting::default()
    });
    let url = serve(processor(handler.clone())).await;
    let (header, body) = signed("evt_flaky");

    let reply = post(&url, Some(JSON), Some(&header), body.clone()).await;
    assert_error(&reply, 500, "handler_failed");
    assert!(!reply.body.contains("downstream"));
    assert_eq!(handler.effects(), 0);

    let reply = post(&url, Some(JSON), Some(&header), body.clone()).await;
    assert_ok(&reply, "processed");
    let reply = post(&url, Some(JSON), Some(&header), body).await;
    assert_ok(&reply, "duplicate");
    assert_eq!(handler.runs(), 2);
    assert_eq!(handler.effects(), 1);
}

/// `serve` mounts a user handler with the `VerifiedEvent` extractor that answers with
/// the event's id as plain text.
pub async fn extractor<Fut: Future<Output = String>>(serve: impl FnOnce(Arc<Processor>) -> Fut) {
    let handler = Arc::new(Counting::default());
    let url = serve(processor(handler.clone())).await;
    let (header, body) = signed("evt_extracted");

    let reply = post(&url, Some(JSON), Some(&header), body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "evt_extracted");

    let wrong = testing::sign(body.as_bytes(), "whsec_someone_else", testing::now());
    let reply = post(&url, Some(JSON), Some(&wrong), body.clone()).await;
    assert_error(&reply, 400, "bad_signature");
    let reply = post(&url, Some(JSON), None, body.clone()).await;
    assert_error(&reply, 400, "bad_signature");
    let reply = post(&url, Some("text/plain"), Some(&header), body.clone()).await;
    assert_error(&reply, 415, "unsupported_media_type");
    let reply = post_encoded(&url, "gzip", &header, body).await;
    assert_error(&reply, 415, "unsupported_media_type");

    // Up to the body limit the application set on its framework (here the processor's).
    let mut big = testing::event_for_type("evt_big", "invoice.paid").unwrap();
    big.push_str(&" ".repeat(DEFAULT_MAX_BODY - big.len()));
    let header = testing::sign(big.as_bytes(), SECRET, testing::now());
    let reply = post(&url, Some(JSON), Some(&header), big.clone()).await;
    assert_eq!(reply.body, "evt_big");
    big.push(' ');
    let header = testing::sign(big.as_bytes(), SECRET, testing::now());
    let reply = post(&url, Some(JSON), Some(&header), big).await;
    assert_error(&reply, 413, "payload_too_large");

    // The extractor verifies only; the processor's handler never ran.
    assert_eq!(handler.runs(), 0);
}

/// Verification alone: `serve` mounts the `VerifiedEvent` handler on an app whose state
/// is only the given `Verifier` (no store, no handler).
pub async fn extractor_with_only_a_verifier<Fut: Future<Output = String>>(
    serve: impl FnOnce(Verifier) -> Fut,
) {
    let url = serve(Verifier::new(SigningSecret::new(SECRET).unwrap())).await;
    let (header, body) = signed("evt_verify_only");
    let reply = post(&url, Some(JSON), Some(&header), body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "evt_verify_only");
    let forged = testing::sign(body.as_bytes(), "whsec_other", testing::now());
    let reply = post(&url, Some(JSON), Some(&forged), body).await;
    assert_error(&reply, 400, "bad_signature");
}

/// The client gives up while the handler runs (as Stripe does after its timeout): the
/// handler still finishes and the event is completed, so the retry is a duplicate.
pub async fn client_disconnects<Fut: Future<Output = String>>(
    serve: impl FnOnce(Arc<Processor>) -> Fut,
) {
    // The client waits 1 s, long enough for the server to have read the request on a
    // loaded machine; the handler takes 2 s, so the client is gone before it ends.
    let handler = Arc::new(Counting {
        sleep: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    let p = processor(handler.clone());
    let url = serve(Arc::clone(&p)).await;
    let (header, body) = signed("evt_disconnect");
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let cut = impatient
        .post(&url)
        .header("content-type", JSON)
        .header("stripe-signature", &header)
        .body(body.clone())
        .send()
        .await;
    assert!(cut.is_err(), "the client should have timed out");
    // The handler goes on without the client and completes the event, and a service
    // shutting down can wait for it: `drain` returns once it has (a second after the
    // client left).
    assert!(p.drain(Duration::from_secs(30)).await, "the delivery ended");
    assert_eq!(handler.effects(), 1);
    assert_eq!(p.deliveries_running(), 0);
    let mut retry = post(&url, Some(JSON), Some(&header), body.clone()).await;
    for _ in 0..50 {
        if retry.status != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        retry = post(&url, Some(JSON), Some(&header), body.clone()).await;
    }
    assert_ok(&retry, "duplicate");
    assert_eq!(handler.runs(), 1);
}

/// A client that trickles its body, a byte every 100 ms (never idle for long), is
/// answered 408 once the processor's body timeout has passed in all: the deadline is on
/// the whole body, not on each read. Nothing runs.
pub async fn slow_body_is_408<Fut: Future<Output = String>>(
    serve: impl FnOnce(Arc<Processor>) -> Fut,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let handler = Arc::new(Counting::default());
    let verifier = Verifier::new(SigningSecret::new(SECRET).unwrap());
    let processor = Processor::new(verifier, MemoryStore::new(), handler.clone())
        .with_body_timeout(Duration::from_secs(1));
    let url = serve(Arc::new(processor)).await;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let (header, body) = signed("evt_trickle");
    let conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let head = format!(
        "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: {JSON}\r\n\
         stripe-signature: {header}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    // Up to 20 s of trickling (the body is several KiB), stopped by the answer.
    let trickle = tokio::spawn(async move {
        for byte in body.into_bytes().into_iter().take(200) {
            if wr.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0_u8; 1024];
        loop {
            let n = rd.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    trickle.abort();
    assert!(read.is_ok(), "no answer while the body trickles");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.ends_with(r#"{"error":"body_timeout"}"#), "{answer}");
    assert_eq!(handler.runs(), 0);
}

/// One `#[tokio::test]` per behaviour. `$serve` starts the ready route, `$extract` a
/// user handler using `VerifiedEvent`; both take an `Arc<Processor>` and return a URL.
#[macro_export]
macro_rules! adapter_tests {
    ($serve:path, $extract:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn client_that_disconnects_does_not_cancel_the_handler() {
            adapter_suite::client_disconnects($serve).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn valid_event_runs_once_and_duplicate_does_not_run() {
            adapter_suite::valid_event_runs_once($serve).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_copies_run_the_handler_once() {
            adapter_suite::concurrent_copies_run_once($serve).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bad_stale_or_missing_signature_is_400() {
            adapter_suite::bad_signatures_are_400($serve).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn other_methods_are_405_with_allow_post() {
            adapter_suite::other_methods_are_405($serve).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn only_json_is_accepted_in_any_case() {
            adapter_suite::content_types($serve).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn one_mib_is_accepted_and_one_byte_more_is_413() {
            adapter_suite::body_limit($serve).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn handler_failure_is_500_then_redelivery_succeeds_once() {
            adapter_suite::failure_then_redelivery($serve).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_trickled_body_is_408_after_the_body_timeout() {
            adapter_suite::slow_body_is_408($serve).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn verified_event_extractor() {
            adapter_suite::extractor($extract).await;
        }
    };
}
