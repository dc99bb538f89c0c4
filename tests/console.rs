//! The web console, driven through its router without a socket: authorization, CSRF,
//! the security headers, requeueing, and escaping of everything that comes from events.
#![cfg(feature = "console")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use stripe_webhooks::console::{basic_auth, bearer_token, Console};
use stripe_webhooks::queue::{JobState, MemoryQueue, NewJob, Queue, QueueAdmin};
use stripe_webhooks::testing;
use tower::ServiceExt;

const TOKEN: &str = "console-test-token";
const BASE: &str = "/admin/webhooks";

fn app(queue: &MemoryQueue) -> axum::Router {
    let console = Console::new(queue.clone(), bearer_token(TOKEN));
    axum::Router::new().nest(BASE, console.router())
}

async fn enqueue(queue: &MemoryQueue, body: &str) {
    queue
        .enqueue(&NewJob::parse(body.as_bytes()).unwrap())
        .await
        .unwrap();
}

fn customer(id: &str) -> String {
    testing::event_json(
        id,
        "customer.created",
        r#"{"id":"cus_1","object":"customer"}"#,
    )
}

/// Queues `body`, then runs and fails it once, for good (`retry_in: None`) or not.
async fn failed(queue: &MemoryQueue, body: &str, error: &str, retry_in: Option<Duration>) {
    enqueue(queue, body).await;
    let job = queue
        .take(1, Duration::from_secs(30), false)
        .await
        .unwrap()
        .pop()
        .unwrap();
    queue.fail(&job.token, error, retry_in).await.unwrap();
}

/// A GET of `path` with the right token: the response and its body.
async fn fetch(app: &axum::Router, path: &str) -> (Response<Body>, String) {
    send(app, get(path).body(Body::empty()).unwrap()).await
}

async fn send(app: &axum::Router, request: Request<Body>) -> (Response<Body>, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

fn get(path: &str) -> axum::http::request::Builder {
    Request::get(path).header("authorization", format!("Bearer {TOKEN}"))
}

/// A GET of the overview: its session cookie and the token its forms carry.
async fn session(app: &axum::Router) -> (String, String) {
    let (response, html) = send(app, get(BASE).body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(cookie.contains(&format!("Path={BASE}")), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
    let token = html[start..].split('"').next().unwrap().to_owned();
    (cookie, token)
}

fn post(path: &str, cookie: &str, form: &str) -> Request<Body> {
    get(path)
        .method("POST")
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "localhost:4243")
        .header("origin", "http://localhost:4243")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(form.to_owned()))
        .unwrap()
}

async fn state_of(queue: &MemoryQueue, key: &str) -> JobState {
    queue.job(&key.into()).await.unwrap().unwrap().state
}

fn assert_secure(response: &Response<Body>) {
    let h = response.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !csp.contains("script-src") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn every_page_needs_the_authorization_check() {
    let queue = MemoryQueue::new();
    failed(&queue, &customer("evt_secret_dead"), "boom", None).await;
    let app = app(&queue);
    for path in [
        BASE.to_owned(),
        format!("{BASE}/state/dead"),
        format!("{BASE}/state/dead?after=evt_secret_dead"),
        format!("{BASE}/failed"),
        format!("{BASE}/jobs/evt_secret_dead"),
        format!("{BASE}/console.css"),
        format!("{BASE}/nowhere"),
    ] {
        for auth in [None, Some("Bearer wrong"), Some("Basic YWRtaW46YWRtaW4=")] {
            let mut request = Request::get(&path);
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let (response, body) = send(&app, request.body(Body::empty()).unwrap()).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{path} {auth:?}"
            );
            assert_secure(&response);
            assert!(response.headers().get("set-cookie").is_none());
            assert!(
                !body.contains("evt_secret_dead") && !body.contains("boom"),
                "{body}"
            );
        }
    }
    // An unauthorized POST changes nothing, even with a good session and token.
    let (cookie, token) = session(&app).await;
    let mut request = post(
        &format!("{BASE}/requeue"),
        &cookie,
        &format!("csrf={token}&key=evt_secret_dead"),
    );
    request.headers_mut().remove("authorization");
    let (response, _) = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(state_of(&queue, "evt_secret_dead").await, JobState::Dead);
}

#[tokio::test]
async fn basic_auth_with_a_realm_asks_the_browser() {
    let queue = MemoryQueue::new();
    let console =
        Console::new(queue.clone(), basic_auth("admin", "pa55")).with_basic_auth_realm("ops");
    let app = axum::Router::new().nest(BASE, console.router());
    let (response, _) = send(&app, Request::get(BASE).body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Basic realm="ops", charset="UTF-8""#
    );
    // admin:pa55
    let ok = Request::get(BASE)
        .header("authorization", "Basic YWRtaW46cGE1NQ==")
        .body(Body::empty())
        .unwrap();
    let (response, body) = send(&app, ok).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!body.contains("pa55"));
    // An empty password accepts no one.
    let check = basic_auth("admin", "");
    let (parts, ()) = Request::get("/")
        .header("authorization", "Basic YWRtaW46")
        .body(())
        .unwrap()
        .into_parts();
    assert!(!check(&parts));
}

