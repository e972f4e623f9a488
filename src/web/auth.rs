//! Who may use the UI, enforced in one middleware, [`gate`], in front of every route —
//! so a route added later is protected without doing anything (DESIGN §5, README
//! "Security").
//!
//! With `[web] auth = "password"` (the default):
//! - open to anyone: `/healthz`, `/assets/*`, `/login`;
//! - `/metrics` lists every device with its owner's name and traffic, so it is not
//!   open: with `metrics_token` set it wants `Authorization: Bearer <token>` (else
//!   401), from any address; without one it answers only clients on loopback — the
//!   router itself, or an SSH tunnel to it (else 403). That holds with
//!   `auth = "none"` too;
//! - everything else needs a live session ([`super::session`]). Without one, a page
//!   request (GET/HEAD outside `/api/`, `/fragment/`, `/events`) is sent to
//!   `/login?next=<the page>` (303); any other request gets 401;
//! - every request other than GET/HEAD must carry the session's CSRF token, as the
//!   form field `csrf` (pages put it in every form with `layout::csrf_field`) or the
//!   `X-CSRF-Token` header (scripts): 403 without. GET handlers never change state.
//! - with no `password_hash` yet, nothing but the open routes works: every page says
//!   to run `netmon passwd` (503).
//!
//! With `auth = "none"` (config validation allows it only on loopback addresses) there
//! is no login, but state-changing requests still need a CSRF token (one per process,
//! in every form), and the `Host` header must be an IP address or `localhost`: a web
//! page cannot DNS-rebind its own name to 127.0.0.1 and read the UI.
//!
//! The cross-site check of [`super::reject_cross_site`] runs before this one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use tokio::sync::Semaphore;

use super::session::{self, Sessions};
use super::throttle::{LoginThrottle, Outcome};
use super::{AppState, WebError};
use crate::config::{self, WebAuth};

/// The session cookie.
pub const COOKIE: &str = "netmon_session";
/// Form field and header that carry the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest request body read anywhere (forms are a name or a password): a bigger one
/// is refused (413) before it is buffered.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Logins waiting for the password check or in it, from all addresses together; past
/// it a login is answered 503 at once. Each waiting one is a request and a task (a few
/// KiB); the bound also keeps the wait short: about this many verifications' time.
pub const MAX_PENDING_LOGINS: usize = 8;
/// A login that has not had its turn at the password check by then is answered 503.
const CHECK_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the UI is protected; from `[web]`. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

enum Mode {
    /// `auth = "none"`.
    Open,
    /// `auth = "password"` without a hash: only the setup page.
    Unset,
    /// `auth = "password"` with this argon2id PHC string.
    Password(String),
}

struct Inner {
    mode: Mode,
    sessions: Mutex<Sessions>,
    throttle: Mutex<LoginThrottle>,
    /// One password verification at a time: each takes its hash's memory cost (12 MiB
    /// for `netmon passwd`'s, see [`crate::passwd`]) and real CPU, so a burst of logins
    /// queues here instead of exhausting a router's memory. The permit moves into the
    /// verification and is freed when it ends, not when the request does.
    verifying: Arc<Semaphore>,
    /// [`MAX_PENDING_LOGINS`]: bounds the queue in front of `verifying`.
    pending: Arc<Semaphore>,
    /// `Secure` on the cookie: only when the UI is served over TLS.
    secure_cookie: bool,
    session_max_age: Duration,
    metrics_token: Option<String>,
    /// The CSRF token of `auth = "none"` (the same for every page of this process).
    open_csrf: String,
}

/// What the current request may do, for rendering: set by [`gate`] around each
/// request's handler and read by `layout` (the logout button, [`csrf_token`]).
#[derive(Clone, Default)]
pub struct Viewer {
    /// The token forms must send back; empty outside [`gate`] (forms then fail
    /// closed: 403).
    pub csrf: String,
    /// Logged in with a password (shows "Log out").
    pub logged_in: bool,
}

tokio::task_local! {
    static VIEWER: Viewer;
}

