//! The dnsmasq log source: which answer each LAN client got, read from dnsmasq's query
//! log, for routers where packet capture is off (DESIGN §3 "DNS is exact when it can
//! be"). Over 800 lines: most of it is the end-to-end tests over the captured formats.
//!
//! ```text
//!  dnsmasq ─ log-facility file, or a syslog file ─► Follower   (collect/tail.rs: notify +
//!                                                   │           2 s poll; rename and
//!                                                   │           copytruncate rotation;
//!                                                   │           offset kept across restarts)
//!                                                   ▼ complete lines
//!                                                  LineParser  (line.rs: 4 header formats,
//!                                                   │           line kinds; clock.rs: time)
//!                                                   ▼ Entry
//!                                                  Assembler   (assemble.rs: query ↔ answer)
//!                                                   ▼ DnsObservation
//!                               writer.try_send(Event::Dns(batch)) — never blocks (here)
//! ```
//!
//! What dnsmasq writes (2.90, `log_query()` in `src/cache.c`; checked against the lab's
//! captures in `fixtures/dnsmasq/`): after the header, one line per event,
//! `[SERIAL CLIENT/PORT ]SOURCE NAME VERB DEST[EXTRA]`:
//! - `query[A] NAME from CLIENT`, `forwarded NAME to SERVER`, and answers
//!   `reply|cached|config|DHCP|auth|/path/of/hosts-file NAME is DEST`, one line per
//!   record: DEST is an address, `<CNAME>` (the next line's NAME is the alias target),
//!   `NXDOMAIN`, `NODATA[-IPv4|-IPv6]`, `SERVFAIL`, `REFUSED`, `<HTTPS>`, `<type=N>`, or
//!   the text of a TXT record. A PTR answer is `reply ADDRESS is NAME`.
//! - The prefix (`log-queries=extra`) numbers each query: every line of one query carries
//!   its serial, which is how lines are matched. Without it, answers are matched to the
//!   most recent pending query of the same name, using the answer's address family to
//!   tell an A from an AAAA query.
//! - Errors are logged with the name `error` (`config error is REFUSED (EDE: not ready)`,
//!   `reply error is SERVFAIL`): without the serial they go to the query whose line came
//!   just before.
//! - A query that joins one already forwarded gets no answer line of its own (with the
//!   prefix, `reply query is duplicate`): it received the same answer, so a `reply`
//!   completes every pending query of the same name and type.
//! - Names: any byte outside printable ASCII turns the whole name into
//!   `<name unprintable>`; `.` is always a label separator; `\` is a literal byte. A
//!   name can hold spaces, so lines are split at the *last* ` from `/` to `/` is `. Names
//!   are attacker-controlled: each goes through [`crate::dns_name::normalize_name`]
//!   (backslashes escaped first, since the log text is raw, not presentation form).
//! - A TXT record's text is attacker-controlled too and may look like an address:
//!   addresses are kept only when the query type asks for them.
//!
//! Time: dnsmasq's own file and the traditional syslog format write local wall-clock time
//! without a year; see [`LogClock`].

mod assemble;
mod clock;
mod line;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::collect::capture::{CaptureStatus, Source};
use crate::collect::tail::Follower;
use crate::config::Config;
use crate::event::DnsObservation;
use crate::event::Event;
use crate::event::WriterHandle;
use clock::unix_now;

pub use assemble::{Assembler, AssemblerStats};
pub use clock::{LogClock, Zone};
pub use line::{Entry, LineParser, Parsed};

/// Observations held while the writer's channel is full; past it the oldest go.
const MAX_OUTBOX: usize = 20_000;
/// Most observations in one `Event::Dns`.
const MAX_PER_EVENT: usize = 2_000;
/// The file is checked this often even without an inotify event (no inotify, a
/// directory that appeared later, a rotated file written in another directory).
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Longest sleep, so the shutdown flag (a plain atomic, no fd) is seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(200);
/// How long shutdown keeps retrying a full channel before giving up.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// Lines read without one DNS query before the log counts as written without queries
/// (dnsmasq without log-queries still logs its start, DHCP and errors).
const NO_QUERIES_AFTER: u64 = 500;

/// What the source counted (copied into the metrics recorder after each pass).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stats {
    parsed: u64,
    ignored: u64,
    malformed: u64,
    /// Observations dropped because the outbox was full.
    outbox_dropped: u64,
    channel_full: u64,
}

