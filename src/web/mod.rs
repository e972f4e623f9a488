//! The web UI and JSON API (DESIGN §1 principles 5 and 6, §5).
//!
//! Server-rendered: every page and fragment is a maud template, so data (device names,
//! reverse-DNS names) is escaped by construction; the one small script only swaps in
//! HTML the server rendered. A handler is short: parse the query into a typed filter
//! ([`query`]), make one read call on the pool (a `read` module of the table family in
//! [`crate::store`]), render one template.
//!
//! Nothing here writes to the database: user actions go to the writer as
//! [`crate::event::Command`]s and wait for its commit (principle 1).
//!
//! Live updates: the writer publishes a [`Tick`] on a `watch` after each commit;
//! `/events` forwards it to each open tab as a Server-Sent Event, and the tab re-fetches
//! only the fragments whose `data-topics` name a field the tick changed (the flows
//! table, the overview's panels). Nothing polls.
//!
//! Routes (all GET unless noted):
//!
//! | path | what |
//! | --- | --- |
//! | `/` | overview: tiles, charts (`w`, or `from`/`to`), live flows, top-N panels (`w_hosts`, `w_domains`, `w_devices`, `w_new`, `w_ports`: `10m`…`30d`, remembered in the `netmon_w` cookie) |
//! | `/fragment/overview/{part}` | one overview part alone: `tiles`, `charts`, `flows`, `hosts`, `domains`, `devices`, `new`, `ports` |
//! | `/flows` | flow search: summary tiles, filterable live flows table |
//! | `/fragment/flows` | the flows table alone (same query parameters as `/flows`) |
//! | `/devices`, `/devices/{id}` | device list, device page (details, rename, flows, minutes) |
//! | `POST /devices/{id}/name` | rename (form field `name`), 303 back to the device |
//! | `POST /devices/{id}/notes` | the owner's notes (form field `notes`), 303 back |
//! | `/hosts`, `/hosts/{id}` | remote host list (`q`, `sort`, `order`, `page`, `per_page`), host page |
//! | `/dns` | DNS log (`device`, `client`, `name`, `type`, `rcode`, `page`, `per_page`) |
//! | `/router`, `/api/router` | router health: current values, minute charts (`window`) |
//! | `/drops`, `/api/drops` | refused WAN connection attempts: top sources/ports, per minute (`window`) |
//! | `/anomalies`, `/api/hits` | scored hits (`window`, `min_score`, `code`, `device`, `ack`, `dst`, `sort`, `order`, `page`, `per_page`) |
//! | `POST /hits/{id}/allow`, `POST /hits/{id}/mute` | an allow rule for the hit's destination, suppress rules for its codes (device-scoped) |
//! | `/incidents`, `/api/incidents` | incidents (`window`, `state`, `code`, `device`, `min_score`, `sort`, `order`, `page`, `per_page`) |
//! | `/incidents/{id}` | one incident: reasons, timeline, flows, DNS answers |
//! | `POST /incidents/{id}/ack`, `/mute` (`hours`), `/notes` (`notes`) | incident actions, 303 back |
//! | `POST /incidents/ack-all`, `POST /incidents/clear-acked` | acknowledge every incident, delete acknowledged ones |
//! | `/rules`, `/rules/{id}`, `/api/rules` | allow/suppress rules; `POST /rules` creates, `POST /rules/{id}` saves, `POST /rules/{id}/delete` |
//! | `/searches`, `/api/searches` | saved searches; `POST /searches` (`name`, `url`) saves, `POST /searches/{id}` renames (`name`), `/pin` (`pinned` 1/0), `/delete` |
//! | `/settings` | health and settings: status, every collector's counters, storage, the effective config |
//! | `/help` | what the detection codes mean |
//! | `/events` | Server-Sent Events: one `tick` event (the [`Tick`] as JSON) per commit |
//! | `/api/flows` | flows as JSON, same parameters as `/flows` |
//! | `/api/flows.csv` | the same flows as CSV (at most 100 000 rows), see [`csv`] |
//! | `/api/devices`, `/api/hosts` | lists as JSON (hosts takes the `/hosts` parameters) |
//! | `/api/dns` | DNS log as JSON, same parameters as `/dns` |
//! | `/api/devices/{id}/minutes`, `/api/hosts/{id}/minutes` | minute rollups, `?since=<unix ms>` |
//! | `/healthz` | JSON: ok, what is failing (storage, DNS tap), last commit, database size |
//! | `/metrics` | Prometheus text format |
//! | `/assets/{file}` | embedded CSS/JS/icon |
//! | `/login`, `POST /login` | login form (`password`, `next`); see [`login`] |
//! | `POST /logout` | ends the session |
//!
//! Security (README "Security"): [`auth::gate`] stands in front of every route — a
//! session for everything but `/healthz`, `/assets/*`, `/login` (and `/metrics`,
//! which wants a bearer token, or a client on loopback), a CSRF token on every request that is not
//! GET/HEAD; [`security_headers`] puts a strict CSP and friends on every response;
//! request bodies are capped at [`auth::MAX_BODY_BYTES`].