/// The current request's viewer (see [`Viewer`]).
pub fn viewer() -> Viewer {
    VIEWER.try_with(Viewer::clone).unwrap_or_default()
}

/// The current request's CSRF token, for a hidden form field.
pub fn csrf_token() -> String {
    VIEWER.try_with(|v| v.csrf.clone()).unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Auth {
    /// From the validated `[web]` config; `tls`: the UI is served over HTTPS.
    pub fn from_config(web: &config::Web, tls: bool) -> anyhow::Result<Auth> {
        let mode = match web.auth {
            WebAuth::None => Mode::Open,
            WebAuth::Password if web.password_hash.is_empty() => Mode::Unset,
            WebAuth::Password => Mode::Password(web.password_hash.clone()),
        };
        let open_csrf = session::random_token()
            .ok_or_else(|| anyhow::anyhow!("the OS gave no random bytes for a CSRF token"))?;
        let session_max_age = Duration::from_secs(u64::from(web.session_hours) * 3600);
        Ok(Auth {
            inner: Arc::new(Inner {
                mode,
                sessions: Mutex::new(Sessions::new(
                    session_max_age,
                    Duration::from_secs(u64::from(web.session_idle_minutes) * 60),
                )),
                throttle: Mutex::new(LoginThrottle::default()),
                verifying: Arc::new(Semaphore::new(1)),
                pending: Arc::new(Semaphore::new(MAX_PENDING_LOGINS)),
                secure_cookie: tls,
                session_max_age,
                metrics_token: Some(web.metrics_token.clone()).filter(|t| !t.is_empty()),
                open_csrf,
            }),
        })
    }

    pub fn is_open(&self) -> bool {
        matches!(self.inner.mode, Mode::Open)
    }

    pub fn needs_setup(&self) -> bool {
        matches!(self.inner.mode, Mode::Unset)
    }

    /// The session id in the request's cookie, if it is live; its CSRF token.
    fn session(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let id = session_cookie(headers)?;
        let csrf = lock(&self.inner.sessions).touch(&id, Instant::now())?;
        Some((id, csrf))
    }

    /// Checks `password` from `ip` against the hash — throttled ([`super::throttle`]),
    /// one verification at a time, off the async threads — and records the outcome.
    ///
    /// Once its turn has come, a check runs to its end and is counted even if the
    /// client hangs up: closing connections early buys no extra guesses.
    pub async fn login(&self, ip: IpAddr, password: String) -> Result<Login, WebError> {
        let Mode::Password(hash) = &self.inner.mode else {
            return Err(WebError::Forbidden("password login is off".into()));
        };
        if let Err(wait) = lock(&self.inner.throttle).begin(ip, Instant::now()) {
            return Ok(Login::Throttled(wait));
        }
        let mut check = PendingCheck {
            inner: self.inner.clone(),
            ip,
            outcome: Outcome::Abandoned,
        };
        let busy =
            || WebError::Unavailable("too many logins at once; try again in a few seconds".into());
        let queued = self
            .inner
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy())?;
        let slot = tokio::time::timeout(
            CHECK_QUEUE_TIMEOUT,
            self.inner.verifying.clone().acquire_owned(),
        )
        .await
        .map_err(|_| busy())?
        .map_err(|_| WebError::Unavailable("stopping".into()))?;
        let hash = hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let ok = crate::passwd::verify(&hash, &password);
            check.outcome = if ok { Outcome::Right } else { Outcome::Wrong };
            drop((check, slot, queued));
            ok
        })
        .await
        .map_err(|e| WebError::Internal(anyhow::anyhow!("password check: {e}")))?;
        if !ok {
            return Ok(Login::Wrong);
        }
        let (id, _) = lock(&self.inner.sessions)
            .create(Instant::now())
            .ok_or_else(|| WebError::Internal(anyhow::anyhow!("no random bytes for a session")))?;
        log::info!("web: login from {ip}");
        Ok(Login::Session(self.cookie(&id, self.inner.session_max_age)))
    }

    /// Ends the request's session; the `Set-Cookie` value that clears the cookie.
    pub fn logout(&self, headers: &HeaderMap) -> String {
        if let Some(id) = session_cookie(headers) {
            lock(&self.inner.sessions).remove(&id);
        }
        self.cookie("", Duration::ZERO)
    }

    fn cookie(&self, value: &str, max_age: Duration) -> String {
        format!(
            "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
            max_age.as_secs(),
            if self.inner.secure_cookie {
                "; Secure"
            } else {
                ""
            }
        )
    }

    /// Whether cookies this UI sets must be `Secure` (served over TLS): other cookies
    /// (the overview's remembered windows) follow the session cookie's rule.
    pub fn secure_cookie(&self) -> bool {
        self.inner.secure_cookie
    }

    /// Whether the request has a live session (for `/login`: already logged in).
    pub fn logged_in(&self, headers: &HeaderMap) -> bool {
        self.session(headers).is_some()
    }
}