/// Follower, parser and assembler together, with the observations waiting for the writer.
struct LogSource {
    follower: Follower,
    parser: LineParser,
    assembler: Assembler,
    /// Observations the writer has not taken yet (its channel was full), oldest first.
    outbox: VecDeque<DnsObservation>,
    stats: Stats,
    warned_no_queries: bool,
}

impl LogSource {
    fn new(follower: Follower, zone: Zone) -> LogSource {
        LogSource {
            follower,
            parser: LineParser::new(zone),
            assembler: Assembler::new(),
            outbox: VecDeque::new(),
            stats: Stats::default(),
            warned_no_queries: false,
        }
    }

    /// Reads what is new, completes what is due. True when more is left to read.
    fn pass(&mut self, now: Instant) -> bool {
        let now_s = unix_now();
        let LogSource {
            follower,
            parser,
            assembler,
            stats,
            ..
        } = self;
        let more = follower.poll(now, &mut |bytes: &[u8], live: bool| {
            let text = String::from_utf8_lossy(bytes);
            match parser.parse(&text, now_s) {
                Parsed::Entry {
                    ts_ms,
                    local_time,
                    entry,
                } => {
                    stats.parsed += 1;
                    if live && local_time {
                        parser.clock.calibrate(ts_ms, now_s);
                    }
                    assembler.push(ts_ms, entry, now);
                }
                Parsed::Ignored => stats.ignored += 1,
                Parsed::Malformed => stats.malformed += 1,
            }
        });
        self.assembler.tick(now);
        self.collect_ready();
        self.follower.save_state(now, false);
        if !self.warned_no_queries
            && self.stats.parsed == 0
            && self.stats.ignored >= NO_QUERIES_AFTER
        {
            warn!(
                "dnsmasq log: {} lines and not one DNS query in {}: does dnsmasq run with \
                 log-queries (OpenWrt: uci set dhcp.@dnsmasq[0].logqueries=1)?",
                self.stats.ignored,
                self.follower.path().display()
            );
            self.warned_no_queries = true;
        }
        more
    }

    /// Marks the log broken in `capture` while nothing can be read from its path, or while
    /// dnsmasq writes it without queries; ok otherwise.
    fn report(&self, capture: &CaptureStatus) {
        let path = self.follower.path().display();
        if let Some(error) = self.follower.problem() {
            capture.broken(
                Source::DnsmasqLog,
                error,
                format!(
                    "make dnsmasq write its query log to {path} (dnsmasq options log-queries and \
                     log-facility={path}; OpenWrt: uci set dhcp.@dnsmasq[0].logqueries=1, uci \
                     set dhcp.@dnsmasq[0].logfacility={path}, uci commit dhcp, \
                     /etc/init.d/dnsmasq restart) and let netmon's user read it, or set \
                     dns.log_file to the file dnsmasq writes; netmon reads it as soon as it is \
                     there"
                ),
            );
        } else if self.stats.parsed == 0 && self.stats.ignored >= NO_QUERIES_AFTER {
            capture.broken(
                Source::DnsmasqLog,
                format!(
                    "{} lines in {path} and not one DNS query",
                    self.stats.ignored
                ),
                "switch on dnsmasq's query logging (option log-queries; OpenWrt: uci set \
                 dhcp.@dnsmasq[0].logqueries=1, uci commit dhcp, /etc/init.d/dnsmasq restart)",
            );
        } else {
            capture.ok(Source::DnsmasqLog);
        }
    }

    fn collect_ready(&mut self) {
        for obs in self.assembler.ready.drain(..) {
            if self.outbox.len() >= MAX_OUTBOX {
                self.outbox.pop_front();
                self.stats.outbox_dropped += 1;
            }
            self.outbox.push_back(obs);
        }
    }

