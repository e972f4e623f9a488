//! `/login` and `/logout`, and the page shown until a password is set.
//!
//! After a login the browser goes to `next=` — only when it is a path on this server
//! ([`safe_next`]): `//evil.test`, `/\evil.test`, `https://evil.test` and their
//! percent-encoded forms all go to `/` (the old system had an open redirect, seed §11).

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::{ClientIp, Login};
use super::{AppState, WebError, layout};

/// Longest `next` kept (a path and query of this server).
const MAX_NEXT_LEN: usize = 2048;

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    pub next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    pub password: String,
    pub next: Option<String>,
}

/// `GET /login`.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> Response {
    let next = safe_next(query.as_ref().ok().and_then(|q| q.next.as_deref()));
    let auth = state.auth();
    if auth.needs_setup() {
        return (StatusCode::SERVICE_UNAVAILABLE, setup_page()).into_response();
    }
    if auth.is_open() || auth.logged_in(&headers) {
        return Redirect::to(&next).into_response();
    }
    login_page(&next, None).into_response()
}

/// `POST /login` (form fields `password`, `next`): 303 to `next` with the session
/// cookie; 401 with the form again; 429 with `Retry-After` while throttled.
pub async fn submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form?;
    let next = safe_next(form.next.as_deref());
    let auth = state.auth();
    if auth.needs_setup() {
        return Ok((StatusCode::SERVICE_UNAVAILABLE, setup_page()).into_response());
    }
    if auth.is_open() {
        return Ok(Redirect::to(&next).into_response());
    }
    match auth.login(ip, form.password).await? {
        Login::Throttled(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let message =
                format!("Too many wrong passwords from your address; try again in {secs} s.");
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                login_page(&next, Some(&message)),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            Ok(response)
        }
        Login::Wrong => Ok((
            StatusCode::UNAUTHORIZED,
            login_page(&next, Some("Wrong password.")),
        )
            .into_response()),
        Login::Session(cookie) => {
            let mut response = Redirect::to(&next).into_response();
            set_cookie(&mut response, &cookie);
            Ok(response)
        }
    }
}

/// `POST /logout` (behind the session and CSRF checks like every POST): ends the
/// session, clears the cookie, 303 to the login page.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let auth = state.auth();
    if auth.is_open() {
        return Redirect::to("/").into_response();
    }
    let cookie = auth.logout(&headers);
    let mut response = Redirect::to("/login").into_response();
    set_cookie(&mut response, &cookie);
    response
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
}

fn login_page(next: &str, message: Option<&str>) -> Markup {
    layout::plain_page(
        "Log in",
        html! {
            form.login method="post" action="/login" {
                h1 { "netmon" }
                @if let Some(m) = message {
                    p.error role="alert" { (m) }
                }
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required autofocus;
                input type="hidden" name="next" value=(next);
                button type="submit" { "Log in" }
            }
        },
    )
}

/// What every page shows while `auth = "password"` has no `password_hash`.
pub fn setup_page() -> Markup {
    layout::plain_page(
        "Set a password",
        html! {
            h1 { "netmon needs a password" }
            p { "The web UI stays locked until a password is set. On the router, run" }
            pre { code { "netmon passwd" } }
            p {
                "(it asks twice; or " code { "echo 'the new password' | netmon passwd" }
                "), then restart netmon: " code { "/etc/init.d/netmon restart" } " on OpenWrt, "
                code { "systemctl restart netmon" } " elsewhere."
            }
            p.muted {
                "To run without a login instead, listen on loopback only ("
                code { "listen = [\"127.0.0.1:8080\"]" } ") and set "
                code { "auth = \"none\"" } " in " code { "[web]" } "."
            }
        },
    )
}

/// `next` if it is a path on this server, else `/`. A path is local when it starts
/// with exactly one `/`, has no `\` (browsers read it as `/`), is printable ASCII
/// (so it is a valid `Location`), and stays so once percent-decoded.
pub fn safe_next(next: Option<&str>) -> String {
    let Some(next) = next.map(str::trim) else {
        return "/".into();
    };
    let local = |p: &str| {
        p.starts_with('/')
            && !p.starts_with("//")
            && !p.contains('\\')
            && p.bytes().all(|b| b.is_ascii_graphic())
    };
    if next.len() <= MAX_NEXT_LEN
        && local(next)
        && local(&percent_decode(next))
        && next != "/login"
        && !next.starts_with("/login?")
    {
        next.to_owned()
    } else {
        "/".into()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` percent-encoded for a query value (unreserved characters and `/` stay).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_accepts_local_paths_only() {
        for ok in ["/", "/devices/1", "/hosts?q=a&page=2", "/dns?name=%2Ea"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.test",
            "/\\evil.test",
            "\\\\evil.test",
            "https://evil.test",
            "http:/evil.test",
            "javascript:alert(1)",
            "evil.test",
            "/%2F%2Fevil.test",
            "/%5Cevil.test",
            "%2F%2Fevil.test",
            "/\tevil",
            "/a b",
            "/ü",
            "/login",
            "/login?next=//evil.test",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(3000)))), "/");
    }

    #[test]
    fn encode_round_trips_through_safe_next() {
        let e = encode_component("/hosts?q=a b&page=2");
        assert_eq!(e, "/hosts%3Fq%3Da%20b%26page%3D2");
        assert_eq!(percent_decode(&e), "/hosts?q=a b&page=2");
    }
}
