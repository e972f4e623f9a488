//! Retention, run by the writer between ticks (DESIGN §1 principle 7, §4): nothing
//! depends on a cron job the user forgets.
//!
//! Age limits per table, every `retention.interval_s`; and, every couple of seconds, the
//! size budget and the per-device / per-domain caps ([`crate::store::budget`]), which
//! keep one flooding client or domain from filling the disk or evicting other devices'
//! history. Rollups (small, and what the long charts need) outlive raw rows.
//! Age deletes run in chunks of [`CHUNK`] rows so one pass never holds the writer for
//! long; freed pages go back to the file system through incremental vacuum.

use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use crate::config;
use crate::store::budget::Budget;
use crate::store::dns::DnsState;
use crate::time::DAY_MS;

pub use crate::store::budget::used_bytes;

/// Rows deleted per statement: bounded work per writer pause.
const CHUNK: i64 = 5_000;

pub struct Retention {
    flows_ms: i64,
    minutes_ms: i64,
    hours_ms: i64,
    dns_ms: i64,
    interval: Duration,
    next: Instant,
    budget: Budget,
}

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub flows_by_age: u64,
    pub rollups: u64,
    pub dns: u64,
}

impl Retention {
    pub fn new(c: &config::Retention, dns: &config::Dns) -> Retention {
        Retention {
            flows_ms: i64::from(c.flows_days) * DAY_MS,
            minutes_ms: i64::from(c.minute_rollups_days) * DAY_MS,
            hours_ms: i64::from(c.hour_rollups_days) * DAY_MS,
            dns_ms: i64::from(dns.retention_days) * DAY_MS,
            interval: Duration::from_secs(c.interval_s),
            // First pass soon after start: a database restored from an old snapshot may
            // be over its limits. (The budget's first pass is at once.)
            next: Instant::now() + Duration::from_secs(10),
            budget: Budget::new(c),
        }
    }

    /// Called by the writer after every tick: the budget pass when due (every
    /// [`crate::store::budget::CHECK_EVERY`], sooner while it has work left), the age
    /// limits every `interval_s`. `dns` is the writer's DNS state: collecting unused names
    /// drops its name cache.
    pub fn run_if_due(
        &mut self,
        conn: &mut Connection,
        dns: &mut DnsState,
    ) -> rusqlite::Result<Option<Pruned>> {
        self.budget.run_if_due(conn, dns);
        if Instant::now() < self.next {
            return Ok(None);
        }
        self.next = Instant::now() + self.interval;
        let pruned = self.run(conn, crate::time::now_ms())?;
        if pruned != Pruned::default() {
            log::info!("retention: {pruned:?}");
            self.budget.rows_deleted();
        }
        Ok(Some(pruned))
    }

    /// See [`Budget::take_devices_pruned`].
    pub fn take_devices_pruned(&mut self) -> bool {
        self.budget.take_devices_pruned()
    }

    /// Commits fail for a storage reason and a batch of about `room` bytes waits: the
    /// budget's pass runs now, keeping `room` free ([`Budget::make_room`]), and the age
    /// limits if due. Called by the writer before each attempt of the held batch.
    pub fn make_room(
        &mut self,
        conn: &mut Connection,
        dns: &mut DnsState,
        room: u64,
    ) -> rusqlite::Result<()> {
        self.budget.make_room(conn, dns, room);
        if Instant::now() >= self.next {
            self.next = Instant::now() + self.interval;
            if self.run(conn, crate::time::now_ms())? != Pruned::default() {
                self.budget.rows_deleted();
            }
        }
        Ok(())
    }

    pub fn run(&self, conn: &mut Connection, now: i64) -> rusqlite::Result<Pruned> {
        let mut pruned = Pruned::default();
        let cutoff = now - self.flows_ms;
        pruned.flows_by_age = delete_chunked(
            conn,
            // A flow's end is never after its last activity: the last_seen index finds
            // them (see migrations/0010).
            "DELETE FROM flows WHERE id IN (SELECT id FROM flows
                 WHERE last_seen < ?1 AND ended_at IS NOT NULL LIMIT ?2)",
            cutoff,
        )?;
        pruned.dns += delete_dns_chunked(conn, now - self.dns_ms)?;
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
        if pruned != Pruned::default() {
            crate::store::budget::incremental_vacuum(conn, 0)?;
        }
        Ok(pruned)
    }
}

/// DNS queries older than `cutoff` with their answers (which have no time of their
/// own): each chunk's answers first, found through the same `dns_queries_ts` walk.
fn delete_dns_chunked(conn: &Connection, cutoff: i64) -> rusqlite::Result<u64> {
    let mut total = 0;
    loop {
        let answers = conn.execute(
            "DELETE FROM dns_answers WHERE query_id IN (SELECT id FROM dns_queries
                 WHERE ts < ?1 LIMIT ?2)",
            params![cutoff, CHUNK],
        )? as u64;
        let queries = conn.execute(
            "DELETE FROM dns_queries WHERE id IN (SELECT id FROM dns_queries
                 WHERE ts < ?1 LIMIT ?2)",
            params![cutoff, CHUNK],
        )? as u64;
        total += answers + queries;
        if queries < CHUNK as u64 {
            return Ok(total);
        }
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