    /// Hands the writer what is waiting, in batches, until its channel is full.
    fn send(&mut self, writer: &WriterHandle) {
        while !self.outbox.is_empty() {
            let n = self.outbox.len().min(MAX_PER_EVENT);
            let batch: Vec<DnsObservation> = self.outbox.drain(..n).collect();
            match writer.try_send(Event::Dns(batch)) {
                Ok(()) => {}
                Err(Event::Dns(batch)) => {
                    for obs in batch.into_iter().rev() {
                        self.outbox.push_front(obs);
                    }
                    self.stats.channel_full += 1;
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn publish(&self, m: &Metrics) {
        m.parsed.absolute(self.stats.parsed);
        m.ignored.absolute(self.stats.ignored);
        m.malformed
            .absolute(self.stats.malformed + self.follower.stats.broken_lines);
        m.observations.absolute(self.assembler.stats.observations);
        m.unmatched.absolute(self.assembler.stats.unmatched);
        m.drops
            .absolute(self.assembler.stats.dropped + self.stats.outbox_dropped);
        m.channel_full.absolute(self.stats.channel_full);
        m.rotations_rename
            .absolute(self.follower.stats.rotations_rename);
        m.rotations_truncate
            .absolute(self.follower.stats.rotations_truncate);
        m.vanished.absolute(self.follower.stats.vanished);
    }
}

/// The running log source: one thread that follows the file and feeds the writer.
pub struct DnsmasqLogCollector {
    thread: JoinHandle<()>,
}

impl DnsmasqLogCollector {
    /// Starts following `config.dns.log_file` (must be non-empty). The file need not
    /// exist yet; the read offset is kept in `<db_path>.dnsmasq-offset`.
    /// `capture` learns whether the file can be read (`Source::DnsmasqLog`).
    pub fn start(
        config: &Config,
        writer: WriterHandle,
        shutdown: Arc<AtomicBool>,
        capture: CaptureStatus,
    ) -> io::Result<DnsmasqLogCollector> {
        describe_metrics();
        let path = config.dns.log_file.clone();
        let state_path = config.db_path.with_extension("dnsmasq-offset");
        let hint = format!(
            " Does dnsmasq run with log-queries and log-facility={} (OpenWrt: uci set \
             dhcp.@dnsmasq[0].logqueries=1, dhcp.@dnsmasq[0].logfacility=...)?",
            path.display()
        );
        let follower = Follower::new("dnsmasq log", path, Some(state_path)).with_missing_hint(hint);
        let source = LogSource::new(follower, Zone::System);
        let thread = std::thread::Builder::new()
            // Thread names are cut at 15 bytes.
            .name("netmon-dnslog".into())
            .spawn(move || run(source, writer, &shutdown, &capture))?;
        Ok(DnsmasqLogCollector { thread })
    }

    /// Waits for the thread after `shutdown` was set; it has flushed what it read.
    pub fn join(self) {
        if self.thread.join().is_err() {
            error!("dnsmasq log: the follower thread panicked");
        }
    }
}

fn run(
    mut source: LogSource,
    writer: WriterHandle,
    shutdown: &AtomicBool,
    capture: &CaptureStatus,
) {
    let metrics = Metrics::new();
    let (wake_tx, wake_rx) = sync_channel::<()>(1);
    let mut watch = crate::collect::file_watch::FileWatch::new(
        source.follower.path(),
        wake_tx.clone(),
        "dnsmasq log",
    );
    info!(
        "dnsmasq log: reading {} ({})",
        source.follower.path().display(),
        if watch.is_active() {
            "inotify, and a check every 2 s"
        } else {
            "checked every 2 s"
        }
    );
    let mut last_pass: Option<Instant> = None;
    let mut last_watch_check = Instant::now();
    let mut woken = true;
    let mut more = false;
    loop {
        let stopping = shutdown.load(Ordering::Relaxed);
        let now = Instant::now();
        let due = woken
            || more
            || stopping
            || !source.outbox.is_empty()
            || last_pass.is_none_or(|t| now.duration_since(t) >= POLL_INTERVAL)
            || source.assembler.deadline().is_some_and(|d| d <= now);
        if due {
            more = source.pass(now);
            last_pass = Some(now);
            source.send(&writer);
            source.publish(&metrics);
            source.report(capture);
        }
        if stopping {
            break;
        }
        if now.duration_since(last_watch_check) >= POLL_INTERVAL {
            // The directory may have appeared, or vanished and come back, since.
            last_watch_check = now;
            watch.refresh();
        }
        if more {
            woken = false;
            continue;
        }
        let mut wait = MAX_WAIT;
        if let Some(d) = source.assembler.deadline() {
            wait = wait.min(d.saturating_duration_since(now));
        }
        woken = match wake_rx.recv_timeout(wait) {
            Ok(()) => true,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => false,
        };
    }
    // Shutdown: what was read goes to the writer, and the offset is saved.
    source.assembler.finish();
    source.collect_ready();
    let end = Instant::now() + SHUTDOWN_FLUSH;
    source.send(&writer);
    while !source.outbox.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        source.send(&writer);
    }
    if !source.outbox.is_empty() {
        source.stats.outbox_dropped += source.outbox.len() as u64;
        warn!(
            "dnsmasq log: {} DNS observations not stored (the writer did not take them at shutdown)",
            source.outbox.len()
        );
    }
    source.follower.save_state(Instant::now(), true);
    source.publish(&metrics);
    drop(watch);
}

fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!(
        "netmon_dnsmasq_log_lines_total",
        "Lines read from the dnsmasq log, by result: parsed (a query-log line used), ignored \
         (another program's line, or a dnsmasq message that is not about a query), malformed \
         (no known header, fields that do not parse, or a line over 4 KiB)."
    );
    describe_counter!(
        "netmon_dnsmasq_observations_total",
        "DNS queries with their answer (or none) assembled from the dnsmasq log."
    );
    describe_counter!(
        "netmon_dnsmasq_unmatched_answers_total",
        "Answers in the dnsmasq log that matched no query netmon had read (asked before it started reading)."
    );
    describe_counter!(
        "netmon_dnsmasq_log_rotations_total",
        "Rotations of the dnsmasq log followed, by kind (rename, truncate)."
    );
}

/// Handles into the recorder, taken once.
struct Metrics {
    parsed: metrics::Counter,
    ignored: metrics::Counter,
    malformed: metrics::Counter,
    observations: metrics::Counter,
    unmatched: metrics::Counter,
    drops: metrics::Counter,
    channel_full: metrics::Counter,
    rotations_rename: metrics::Counter,
    rotations_truncate: metrics::Counter,
    vanished: metrics::Counter,
}

impl Metrics {
    fn new() -> Metrics {
        use metrics::counter;
        Metrics {
            parsed: counter!("netmon_dnsmasq_log_lines_total", "result" => "parsed"),
            ignored: counter!("netmon_dnsmasq_log_lines_total", "result" => "ignored"),
            malformed: counter!("netmon_dnsmasq_log_lines_total", "result" => "malformed"),
            observations: counter!("netmon_dnsmasq_observations_total"),
            unmatched: counter!("netmon_dnsmasq_unmatched_answers_total"),
            drops: counter!("netmon_collector_drops_total", "stream" => "dnsmasq_log"),
            channel_full: counter!("netmon_collector_channel_full_total", "stream" => "dnsmasq_log"),
            rotations_rename: counter!("netmon_dnsmasq_log_rotations_total", "kind" => "rename"),
            rotations_truncate: counter!("netmon_dnsmasq_log_rotations_total", "kind" => "truncate"),
            vanished: counter!("netmon_source_file_vanished_total", "source" => "dnsmasq_log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::AtomicUsize;

    use crate::event::{AnswerData, DnsAnswer, DnsSource};

    use line::{AnswerLine, AnswerSource, Value};

    use crate::collect::tail::SavedOffset;
    use crate::collect::tail::tests::{TempDir, append};

    /// 2026-11-24T22:40:00Z, a few minutes after the fixtures were captured.
    pub(super) const NOW_S: i64 = 1_795_560_000;
    /// The capture window (22:34–22:38 UTC; the lab's clock ran in UTC).
    pub(super) const WINDOW_MS: std::ops::Range<i64> = 1_795_559_640_000..1_795_559_880_000;
    pub(super) const C1: &str = "10.77.0.10";
    pub(super) const C2: &str = "10.77.0.11";

    // Real captures from the lab: see fixtures/dnsmasq/README.md.
    pub(super) const FILE_EXTRA: &str = include_str!("../fixtures/dnsmasq/file-extra.log");
    pub(super) const FILE: &str = include_str!("../fixtures/dnsmasq/file.log");
    pub(super) const RSYSLOG_EXTRA: &str = include_str!("../fixtures/dnsmasq/rsyslog-extra.log");
    pub(super) const RSYSLOG: &str = include_str!("../fixtures/dnsmasq/rsyslog.log");
    pub(super) const RFC3339_EXTRA: &str = include_str!("../fixtures/dnsmasq/rfc3339-extra.log");
    pub(super) const RFC3339: &str = include_str!("../fixtures/dnsmasq/rfc3339.log");
    pub(super) const LOGREAD_EXTRA: &str = include_str!("../fixtures/dnsmasq/logread-extra.log");
    pub(super) const LOGREAD: &str = include_str!("../fixtures/dnsmasq/logread.log");
    pub(super) const RAW_EXTRA: &str = include_str!("../fixtures/dnsmasq/syslog-extra.raw");
    pub(super) const RAW: &str = include_str!("../fixtures/dnsmasq/syslog.raw");
    pub(super) const HOSTS_DHCP_EXTRA: &str =
        include_str!("../fixtures/dnsmasq/hosts-dhcp-extra.log");
    pub(super) const HOSTS_DHCP: &str = include_str!("../fixtures/dnsmasq/hosts-dhcp.log");

    pub(super) const STANDARD: [(&str, &str); 10] = [
        ("file-extra", FILE_EXTRA),
        ("file", FILE),
        ("rsyslog-extra", RSYSLOG_EXTRA),
        ("rsyslog", RSYSLOG),
        ("rfc3339-extra", RFC3339_EXTRA),
        ("rfc3339", RFC3339),
        ("logread-extra", LOGREAD_EXTRA),
        ("logread", LOGREAD),
        ("syslog-extra.raw", RAW_EXTRA),
        ("syslog.raw", RAW),
    ];

    #[derive(Debug, Default)]
    pub(super) struct Run {
        pub(super) obs: Vec<DnsObservation>,
        pub(super) parsed: u64,
        pub(super) ignored: u64,
        pub(super) malformed: u64,
        pub(super) stats: AssemblerStats,
    }

    /// Parses and assembles a whole text at one instant, then finishes (pending queries
    /// come out unanswered).
    pub(super) fn assemble(text: &str) -> Run {
        let mut parser = LineParser::new(Zone::Fixed(0));
        let mut asm = Assembler::new();
        let mut run = Run::default();
        let t0 = Instant::now();
        for line in text.lines() {
            match parser.parse(line, NOW_S) {
                Parsed::Entry { ts_ms, entry, .. } => {
                    run.parsed += 1;
                    asm.push(ts_ms, entry, t0);
                }
                Parsed::Ignored => run.ignored += 1,
                Parsed::Malformed => run.malformed += 1,
            }
        }
        asm.finish();
        run.obs = std::mem::take(&mut asm.ready);
        run.stats = asm.stats.clone();
        run
    }

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    pub(super) fn find<'a>(
        obs: &'a [DnsObservation],
        client: &str,
        qname: &str,
        qtype: u16,
    ) -> Vec<&'a DnsObservation> {
        obs.iter()
            .filter(|o| o.client == ip(client) && o.qname == qname && o.qtype == qtype)
            .collect()
    }

    /// The one observation (or all `n`) of a query, each with this rcode and answer.
    #[track_caller]
    pub(super) fn expect(
        run: &Run,
        client: &str,
        qname: &str,
        qtype: u16,
        n: usize,
        rcode: Option<u16>,
        answers: &[DnsAnswer],
    ) {
        let found = find(&run.obs, client, qname, qtype);
        assert_eq!(found.len(), n, "{client} {qname} type {qtype}: {found:#?}");
        for o in found {
            assert_eq!(o.rcode, rcode, "{o:#?}");
            assert_eq!(o.answers, answers, "{o:#?}");
            assert_eq!(o.source, DnsSource::Log);
        }
    }

    pub(super) fn addr(name: &str, a: &str) -> DnsAnswer {
        DnsAnswer {
            name: name.into(),
            ttl: None,
            data: AnswerData::Addr(ip(a)),
        }
    }

    pub(super) fn cname(name: &str, target: &str) -> DnsAnswer {
        DnsAnswer {
            name: name.into(),
            ttl: None,
            data: AnswerData::Cname(target.into()),
        }
    }

    /// What `queries.sh` and `evil.sh` (fixtures/dnsmasq/capture/) asked, and what each
    /// client got, in every format.
    #[track_caller]
    pub(super) fn check_standard(label: &str, run: &Run) {
        let queries = run.obs.len();
        assert_eq!(queries, 46, "{label}: one observation per query line");
        assert_eq!(
            run.stats.unmatched, 0,
            "{label}: every answer found its query"
        );
        assert_eq!(run.malformed, 0, "{label}");
        for o in &run.obs {
            assert!(WINDOW_MS.contains(&o.ts_ms), "{label}: time {o:?}");
            assert_eq!(o.ts_ms % 1000, 0, "{label}: second resolution");
        }
        let shop = "shop.example.test";
        // reply, then cached twice (once asked as Shop.EXAMPLE.test)
        expect(run, C1, shop, 1, 3, Some(0), &[addr(shop, "203.0.113.84")]);
        expect(
            run,
            C1,
            shop,
            28,
            1,
            Some(0),
            &[addr(shop, "2001:db8:77::84")],
        );
        let (cdn, edge) = ("cdn.example.test", "edge.cdn-provider.test");
        expect(
            run,
            C1,
            cdn,
            1,
            2,
            Some(0),
            &[cname(cdn, edge), addr(edge, "203.0.113.85")],
        );
        // A cached CNAME, then forwarded: the partial cache answer is replaced.
        expect(
            run,
            C1,
            cdn,
            28,
            1,
            Some(0),
            &[cname(cdn, edge), addr(edge, "2001:db8:77::85")],
        );
        expect(
            run,
            C2,
            "alpha.example.test",
            1,
            1,
            Some(0),
            &[addr("alpha.example.test", "203.0.113.86")],
        );
        expect(
            run,
            C1,
            "beta.example.test",
            1,
            1,
            Some(0),
            &[addr("beta.example.test", "203.0.113.86")],
        );
        expect(run, C1, "alpha.example.test", 28, 1, Some(0), &[]); // NODATA-IPv6
        expect(run, C1, "nope.example.test", 1, 2, Some(3), &[]);
        expect(run, C1, "nope.example.test", 28, 1, Some(3), &[]);
        expect(
            run,
            C1,
            "wan.lab",
            1,
            1,
            Some(0),
            &[addr("wan.lab", "203.0.113.80")],
        );
        expect(
            run,
            C1,
            "wan.lab",
            28,
            1,
            Some(0),
            &[addr("wan.lab", "2001:db8:77::80")],
        );
        expect(
            run,
            C2,
            "files.lab",
            1,
            1,
            Some(0),
            &[addr("files.lab", "203.0.113.81")],
        );
        expect(run, C1, "burst.lab", 28, 1, Some(5), &[]); // config error is REFUSED
        expect(run, C1, "84.113.0.203.in-addr.arpa", 12, 2, Some(0), &[]);
        expect(run, C1, shop, 65, 1, Some(0), &[]);
        expect(run, C1, shop, 16, 1, Some(0), &[]);
        expect(run, C1, "example.test", 15, 1, Some(0), &[]);
        expect(run, C1, "_sip._udp.example.test", 33, 1, Some(3), &[]);
        expect(run, C1, "unknown.invalid", 1, 1, Some(5), &[]);
        expect(run, C1, "x.evil.test", 1, 1, None, &[]); // upstream never answered
        expect(run, C1, shop, 65534, 1, Some(0), &[]);
        // Hostile names, stored canonical and never executable as markup by the UI.
        expect(
            run,
            C1,
            "<script>alert(1)</script>.example.test",
            1,
            1,
            Some(3),
            &[],
        );
        expect(
            run,
            C1,
            &format!("{}.example.test", "a".repeat(63)),
            1,
            1,
            Some(3),
            &[],
        );
        // café, a tab, a dot inside a label: dnsmasq logs `<name unprintable>`.
        expect(run, C1, "<name\\032unprintable>", 1, 3, Some(3), &[]);
        expect(run, C1, "sp\\032ace.example.test", 1, 1, Some(3), &[]);
        expect(run, C1, "a\\\\b.example.test", 1, 1, Some(3), &[]);
        let long = format!(
            "{0}.{0}.{0}.{1}.example.test",
            "b".repeat(63),
            "c".repeat(48)
        );
        assert_eq!(long.len(), 253);
        expect(run, C1, &long, 1, 1, Some(3), &[]);
        // Two clients, one forward: the second query gets the same answer.
        let a = "a.evil.test";
        expect(run, C1, a, 1, 1, Some(0), &[addr(a, "203.0.113.87")]);
        expect(run, C2, a, 1, 1, Some(0), &[addr(a, "203.0.113.87")]);
        expect(run, C1, a, 28, 1, Some(0), &[]);
        expect(
            run,
            C1,
            "b.evil.test",
            1,
            1,
            Some(0),
            &[addr("b.evil.test", "203.0.113.87")],
        );
        let (chain, c2, c3) = ("chain.evil.test", "c2.evil.test", "c3.evil.test");
        let chain_a = [
            cname(chain, c2),
            cname(c2, c3),
            addr(c3, "203.0.113.88"),
            addr(c3, "203.0.113.89"),
        ];
        expect(run, C1, chain, 1, 2, Some(0), &chain_a); // reply, then cached
        expect(
            run,
            C1,
            chain,
            28,
            1,
            Some(0),
            &[cname(chain, c2), cname(c2, c3)],
        );
        expect(run, C1, "sf.evil.test", 1, 1, Some(2), &[]); // reply error is SERVFAIL
        expect(run, C1, "rf.evil.test", 1, 1, Some(5), &[]);
        expect(run, C1, "nx.evil.test", 1, 1, Some(3), &[]);
        expect(run, C1, "www.evil.test", 65, 1, Some(0), &[]); // <HTTPS>
        expect(run, C1, "www.evil.test", 16, 1, Some(0), &[]); // TXT "hello"
    }

    #[test]
    pub(super) fn every_captured_format_gives_the_same_answers() {
        for (label, text) in STANDARD {
            let run = assemble(text);
            check_standard(label, &run);
            assert!(
                run.ignored > 0,
                "{label}: start-up messages are ignored lines"
            );
        }
    }

    #[test]
    pub(super) fn formats_agree_line_by_line() {
        // The same dnsmasq message in each format gives the same entry and time.
        let msg = "7 10.77.0.10/5836 reply cdn.example.test is <CNAME>";
        let lines = [
            format!("Nov 24 21:03:18 dnsmasq[21069]: {msg}"),
            format!("Nov 24 21:03:18 router dnsmasq[123]: {msg}"),
            format!("2026-11-24T21:03:18+00:00 router dnsmasq[123]: {msg}"),
            format!("2026-11-24T22:03:18.000000+01:00 router dnsmasq[123]: {msg}"),
            format!("Tue Nov 24 21:03:18 2026 daemon.info dnsmasq[123]: {msg}"),
            format!("<30>Nov 24 21:03:18 dnsmasq[123]: {msg}"),
        ];
        let want = Entry::Answer(AnswerLine {
            serial: Some(7),
            source: AnswerSource::Reply,
            name: "cdn.example.test".into(),
            reverse_name: None,
            value: Value::Cname,
        });
        for line in &lines {
            let mut p = LineParser::new(Zone::Fixed(0));
            match p.parse(line, NOW_S) {
                Parsed::Entry { ts_ms, entry, .. } => {
                    assert_eq!(ts_ms, 1_795_554_198_000, "{line}");
                    assert_eq!(entry, want, "{line}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    /// A line of dnsmasq's own format at `NOW_S`.
    pub(super) fn line(msg: &str) -> String {
        format!("Nov 24 22:29:59 dnsmasq[1]: {msg}")
    }

    #[test]
    pub(super) fn collector_thread_feeds_the_writer_and_stops_promptly() {
        let dir = TempDir::new("thread");
        let log = dir.path("dnsmasq.log");
        append(&log, "");
        let mut config = Config::default();
        config.dns.log_file = log.clone();
        config.db_path = dir.path("netmon.db");
        // Resume at offset 0 of this file, so the lines below are read whenever the
        // thread first looks.
        let meta = std::fs::metadata(&log).expect("stat");
        let saved = SavedOffset {
            path: log.clone(),
            dev: meta.dev(),
            ino: meta.ino(),
            offset: 0,
        };
        std::fs::write(
            dir.path("netmon.dnsmasq-offset"),
            serde_json::to_vec(&saved).expect("json"),
        )
        .expect("state");
        let (tx, rx) = sync_channel(8);
        let writer = WriterHandle::new(tx, Arc::new(AtomicUsize::new(0)));
        let shutdown = Arc::new(AtomicBool::new(false));
        let capture = CaptureStatus::default();
        let collector =
            DnsmasqLogCollector::start(&config, writer, shutdown.clone(), capture.clone())
                .expect("start");
        let text = format!(
            "{}\n{}\n",
            line("1 10.0.0.2/1 query[A] shop.example.test from 10.0.0.2"),
            line("1 10.0.0.2/1 reply shop.example.test is 192.0.2.84"),
        );
        append(&log, &text);
        let event = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("an event within 5 s");
        let Event::Dns(obs) = event else {
            panic!("{event:?}")
        };
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].qname, "shop.example.test");
        assert_eq!(obs[0].answers, [addr("shop.example.test", "192.0.2.84")]);
        assert_eq!(
            capture.get(Source::DnsmasqLog).state,
            crate::collect::capture::State::Ok
        );
        shutdown.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        collector.join();
        assert!(
            t0.elapsed() < Duration::from_millis(800),
            "stopped in {:?}",
            t0.elapsed()
        );
        let saved: SavedOffset = serde_json::from_slice(
            &std::fs::read(dir.path("netmon.dnsmasq-offset")).expect("state"),
        )
        .expect("json");
        assert_eq!(saved.offset, text.len() as u64);
    }

    // ---- robustness --------------------------------------------------------------------

    /// Words that steer the parser into its deeper branches.
    pub(super) fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Nov".to_owned()),
            Just("24".to_owned()),
            Just("22:03:18".to_owned()),
            Just("2026-11-24T22:03:18.5+01:00".to_owned()),
            Just("Tue".to_owned()),
            Just("2026".to_owned()),
            Just("dnsmasq[1]:".to_owned()),
            Just("<30>".to_owned()),
            Just("7".to_owned()),
            Just("10.0.0.2/53".to_owned()),
            Just("query[A]".to_owned()),
            Just("query[type=".to_owned()),
            Just("forwarded".to_owned()),
            Just("reply".to_owned()),
            Just("cached".to_owned()),
            Just("/etc/hosts".to_owned()),
            Just("is".to_owned()),
            Just("from".to_owned()),
            Just("to".to_owned()),
            Just("<CNAME>".to_owned()),
            Just("NXDOMAIN".to_owned()),
            Just("NODATA-IPv6".to_owned()),
            Just("(EDE:".to_owned()),
            Just("error".to_owned()),
            Just("1.2.3.4".to_owned()),
            Just("fe80::1%x".to_owned()),
            Just("\\".to_owned()),
            "\\PC{0,12}",
            any::<String>(),
        ]
    }

    pub(super) fn feed_all(lines: &[String]) {
        let mut p = LineParser::new(Zone::Fixed(0));
        let mut asm = Assembler::new();
        let t0 = Instant::now();
        for (i, l) in lines.iter().enumerate() {
            if let Parsed::Entry { ts_ms, entry, .. } = p.parse(l, NOW_S) {
                asm.push(ts_ms, entry, t0 + Duration::from_millis(i as u64 * 300));
            }
            asm.tick(t0 + Duration::from_millis(i as u64 * 300));
        }
        asm.finish();
        for o in &asm.ready {
            assert!(o.qname.len() <= crate::dns_name::MAX_NAME_CHARS);
            assert!(!o.qname.chars().any(char::is_control), "{:?}", o.qname);
        }
    }

    proptest! {
        #[test]
        fn random_lines_never_panic(lines in prop::collection::vec(any::<String>(), 0..16)) {
            feed_all(&lines);
        }

        #[test]
        fn word_salad_never_panics(lines in prop::collection::vec(prop::collection::vec(fragment(), 0..12), 0..12)) {
            let lines: Vec<String> = lines.iter().map(|words| words.join(" ")).collect();
            feed_all(&lines);
        }

        #[test]
        fn garbled_captures_never_panic(
            picks in prop::collection::vec((0usize..1000, 0usize..200, any::<String>(), 0usize..200), 1..24)
        ) {
            let source: Vec<&str> = FILE_EXTRA.lines().chain(FILE.lines()).chain(LOGREAD.lines()).collect();
            let lines: Vec<String> = picks
                .iter()
                .map(|(i, cut, insert, at)| {
                    let mut bytes = source[i % source.len()].as_bytes().to_vec();
                    bytes.truncate(bytes.len().saturating_sub(*cut % 8));
                    let at = (*at).min(bytes.len());
                    bytes.splice(at..at, insert.bytes());
                    String::from_utf8_lossy(&bytes).into_owned()
                })
                .collect();
            feed_all(&lines);
        }
    }
}
