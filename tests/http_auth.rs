//! Security end to end: login, sessions, CSRF, the security headers on every response,
//! `/metrics` access, open mode's client check, body limits, TLS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use netmon::web::Auth;
use tower::ServiceExt as _;

use common::declared_routes;
use common::http::*;

const PASSWORD: &str = "correct horse battery";

/// One hash for every test (argon2id costs real time by design).
fn password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| netmon::passwd::hash(PASSWORD).unwrap())
        .clone()
}

fn password_fixture_with(metrics_token: &str) -> Fixture {
    let web = netmon::config::Web {
        auth: netmon::config::WebAuth::Password,
        password_hash: password_hash(),
        metrics_token: metrics_token.into(),
        ..netmon::config::Web::default()
    };
    fixture_with(Auth::from_config(&web, false).unwrap())
}

fn password_fixture() -> Fixture {
    password_fixture_with("")
}

/// A declared path with its parameters filled in (ids of seeded rows, a real asset).
fn concrete(path: &str, id: &str) -> String {
    path.replace("{id}", id).replace("{*path}", "netmon.css")
}

fn form_post(uri: &str, body: &str) -> axum::http::request::Builder {
    let _ = body;
    Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
}

fn post_form(uri: &str, body: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = form_post(uri, body);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

fn get_with(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

/// Logs in; the `Cookie` header value and the session's CSRF token.
async fn login(app: &Router) -> (String, String) {
    let (status, headers, body) = send(
        app,
        post_form("/login", &format!("password={PASSWORD}&next=%2F"), None),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_owned();
    let (status, _, page) = send(app, get_with("/devices/1", &cookie)).await;
    assert_eq!(status, StatusCode::OK);
    (cookie, csrf_of(&page))
}

#[tokio::test]
async fn login_sets_a_strict_session_cookie() {
    let fx = password_fixture();
    let (status, _, body) = get(&fx.app, "/login?next=/hosts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("type=\"password\""), "{body}");
    assert!(body.contains("name=\"next\" value=\"/hosts\""), "{body}");
    let (status, headers, _) = send(
        &fx.app,
        post_form(
            "/login",
            &format!("password={PASSWORD}&next=%2Fhosts%3Fq%3Da"),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/hosts?q=a");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    let (pair, attrs) = cookie.split_once(';').unwrap();
    let id = pair.strip_prefix("netmon_session=").unwrap();
    assert!(
        id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=86400"] {
        assert!(
            attrs.split(';').any(|a| a.trim() == attr),
            "{attr} missing: {cookie}"
        );
    }
    assert!(!cookie.contains("Secure"), "no TLS, no Secure: {cookie}");
    // Logged in: the pages answer, /login sends on.
    assert_eq!(send(&fx.app, get_with("/", pair)).await.0, StatusCode::OK);
    let (status, headers, _) = send(&fx.app, get_with("/login?next=/dns", pair)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dns");
    // A wrong password: 401, the form again, no cookie.
    let (status, headers, body) = send(&fx.app, post_form("/login", "password=wrong", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(body.contains("Wrong password"), "{body}");
    // A made-up session id is no session.
    let fake = format!("netmon_session={}", "a".repeat(64));
    assert_eq!(
        send(&fx.app, get_with("/", &fake)).await.0,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn open_redirects_on_login_land_on_local_paths() {
    let fx = password_fixture();
    let (cookie, _) = login(&fx.app).await;
    for next in [
        "//evil.test",
        "/\\evil.test",
        "https://evil.test",
        "/%2F%2Fevil.test",
        "%2F%2Fevil.test",
        "/%5Cevil.test",
        "http:evil.test",
        "javascript:alert(1)",
        "/\t/evil.test",
    ] {
        let encoded = netmon::web::login::encode_component(next);
        let (status, headers, _) = send(
            &fx.app,
            post_form(
                "/login",
                &format!("password={PASSWORD}&next={encoded}"),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{next}");
        assert_eq!(headers[header::LOCATION], "/", "POST next={next}");
        let (_, headers, _) = send(
            &fx.app,
            get_with(&format!("/login?next={encoded}"), &cookie),
        )
        .await;
        assert_eq!(headers[header::LOCATION], "/", "GET next={next}");
        // The login form never carries it either.
        let (_, _, body) = get(&fx.app, &format!("/login?next={encoded}")).await;
        assert!(body.contains("name=\"next\" value=\"/\""), "{next}: {body}");
    }
}

#[tokio::test]
async fn every_route_needs_a_session_except_the_open_ones() {
    let fx = password_fixture();
    for (path, methods) in declared_routes() {
        if !methods.contains(&"GET") || path == "/events" {
            continue;
        }
        let uri = concrete(&path, "1");
        let (status, headers, body) = get(&fx.app, &uri).await;
        match path.as_str() {
            "/healthz" | "/metrics" | "/login" | "/assets/{*path}" => {
                assert_eq!(status, StatusCode::OK, "{uri}: {body}")
            }
            p if p.starts_with("/api/") || p.starts_with("/fragment/") => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(v["error"].as_str().unwrap().contains("login"), "{body}");
            }
            _ => {
                assert_eq!(status, StatusCode::SEE_OTHER, "{uri}");
                let to = headers[header::LOCATION].to_str().unwrap();
                assert_eq!(
                    to,
                    format!("/login?next={}", netmon::web::login::encode_component(&uri))
                );
            }
        }
    }
    let (status, _, _) = get(&fx.app, "/events").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown pages too: nothing about the UI leaks before login.
    assert_eq!(get(&fx.app, "/nope").await.0, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_state_changing_route_needs_a_session_and_a_csrf_token() {
    let fx = password_fixture();
    let (cookie, csrf) = login(&fx.app).await;
    let mut checked = 0;
    for (path, methods) in declared_routes() {
        for method in methods.iter().filter(|m| **m != "GET") {
            if path == "/login" {
                continue; // the login itself: no session to protect yet
            }
            checked += 1;
            // 999: no such row, so a request that gets through changes nothing.
            let uri = concrete(&path, "999");
            let request =
                |cookie: Option<&str>, field: Option<&str>, header_token: Option<&str>| {
                    let mut r = Request::builder()
                        .method(*method)
                        .uri(&uri)
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                    if let Some(c) = cookie {
                        r = r.header(header::COOKIE, c);
                    }
                    if let Some(t) = header_token {
                        r = r.header("x-csrf-token", t);
                    }
                    let body = match field {
                        Some(t) => format!("name=x&csrf={t}"),
                        None => "name=x".to_owned(),
                    };
                    r.body(Body::from(body)).unwrap()
                };
            // No session: a page form goes to the login, an API call gets 401.
            let (status, headers, _) = send(&fx.app, request(None, Some(&csrf), None)).await;
            if path.starts_with("/api/") {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            } else {
                assert_eq!(status, StatusCode::SEE_OTHER, "{method} {uri}");
                assert_eq!(headers[header::LOCATION], "/login", "{method} {uri}");
            }
            // A session, but no token, a wrong one, or another session's.
            let wrong = "0".repeat(64);
            for (field, header_token) in [
                (None, None),
                (Some(wrong.as_str()), None),
                (None, Some(wrong.as_str())),
                (Some(""), None),
                (Some(csrf.as_str()), Some(wrong.as_str())),
            ] {
                let (status, _, body) =
                    send(&fx.app, request(Some(&cookie), field, header_token)).await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {uri} field {field:?} header {header_token:?}: {body}"
                );
            }
            // The right token (field or header) reaches the handler.
            for (field, header_token) in [(Some(csrf.as_str()), None), (None, Some(csrf.as_str()))]
            {
                let (status, _, body) =
                    send(&fx.app, request(Some(&cookie), field, header_token)).await;
                assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
                    "{method} {uri}: {status} {body}"
                );
            }
        }
    }
    assert!(checked >= 2, "no state-changing routes found");
    assert!(
        fx.writer_rx.try_recv().is_err(),
        "a refused request reached the writer"
    );
    // Another session's token is no good either.
    let (other_cookie, other_csrf) = login(&fx.app).await;
    assert_ne!(other_csrf, csrf);
    let r = post_form(
        "/devices/1/name",
        &format!("name=x&csrf={csrf}"),
        Some(&other_cookie),
    );
    assert_eq!(send(&fx.app, r).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let fx = password_fixture();
    let (cookie, csrf) = login(&fx.app).await;
    let (_, _, page) = send(&fx.app, get_with("/", &cookie)).await;
    assert!(
        page.contains("action=\"/logout\""),
        "a logout button on every page"
    );
    let (status, headers, _) = send(
        &fx.app,
        post_form("/logout", &format!("csrf={csrf}"), Some(&cookie)),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");
    let cleared = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("netmon_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(
        send(&fx.app, get_with("/", &cookie)).await.0,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn login_is_throttled_after_repeated_failures() {
    let fx = password_fixture();
    for i in 0..netmon::web::throttle::FREE_FAILURES {
        let (status, _, _) = send(&fx.app, post_form("/login", "password=guess", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Locked out: even the right password is not checked now.
    for password in ["guess", PASSWORD] {
        let (status, headers, body) = send(
            &fx.app,
            post_form("/login", &format!("password={password}"), None),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let retry: u64 = headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert!(headers.get(header::SET_COOKIE).is_none());
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _, _) = send(
        &fx.app,
        post_form("/login", &format!("password={PASSWORD}"), None),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "after the lockout the password works"
    );
}

/// (method, uri, cookie?, body) of responses of every kind: pages, API, assets, open
/// routes, redirects, 400, 401, 403, 404, 405, 413.
async fn assorted_responses(fx: &Fixture) -> Vec<(String, StatusCode, HeaderMap)> {
    let (cookie, csrf) = login(&fx.app).await;
    let mut out = Vec::new();
    let mut push = |what: String, (status, headers, _): (StatusCode, HeaderMap, String)| {
        out.push((what, status, headers));
    };
    for uri in [
        "/",
        "/devices/1",
        "/api/flows",
        "/hosts?page=0",
        "/nope",
        "/devices/1/name",
        "/healthz",
        "/metrics",
        "/login",
    ] {
        push(
            format!("GET {uri} (session)"),
            send(&fx.app, get_with(uri, &cookie)).await,
        );
    }
    for uri in [
        "/",
        "/api/flows",
        "/login",
        "/healthz",
        "/assets/netmon.css",
        "/assets/nope.css",
        &netmon::web::assets::url("netmon.js"),
    ] {
        push(format!("GET {uri}"), get(&fx.app, uri).await);
    }
    push(
        "POST rename, no token".into(),
        send(
            &fx.app,
            post_form("/devices/1/name", "name=x", Some(&cookie)),
        )
        .await,
    );
    push(
        "POST rename, no session".into(),
        send(&fx.app, post_form("/devices/1/name", "name=x", None)).await,
    );
    push(
        "POST rename, too big".into(),
        send(
            &fx.app,
            post_form(
                "/devices/1/name",
                &format!("csrf={csrf}&name={}", "x".repeat(20_000)),
                Some(&cookie),
            ),
        )
        .await,
    );
    push(
        "POST login, wrong".into(),
        send(&fx.app, post_form("/login", "password=nope", None)).await,
    );
    out
}

#[tokio::test]
async fn security_headers_are_on_every_response() {
    let fx = password_fixture();
    let responses = assorted_responses(&fx).await;
    let statuses: std::collections::BTreeSet<u16> =
        responses.iter().map(|r| r.1.as_u16()).collect();
    for s in [200, 303, 400, 401, 403, 404, 405, 413] {
        assert!(statuses.contains(&s), "no {s} response among {statuses:?}");
    }
    for (what, status, headers) in &responses {
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            netmon::web::CSP,
            "{what} ({status})"
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{what}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
        let cache = headers[header::CACHE_CONTROL].to_str().unwrap();
        if what.contains("/assets/") && *status == StatusCode::OK {
            assert!(
                cache == "no-cache" || cache.contains("immutable"),
                "{what}: {cache}"
            );
        } else {
            assert_eq!(cache, "no-store", "{what} ({status})");
        }
    }
    let csp = netmon::web::CSP;
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{directive}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
}

#[tokio::test]
async fn without_a_password_only_the_setup_page_answers() {
    let web = netmon::config::Web::default();
    let fx = fixture_with(Auth::from_config(&web, false).unwrap());
    for uri in ["/", "/devices", "/api/flows", "/login"] {
        let (status, _, body) = get(&fx.app, uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(body.contains("netmon passwd"), "{uri}: {body}");
    }
    let (status, _, _) = send(&fx.app, post_form("/login", "password=anything", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&fx.app, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&fx.app, "/metrics").await.0, StatusCode::OK);
    assert_eq!(get(&fx.app, "/assets/netmon.css").await.0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_token_when_set() {
    let token = "s3cret-token-0123456789";
    let fx = password_fixture_with(token);
    let (status, headers, _) = get(&fx.app, "/metrics").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let with = |t: &str| {
        Request::get("/metrics")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&fx.app, with("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&fx.app, with(token)).await.0, StatusCode::OK);
    // /healthz stays open.
    assert_eq!(get(&fx.app, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_without_a_token_answers_only_loopback() {
    let from = |peer: &str| {
        let mut r = Request::get("/metrics").body(Body::empty()).unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        r
    };
    for fx in [password_fixture(), fixture()] {
        for local in [
            "127.0.0.1:5000",
            "127.8.9.1:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert_eq!(
                send(&fx.app, from(local)).await.0,
                StatusCode::OK,
                "{local}"
            );
        }
        for lan in [
            "10.77.0.10:5000",
            "[fd77::10]:5000",
            "[::ffff:10.0.0.1]:5000",
            "0.0.0.0:1",
        ] {
            let (status, _, body) = send(&fx.app, from(lan)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{lan}");
            assert!(body.contains("metrics_token"), "{body}");
            assert!(!body.contains("netmon_"), "no metrics leak: {body}");
        }
        // No peer known at all: refused too.
        let r = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = fx.app.clone().oneshot(r).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    // With a token, the token decides, from any address.
    let token = "s3cret-token-0123456789";
    let fx = password_fixture_with(token);
    let mut r = from("10.77.0.10:5000");
    r.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    assert_eq!(send(&fx.app, r).await.0, StatusCode::OK);
    assert_eq!(
        send(&fx.app, from("127.0.0.1:5000")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn open_mode_answers_only_to_addresses_and_localhost() {
    let fx = fixture();
    let with_host = |host: &str| {
        Request::get("/")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&fx.app, with_host("127.0.0.1:8080")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&fx.app, with_host("localhost:8080")).await.0,
        StatusCode::OK
    );
    // A DNS-rebinding page reaches the loopback UI under its own name.
    assert_eq!(
        send(&fx.app, with_host("rebind.evil.test:8080")).await.0,
        StatusCode::FORBIDDEN
    );
    // Open mode still wants the CSRF token on a POST.
    let r = post_form("/devices/1/name", "name=x", None);
    assert_eq!(send(&fx.app, r).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let fx = password_fixture();
    let (cookie, csrf) = login(&fx.app).await;
    let big = format!("name={}", "x".repeat(20_000));
    // Token in the form: the gate refuses to buffer it.
    let r = post_form(
        "/devices/1/name",
        &format!("csrf={csrf}&{big}"),
        Some(&cookie),
    );
    assert_eq!(send(&fx.app, r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // Token in the header: the form extractor's limit.
    let r = form_post("/devices/1/name", &big)
        .header(header::COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .body(Body::from(big.clone()))
        .unwrap();
    assert_eq!(send(&fx.app, r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let r = post_form("/login", &format!("password={}", "x".repeat(20_000)), None);
    assert_eq!(send(&fx.app, r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn get_routes_never_reach_the_writer() {
    let fx = password_fixture();
    let (cookie, _) = login(&fx.app).await;
    let mut crawled = 0;
    for (path, methods) in declared_routes() {
        if !methods.contains(&"GET") || path == "/events" {
            continue;
        }
        for id in ["1", "2"] {
            for query in [
                "",
                "?page=1&per_page=500",
                "?window=1440",
                "?since=0",
                "?show=all&direction=all&sort=bytes",
            ] {
                let uri = format!("{}{query}", concrete(&path, id));
                let (status, _, body) = send(&fx.app, get_with(&uri, &cookie)).await;
                assert!(status.as_u16() < 500, "{uri}: {status} {body}");
                crawled += 1;
            }
        }
    }
    assert!(crawled > 100);
    assert!(
        fx.writer_rx.try_recv().is_err(),
        "a GET sent a command to the writer"
    );
}

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

#[test]
fn tls_config_reads_pem_and_der_and_names_bad_files() {
    netmon::web::tls::server_config(&tls_fixture("cert.pem"), &tls_fixture("key.pem")).unwrap();
    netmon::web::tls::server_config(&tls_fixture("cert.der"), &tls_fixture("key.der")).unwrap();
    let e = netmon::web::tls::server_config(&tls_fixture("cert.pem"), &tls_fixture("README"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("web.tls_key") && e.contains("README"), "{e}");
    let e = netmon::web::tls::server_config(&tls_fixture("missing.pem"), &tls_fixture("key.pem"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("web.tls_cert") && e.contains("missing.pem"),
        "{e}"
    );
}

/// HTTPS end to end: `serve` with the DER pair (as OpenWrt's uhttpd has them), curl as
/// the client; the session cookie is `Secure`.
#[tokio::test]
async fn serve_speaks_tls_and_marks_the_cookie_secure() {
    let web = netmon::config::Web {
        auth: netmon::config::WebAuth::Password,
        password_hash: password_hash(),
        ..netmon::config::Web::default()
    };
    let fx = fixture_with(Auth::from_config(&web, true).unwrap());
    let tls =
        netmon::web::tls::server_config(&tls_fixture("cert.der"), &tls_fixture("key.der")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(netmon::web::serve(
        vec![listener],
        Some(tls),
        fx.state.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let curl = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "5", "-o", "/dev/null", "-D", "-"])
                .args(&args)
                .output()
                .expect("curl (the TLS test needs it; .ci/run installs it)");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let url = format!("https://127.0.0.1:{port}/login");
    let head = curl(vec!["-k".into(), url.clone()]).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy"),
        "{head}"
    );
    // Verified against the certificate itself, by name.
    let head = curl(vec![
        "--cacert".into(),
        tls_fixture("cert.pem").display().to_string(),
        "--resolve".into(),
        format!("localhost:{port}:127.0.0.1"),
        format!("https://localhost:{port}/healthz"),
    ])
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = curl(vec![
        "-k".into(),
        "--data-urlencode".into(),
        format!("password={PASSWORD}"),
        url,
    ])
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Plain HTTP on the TLS port gets nothing.
    let head = curl(vec![format!("http://127.0.0.1:{port}/healthz")])
        .await
        .unwrap();
    assert!(!head.contains("200"), "{head}");
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}