#[tokio::test]
async fn the_overview_shows_counts_failures_and_recent_deliveries() {
    let queue = MemoryQueue::new();
    failed(&queue, &customer("evt_dead"), "card_declined", None).await;
    failed(
        &queue,
        &customer("evt_retrying"),
        "timeout",
        Some(Duration::from_secs(600)),
    )
    .await;
    enqueue(&queue, &customer("evt_waiting")).await;
    let app = app(&queue);
    let (response, html) = fetch(&app, BASE).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    assert_secure(&response);
    for needle in [
        "evt_waiting",
        "evt_dead",
        "evt_retrying",
        "card_declined",
        "timeout",
        "Oldest queued",
        "Requeue all 1 dead",
        "Recent deliveries",
        // Links follow the nesting path.
        r#"href="/admin/webhooks/jobs/evt_dead""#,
        r#"href="/admin/webhooks/console.css""#,
        r#"action="/admin/webhooks/requeue""#,
        r#"<span class="badge dead">dead</span>"#,
        r#"<span class="badge retrying">retrying</span>"#,
    ] {
        assert!(html.contains(needle), "{needle} missing from\n{html}");
    }
    let (response, css) = fetch(&app, &format!("{BASE}/console.css")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/css; charset=utf-8"
    );
    assert!(css.contains(".badge.dead"));

    let (response, html) = fetch(&app, &format!("{BASE}/state/dead")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(html.contains("evt_dead") && !html.contains("evt_waiting"));
}

#[tokio::test]
async fn requeue_needs_a_csrf_token_bound_to_the_session() {
    let queue = MemoryQueue::new();
    failed(&queue, &customer("evt_dead"), "boom", None).await;
    let app = app(&queue);
    let (cookie, token) = session(&app).await;
    let (other_cookie, other_token) = session(&app).await;
    assert_ne!(cookie, other_cookie);
    let other_console = Console::new(queue.clone(), bearer_token(TOKEN));
    let other_app = axum::Router::new().nest(BASE, other_console.router());
    let (_, foreign_token) = session(&other_app).await;
    let url = format!("{BASE}/requeue");

    let refused = [
        post(&url, &cookie, "key=evt_dead"),
        post(&url, &cookie, "key=evt_dead&csrf="),
        post(&url, &cookie, "key=evt_dead&csrf=00"),
        post(&url, &cookie, &format!("key=evt_dead&csrf={other_token}")),
        post(&url, &cookie, &format!("key=evt_dead&csrf={foreign_token}")),
        post(&url, "", &format!("key=evt_dead&csrf={token}")),
        post(&url, &other_cookie, &format!("key=evt_dead&csrf={token}")),
    ];
    for request in refused {
        let (response, body) = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{body}");
        assert_secure(&response);
        assert_eq!(state_of(&queue, "evt_dead").await, JobState::Dead);
    }

    // Cross-site by Origin or by Sec-Fetch-Site, even with a good token.
    let good = format!("key=evt_dead&csrf={token}");
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let mut request = post(&url, &cookie, &good);
        request.headers_mut().insert(name, value.parse().unwrap());
        let (response, _) = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert_eq!(state_of(&queue, "evt_dead").await, JobState::Dead);
    }
    // The console's host over plain HTTP is another origin than the console over HTTPS.
    let mut request = post(&url, &cookie, &good);
    request
        .headers_mut()
        .insert("x-forwarded-proto", "https".parse().unwrap());
    let (response, _) = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(state_of(&queue, "evt_dead").await, JobState::Dead);

    // A GET does not requeue.
    let (response, _) = fetch(&app, &url).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");

    let (response, _) = send(&app, post(&url, &cookie, &good)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        "/admin/webhooks/jobs/evt_dead?notice=requeued"
    );
    let job = queue.job(&"evt_dead".into()).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Queued, 0));

    // Without the headers older clients omit, the token alone suffices.
    failed(&queue, &customer("evt_dead_2"), "boom", None).await;
    let mut request = post(&url, &cookie, &format!("key=evt_dead_2&csrf={token}"));
    request.headers_mut().remove("origin");
    request.headers_mut().remove("sec-fetch-site");
    let (response, _) = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(state_of(&queue, "evt_dead_2").await, JobState::Queued);

    let (_, html) = fetch(&app, "/admin/webhooks/jobs/evt_dead?notice=requeued").await;
    assert!(html.contains("Requeued with its attempts reset"), "{html}");
}