mod anomalies;
mod api;
pub mod assets;
pub mod auth;
mod chart;
mod conn;
mod csv;
mod devices;
mod dns;
mod drops;
mod flow_table;
mod flows;
mod format;
mod health;
mod help;
pub mod hosts;
mod incidents;
mod layout;
pub mod login;
mod overview;
mod peers;
pub mod query;
mod router_health;
mod rules;
mod saved;
mod session;
mod settings;
mod sse;
pub mod throttle;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Semaphore, watch};

pub use self::auth::Auth;
use crate::event::{Tick, WriterHandle};
use crate::store::pool::ReadPool;
use crate::web::query::{FilterError, QueryStringError};

/// Most `/events` streams open at once. Each is a task and a socket; a household has a
/// few tabs open, and a leaked-tab storm must not exhaust a router's memory.
pub const MAX_EVENT_STREAMS: usize = 32;

/// Everything handlers share. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

struct Shared {
    reads: ReadPool,
    writer: WriterHandle,
    /// The writer's latest commit; cloned per `/events` stream.
    ticks: watch::Receiver<Tick>,
    metrics: PrometheusHandle,
    /// For the database size in `/healthz` and `/metrics` (file + WAL).
    db_path: PathBuf,
    /// Flipped to `true` by [`serve`] when shutdown begins. Event streams never end on
    /// their own, and a graceful shutdown waits for every open response: they watch
    /// this and close.
    shutdown: watch::Sender<bool>,
    /// Permits for [`MAX_EVENT_STREAMS`].
    event_streams: Arc<Semaphore>,
    /// Login, sessions, CSRF tokens ([`auth`]).
    auth: Auth,
    /// The "Alerts: N" count, cached per commit ([`incidents::badge`]).
    alerts: incidents::AlertCount,
    /// The overview's long-window host ranking of settled hours, kept per hour.
    settled_tops: Arc<crate::store::overview::SettledTops>,
    /// The running configuration, for the settings page; `None` where the caller has
    /// none (tests, benchmarks).
    config: Option<Arc<crate::config::Config>>,
    /// When this process started serving (unix ms), for the settings page.
    started_ms: i64,
    /// Whether each capture source delivers, for `/healthz`, `/metrics` and the pages;
    /// the collectors update it while netmon runs.
    capture: crate::collect::capture::CaptureStatus,
    /// The system sampler's latest reading, for `/router` and the overview's health
    /// tile; stays `None` where no sampler runs (tests, benchmarks).
    system: crate::collect::system::LatestSample,
    /// The flow offloading check's latest result, for `/router`; `None` likewise.
    offload: crate::collect::offload::LatestOffload,
}

impl AppState {
    pub fn new(
        reads: ReadPool,
        writer: WriterHandle,
        ticks: watch::Receiver<Tick>,
        metrics: PrometheusHandle,
        db_path: PathBuf,
        auth: Auth,
    ) -> AppState {
        AppState {
            shared: Arc::new(Shared {
                reads,
                writer,
                ticks,
                metrics,
                db_path,
                shutdown: watch::Sender::new(false),
                event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
                auth,
                alerts: incidents::AlertCount::default(),
                settled_tops: Arc::default(),
                config: None,
                started_ms: crate::time::now_ms(),
                capture: crate::collect::capture::CaptureStatus::default(),
                system: watch::channel(None).1,
                offload: watch::channel(None).1,
            }),
        }
    }