/// What became of a login attempt ([`Auth::login`]).
#[derive(Debug)]
pub enum Login {
    /// A new session, as a `Set-Cookie` value.
    Session(String),
    Wrong,
    /// Not checked: the address must wait this long ([`super::throttle`]).
    Throttled(Duration),
}

/// A password check the throttle counts, from [`LoginThrottle::begin`] until this is
/// dropped: with the verification's outcome, or [`Outcome::Abandoned`] when the request
/// ended before its turn.
struct PendingCheck {
    inner: Arc<Inner>,
    ip: IpAddr,
    outcome: Outcome,
}

impl Drop for PendingCheck {
    fn drop(&mut self) {
        if self.outcome == Outcome::Wrong {
            log::warn!("web: wrong password from {}", self.ip);
        }
        lock(&self.inner.throttle).finish(self.ip, self.outcome, Instant::now());
    }
}

/// The `netmon_session` cookie's value, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// The client's address (for the login throttle): the TCP peer. Unknown (a test
/// calling the router directly) counts as 0.0.0.0. netmon trusts no forwarding header.
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

/// Routes anyone may use, whatever the mode.
fn is_open_route(path: &str) -> bool {
    path == "/healthz" || path == "/login" || path.starts_with("/assets/")
}

/// Requests made by scripts (answered 401, never redirected to a login page).
fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/fragment/") || path == "/events"
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// The middleware (see the module doc). Wraps every route.
pub async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let auth = state.auth().clone();
    let path = request.uri().path().to_owned();
    if auth.is_open() && !host_is_local(request.headers()) {
        return WebError::Forbidden(
            "with auth = \"none\" the UI answers only to an IP address or localhost in the URL"
                .into(),
        )
        .into_response();
    }
    if path == "/metrics" {
        let allowed = match &auth.inner.metrics_token {
            Some(token) => bearer_matches(request.headers(), token),
            None => peer_is_loopback(&request),
        };
        return match (allowed, &auth.inner.metrics_token) {
            (true, _) => next.run(request).await,
            (false, Some(_)) => unauthorized_bearer(),
            (false, None) => metrics_loopback_only(),
        };
    }
    if is_open_route(&path) {
        return next.run(request).await;
    }
    let viewer = match &auth.inner.mode {
        Mode::Unset => {
            return (StatusCode::SERVICE_UNAVAILABLE, super::login::setup_page()).into_response();
        }
        Mode::Open => Viewer {
            csrf: auth.inner.open_csrf.clone(),
            logged_in: false,
        },
        Mode::Password(_) => match auth.session(request.headers()) {
            Some((_, csrf)) => Viewer {
                csrf,
                logged_in: true,
            },
            None => return login_required(&request, &path),
        },
    };
    let request = if is_safe(request.method()) {
        request
    } else {
        match check_csrf(request, &viewer.csrf).await {
            Ok(request) => request,
            Err(response) => return response,
        }
    };
    VIEWER.scope(viewer, next.run(request)).await
}