/// DNS rebinding: a page on the attacker's site, its name re-resolved to the console's
/// address, sends the attacker's `Host` (and a matching `Origin`). The console answers
/// only hosts no DNS answer can point at it (addresses, `localhost`) and those it was
/// told, so such a page can neither read it nor post its forms, even when the
/// authorization check is one the browser does not scope to a site.
#[tokio::test]
async fn a_host_the_console_was_not_told_is_refused() {
    let queue = MemoryQueue::new();
    failed(&queue, &customer("evt_dead"), "boom", None).await;
    let open = |console: Console| axum::Router::new().nest(BASE, console.router());
    // Authorized by where the request comes from, say: every request here passes.
    let anyone = || Console::new(queue.clone(), |_: &axum::http::request::Parts| true);
    let app = open(anyone());
    let (cookie, token) = session(&app).await;
    let good = format!("csrf={token}");
    let at = |host: &str| get(BASE).header("host", host).body(Body::empty()).unwrap();
    for host in [
        "rebind.evil:4243",
        "rebind.evil",
        "localhost.evil",
        "127.0.0.1.evil",
    ] {
        let (response, body) = send(&app, at(host)).await;
        assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert!(!body.contains("evt_dead"), "{host}: {body}");
        assert!(response.headers().get("set-cookie").is_none(), "{host}");
        assert_secure(&response);
        let mut request = post(&format!("{BASE}/requeue-dead"), &cookie, &good);
        let h = request.headers_mut();
        h.insert("host", host.parse().unwrap());
        h.insert("origin", format!("http://{host}").parse().unwrap());
        let (response, _) = send(&app, request).await;
        assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert_eq!(state_of(&queue, "evt_dead").await, JobState::Dead);
    }
    for host in [
        "127.0.0.1:4243",
        "10.0.0.7",
        "[::1]:4243",
        "localhost:4243",
        "LOCALHOST.",
        "ops.localhost:8080",
    ] {
        let (response, body) = send(&app, at(host)).await;
        assert_eq!(response.status(), StatusCode::OK, "{host}");
        assert!(body.contains("evt_dead"), "{host}");
    }
    // Named hosts, with or without a port, a domain and what is under it, and the
    // hosts of the named origins.
    let named = open(
        anyone()
            .with_allowed_host("Admin.Example.com:8443")
            .with_allowed_host(".ops.example.net")
            .with_allowed_origin("https://console.example.org")
            // As typed, not as a browser writes it: taken as https://ops.example.io.
            .with_allowed_origin("Ops.Example.io:443/"),
    );
    for (host, status) in [
        ("ops.example.io", StatusCode::OK),
        ("admin.example.com", StatusCode::OK),
        ("ADMIN.example.com:443", StatusCode::OK),
        ("ops.example.net", StatusCode::OK),
        ("a.ops.example.net", StatusCode::OK),
        ("console.example.org", StatusCode::OK),
        ("evilops.example.net", StatusCode::MISDIRECTED_REQUEST),
        ("example.com", StatusCode::MISDIRECTED_REQUEST),
        ("rebind.evil", StatusCode::MISDIRECTED_REQUEST),
    ] {
        let (response, _) = send(&named, at(host)).await;
        assert_eq!(response.status(), status, "{host}");
    }
    let any = open(anyone().with_allowed_host("*"));
    let (response, _) = send(&any, at("rebind.evil")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// A cookie of the console's name planted for a longer path or from a sibling domain
/// comes first in `Cookie`: the console's own still carries the session, on the page
/// and in its forms.
#[tokio::test]
async fn a_planted_cookie_does_not_hide_the_session() {
    let queue = MemoryQueue::new();
    failed(&queue, &customer("evt_dead"), "boom", None).await;
    let app = app(&queue);
    let (cookie, token) = session(&app).await;
    let planted = format!("swh_console=zz; swh_console={}; {cookie}", "0".repeat(32));
    let page = get(BASE)
        .header("cookie", &planted)
        .body(Body::empty())
        .unwrap();
    let (response, html) = send(&app, page).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(html.contains("evt_dead"));
    let form = format!("key=evt_dead&csrf={token}");
    let (response, body) = send(&app, post(&format!("{BASE}/requeue"), &planted, &form)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{body}");
    assert_eq!(state_of(&queue, "evt_dead").await, JobState::Queued);
}

/// Replicas given one CSRF key accept each other's forms: the page from one, its POST
/// landing on the other, as behind a load balancer (or across a restart).
#[tokio::test]
async fn replicas_sharing_a_csrf_key_take_each_others_forms() {
    let queue = MemoryQueue::new();
    failed(&queue, &customer("evt_dead"), "boom", None).await;
    let replica = |key: [u8; 32]| {
        let console = Console::new(queue.clone(), bearer_token(TOKEN)).with_csrf_key(key);
        axum::Router::new().nest(BASE, console.router())
    };
    let (a, b, other) = (replica([3; 32]), replica([3; 32]), replica([4; 32]));
    let (cookie, token) = session(&a).await;
    let url = format!("{BASE}/requeue");
    let form = format!("key=evt_dead&csrf={token}");
    let (response, _) = send(&other, post(&url, &cookie, &form)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "another key");
    assert_eq!(state_of(&queue, "evt_dead").await, JobState::Dead);
    let (response, _) = send(&b, post(&url, &cookie, &form)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(state_of(&queue, "evt_dead").await, JobState::Queued);
}

#[tokio::test]
async fn requeue_all_dead_and_run_now() {
    let queue = MemoryQueue::new();
    for id in ["evt_d1", "evt_d2", "evt_d3"] {
        failed(&queue, &customer(id), "boom", None).await;
    }
    failed(
        &queue,
        &customer("evt_later"),
        "boom",
        Some(Duration::from_secs(3600)),
    )
    .await;
    let app = app(&queue);
    let (cookie, token) = session(&app).await;
    let (_, html) = fetch(&app, BASE).await;
    assert!(
        html.contains(r#"<input type="hidden" name="dead" value="3">"#),
        "the form carries the count it shows: {html}"
    );
    // Drawn when two were dead: the third died since, unseen, so nothing is requeued.
    let url = format!("{BASE}/requeue-dead");
    let (response, _) = send(&app, post(&url, &cookie, &format!("csrf={token}&dead=2"))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        "/admin/webhooks?notice=more_dead&n=1"
    );
    assert_eq!(queue.counts().await.unwrap().dead, 3);
    let (_, html) = fetch(&app, &format!("{BASE}?notice=more_dead&n=1")).await;
    assert!(
        html.contains("1 more job died since that page was drawn"),
        "{html}"
    );
    // Drawn when four were dead: one was requeued elsewhere since, so the
    // list is not the one the operator saw either.
    let (response, _) = send(&app, post(&url, &cookie, &format!("csrf={token}&dead=4"))).await;
    assert_eq!(
        response.headers()["location"],
        "/admin/webhooks?notice=fewer_dead"
    );
    assert_eq!(queue.counts().await.unwrap().dead, 3);
    let (_, html) = fetch(&app, &format!("{BASE}?notice=fewer_dead")).await;
    assert!(
        html.contains("Nothing was requeued: some of the dead"),
        "{html}"
    );
    let (response, _) = send(&app, post(&url, &cookie, &format!("csrf={token}&dead=3"))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        "/admin/webhooks?notice=requeued_dead&n=3"
    );
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.dead, counts.queued, counts.retrying), (0, 3, 1));

    // "Run now" on a retrying job.
    let (response, _) = send(
        &app,
        post(
            &format!("{BASE}/requeue"),
            &cookie,
            &format!("csrf={token}&key=evt_later"),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(state_of(&queue, "evt_later").await, JobState::Queued);

    // A job that is not dead or retrying is left alone, and the page says so.
    let (response, _) = send(
        &app,
        post(
            &format!("{BASE}/requeue"),
            &cookie,
            &format!("csrf={token}&key=evt_d1"),
        ),
    )
    .await;
    assert_eq!(
        response.headers()["location"],
        "/admin/webhooks/jobs/evt_d1?notice=not_requeued"
    );
    let (_, html) = fetch(&app, "/admin/webhooks?notice=requeued_dead&n=3").await;
    assert!(html.contains("Requeued 3 dead jobs."));
}

#[tokio::test]
async fn everything_from_events_is_escaped() {
    let queue = MemoryQueue::new();
    let body = serde_json::json!({
        "id": "evt_<script>alert(1)</script>",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": 1_700_000_000,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": "x.<script>alert(2)</script>",
        "data": {"object": {"id": "cus_1", "object": "customer",
            "name": "</pre><script>alert(3)</script>\"'&"}},
    })
    .to_string();
    failed(
        &queue,
        &body,
        "handler said <script>alert(4)</script> & \"quit\"",
        None,
    )
    .await;
    let key = "evt_<script>alert(1)</script>";
    let app = app(&queue);
    let job_path = format!("{BASE}/jobs/evt_%3Cscript%3Ealert%281%29%3C%2Fscript%3E");
    for path in [
        BASE.to_owned(),
        format!("{BASE}/state/dead"),
        job_path.clone(),
    ] {
        let (response, html) = fetch(&app, &path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(!html.contains("<script"), "unescaped on {path}:\n{html}");
        assert!(
            html.contains("evt_&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(4)&lt;/script&gt;"),
            "{path}"
        );
    }
    let (_, html) = fetch(&app, &job_path).await;
    // The raw JSON, pretty-printed and escaped.
    assert!(html.contains("&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;\\&quot;&#39;&amp;"));
    assert!(html.contains("x.&lt;script&gt;alert(2)&lt;/script&gt;"));
    assert!(
        html.contains("\n  &quot;object&quot;: &quot;event&quot;,\n"),
        "{html}"
    );
    assert!(html.contains("&amp; &quot;quit&quot;"));
    // Its requeue form carries the key as an escaped attribute, and requeues it.
    assert!(html.contains(r#"name="key" value="evt_&lt;script&gt;alert(1)&lt;/script&gt;""#));
    let (cookie, token) = session(&app).await;
    let form = format!("csrf={token}&key=evt_%3Cscript%3Ealert%281%29%3C%2Fscript%3E");
    let (response, _) = send(&app, post(&format!("{BASE}/requeue"), &cookie, &form)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        format!("{job_path}?notice=requeued")
    );
    assert_eq!(state_of(&queue, key).await, JobState::Queued);
}

#[tokio::test]
async fn a_job_page_shows_the_record_and_the_raw_json() {
    let queue = MemoryQueue::new();
    failed(
        &queue,
        &customer("evt_one"),
        "first line\nsecond line",
        Some(Duration::from_secs(60)),
    )
    .await;
    let app = app(&queue);
    let (response, html) = fetch(&app, &format!("{BASE}/jobs/evt_one")).await;
    assert_eq!(response.status(), StatusCode::OK);
    for needle in [
        "customer.created",
        "first line\nsecond line",
        "Run now",
        "Raw event",
        "&quot;id&quot;: &quot;cus_1&quot;",
        "Attempts</dt><dd>1</dd>",
    ] {
        assert!(html.contains(needle), "{needle} missing from\n{html}");
    }
    // A body's client secrets are not shown, in a member or in a 3-D Secure URL.
    let intent = testing::event_json(
        "evt_pi",
        "payment_intent.requires_action",
        r#"{"id":"pi_1","object":"payment_intent","client_secret":"pi_1_secret_HIDDEN","next_action":{"redirect_to_url":{"url":"https://hooks.stripe.com/x?payment_intent_client_secret=pi_1_secret_HIDDEN"}}}"#,
    );
    // Nor are those a handler's error quotes.
    let error = "requires action at https://hooks.stripe.com/x?client_secret=pi_1_secret_HIDDEN";
    failed(&queue, &intent, error, None).await;
    let (response, html) = fetch(&app, &format!("{BASE}/jobs/evt_pi")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!html.contains("HIDDEN"), "{html}");
    assert!(html.contains("requires action at https:"), "{html}");
    let (_, dead) = fetch(&app, &format!("{BASE}/state/dead")).await;
    assert!(
        dead.contains("evt_pi") && !dead.contains("HIDDEN"),
        "{dead}"
    );
    assert!(
        html.contains("&quot;client_secret&quot;: &quot;&lt;redacted&gt;&quot;"),
        "{html}"
    );
    assert!(html.contains("&quot;id&quot;: &quot;pi_1&quot;"), "{html}");
    let (response, _) = fetch(&app, &format!("{BASE}/jobs/evt_nope")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_secure(&response);
    // A key with a NUL (which PostgreSQL refuses in text) is no key: not found, not
    // the queue down.
    for path in ["/state/finished", "/nowhere", "/jobs/a/b", "/jobs/evt%00"] {
        let (response, _) = fetch(&app, &format!("{BASE}{path}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// The session cookie a GET of the overview with `headers` is given.
async fn cookie_of(console: Console, headers: &[(&str, &str)]) -> String {
    let mut request = get(BASE);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let app = axum::Router::new().nest(BASE, console.router());
    let (response, _) = send(&app, request.body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The session cookie is `Secure` when the console is reached over HTTPS (a proxy says
/// so, or the allowed origin is `https://`) or when told so, and not over plain HTTP.
#[tokio::test]
async fn the_session_cookie_is_secure_over_https() {
    let console = || Console::new(MemoryQueue::new(), bearer_token(TOKEN));
    let plain = cookie_of(console(), &[]).await;
    assert!(!plain.contains("Secure"), "{plain}");
    for headers in [
        &[("x-forwarded-proto", "https")][..],
        &[("x-forwarded-proto", "HTTPS, http")][..],
        &[("forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43")][..],
        &[("forwarded", "for=192.0.2.60; Proto=\"https\", proto=http")][..],
    ] {
        let cookie = cookie_of(console(), headers).await;
        assert!(cookie.ends_with("; Secure"), "{headers:?}: {cookie}");
        assert!(cookie.contains("HttpOnly; SameSite=Lax"), "{cookie}");
    }
    // The browser's own scheme is the first proxy's: HTTP here, however the later
    // hops went.
    for headers in [
        &[("x-forwarded-proto", "http")][..],
        &[("x-forwarded-proto", "http, https")][..],
        &[("forwarded", "proto=http, proto=https")][..],
    ] {
        let cookie = cookie_of(console(), headers).await;
        assert!(!cookie.contains("Secure"), "{headers:?}: {cookie}");
    }
    let named = console().with_allowed_origin("https://admin.example.com");
    assert!(cookie_of(named, &[]).await.contains("; Secure"));
    let forced = console().with_secure_cookie();
    assert!(cookie_of(forced, &[]).await.contains("; Secure"));
}

/// A console told to mark its cookie `Secure`, served over plain HTTP on `localhost`
/// (where browsers keep such a cookie), takes its own pages' POSTs: the request, not the
/// setting, says whether it came over HTTPS.
#[tokio::test]
async fn a_secure_cookie_console_on_plain_http_takes_its_own_forms() {
    let queue = MemoryQueue::new();
    failed(&queue, &customer("evt_dead"), "boom", None).await;
    let console = Console::new(queue.clone(), bearer_token(TOKEN)).with_secure_cookie();
    let app = axum::Router::new().nest(BASE, console.router());
    let (cookie, token) = session(&app).await;
    let form = format!("key=evt_dead&csrf={token}");
    let (response, _) = send(&app, post(&format!("{BASE}/requeue"), &cookie, &form)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(state_of(&queue, "evt_dead").await, JobState::Queued);
}

#[tokio::test]
async fn served_at_the_root_it_links_from_the_root() {
    let queue = MemoryQueue::new();
    failed(&queue, &customer("evt_dead"), "boom", None).await;
    // As an application holds it: behind `Arc<dyn QueueAdmin>`.
    let shared: std::sync::Arc<dyn QueueAdmin> = std::sync::Arc::new(queue.clone());
    let app = Console::new(shared, bearer_token(TOKEN)).router();
    let (response, html) = fetch(&app, "/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(html.contains(r#"href="/jobs/evt_dead""#));
    assert!(html.contains(r#"action="/requeue""#));
    assert!(response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Path=/;"));
}

/// Nested under a route with a parameter, the console's base path is what the request
/// said: one that could end the cookie's `Path` (a `;`) sets the cookie at `/` instead,
/// so a link cannot add `Domain=` or `Max-Age=` to it.
#[tokio::test]
async fn a_base_path_cannot_add_cookie_attributes() {
    let queue = MemoryQueue::new();
    let console = Console::new(queue.clone(), bearer_token(TOKEN));
    let app = axum::Router::new().nest("/t/{tenant}/webhooks", console.router());
    for (tenant, path) in [
        ("acme", "Path=/t/acme/webhooks;"),
        ("x;Domain=evil.example;Max-Age=0", "Path=/;"),
    ] {
        let (response, _) = fetch(&app, &format!("/t/{tenant}/webhooks")).await;
        assert_eq!(response.status(), StatusCode::OK, "{tenant}");
        let cookie = response.headers()["set-cookie"].to_str().unwrap();
        assert!(cookie.contains(path), "{tenant}: {cookie}");
        assert!(
            !cookie.contains("Domain") && !cookie.contains("Max-Age"),
            "{cookie}"
        );
    }
}

/// With a store, the overview also lists the inline processor's failed events, escaped,
/// read only.
#[tokio::test]
async fn with_a_store_the_overview_lists_inline_failures() {
    use stripe_webhooks::{Claim, EventId, EventType, IdempotencyStore, MemoryStore};
    let store = MemoryStore::new();
    let Claim::Acquired(token) = store
        .claim(
            &EventId::new("evt_inline_<b>"),
            &EventType::InvoicePaid,
            Duration::from_secs(30),
        )
        .await
        .unwrap()
    else {
        panic!("claim");
    };
    store
        .release(&token, "ledger down <script>alert(1)</script>")
        .await
        .unwrap();
    let queue = MemoryQueue::new();
    let console = Console::new(queue, bearer_token(TOKEN)).with_store(store);
    let app = axum::Router::new().nest(BASE, console.router());
    let (response, html) = fetch(&app, BASE).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(html.contains("Failed inline"), "{html}");
    assert!(html.contains("evt_inline_&lt;b&gt;"), "{html}");
    assert!(html.contains("ledger down &lt;script&gt;"), "{html}");
    assert!(!html.contains("<script>"));
}

/// The `href` of the link labelled `label` in `html`, its `&amp;` decoded.
fn link(html: &str, label: &str) -> Option<String> {
    let end = html.find(&format!("\">{label}</a>"))?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    Some(html[start..end].replace("&amp;", "&"))
}

/// Every job key linked from `html`'s job table, in order.
fn job_keys(html: &str) -> Vec<String> {
    html.split(r#"<a class="mono" href=""#)
        .skip(1)
        .filter_map(|s| {
            s.split("\">")
                .nth(1)?
                .split("</a>")
                .next()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn a_state_page_pages_through_every_job_once() {
    let queue = MemoryQueue::new();
    // Keys that need encoding in a query, and more than three pages of 4.
    let keys: Vec<String> = (0..10).map(|i| format!("evt_{i:02}&x=/#?")).collect();
    for k in &keys {
        failed(&queue, &customer(k), "boom", None).await;
    }
    let console = Console::new(queue.clone(), bearer_token(TOKEN)).with_page_size(1);
    let app = axum::Router::new().nest(BASE, console.router());
    let mut path = format!("{BASE}/state/dead");
    let mut seen = Vec::new();
    for page in 0.. {
        assert!(page < 5, "more pages than jobs");
        let (response, html) = fetch(&app, &path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let shown = job_keys(&html);
        assert!(!shown.is_empty() && shown.len() <= 4, "{shown:?}");
        seen.extend(shown.iter().map(|k| k.replace("&amp;", "&")));
        assert_eq!(
            link(&html, "First page").is_some(),
            page > 0,
            "a first-page link on every page but the first"
        );
        match link(&html, "Next page") {
            Some(next) => {
                assert!(
                    next.starts_with(&format!("{BASE}/state/dead?after=evt_")),
                    "{next}"
                );
                path = next;
            }
            None => break,
        }
    }
    assert_eq!(seen, keys, "each dead job once, oldest first");
    // A page after a key the queue never had is empty, not an error.
    let (response, html) = fetch(&app, &format!("{BASE}/state/dead?after=evt_nope")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(html.contains("No dead jobs."), "{html}");
    assert!(link(&html, "First page").is_some());
    // An empty `after` is the first page.
    let (_, html) = fetch(&app, &format!("{BASE}/state/dead?after=")).await;
    assert_eq!(
        job_keys(&html).first().map(|k| k.replace("&amp;", "&")),
        Some(keys[0].clone())
    );
    assert!(link(&html, "First page").is_none());
}

/// A page size past [`MAX_PAGE_SIZE`] is taken as it: a state's page shows four times
/// that many jobs, each read with its body, and no more.
#[tokio::test]
async fn the_page_size_is_capped() {
    use stripe_webhooks::console::MAX_PAGE_SIZE;
    let queue = MemoryQueue::new();
    let over = 4 * MAX_PAGE_SIZE + 3;
    for i in 0..over {
        failed(&queue, &customer(&format!("evt_cap_{i:04}")), "boom", None).await;
    }
    let console = Console::new(queue.clone(), bearer_token(TOKEN)).with_page_size(usize::MAX);
    let app = axum::Router::new().nest(BASE, console.router());
    let (response, html) = fetch(&app, &format!("{BASE}/state/dead")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(job_keys(&html).len(), 4 * MAX_PAGE_SIZE);
    assert!(link(&html, "Next page").is_some());
}

#[tokio::test]
async fn the_failed_inline_page_pages_through_the_stores_failures() {
    use stripe_webhooks::{Claim, EventId, EventType, IdempotencyStore, ManualClock, MemoryStore};
    let clock = ManualClock::new(1_700_000_000_000);
    let store = MemoryStore::new().with_clock(clock.clone());
    let ids: Vec<String> = (0..7).map(|i| format!("evt_inline_{i}")).collect();
    for id in &ids {
        clock.advance(Duration::from_millis(1));
        let Claim::Acquired(token) = store
            .claim(
                &EventId::new(id.as_str()),
                &EventType::InvoicePaid,
                Duration::from_secs(30),
            )
            .await
            .unwrap()
        else {
            panic!("claim");
        };
        store.release(&token, "ledger down").await.unwrap();
    }
    let console = Console::new(MemoryQueue::new(), bearer_token(TOKEN))
        .with_store(store)
        .with_page_size(1);
    let app = axum::Router::new().nest(BASE, console.router());
    // The overview shows one and links to the rest.
    let (_, html) = fetch(&app, BASE).await;
    assert!(
        html.contains("evt_inline_0") && !html.contains("evt_inline_1"),
        "{html}"
    );
    let mut path = link(&html, "All failed inline events").expect("a link to the failed page");
    assert_eq!(path, format!("{BASE}/failed"));
    let mut seen = Vec::new();
    for page in 0.. {
        assert!(page < 4, "more pages than failures");
        let (response, html) = fetch(&app, &path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        seen.extend(
            ids.iter()
                .filter(|id| html.contains(&format!(">{id}<")))
                .cloned(),
        );
        match link(&html, "Next page") {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(seen, ids, "each failure once, oldest first");
    // Without a store there is no such page.
    let (response, _) = fetch(&self::app(&MemoryQueue::new()), &format!("{BASE}/failed")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
