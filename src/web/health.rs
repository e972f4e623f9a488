//! `/healthz` for supervisors and `/metrics` for Prometheus (DESIGN §5).

use std::path::Path;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::{AppState, MAX_EVENT_STREAMS};
use crate::collect::capture::{self, Source, SourceStatus};
use crate::event::WriteFailure;

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
    /// Everything netmon is configured to do works: the database answers a read, commits
    /// succeed, and every capture source that is on delivers. `problems` says what does
    /// not.
    ok: bool,
    /// What fails now, each with its error and the owner's next step; empty when `ok`.
    problems: Vec<Problem>,
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
    /// Each capture source by name (`dns_tap`, `dnsmasq_log`, `nflog`, `conntrack`):
    /// `state` off, ok or broken (with `error` and `fix`), and `since_ms`
    /// (`collect::capture`).
    capture: std::collections::BTreeMap<&'static str, SourceStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One thing that does not work, as `/healthz` lists it.
#[derive(Serialize)]
struct Problem {
    /// `database` (reads fail), `storage` (commits fail), or the broken capture source's
    /// name (`dns_tap`, `dnsmasq_log`, `nflog`, `conntrack`).
    part: &'static str,
    error: String,
    fix: String,
}

/// 200 when a read succeeds, else 503 with the error. `ok` is false, and `problems`
/// lists why, also while commits fail (disk full) or a capture source is broken — still
/// with 200: netmon is collecting and serving, and a supervisor restarting it would give
/// the disk no room and the kernel no queue module.
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let tick = state.shared.ticks.borrow().clone();
    let read = state
        .reads()
        .run(|c| c.query_row("SELECT 1", [], |_| Ok(())))
        .await;
    let committed = tick.seq > 0;
    let write_failure = state.shared.writer.write_failure();
    let capture = state.shared.capture.all();
    let error = read.err().map(|e| format!("{e:#}"));
    let mut problems = Vec::new();
    if let Some(e) = &error {
        problems.push(Problem {
            part: "database",
            error: e.clone(),
            fix: "check the database file and its file system (see netmon's log)".to_owned(),
        });
    }
    if let Some(f) = &write_failure {
        problems.push(Problem {
            part: "storage",
            error: f.error.clone(),
            fix: STORAGE_FIX.to_owned(),
        });
    }
    for s in &capture {
        if let Some(f) = s.failure() {
            problems.push(Problem {
                part: s.source.name(),
                error: f.error.clone(),
                fix: f.fix.clone(),
            });
        }
    }
    let health = Health {
        ok: problems.is_empty(),
        problems,
        last_commit_seq: committed.then_some(tick.seq),
        last_commit_ms: committed.then_some(tick.at_ms),
        active_flows: tick.active_flows,
        db_size_bytes: db_size_bytes(&state.shared.db_path),
        writer_queue: state.shared.writer.depth(),
        write_failure,
        capture: capture.into_iter().map(|s| (s.source.name(), s)).collect(),
        error,
    };
    let status = if health.error.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

/// What the owner can do while commits fail; netmon itself prunes its oldest rows.
pub const STORAGE_FIX: &str = "netmon prunes its own oldest rows to make room and resumes \
     writing by itself; if other files fill the database's file system, free space there or \
     lower retention.max_db_mb";

/// Prometheus text exposition. Gauges that are cheaper to read than to keep current
/// (file sizes, open streams) are set here, just before rendering.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::export::prometheus::refresh_on_scrape(state.shared.config.as_deref());
    let storage_ok = state.shared.writer.write_failure().is_none();
    metrics::gauge!("netmon_storage_ok").set(f64::from(u8::from(storage_ok)));
    for s in state.shared.capture.all() {
        metrics::gauge!("netmon_capture_ok", "source" => s.source.name()).set(s.gauge());
    }
    // The older series: 1 only while the tap is on and works.
    let tap_active = state.shared.capture.get(Source::DnsTap).state == capture::State::Ok;
    metrics::gauge!("netmon_dns_capture_active").set(f64::from(u8::from(tap_active)));
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
