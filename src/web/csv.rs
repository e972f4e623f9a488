//! `GET /api/flows.csv?<flows page query>`: the flows of a filter as CSV, for a
//! spreadsheet. Same parameters as `/flows` (the page number is ignored: the export is
//! the whole filter, in its sort order), at most [`store::flows::read::EXPORT_MAX_ROWS`] rows — the
//! `X-Netmon-Row-Limit` header says so, and a last line `# truncated …` marks an export
//! that hit it.
//!
//! Streamed: the read task writes chunks into a small channel that the response body
//! drains, so memory stays a few chunks whatever the row count. A client that goes away
//! drops the body, the next send fails and the query stops; a stalled one is cut by the
//! connection's idle timeout ([`super::conn`]) the same way.
//!
//! Cells are attacker-influenced text (DHCP hostnames, DNS names): every text cell is
//! quoted when it holds `,` `"` or a line break (RFC 4180), and one starting with
//! `=` `+` `-` `@` (or a tab / carriage return) gets a leading `'` so a spreadsheet
//! shows it as text instead of evaluating it as a formula (OWASP "CSV injection").

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio_stream::wrappers::ReceiverStream;

use super::api::ApiError;
use super::{AppState, format};
use crate::store;
use crate::store::flows::read::{EXPORT_MAX_ROWS, FlowRow};

/// Bytes gathered before a chunk goes to the client.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the read task and the response body.
const CHUNKS_IN_FLIGHT: usize = 4;

const HEADER: &str = "id,first_seen,last_seen,ended_at,device_id,device,direction,proto,\
src_ip,src_port,dst_ip,dst_port,reply_src_ip,reply_src_port,domain,domain_canonical,\
dns_match,state,bytes_up,bytes_down,packets_up,packets_down,score\r\n";

pub async fn flows(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let filter = super::query::parse_flow_filter(query)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let reads = state.reads().clone();
    tokio::spawn(async move {
        let result = reads
            .run(move |c| {
                let mut buf = String::with_capacity(CHUNK_BYTES + 1024);
                buf.push_str(HEADER);
                let mut open = true;
                let mut written = 0u32;
                store::flows::read::flows_export(c, &filter, EXPORT_MAX_ROWS + 1, |row| {
                    if written == EXPORT_MAX_ROWS {
                        buf.push_str(&format!(
                            "# truncated: more than {EXPORT_MAX_ROWS} flows match; narrow the filter\r\n"
                        ));
                        return false;
                    }
                    written += 1;
                    push_row(&mut buf, row);
                    if buf.len() >= CHUNK_BYTES {
                        open = tx.blocking_send(Ok(Bytes::from(std::mem::take(&mut buf)))).is_ok();
                    }
                    open
                })?;
                if open && !buf.is_empty() {
                    let _ = tx.blocking_send(Ok(Bytes::from(buf)));
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            log::error!("web: CSV export: {e:#}");
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"netmon-flows.csv\"",
            ),
        ],
        [("x-netmon-row-limit", EXPORT_MAX_ROWS.to_string())],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

fn push_row(out: &mut String, f: &FlowRow) {
    let num = |out: &mut String, n: Option<i64>| {
        if let Some(n) = n {
            out.push_str(&n.to_string());
        }
        out.push(',');
    };
    let text = |out: &mut String, s: Option<&str>| {
        if let Some(s) = s {
            push_cell(out, s);
        }
        out.push(',');
    };
    let time = |out: &mut String, ms: Option<i64>| {
        if let Some(ms) = ms {
            out.push_str(&format::iso_utc(ms));
        }
        out.push(',');
    };
    num(out, Some(f.id));
    time(out, Some(f.first_seen));
    time(out, Some(f.last_seen));
    time(out, f.ended_at);
    num(out, f.device_id);
    text(out, f.device_name.as_deref());
    text(out, Some(&f.direction));
    text(out, Some(&crate::flow::proto_name(f.proto)));
    text(out, Some(&f.src_ip));
    num(out, f.src_port.map(i64::from));
    text(out, Some(&f.dst_ip));
    num(out, f.dst_port.map(i64::from));
    text(out, Some(&f.reply_src_ip));
    num(out, f.reply_src_port.map(i64::from));
    text(out, f.domain.as_deref());
    text(out, f.domain_canonical.as_deref());
    text(out, Some(f.dns_match));
    text(out, f.state.as_deref());
    num(out, Some(f.bytes_up));
    num(out, Some(f.bytes_down));
    num(out, Some(f.packets_up));
    num(out, Some(f.packets_down));
    if let Some(score) = f.score {
        out.push_str(&score.to_string());
    }
    out.push_str("\r\n");
}

/// One text cell: quoted when needed (RFC 4180 §2), defused when a spreadsheet would
/// read it as a formula.
fn push_cell(out: &mut String, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if !formula && !s.contains([',', '"', '\n', '\r']) {
        out.push_str(s);
        return;
    }
    out.push('"');
    if formula {
        out.push('\'');
    }
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::push_cell;

    fn cell(s: &str) -> String {
        let mut out = String::new();
        push_cell(&mut out, s);
        out
    }

    #[test]
    fn hostile_cells_are_quoted_and_defused() {
        assert_eq!(cell("example.com"), "example.com");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "\"'+1\"");
        assert_eq!(cell("-2+3"), "\"'-2+3\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(cell("\tx"), "\"'\tx\"");
        // Only a leading sign is a formula.
        assert_eq!(cell("a-b=c"), "a-b=c");
    }
}