/// No session: a page goes to the login page (and comes back after), the rest is 401.
fn login_required(request: &Request, path: &str) -> Response {
    if is_api(path) {
        let body = serde_json::json!({ "error": "login required: POST /login first" });
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    if !is_safe(request.method()) {
        // A form posted from an expired session: log in again, then start over.
        return Redirect::to("/login").into_response();
    }
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let next = super::login::encode_component(target);
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// Lets the request through if it carries `expected` in the `X-CSRF-Token` header or
/// in a url-encoded form field `csrf`; the form body is buffered (at most
/// [`MAX_BODY_BYTES`]) and handed on unchanged.
async fn check_csrf(request: Request, expected: &str) -> Result<Request, Response> {
    let forbidden = || {
        WebError::Forbidden(
            "missing or wrong CSRF token: reload the page and submit the form again".into(),
        )
        .into_response()
    };
    if expected.is_empty() {
        return Err(forbidden());
    }
    if let Some(sent) = request.headers().get(CSRF_HEADER) {
        return if session::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
            Ok(request)
        } else {
            Err(forbidden())
        };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(forbidden());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                super::layout::error_page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the form is larger than {MAX_BODY_BYTES} bytes"),
                ),
            )
                .into_response()
        })?;
    let sent = form_urlencoded_value(&bytes, CSRF_FIELD);
    if !sent.is_some_and(|s| session::constant_time_eq(s.as_bytes(), expected.as_bytes())) {
        return Err(forbidden());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The first value of `field` in an `application/x-www-form-urlencoded` body.
fn form_urlencoded_value(body: &[u8], field: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    pairs.into_iter().find(|(k, _)| k == field).map(|(_, v)| v)
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|sent| session::constant_time_eq(sent.trim().as_bytes(), token.as_bytes()))
}

fn unauthorized_bearer() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "netmon: /metrics needs `Authorization: Bearer <web.metrics_token>`\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"netmon\""),
    );
    response
}

/// Whether the TCP peer is on loopback (127.0.0.0/8, ::1, or IPv4-mapped 127.x). A
/// request without a peer (a test calling the router directly) is not.
fn peer_is_loopback(request: &Request) -> bool {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| match c.0.ip() {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        })
}

fn metrics_loopback_only() -> Response {
    (
        StatusCode::FORBIDDEN,
        "netmon: without web.metrics_token, /metrics answers only on the router itself \
         (127.0.0.1, ::1); set a token to scrape it from elsewhere, and send \
         `Authorization: Bearer <token>`\n",
    )
        .into_response()
}

/// Whether the `Host` header names an IP address or `localhost` (with any port); a
/// request without one (HTTP/1.0, tests) passes.
fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn host_check_accepts_only_addresses_and_localhost() {
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "[::1]:8080",
            "10.0.0.1",
        ] {
            assert!(host_is_local(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in [
            "evil.test:8080",
            "evil.test",
            "127.0.0.1.evil.test",
            "[evil]:80",
        ] {
            assert!(!host_is_local(&headers(&[("host", bad)])), "{bad}");
        }
        assert!(host_is_local(&HeaderMap::new()));
    }

    #[test]
    fn session_cookie_among_others() {
        let h = headers(&[("cookie", "a=1; netmon_session=abc ; b=2")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "netmon_session=x")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("x"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "netmon_sessionx=1")])),
            None
        );
    }

    #[test]
    fn form_value() {
        assert_eq!(
            form_urlencoded_value(b"name=a+b&csrf=t%26k", "csrf").as_deref(),
            Some("t&k")
        );
        assert_eq!(form_urlencoded_value(b"name=x", "csrf"), None);
    }

    #[test]
    fn bearer() {
        let token = "0123456789abcdef0123";
        assert!(bearer_matches(
            &headers(&[("authorization", "Bearer 0123456789abcdef0123")]),
            token
        ));
        assert!(!bearer_matches(
            &headers(&[("authorization", "Bearer nope")]),
            token
        ));
        assert!(!bearer_matches(&HeaderMap::new(), token));
    }
}