    /// The same state with the running configuration, which the settings page shows.
    /// Call before the state is cloned (the router clones it per request).
    pub fn with_config(mut self, config: Arc<crate::config::Config>) -> AppState {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.config = Some(config),
            None => {
                log::warn!("web: the configuration arrived after the state was shared; not shown")
            }
        }
        self
    }

    /// The same state reading the capture sources' states (`collect::capture`), which
    /// `/healthz`, `/metrics` and the pages report. Call before the state is cloned, like
    /// [`AppState::with_config`].
    pub fn with_capture(mut self, capture: crate::collect::capture::CaptureStatus) -> AppState {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.capture = capture,
            None => {
                log::warn!("web: the capture sources' states arrived after the state was shared")
            }
        }
        self
    }

    /// The same state reading the router's health from the system sampler and the flow
    /// offloading check. Call before the state is cloned, like [`AppState::with_config`].
    pub fn with_router_health(
        mut self,
        system: crate::collect::system::LatestSample,
        offload: crate::collect::offload::LatestOffload,
    ) -> AppState {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => {
                shared.system = system;
                shared.offload = offload;
            }
            None => log::warn!("web: the router's health arrived after the state was shared"),
        }
        self
    }

    /// Tells the live-update streams to close, as [`serve`] does when shutdown begins;
    /// for callers that drive the router without `serve` (the HTTP tests).
    pub fn begin_shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    fn reads(&self) -> &ReadPool {
        &self.shared.reads
    }

    fn auth(&self) -> &Auth {
        &self.shared.auth
    }
}

/// Every route, behind (outermost first) the security headers, the cross-site request
/// guard, the authentication and CSRF gate and the body size limit.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/flows", get(flows::page))
        .route("/fragment/flows", get(flow_table::fragment))
        .route("/fragment/overview/{part}", get(overview::fragment))
        .route("/devices", get(devices::list))
        .route("/devices/{id}", get(devices::page))
        .route("/devices/{id}/name", post(devices::rename))
        .route("/devices/{id}/notes", post(devices::notes))
        .route("/hosts", get(hosts::list))
        .route("/hosts/{id}", get(hosts::page))
        .route("/dns", get(dns::page))
        .route("/router", get(router_health::page))
        .route("/api/router", get(router_health::api))
        .route("/drops", get(drops::page))
        .route("/api/drops", get(drops::api))
        .route("/anomalies", get(anomalies::page))
        .route("/api/hits", get(anomalies::api))
        .route("/hits/{id}/allow", post(anomalies::allow))
        .route("/hits/{id}/mute", post(anomalies::mute))
        .route("/incidents", get(incidents::list))
        .route("/api/incidents", get(incidents::api))
        .route("/incidents/{id}", get(incidents::page))
        .route("/incidents/{id}/ack", post(incidents::ack))
        .route("/incidents/{id}/mute", post(incidents::mute))
        .route("/incidents/{id}/notes", post(incidents::notes))
        .route("/incidents/ack-all", post(incidents::ack_all))
        .route("/incidents/clear-acked", post(incidents::clear_acked))
        .route("/rules", get(rules::list).post(rules::create))
        .route("/rules/{id}", get(rules::edit).post(rules::update))
        .route("/rules/{id}/delete", post(rules::delete))
        .route("/api/rules", get(rules::api))
        .route("/searches", get(saved::list).post(saved::create))
        .route("/searches/{id}", post(saved::rename))
        .route("/searches/{id}/pin", post(saved::pin))
        .route("/searches/{id}/delete", post(saved::delete))
        .route("/api/searches", get(saved::api))
        .route("/settings", get(settings::page))
        .route("/help", get(help::page))
        .route("/events", get(sse::events))
        .route("/api/flows", get(api::flows))
        .route("/api/flows.csv", get(csv::flows))
        .route("/api/devices", get(api::devices))
        .route("/api/devices/{id}/minutes", get(api::device_minutes))
        .route("/api/hosts", get(api::hosts))
        .route("/api/hosts/{id}/minutes", get(api::host_minutes))
        .route("/api/dns", get(api::dns))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/assets/{*path}", get(assets::serve))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", post(login::logout))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            incidents::badge,
        ))
        .layer(DefaultBodyLimit::max(auth::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::gate,
        ))
        .layer(axum::middleware::from_fn(reject_cross_site))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serves `router(state)` on every listener — over TLS when `tls` is given — until
