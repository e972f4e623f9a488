//! The web UI and JSON API (DESIGN §1 principles 5 and 6, §5).
//!
//! Server-rendered: every page and fragment is a maud template, so data (device names,
//! reverse-DNS names) is escaped by construction; the one small script only swaps in
//! HTML the server rendered. A handler is short: parse the query into a typed filter
//! from [`crate::store::read`], make one read call on the pool, render one template.
//!
//! Nothing here writes to the database: user actions go to the writer as
//! [`crate::event::Command`]s and wait for its commit (principle 1).
//!
//! Live updates: the writer publishes a [`Tick`] on a `watch` after each commit;
//! `/events` forwards it to each open tab as a Server-Sent Event, and the tab re-fetches
//! only the flows fragment (`/fragment/flows`). Nothing polls.
//!
//! Routes (all GET unless noted):
//!
//! | path | what |
//! | --- | --- |
//! | `/` | dashboard: summary tiles, filterable live flows table |
//! | `/fragment/flows` | the flows table alone (same query parameters as `/`) |
//! | `/devices`, `/devices/{id}` | device list, device page (details, rename, flows, minutes) |
//! | `POST /devices/{id}/name` | rename (form field `name`), 303 back to the device |
//! | `/hosts`, `/hosts/{id}` | remote host list (`q`, `sort`, `order`, `page`, `per_page`), host page |
//! | `/dns` | DNS log (`device`, `client`, `name`, `type`, `rcode`, `page`, `per_page`) |
//! | `/router`, `/api/router` | router health: current values, minute charts (`window`) |
//! | `/drops`, `/api/drops` | refused WAN connection attempts: top sources/ports, per minute (`window`) |
//! | `/events` | Server-Sent Events: one `tick` event (the [`Tick`] as JSON) per commit |
//! | `/api/flows` | flows as JSON, same parameters as `/` |
//! | `/api/devices`, `/api/hosts` | lists as JSON (hosts takes the `/hosts` parameters) |
//! | `/api/dns` | DNS log as JSON, same parameters as `/dns` |
//! | `/api/devices/{id}/minutes`, `/api/hosts/{id}/minutes` | minute rollups, `?since=<unix ms>` |
//! | `/healthz` | JSON: ok, last commit, database size |
//! | `/metrics` | Prometheus text format |
//! | `/assets/{file}` | embedded CSS/JS/icon |

mod api;
mod assets;
mod chart;
mod dashboard;
mod devices;
mod dns;
mod drops;
mod flows;
mod format;
mod health;
mod hosts;
mod layout;
mod router;
mod sse;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::extract::Request;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Semaphore, watch};

use crate::store::read::{FilterError, ReadPool};
use crate::store::writer::{Tick, WriterHandle};

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
}

impl AppState {
    pub fn new(
        reads: ReadPool,
        writer: WriterHandle,
        ticks: watch::Receiver<Tick>,
        metrics: PrometheusHandle,
        db_path: PathBuf,
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
            }),
        }
    }

    fn reads(&self) -> &ReadPool {
        &self.shared.reads
    }
}

/// Every route, with the cross-site request guard in front.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/fragment/flows", get(flows::fragment))
        .route("/devices", get(devices::list))
        .route("/devices/{id}", get(devices::page))
        .route("/devices/{id}/name", post(devices::rename))
        .route("/hosts", get(hosts::list))
        .route("/hosts/{id}", get(hosts::page))
        .route("/dns", get(dns::page))
        .route("/router", get(router::page))
        .route("/api/router", get(router::api))
        .route("/drops", get(drops::page))
        .route("/api/drops", get(drops::api))
        .route("/events", get(sse::events))
        .route("/api/flows", get(api::flows))
        .route("/api/devices", get(api::devices))
        .route("/api/devices/{id}/minutes", get(api::device_minutes))
        .route("/api/hosts", get(api::hosts))
        .route("/api/hosts/{id}/minutes", get(api::host_minutes))
        .route("/api/dns", get(api::dns))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/assets/{*path}", get(assets::serve))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(reject_cross_site))
        .with_state(state)
}

/// Serves `router(state)` on every listener until `shutdown` resolves, then stops
/// accepting, closes the live-update streams and waits for in-flight requests.
///
/// One failing listener stops them all: a UI reachable on only some addresses is a
/// confusing half-state; the caller decides whether to restart.
pub async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
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
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let addr = listener.local_addr().context("web listener address")?;
        log::info!("web UI on http://{addr}/");
        let mut stopped = stop.subscribe();
        let server = axum::serve(listener, app.clone()).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        servers.spawn(async move {
            server
                .await
                .with_context(|| format!("web server on {addr}"))
        });
    }
    let mut result = Ok(());
    while let Some(joined) = servers.join_next().await {
        let outcome = joined.context("web server task").and_then(|r| r);
        if let Err(e) = outcome {
            stop.send_replace(true);
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    watcher.abort();
    result
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Refuses state-changing requests sent by another site's page (a form on a web page
/// posting to the router). Browsers send `Sec-Fetch-Site` and/or `Origin` with every
/// POST; scripts and curl send neither and are let through. This is the cheap half of
/// DESIGN §5's CSRF protection; tokens come with login.
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

impl From<FilterError> for WebError {
    fn from(e: FilterError) -> Self {
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
        WebError::BadRequest(e.body_text())
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
