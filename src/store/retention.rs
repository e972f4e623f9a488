//! Retention, run by the writer between ticks (DESIGN §1 principle 7, §4): nothing
//! depends on a cron job the user forgets.
//!
//! Age limits per table, then a size cap: past `max_db_mb` the oldest history goes
//! first — ended flows or DNS queries, whichever is older — in chunks, while rollups
//! (small, and what the long charts need) survive.
//! Deletes run in chunks of [`CHUNK`] rows so one retention pass never holds the writer
//! for long; freed pages go back to the file system through incremental vacuum.

use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use crate::config;

/// Rows deleted per statement: bounded work per writer pause.
const CHUNK: i64 = 5_000;
const DAY_MS: i64 = 86_400_000;

pub struct Retention {
    flows_ms: i64,
    minutes_ms: i64,
    hours_ms: i64,
    dns_ms: i64,
    max_bytes: u64,
    interval: Duration,
    next: Instant,
}

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub flows_by_age: u64,
    pub flows_by_size: u64,
    pub rollups: u64,
    pub dns: u64,
    pub dns_by_size: u64,
}

impl Retention {
    pub fn new(c: &config::Retention, dns: &config::Dns) -> Retention {
        Retention {
            flows_ms: i64::from(c.flows_days) * DAY_MS,
            minutes_ms: i64::from(c.minute_rollups_days) * DAY_MS,
            hours_ms: i64::from(c.hour_rollups_days) * DAY_MS,
            dns_ms: i64::from(dns.retention_days) * DAY_MS,
            max_bytes: c.max_db_mb << 20,
            interval: Duration::from_secs(c.interval_s),
            // First pass soon after start: a database restored from an old snapshot may
            // be over its limits.
            next: Instant::now() + Duration::from_secs(10),
        }
    }

    pub fn run_if_due(&mut self, conn: &mut Connection) -> rusqlite::Result<Option<Pruned>> {
        if Instant::now() < self.next {
            return Ok(None);
        }
        self.next = Instant::now() + self.interval;
        let pruned = self.run(conn, crate::sys::now_ms())?;
        if pruned != Pruned::default() {
            log::info!("retention: {pruned:?}");
        }
        Ok(Some(pruned))
    }

    pub fn run(&self, conn: &mut Connection, now: i64) -> rusqlite::Result<Pruned> {
        let mut pruned = Pruned::default();
        let cutoff = now - self.flows_ms;
        pruned.flows_by_age = delete_chunked(
            conn,
            "DELETE FROM flows WHERE id IN (SELECT id FROM flows
                 WHERE ended_at IS NOT NULL AND ended_at < ?1 LIMIT ?2)",
            cutoff,
        )?;
        for table in ["dns_queries", "dns_answers"] {
            pruned.dns += delete_chunked(
                conn,
                &format!(
                    "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}
                         WHERE ts < ?1 LIMIT ?2)"
                ),
                now - self.dns_ms,
            )?;
        }
        for (table, column, keep) in [
            ("device_minutes", "minute", self.minutes_ms),
            ("remote_host_minutes", "minute", self.minutes_ms),
            ("device_hours", "hour", self.hours_ms),
            ("remote_host_hours", "hour", self.hours_ms),
            ("dns_device_minutes", "minute", self.minutes_ms),
            ("system_minutes", "minute", self.minutes_ms),
            ("interface_minutes", "minute", self.minutes_ms),
            ("drop_minutes", "minute", self.minutes_ms),
        ] {
            // Indexed by bucket; a pass between two retention runs removes only the
            // buckets that aged out since, so this stays small.
            pruned.rollups += conn.execute(
                &format!("DELETE FROM {table} WHERE {column} < ?1"),
                [now - keep],
            )? as u64;
        }
        while used_bytes(conn)? > self.max_bytes {
            // Oldest history first, whichever kind it is: ended flows or DNS queries
            // (with their answers).
            let oldest = |sql: &str| -> rusqlite::Result<Option<i64>> {
                conn.query_row(sql, [], |r| r.get(0))
            };
            let flow_t = oldest("SELECT min(ended_at) FROM flows WHERE ended_at IS NOT NULL")?;
            let dns_t = oldest("SELECT min(ts) FROM dns_queries")?;
            if let Some(t) = dns_t.filter(|d| flow_t.is_none_or(|f| *d <= f)) {
                let cutoff: i64 = conn.query_row(
                    "SELECT max(ts) FROM (SELECT ts FROM dns_queries WHERE ts >= ?1
                         ORDER BY ts LIMIT ?2)",
                    params![t, CHUNK],
                    |r| r.get(0),
                )?;
                let n = conn.execute("DELETE FROM dns_queries WHERE ts <= ?1", [cutoff])?
                    + conn.execute("DELETE FROM dns_answers WHERE ts <= ?1", [cutoff])?;
                pruned.dns_by_size += n as u64;
                continue;
            }
            let n = conn.execute(
                "DELETE FROM flows WHERE id IN (SELECT id FROM flows
                     WHERE ended_at IS NOT NULL ORDER BY ended_at LIMIT ?1)",
                [CHUNK],
            )? as u64;
            if n == 0 {
                log::warn!(
                    "database is over its size cap ({} MiB) with no ended flows left to delete",
                    self.max_bytes >> 20
                );
                break;
            }
            pruned.flows_by_size += n;
        }
        if pruned != Pruned::default() {
            conn.execute_batch("PRAGMA incremental_vacuum;")?;
        }
        Ok(pruned)
    }
}

fn delete_chunked(conn: &Connection, sql: &str, cutoff: i64) -> rusqlite::Result<u64> {
    let mut total = 0;
    loop {
        let n = conn.execute(sql, params![cutoff, CHUNK])? as u64;
        total += n;
        if n < CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// Bytes the database really uses: allocated pages minus free ones.
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}