/// `shutdown` resolves, then stops accepting, closes the live-update streams and waits
/// for in-flight requests. Every connection is bounded ([`conn`]): at most
/// [`conn::MAX_CONNECTIONS`] at once and a share of them per address, headers within
/// [`conn::HEADER_TIMEOUT`], closed after [`conn::IDLE_TIMEOUT`] without a byte
/// moving, so stuck, slow or hostile clients cannot stall the server.
///
/// One failing listener stops them all: a UI reachable on only some addresses is a
/// confusing half-state; the caller decides whether to restart.
pub async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(!listeners.is_empty(), "no address to serve the web UI on");
    let stop = state.shared.shutdown.clone();
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.send_replace(true);
        })
    };
    let app = router(state);
    // One connection budget for every listener: a stuck client anywhere counts once.
    let limits = conn::Limits::new(conn::MAX_CONNECTIONS, conn::IDLE_TIMEOUT);
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let addr = listener.local_addr().context("web listener address")?;
        let stopped = stop.subscribe();
        let app = app.clone();
        match &tls {
            None => {
                log::info!("web UI on http://{addr}/");
                let listener = conn::LimitedListener::new(listener, limits.clone());
                servers.spawn(conn::serve(listener, app, stopped));
            }
            Some(config) => {
                log::info!("web UI on https://{addr}/");
                let listener = tls::TlsListener::new(listener, config.clone(), limits.clone())
                    .context("web listener address")?;
                servers.spawn(conn::serve(listener, app, stopped));
            }
        }
    }
    let mut result = Ok(());
    while let Some(joined) = servers.join_next().await {
        if let Err(e) = joined.context("web server task") {
            stop.send_replace(true);
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    watcher.abort();
    result
}

/// The Content-Security-Policy of every response: scripts, styles, fetches and forms
/// only from netmon itself; no inline script, no inline style (not even `style=`
/// attributes: maud templates use classes from `assets/netmon.css`); never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

/// Puts the security headers on every response — pages, API, assets, errors, 404s,
/// redirects. Pages and API answers are `Cache-Control: no-store` (they show private
/// traffic); assets keep their own caching.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Refuses state-changing requests sent by another site's page (a form on a web page
/// posting to the router). Browsers send `Sec-Fetch-Site` and/or `Origin` with every
/// POST; scripts and curl send neither and are let through (they still need the CSRF
/// token, [`auth::gate`]). A second line of defence in front of the tokens.
async fn reject_cross_site(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe && is_cross_site(request.headers()) {
        return WebError::Forbidden("cross-site request refused".into()).into_response();
    }
    next.run(request).await
}

fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or("");
            let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
            authority != host.to_str().unwrap_or("")
        }
        // `Origin: null` or no Host: nothing to compare, refuse.
        (Some(_), None) => true,
        (None, _) => false,
    }
}

async fn not_found() -> WebError {
    WebError::NotFound("no such page".into())
}

/// What can go wrong in a handler, and the status it becomes.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A request body past [`auth::MAX_BODY_BYTES`].
    #[error("{0}")]
    TooLarge(String),
    /// The writer is busy or stopping, or too many event streams are open.
    #[error("{0}")]
    Unavailable(String),
    /// A database or task failure: logged in full, shown briefly.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn log(&self) {
        if let WebError::Internal(e) = self {
            log::error!("web: {e:#}");
        }
    }
}

impl WebError {
    /// A command the writer did not apply: 404 for a row that does not exist, 400 for a
    /// command it refused, 503 when the database could not take it. `what` names the
    /// action for the message ("rename not saved").
    pub fn command(what: &str) -> impl Fn(crate::event::CommandError) -> WebError + '_ {
        use crate::event::CommandError;
        move |e| match e {
            CommandError::NotFound { .. } => WebError::NotFound(e.to_string()),
            CommandError::Invalid(_) => WebError::BadRequest(format!("{what}: {e}")),
            CommandError::Storage(_) => WebError::Unavailable(format!("{what}: {e}")),
        }
    }
}

impl From<FilterError> for WebError {
    fn from(e: FilterError) -> Self {
        WebError::BadRequest(e.to_string())
    }
}

impl From<QueryStringError> for WebError {
    fn from(e: QueryStringError) -> Self {
        WebError::BadRequest(e.to_string())
    }
}

impl From<QueryRejection> for WebError {
    fn from(e: QueryRejection) -> Self {
        WebError::BadRequest(e.body_text())
    }
}

impl From<PathRejection> for WebError {
    fn from(e: PathRejection) -> Self {
        WebError::BadRequest(e.body_text())
    }
}

impl From<FormRejection> for WebError {
    fn from(e: FormRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            WebError::TooLarge(format!(
                "the form is larger than {} bytes",
                auth::MAX_BODY_BYTES
            ))
        } else {
            WebError::BadRequest(e.body_text())
        }
    }
}

/// Pages get a small HTML error page with the message; the API uses [`api::ApiError`].
impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        (status, layout::error_page(status, &self.to_string())).into_response()
    }
}
