//! `/healthz` for supervisors and `/metrics` for Prometheus (DESIGN §5).

use std::path::Path;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::{AppState, MAX_EVENT_STREAMS};
use crate::store::writer::WriteFailure;

/// The database's size on disk: the main file plus its write-ahead log, which between
/// checkpoints can be a large part of it. Missing files count as zero.
pub fn db_size_bytes(db_path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db_path.as_os_str().to_owned();
    wal.push("-wal");
    len(db_path) + len(Path::new(&wal))
}

#[derive(Serialize)]
struct Health {
    /// The database answers a read.
    ok: bool,
    /// Sequence number and time (unix ms) of the writer's last commit; `null` before
    /// the first.
    last_commit_seq: Option<u64>,
    last_commit_ms: Option<i64>,
    active_flows: u64,
    db_size_bytes: u64,
    /// Messages waiting for the writer.
    writer_queue: usize,
    /// Present while commits fail for a storage reason (disk full): since when, the
    /// error, and the changes the writer holds to write again (`store::writer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    write_failure: Option<WriteFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// 200 with `ok: true` when a read succeeds, else 503 with `ok: false` and the error.
/// Failing writes alone keep the 200 (with `write_failure`): netmon is still collecting
/// and serving, and a supervisor restarting it would not give the disk room.
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let tick = state.shared.ticks.borrow().clone();
    let read = state
        .reads()
        .run(|c| c.query_row("SELECT 1", [], |_| Ok(())))
        .await;
    let committed = tick.seq > 0;
    let health = Health {
        ok: read.is_ok(),
        last_commit_seq: committed.then_some(tick.seq),
        last_commit_ms: committed.then_some(tick.at_ms),
        active_flows: tick.active_flows,
        db_size_bytes: db_size_bytes(&state.shared.db_path),
        writer_queue: state.shared.writer.depth(),
        write_failure: state.shared.writer.write_failure(),
        error: read.err().map(|e| format!("{e:#}")),
    };
    let status = if health.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

/// Prometheus text exposition. Gauges that are cheaper to read than to keep current
/// (file sizes, open streams) are set here, just before rendering.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::export::prometheus::refresh_on_scrape();
    metrics::gauge!("netmon_db_size_bytes").set(db_size_bytes(&state.shared.db_path) as f64);
    let open_streams = MAX_EVENT_STREAMS
        - state
            .shared
            .event_streams
            .available_permits()
            .min(MAX_EVENT_STREAMS);
    metrics::gauge!("netmon_web_event_streams").set(open_streams as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.shared.metrics.render(),
    )
}
