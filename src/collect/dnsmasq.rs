//! The dnsmasq log source: which answer each LAN client got, read from dnsmasq's query
//! log, for routers where packet capture is off (DESIGN §3 "DNS is exact when it can
//! be"; the replaced system's regex never matched dnsmasq's own format, seed §5.1).
//!
//! ```text
//!  dnsmasq ─ log-facility file, or a syslog file ─► Follower   (notify + 2 s poll; rename
//!                                                   │           and copytruncate rotation;
//!                                                   │           offset kept across restarts)
//!                                                   ▼ complete lines
//!                                                  LineParser  (4 header formats, line kinds)
//!                                                   ▼ Entry
//!                                                  Assembler   (query ↔ answer lines)
//!                                                   ▼ DnsObservation
//!                               writer.try_send(Event::Dns(batch)) — never blocks
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
//!   are attacker-controlled: each goes through [`normalize_name`] (backslashes escaped
//!   first, since the log text is raw, not presentation form).
//! - A TXT record's text is attacker-controlled too and may look like an address:
//!   addresses are kept only when the query type asks for them.
//!
//! Time: dnsmasq's own file and the traditional syslog format write local wall-clock time
//! without a year; see [`LogClock`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, warn};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::dns_name::{normalize_name, qtype_from_name};
use crate::event::Event;
use crate::event::WriterHandle;
use crate::event::{AnswerData, DnsAnswer, DnsObservation, DnsSource, MAX_ANSWERS};

/// How long after an answer's last line the answer counts as complete. dnsmasq writes
/// all lines of one answer in one pass of its event loop (one `write` each), so they
/// arrive microseconds apart; this only covers a read that fell between two of them.
/// Usually the next line (another query or serial) completes an answer sooner.
const ANSWER_IDLE: Duration = Duration::from_millis(500);
/// A query with no answer line after this long is sent unanswered (rcode `None`).
/// dnsmasq drops a forwarded query after 10 s (`TIMEOUT` in its `config.h`).
const UNANSWERED_AFTER: Duration = Duration::from_secs(12);
/// Queries waiting for their answer. A flood of unanswered queries evicts the oldest
/// (counted as drops) instead of growing memory.
const MAX_PENDING: usize = 4096;
/// Longest line accepted (dnsmasq's `MAX_MESSAGE` is 1024); longer ones are skipped.
const MAX_LINE_BYTES: usize = 4096;
/// Observations held while the writer's channel is full; past it the oldest go.
const MAX_OUTBOX: usize = 20_000;
/// Most observations in one `Event::Dns`.
const MAX_PER_EVENT: usize = 2_000;
/// The file is checked this often even without an inotify event (no inotify, a
/// directory that appeared later, a rotated file written in another directory).
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Longest sleep, so the shutdown flag (a plain atomic, no fd) is seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(200);
/// The read offset is written to disk at most this often (and at shutdown).
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// After a rename rotation, the old file is read until it has not grown for this long:
/// dnsmasq writes to it until it gets SIGUSR2 (logrotate's postrotate).
const ROTATED_GRACE: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 64 << 10;
/// Bytes read in one pass before the writer gets what they gave and the shutdown flag
/// is looked at (a large backlog after a restart is read in slices).
const MAX_PASS_BYTES: u64 = 4 << 20;
/// How long shutdown keeps retrying a full channel before giving up.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// Time zones differ from UTC by multiples of 15 minutes.
const ZONE_STEP_S: i64 = 900;
/// Live lines that must agree before the zone correction changes.
const ZONE_CONFIRM_LINES: u32 = 3;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Query types dnsmasq names (its `typestr[]` table) that [`qtype_from_name`] does not.
const MORE_QTYPES: &[(&str, u16)] = &[
    ("MD", 3),
    ("MF", 4),
    ("MB", 7),
    ("MG", 8),
    ("MR", 9),
    ("NULL", 10),
    ("WKS", 11),
    ("HINFO", 13),
    ("MINFO", 14),
    ("RP", 17),
    ("AFSDB", 18),
    ("X25", 19),
    ("ISDN", 20),
    ("RT", 21),
    ("NSAP", 22),
    ("NSAP_PTR", 23),
    ("SIG", 24),
    ("KEY", 25),
    ("PX", 26),
    ("GPOS", 27),
    ("LOC", 29),
    ("NXT", 30),
    ("EID", 31),
    ("NIMLOC", 32),
    ("ATMA", 34),
    ("KX", 36),
    ("CERT", 37),
    ("A6", 38),
    ("DNAME", 39),
    ("SINK", 40),
    ("OPT", 41),
    ("APL", 42),
    ("SSHFP", 44),
    ("IPSECKEY", 45),
    ("RRSIG", 46),
    ("NSEC", 47),
    ("DHCID", 49),
    ("NSEC3", 50),
    ("NSEC3PARAM", 51),
    ("TLSA", 52),
    ("SMIMEA", 53),
    ("HIP", 55),
    ("NINFO", 56),
    ("RKEY", 57),
    ("TALINK", 58),
    ("CDS", 59),
    ("CDNSKEY", 60),
    ("OPENPGPKEY", 61),
    ("CSYNC", 62),
    ("ZONEMD", 63),
    ("SPF", 99),
    ("UINFO", 100),
    ("UID", 101),
    ("GID", 102),
    ("UNSPEC", 103),
    ("NID", 104),
    ("L32", 105),
    ("L64", 106),
    ("LP", 107),
    ("EUI48", 108),
    ("EUI64", 109),
    ("TKEY", 249),
    ("TSIG", 250),
    ("IXFR", 251),
    ("AXFR", 252),
    ("MAILB", 253),
    ("MAILA", 254),
    ("URI", 256),
    ("CAA", 257),
    ("AVC", 258),
    ("DOA", 259),
    ("AMTRELAY", 260),
    ("TA", 32768),
    ("DLV", 32769),
];

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// A line's timestamp as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// Wall-clock time in the writer's zone; no year in the traditional formats.
    Local {
        year: Option<i32>,
        month: u32,
        day: u32,
        hour: u32,
        min: u32,
        sec: u32,
    },
    /// An instant (RFC 3339 with its offset), unix ms.
    Utc(i64),
}

/// The zone local-time stamps are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The C library's local zone: `TZ` if set (a zone name or a POSIX rule such as
    /// `CET-1CEST,M3.5.0,M10.5.0/3`), else `/etc/localtime`.
    System,
    /// A fixed offset east of UTC, seconds (tests).
    Fixed(i64),
}

/// Turns the wall-clock times of log lines into unix time.
///
/// dnsmasq's own file and the traditional syslog format write local time, to the second,
/// without a year; OpenWrt's `logread` adds the year; RFC 3339 carries its offset. A
/// year-less stamp takes the latest year that does not put it in the future (a December
/// line read in January is last year's), and a second-resolution stamp means the start
/// of that second (so an answer never looks later than a flow it preceded).
///
/// The zone is the C library's (`TZ`, else `/etc/localtime`). dnsmasq may run with
/// another `TZ` than netmon (on OpenWrt the zone lives in `/etc/TZ`, and a service only
/// sees it if its init script exports it), which would shift every answer by hours and
/// silently break attribution. So lines read as they are written calibrate the zone:
/// when three in a row are off from now by the same multiple of 15 minutes, that offset
/// is applied to local-time stamps from then on, and logged.
pub struct LogClock {
    zone: Zone,
    /// Seconds added to local-time stamps (see above).
    correction_s: i64,
    /// A different correction seen in live lines, and how many agreed in a row.
    candidate: (i64, u32),
    /// The last conversion (consecutive lines usually share their second).
    last: Option<(Stamp, i64)>,
}

impl LogClock {
    pub fn new(zone: Zone) -> LogClock {
        LogClock {
            zone,
            correction_s: 0,
            candidate: (0, 0),
            last: None,
        }
    }

    /// Unix ms of a stamp; `None` for an impossible date.
    fn unix_ms(&mut self, stamp: Stamp, now_s: i64) -> Option<i64> {
        let (year, month, day, hour, min, sec) = match stamp {
            Stamp::Utc(ms) => return Some(ms),
            Stamp::Local {
                year,
                month,
                day,
                hour,
                min,
                sec,
            } => (year, month, day, hour, min, sec),
        };
        if let Some((s, ms)) = self.last
            && s == stamp
        {
            return Some(ms + self.correction_s * 1000);
        }
        let convert = |y: i32| match self.zone {
            Zone::System => local_to_unix(y, month, day, hour, min, sec),
            Zone::Fixed(off) => utc_to_unix(y, month, day, hour, min, sec).map(|t| t - off),
        };
        let secs = match year {
            Some(y) => convert(y)?,
            None => {
                // The latest year that is not in the future; a day of slack covers
                // clocks and zones that disagree (a January line read on 31 December).
                let y = utc_year(now_s)?;
                [y + 1, y, y - 1]
                    .into_iter()
                    .filter_map(convert)
                    .find(|&t| t <= now_s + 86_400)?
            }
        };
        let ms = secs.checked_mul(1000)?;
        self.last = Some((stamp, ms));
        Some(ms + self.correction_s * 1000)
    }

    /// Learns the zone correction from a line read as it was written: `ts_ms` is what the
    /// line converted to, `now_s` the time it was read.
    fn calibrate(&mut self, ts_ms: i64, now_s: i64) {
        let raw_s = ts_ms.div_euclid(1000) - self.correction_s;
        let off = now_s - raw_s;
        let steps = (off as f64 / ZONE_STEP_S as f64).round() as i64;
        let rounded = steps * ZONE_STEP_S;
        // Only a clear signal: a line read within a minute of a zone boundary, and an
        // offset real zones have (UTC-12 to UTC+14).
        if (off - rounded).abs() > 60 || rounded.abs() > 26 * 3600 || rounded == self.correction_s {
            self.candidate = (0, 0);
            return;
        }
        if self.candidate.0 == rounded {
            self.candidate.1 += 1;
        } else {
            self.candidate = (rounded, 1);
        }
        if self.candidate.1 >= ZONE_CONFIRM_LINES {
            warn!(
                "dnsmasq log: its timestamps are {:+} s off netmon's clock in netmon's time zone; \
                 reading them with that correction. Give netmon the same TZ as dnsmasq \
                 (or log in UTC) to make this unnecessary",
                rounded
            );
            self.correction_s = rounded;
            self.candidate = (0, 0);
        }
    }
}

fn blank_tm() -> libc::tm {
    // SAFETY: `tm` is plain integers and one pointer (`tm_zone`), for which all-zero
    // (null) is a valid value.
    unsafe { std::mem::zeroed() }
}

fn fill_tm(y: i32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<libc::tm> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut tm = blank_tm();
    tm.tm_year = y.checked_sub(1900)?;
    tm.tm_mon = month as i32 - 1;
    tm.tm_mday = day as i32;
    tm.tm_hour = hour as i32;
    tm.tm_min = min as i32;
    tm.tm_sec = sec as i32;
    Some(tm)
}

/// A UTC calendar time as unix seconds (libc `timegm`).
fn utc_to_unix(y: i32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    let mut tm = fill_tm(y, month, day, hour, min, sec)?;
    // SAFETY: `tm` is a valid, initialised struct; timegm only normalises it.
    let t = unsafe { libc::timegm(&mut tm) };
    (t != -1).then_some(t)
}

/// A local calendar time as unix seconds (libc `mktime`, DST decided by the zone).
fn local_to_unix(y: i32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    let mut tm = fill_tm(y, month, day, hour, min, sec)?;
    tm.tm_isdst = -1;
    // SAFETY: as above; mktime reads the process's zone (TZ, /etc/localtime) under
    // glibc's/musl's own lock, and netmon never changes its environment.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t)
}

fn utc_year(now_s: i64) -> Option<i32> {
    let mut tm = blank_tm();
    let t: libc::time_t = now_s;
    // SAFETY: both pointers are valid for the call.
    let ok = unsafe { libc::gmtime_r(&t, &mut tm) };
    (!ok.is_null()).then_some(tm.tm_year + 1900)
}

/// Unix time now, seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

// ---------------------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------------------

/// One query-log line, as the assembler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `query[TYPE] NAME from CLIENT`.
    Query {
        serial: Option<u32>,
        client: IpAddr,
        name: String,
        qtype: u16,
    },
    /// `forwarded NAME to SERVER`: dnsmasq asks upstream (after any partial answer from
    /// its cache, which this replaces).
    Forwarded { serial: Option<u32>, name: String },
    /// One record (or the outcome) of an answer.
    Answer(AnswerLine),
    /// `reply query is duplicate`: this query got the answer just logged for another.
    Duplicate { serial: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerLine {
    pub serial: Option<u32>,
    pub source: AnswerSource,
    /// The record's owner name, canonical.
    pub name: String,
    /// For a line whose owner is an address (a PTR answer): the `in-addr.arpa` /
    /// `ip6.arpa` name the client asked for.
    pub reverse_name: Option<String>,
    pub value: Value,
}

/// Where dnsmasq took an answer from (the line's first word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerSource {
    /// `reply`: from upstream.
    Reply,
    /// `cached`, `cached-stale`.
    Cached,
    /// `config` (`--address`, `--host-record`, local zones, errors).
    Config,
    /// A hosts file (`/etc/hosts`, `--addn-hosts`), named by its path.
    Hosts,
    /// `DHCP`: a lease's host name.
    Dhcp,
    /// `auth`: dnsmasq's authoritative zone.
    Auth,
}

/// What one answer line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Addr(IpAddr),
    /// `<CNAME>`: the next line's owner is the target.
    Cname,
    /// `NXDOMAIN` 3, `SERVFAIL` 2, `REFUSED` 5, `not implemented` 4, or a number.
    Rcode(u16),
    /// `NODATA`, `NODATA-IPv4` (`Some(1)`), `NODATA-IPv6` (`Some(28)`).
    NoData(Option<u16>),
    /// Another record: `<HTTPS>`, `<type=N>` (`Some(type)`), PTR (`Some(12)`), or the
    /// text of a TXT record (`None`).
    Record(Option<u16>),
}

/// What one line of the file was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Entry {
        ts_ms: i64,
        /// The stamp was local wall-clock time (so it can calibrate [`LogClock`]).
        local_time: bool,
        entry: Entry,
    },
    /// Another program's line, a dnsmasq message that is no query-log line, or an empty
    /// line.
    Ignored,
    /// No known header, or a query-log line whose fields do not parse.
    Malformed,
}

/// Parses lines of any of the supported formats (see [`split_header`]).
pub struct LineParser {
    pub clock: LogClock,
}

impl LineParser {
    pub fn new(zone: Zone) -> LineParser {
        LineParser {
            clock: LogClock::new(zone),
        }
    }

    /// One line (without its newline); `now_s` is unix time now, for year-less stamps.
    pub fn parse(&mut self, line: &str, now_s: i64) -> Parsed {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Parsed::Ignored;
        }
        let (stamp, msg) = match split_header(line) {
            Ok(Some(found)) => found,
            Ok(None) => return Parsed::Ignored,
            Err(()) => return Parsed::Malformed,
        };
        let entry = match parse_message(msg) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Parsed::Ignored,
            Err(()) => return Parsed::Malformed,
        };
        let Some(ts_ms) = self.clock.unix_ms(stamp, now_s) else {
            return Parsed::Malformed;
        };
        Parsed::Entry {
            ts_ms,
            local_time: matches!(stamp, Stamp::Local { .. }),
            entry,
        }
    }
}

/// The next space-separated token and what follows it (starting with the space).
fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    if s.is_empty() {
        return None;
    }
    Some(match s.find(' ') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    })
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
}

/// `HH:MM:SS`.
fn parse_hms(t: &str) -> Option<(u32, u32, u32)> {
    let b = t.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?);
    (h < 24 && m < 60 && s <= 60).then_some((h, m, s))
}

fn month_number(t: &str) -> Option<u32> {
    MONTHS.iter().position(|m| *m == t).map(|i| i as u32 + 1)
}

/// `2026-11-24T22:03:18[.123456](Z|±HH:MM|±HHMM)` as unix ms.
fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let year = digits(&b[0..4])? as i32;
    let (month, day) = (digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, m, s) = parse_hms(std::str::from_utf8(&b[11..19]).ok()?)?;
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        for k in 0..3 {
            let d = if start + k < i {
                b[start + k] - b'0'
            } else {
                0
            };
            ms = ms * 10 + i64::from(d);
        }
    }
    let offset_s = match &b[i..] {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (hh, mm) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)
                }
                _ => return None,
            };
            let off = i64::from(hh * 3600 + mm * 60);
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let secs = utc_to_unix(year, month, day, h, m, s)? - offset_s;
    Some(secs * 1000 + ms)
}

/// Strips a raw syslog priority (`<30>`), as in the datagrams dnsmasq sends to /dev/log.
fn strip_priority(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix('<')
        && let Some((pri, after)) = rest.split_once('>')
        && (1..=3).contains(&pri.len())
        && pri.bytes().all(|b| b.is_ascii_digit())
    {
        return after;
    }
    line
}

/// The timestamp and dnsmasq's message of a line in any supported format:
///
/// ```text
/// Nov 24 22:03:18 dnsmasq[21069]: MSG                          dnsmasq's log-facility file
/// Nov 24 22:03:18 HOST dnsmasq[123]: MSG                       rsyslog/syslog-ng traditional
/// 2026-11-24T22:03:18.123456+00:00 HOST dnsmasq[123]: MSG      RFC 3339 (rsyslog's default)
/// Tue Nov 24 22:03:18 2026 daemon.info dnsmasq[123]: MSG       OpenWrt logread
/// <30>Nov 24 22:03:18 dnsmasq[123]: MSG                        a raw /dev/log datagram
/// ```
///
/// (The day is space-padded: `Nov  4`.) `Ok(None)`: a well-formed line of another
/// program (or of `dnsmasq-dhcp`); `Err`: no known header.
fn split_header(line: &str) -> Result<Option<(Stamp, &str)>, ()> {
    let rest = strip_priority(line);
    let (first, mut rest) = token(rest).ok_or(())?;
    let stamp = if first.len() >= 20 && first.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
        Stamp::Utc(parse_rfc3339(first).ok_or(())?)
    } else {
        // Traditional, with a weekday in front and the year after for logread.
        let with_weekday = WEEKDAYS.contains(&first);
        let month_token = if with_weekday {
            let (m, r) = token(rest).ok_or(())?;
            rest = r;
            m
        } else {
            first
        };
        let month = month_number(month_token).ok_or(())?;
        let (day, r) = token(rest).ok_or(())?;
        let day = digits(day.as_bytes()).ok_or(())?;
        let (time, r) = token(r).ok_or(())?;
        let (hour, min, sec) = parse_hms(time).ok_or(())?;
        rest = r;
        let year = if with_weekday {
            let (y, r) = token(rest).ok_or(())?;
            rest = r;
            if y.len() != 4 {
                return Err(());
            }
            Some(digits(y.as_bytes()).ok_or(())? as i32)
        } else {
            None
        };
        Stamp::Local {
            year,
            month,
            day,
            hour,
            min,
            sec,
        }
    };
    // The program tag comes first (dnsmasq's file) or after one word: the host name
    // (syslog) or the facility.level (logread).
    for _ in 0..2 {
        let Some((word, r)) = token(rest) else {
            return Ok(None);
        };
        if let Some(tag) = word.strip_suffix(':') {
            let program = tag.split_once('[').map_or(tag, |(p, _)| p);
            if program != "dnsmasq" {
                return Ok(None);
            }
            return Ok(Some((stamp, r.strip_prefix(' ').unwrap_or(r))));
        }
        rest = r;
    }
    Ok(None)
}

/// The query-log sources, for telling a `log-queries=extra` serial from a message.
fn is_source(word: &str) -> bool {
    word.starts_with("query[")
        || word.starts_with('/')
        || word.starts_with("dnssec-query[")
        || matches!(
            word,
            "forwarded"
                | "reply"
                | "cached"
                | "cached-stale"
                | "config"
                | "DHCP"
                | "auth"
                | "validation"
                | "ipset"
                | "nftset"
        )
}

/// Splits off the `log-queries=extra` prefix: `SERIAL CLIENT/PORT ` (or `SERIAL ` alone
/// on the few lines dnsmasq logs without the client).
fn strip_extra(msg: &str) -> (Option<u32>, &str) {
    let Some((first, rest)) = token(msg) else {
        return (None, msg);
    };
    let serial = match first.parse::<u32>() {
        Ok(n) if first.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return (None, msg),
    };
    let Some((second, after)) = token(rest) else {
        return (None, msg);
    };
    if let Some((addr, port)) = second.rsplit_once('/')
        && parse_ip(addr).is_some()
        && digits(port.as_bytes()).is_some()
    {
        return (Some(serial), after.strip_prefix(' ').unwrap_or(after));
    }
    if is_source(second) {
        return (Some(serial), rest.strip_prefix(' ').unwrap_or(rest));
    }
    (None, msg)
}

/// An address as dnsmasq prints it (a link-local one may carry `%scope`).
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.split_once('%').map_or(s, |(a, _)| a);
    s.parse().ok()
}

fn parse_qtype(t: &str) -> Option<u16> {
    if let Some(n) = t.strip_prefix("type=") {
        return n.parse().ok();
    }
    qtype_from_name(t).or_else(|| {
        MORE_QTYPES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
            .map(|&(_, n)| n)
    })
}

/// A name read from a log line, canonical. The log writes label bytes raw (`\` is a
/// byte, not an escape), so backslashes are escaped before [`normalize_name`] reads the
/// text as presentation form.
fn log_name(text: &str) -> String {
    if text.contains('\\') {
        normalize_name(&text.replace('\\', "\\\\"))
    } else {
        normalize_name(text)
    }
}

/// The reverse-lookup name of an address (`84.113.0.203.in-addr.arpa`).
fn reverse_name(ip: IpAddr) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match ip {
        IpAddr::V4(v4) => {
            for b in v4.octets().iter().rev() {
                let _ = write!(out, "{b}.");
            }
            out.push_str("in-addr.arpa");
        }
        IpAddr::V6(v6) => {
            for b in v6.octets().iter().rev() {
                let _ = write!(out, "{:x}.{:x}.", b & 0xf, b >> 4);
            }
            out.push_str("ip6.arpa");
        }
    }
    out
}

/// The DEST of an answer line; `None` for free text (a TXT record, a PTR target).
fn classify(dest: &str) -> Option<Value> {
    if let Some(ip) = parse_ip(dest) {
        return Some(Value::Addr(ip));
    }
    Some(match dest {
        "<CNAME>" => Value::Cname,
        "NXDOMAIN" => Value::Rcode(3),
        "SERVFAIL" => Value::Rcode(2),
        "REFUSED" => Value::Rcode(5),
        "not implemented" => Value::Rcode(4),
        "NODATA" => Value::NoData(None),
        "NODATA-IPv4" => Value::NoData(Some(1)),
        "NODATA-IPv6" => Value::NoData(Some(28)),
        _ => {
            if let Some(t) = dest.strip_prefix('<').and_then(|d| d.strip_suffix('>')) {
                return parse_qtype(t).map(|t| Value::Record(Some(t)));
            }
            return dest.parse().ok().map(Value::Rcode);
        }
    })
}

/// `NAME is DEST[ (EXTRA)]` of an answer line.
fn parse_answer(serial: Option<u32>, source: AnswerSource, rest: &str) -> Option<AnswerLine> {
    let mut rest = rest;
    if rest.ends_with(')')
        && let Some(i) = rest.rfind(" (EDE: ")
    {
        rest = &rest[..i];
    }
    if let Some(r) = rest.strip_suffix(" (DNSSEC signed)") {
        rest = r;
    }
    // A PTR answer: the owner is an address (no spaces), the target any name.
    if let Some((owner, dest)) = rest.split_once(" is ")
        && let Some(ip) = parse_ip(owner)
    {
        let (name, reverse, value) = match classify(dest) {
            Some(value) => (log_name(owner), Some(reverse_name(ip)), value),
            None => (reverse_name(ip), None, Value::Record(Some(12))),
        };
        return Some(AnswerLine {
            serial,
            source,
            name,
            reverse_name: reverse,
            value,
        });
    }
    let (name, dest) = rest.rsplit_once(" is ")?;
    Some(AnswerLine {
        serial,
        source,
        name: log_name(name),
        reverse_name: None,
        value: classify(dest).unwrap_or(Value::Record(None)),
    })
}

/// The message after the program tag. `Ok(None)`: not a query-log line.
fn parse_message(msg: &str) -> Result<Option<Entry>, ()> {
    let (serial, body) = strip_extra(msg);
    let Some((source, rest)) = token(body) else {
        return Ok(None);
    };
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    if let Some(t) = source.strip_prefix("query[") {
        let qtype = t.strip_suffix(']').and_then(parse_qtype).ok_or(())?;
        let (name, client) = rest.rsplit_once(" from ").ok_or(())?;
        let client = parse_ip(client).ok_or(())?;
        return Ok(Some(Entry::Query {
            serial,
            client,
            name: log_name(name),
            qtype,
        }));
    }
    let answer_source = match source {
        "forwarded" => {
            let (name, _server) = rest.rsplit_once(" to ").ok_or(())?;
            return Ok(Some(Entry::Forwarded {
                serial,
                name: log_name(name),
            }));
        }
        "reply" if rest == "query is duplicate" => {
            return Ok(serial.map(|serial| Entry::Duplicate { serial }));
        }
        "reply" => AnswerSource::Reply,
        "cached" | "cached-stale" => AnswerSource::Cached,
        "config" => AnswerSource::Config,
        "DHCP" => AnswerSource::Dhcp,
        "auth" => AnswerSource::Auth,
        s if s.starts_with('/') => {
            // A hosts file; a message that merely starts with a path is not an error.
            return Ok(parse_answer(serial, AnswerSource::Hosts, rest).map(Entry::Answer));
        }
        _ => return Ok(None),
    };
    parse_answer(serial, answer_source, rest)
        .map(|a| Some(Entry::Answer(a)))
        .ok_or(())
}

// ---------------------------------------------------------------------------------------
// Assembling answers
// ---------------------------------------------------------------------------------------

/// Which queries an answer fits, from its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    Any,
    Type(u16),
    /// A record that is neither A nor AAAA (plain `NODATA`, TXT text).
    NotAddr,
}

impl Hint {
    fn of(value: Value) -> Hint {
        match value {
            Value::Addr(IpAddr::V4(_)) => Hint::Type(1),
            Value::Addr(IpAddr::V6(_)) => Hint::Type(28),
            Value::NoData(Some(t)) | Value::Record(Some(t)) => Hint::Type(t),
            Value::NoData(None) | Value::Record(None) => Hint::NotAddr,
            Value::Cname | Value::Rcode(_) => Hint::Any,
        }
    }

    fn fits(self, qtype: u16) -> bool {
        match self {
            Hint::Any => true,
            Hint::Type(t) => qtype == t || qtype == 255,
            Hint::NotAddr => qtype != 1 && qtype != 28,
        }
    }
}

/// A query seen, waiting for its answer.
#[derive(Debug)]
struct Pending {
    serial: Option<u32>,
    client: IpAddr,
    qname: String,
    qtype: u16,
    ts_ms: i64,
    seen: Instant,
    /// A `forwarded` line belongs to it (so it will get its own `reply` lines).
    forwarded: bool,
}

/// The lines of one answer, collected until the answer is complete.
#[derive(Debug)]
struct Group {
    serial: Option<u32>,
    source: AnswerSource,
    /// The first line's owner (the name asked for, or the PTR address) and its reverse name.
    name: String,
    reverse_name: Option<String>,
    ts_ms: i64,
    rcode: Option<u16>,
    answers: Vec<DnsAnswer>,
    /// The owner of a `<CNAME>` line, waiting for the next line to name the target.
    cname_from: Option<String>,
    last_name: String,
    last_hint: Hint,
    hint: Hint,
    last_line: Instant,
    /// The pending query whose line came just before this answer (for `error` lines).
    after: Option<u64>,
}

impl Group {
    fn continues_with(&self, line: &AnswerLine) -> bool {
        match (self.serial, line.serial) {
            (Some(a), Some(b)) => a == b,
            (None, None) => {
                line.source == self.source
                    && (self.cname_from.is_some()
                        || (line.name == self.last_name
                            && Hint::of(line.value) == self.last_hint
                            && matches!(line.value, Value::Addr(_) | Value::Record(_))))
            }
            _ => false,
        }
    }

    /// Adds a line; false when the answer is already at [`MAX_ANSWERS`].
    fn add(&mut self, line: &AnswerLine, now: Instant) -> bool {
        let mut kept = true;
        let mut push = |answers: &mut Vec<DnsAnswer>, answer: DnsAnswer| {
            if answers.len() < MAX_ANSWERS {
                answers.push(answer);
            } else {
                kept = false;
            }
        };
        if let Some(from) = self.cname_from.take() {
            let answer = DnsAnswer {
                name: from,
                ttl: None,
                data: AnswerData::Cname(line.name.clone()),
            };
            push(&mut self.answers, answer);
        }
        match line.value {
            Value::Addr(ip) => {
                let answer = DnsAnswer {
                    name: line.name.clone(),
                    ttl: None,
                    data: AnswerData::Addr(ip),
                };
                push(&mut self.answers, answer);
                self.rcode.get_or_insert(0);
            }
            Value::Cname => {
                self.cname_from = Some(line.name.clone());
                self.rcode.get_or_insert(0);
            }
            Value::Rcode(r) => self.rcode = Some(r),
            Value::NoData(_) | Value::Record(_) => {
                self.rcode.get_or_insert(0);
            }
        }
        let hint = Hint::of(line.value);
        if hint != Hint::Any {
            self.hint = hint;
        }
        self.last_hint = hint;
        self.last_name = line.name.clone();
        self.last_line = now;
        kept
    }
}

/// What the assembler counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AssemblerStats {
    pub observations: u64,
    /// Answers that matched no pending query (asked before netmon read the log, or a
    /// line lost to rotation).
    pub unmatched: u64,
    /// Pending queries evicted by a flood ([`MAX_PENDING`]) and records past [`MAX_ANSWERS`].
    pub dropped: u64,
}

/// Turns query-log entries into observations: one per query, with its answer.
///
/// An answer is complete when a line that does not continue it arrives (another serial,
/// another query), or [`ANSWER_IDLE`] after its last line ([`Assembler::tick`]). A query
/// without an answer is emitted unanswered after [`UNANSWERED_AFTER`].
#[derive(Default)]
pub struct Assembler {
    next_seq: u64,
    /// By arrival (so the first is the oldest).
    pending: BTreeMap<u64, Pending>,
    by_serial: HashMap<u32, u64>,
    by_name: HashMap<String, Vec<u64>>,
    open: Option<Group>,
    /// The pending query the previous line belonged to (query or forwarded line).
    last_touched: Option<u64>,
    /// The last answer emitted, for `reply query is duplicate`.
    last_answer: Option<DnsObservation>,
    /// Observations completed, oldest first, for the caller to take.
    pub ready: Vec<DnsObservation>,
    pub stats: AssemblerStats,
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// One entry, in log order; `ts_ms` is its line's time, `now` when it was read.
    pub fn push(&mut self, ts_ms: i64, entry: Entry, now: Instant) {
        match entry {
            Entry::Query {
                serial,
                client,
                name,
                qtype,
            } => {
                self.close_open();
                if let Some(s) = serial
                    && let Some(&old) = self.by_serial.get(&s)
                {
                    // The serial restarted (dnsmasq restarted): the old query is done.
                    self.emit_unanswered(old);
                }
                if self.pending.len() >= MAX_PENDING
                    && let Some((&oldest, _)) = self.pending.first_key_value()
                {
                    self.take(oldest);
                    self.stats.dropped += 1;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                if let Some(s) = serial {
                    self.by_serial.insert(s, seq);
                }
                self.by_name.entry(name.clone()).or_default().push(seq);
                self.pending.insert(
                    seq,
                    Pending {
                        serial,
                        client,
                        qname: name,
                        qtype,
                        ts_ms,
                        seen: now,
                        forwarded: false,
                    },
                );
                self.last_touched = Some(seq);
            }
            Entry::Forwarded { serial, name } => {
                // A partial answer from the cache (a CNAME whose target expired) is
                // replaced by what upstream says.
                let cancels = self
                    .open
                    .as_ref()
                    .is_some_and(|g| match (g.serial, serial) {
                        (Some(a), Some(b)) => a == b,
                        (None, None) => g.name == name,
                        _ => false,
                    });
                if cancels {
                    self.open = None;
                } else {
                    self.close_open();
                }
                let seq = match serial {
                    Some(s) => self.by_serial.get(&s).copied(),
                    None => self.by_name.get(&name).and_then(|v| v.last().copied()),
                };
                if let Some(p) = seq.and_then(|s| self.pending.get_mut(&s)) {
                    p.forwarded = true;
                }
                self.last_touched = seq;
            }
            Entry::Answer(line) => {
                if let Some(g) = self.open.as_mut()
                    && g.continues_with(&line)
                {
                    if !g.add(&line, now) {
                        self.stats.dropped += 1;
                    }
                    return;
                }
                self.close_open();
                let mut group = Group {
                    serial: line.serial,
                    source: line.source,
                    name: line.name.clone(),
                    reverse_name: line.reverse_name.clone(),
                    ts_ms,
                    rcode: None,
                    answers: Vec::new(),
                    cname_from: None,
                    last_name: String::new(),
                    last_hint: Hint::Any,
                    hint: Hint::Any,
                    last_line: now,
                    after: self.last_touched.take(),
                };
                group.add(&line, now);
                self.open = Some(group);
            }
            Entry::Duplicate { serial } => {
                self.close_open();
                let Some(&seq) = self.by_serial.get(&serial) else {
                    return; // already given the answer when it was logged
                };
                let fits = match (self.last_answer.as_ref(), self.pending.get(&seq)) {
                    (Some(a), Some(p)) => a.qname == p.qname && a.qtype == p.qtype,
                    _ => false,
                };
                if fits
                    && let Some(p) = self.take(seq)
                    && let Some(answer) = self.last_answer.clone()
                {
                    self.emit(DnsObservation {
                        client: p.client,
                        ..answer
                    });
                }
            }
        }
    }

    /// Completes what waited long enough: an idle answer, unanswered queries.
    pub fn tick(&mut self, now: Instant) {
        if self
            .open
            .as_ref()
            .is_some_and(|g| now.duration_since(g.last_line) >= ANSWER_IDLE)
        {
            self.close_open();
        }
        while let Some((&seq, p)) = self.pending.first_key_value() {
            if now.duration_since(p.seen) < UNANSWERED_AFTER {
                break;
            }
            self.emit_unanswered(seq);
        }
    }

    /// When [`Assembler::tick`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let open = self.open.as_ref().map(|g| g.last_line + ANSWER_IDLE);
        let pending = self
            .pending
            .first_key_value()
            .map(|(_, p)| p.seen + UNANSWERED_AFTER);
        open.into_iter().chain(pending).min()
    }

    /// At shutdown: the open answer completes, every pending query goes unanswered (its
    /// answer, if it comes, is logged after the offset netmon resumes from).
    pub fn finish(&mut self) {
        self.close_open();
        while let Some((&seq, _)) = self.pending.first_key_value() {
            self.emit_unanswered(seq);
        }
    }

    /// Removes a pending query from every index.
    fn take(&mut self, seq: u64) -> Option<Pending> {
        let p = self.pending.remove(&seq)?;
        if let Some(s) = p.serial
            && self.by_serial.get(&s) == Some(&seq)
        {
            self.by_serial.remove(&s);
        }
        if let Some(v) = self.by_name.get_mut(&p.qname) {
            v.retain(|&s| s != seq);
            if v.is_empty() {
                self.by_name.remove(&p.qname);
            }
        }
        if self.last_touched == Some(seq) {
            self.last_touched = None;
        }
        Some(p)
    }

    fn emit(&mut self, obs: DnsObservation) {
        self.stats.observations += 1;
        self.ready.push(obs);
    }

    fn emit_unanswered(&mut self, seq: u64) {
        if let Some(p) = self.take(seq) {
            self.emit(DnsObservation {
                ts_ms: p.ts_ms,
                client: p.client,
                qname: p.qname,
                qtype: p.qtype,
                rcode: None,
                answers: Vec::new(),
                source: DnsSource::Log,
            });
        }
    }

    /// The pending query an answer without a serial belongs to: the most recent one of
    /// its name whose type fits the records; for an `error` line, the query whose line
    /// came just before.
    fn select(&self, g: &Group) -> Option<u64> {
        let names = std::iter::once(&g.name).chain(g.reverse_name.as_ref());
        let candidates: Vec<u64> = names
            .filter_map(|n| self.by_name.get(n))
            .flatten()
            .copied()
            .collect();
        if candidates.is_empty() {
            return if g.name == "error" && g.rcode.is_some_and(|r| r != 0) {
                g.after.filter(|s| self.pending.contains_key(s))
            } else {
                None
            };
        }
        let fits = |s: &&u64| self.pending.get(s).is_some_and(|p| g.hint.fits(p.qtype));
        candidates
            .iter()
            .filter(fits)
            .max()
            .or_else(|| candidates.iter().max())
            .copied()
    }

    fn close_open(&mut self) {
        let Some(g) = self.open.take() else { return };
        let seq = match g.serial {
            Some(s) => self.by_serial.get(&s).copied(),
            None => self.select(&g),
        };
        let Some(p) = seq.and_then(|s| self.take(s)) else {
            self.stats.unmatched += 1;
            return;
        };
        let obs = observation(&p, &g);
        if g.source == AnswerSource::Reply {
            // Queries that joined this one's forward got the same answer (see module docs).
            let same: Vec<u64> = self
                .by_name
                .get(&p.qname)
                .into_iter()
                .flatten()
                .copied()
                .filter(|s| {
                    self.pending
                        .get(s)
                        .is_some_and(|q| q.qtype == p.qtype && (q.serial.is_none() || !q.forwarded))
                })
                .collect();
            for s in same {
                if let Some(q) = self.take(s) {
                    self.emit(DnsObservation {
                        client: q.client,
                        ..obs.clone()
                    });
                }
            }
        }
        self.last_answer = Some(obs.clone());
        self.emit(obs);
    }
}

/// The observation of query `p` answered by `g`. Addresses are kept only for the type
/// asked (a TXT record's text can look like an address).
fn observation(p: &Pending, g: &Group) -> DnsObservation {
    let answers = g
        .answers
        .iter()
        .filter(|a| match a.data {
            AnswerData::Addr(IpAddr::V4(_)) => p.qtype == 1 || p.qtype == 255,
            AnswerData::Addr(IpAddr::V6(_)) => p.qtype == 28 || p.qtype == 255,
            AnswerData::Cname(_) => true,
        })
        .cloned()
        .collect();
    DnsObservation {
        ts_ms: g.ts_ms,
        client: p.client,
        qname: p.qname.clone(),
        qtype: p.qtype,
        rcode: Some(g.rcode.unwrap_or(0)),
        answers,
        source: DnsSource::Log,
    }
}

// ---------------------------------------------------------------------------------------
// Following the file
// ---------------------------------------------------------------------------------------

/// Where reading stopped, kept next to the database (`<db_path>.dnsmasq-offset`) so a
/// restart neither re-reads nor skips lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedOffset {
    /// The log file it belongs to (a changed `log_file` starts afresh).
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Start of the first line not yet read completely.
    offset: u64,
}

/// Where the first open of the file starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resume {
    /// The saved offset if it is the same file; the start of a different one (the old
    /// one was rotated away while netmon was down).
    Saved(SavedOffset),
    /// The first start ever: history is not read, only what dnsmasq writes from now on.
    AtEnd,
    /// A file that appeared while netmon runs is new: all of it.
    FromStart,
}

/// One open log file being read.
struct Tail {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes read so far (complete lines plus `partial`).
    offset: u64,
    /// The incomplete last line, kept until its newline arrives.
    partial: Vec<u8>,
    /// Inside a line too long to keep: bytes are dropped up to the next newline.
    skipping: bool,
    /// Lines ending at or before this offset were written before this run started
    /// reading (they must not calibrate the clock).
    backlog_end: u64,
    last_growth: Instant,
}

impl Tail {
    /// The offset to persist: the start of the incomplete line.
    fn consumed(&self) -> u64 {
        self.offset - self.partial.len() as u64
    }
}

/// What the follower counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FollowStats {
    pub rotations_rename: u64,
    pub rotations_truncate: u64,
    /// Lines over [`MAX_LINE_BYTES`] and incomplete lines a rotated file ended with.
    pub broken_lines: u64,
    /// Times the file disappeared from its path (deleted, or its directory removed).
    pub vanished: u64,
}

/// Follows one log file by path: reads what is appended, keeps a partial last line until
/// it is complete, and follows the file when it is replaced (rename rotation: the old
/// file is read to its end, and a while longer, then the new one from its start),
/// truncated (copytruncate: it shrank, so read it from the start), or gone (keep reading
/// the open file until a new one appears). Line order is the file's.
pub struct Follower {
    path: PathBuf,
    state_path: Option<PathBuf>,
    current: Option<Tail>,
    /// The previous file after a rename rotation, read until [`ROTATED_GRACE`] passes
    /// without growth.
    rotated: Option<Tail>,
    resume: Resume,
    saved: Option<SavedOffset>,
    last_save: Option<Instant>,
    warned_missing: bool,
    warned_state: bool,
    /// The path named no file at the last check (counted once per disappearance).
    gone: bool,
    buf: Vec<u8>,
    pub stats: FollowStats,
}

impl Follower {
    /// `state_path`: where the offset is kept (`None`: never persisted, always starts at
    /// the end of an existing file).
    pub fn new(path: PathBuf, state_path: Option<PathBuf>) -> Follower {
        let mut warned_state = false;
        let resume = match state_path.as_deref().map(std::fs::read_to_string) {
            Some(Ok(text)) => match serde_json::from_str::<SavedOffset>(&text) {
                Ok(saved) if saved.path == path => Resume::Saved(saved),
                Ok(_) => Resume::AtEnd,
                Err(e) => {
                    warn!(
                        "dnsmasq log: ignoring the unreadable offset file {}: {e}; \
                         starting at the end of {}",
                        state_path.as_deref().unwrap_or(Path::new("")).display(),
                        path.display()
                    );
                    warned_state = true;
                    Resume::AtEnd
                }
            },
            _ => Resume::AtEnd,
        };
        Follower {
            path,
            state_path,
            current: None,
            rotated: None,
            resume,
            saved: None,
            last_save: None,
            warned_missing: false,
            warned_state,
            gone: false,
            buf: vec![0; READ_CHUNK],
            stats: FollowStats::default(),
        }
    }

    /// Reads what is new; `sink` gets each complete line (without its newline) and
    /// whether it was written after this run started reading. Returns true when more is
    /// left to read (a pass reads at most [`MAX_PASS_BYTES`]).
    pub fn poll(&mut self, now: Instant, sink: &mut dyn FnMut(&[u8], bool)) -> bool {
        let mut budget = MAX_PASS_BYTES;
        if let Some(old) = self.rotated.as_mut() {
            read_tail(old, &mut self.buf, &mut budget, now, sink, &mut self.stats);
            if now.duration_since(old.last_growth) >= ROTATED_GRACE {
                self.drop_rotated();
            }
        }
        if self.current.is_none() {
            self.open_current(now);
        }
        let Some(cur) = self.current.as_mut() else {
            return false;
        };
        let found = std::fs::metadata(&self.path);
        if found.is_ok() {
            self.gone = false;
        }
        match found {
            Ok(m) if (m.dev(), m.ino()) != (cur.dev, cur.ino) => {
                // Replaced (rename rotation): finish the old file first.
                info!(
                    "dnsmasq log: {} was replaced (rotation); reading the new file from its start",
                    self.path.display()
                );
                self.stats.rotations_rename += 1;
                let mut unlimited = u64::MAX;
                if let Some(mut older) = self.rotated.take() {
                    read_tail(
                        &mut older,
                        &mut self.buf,
                        &mut unlimited,
                        now,
                        sink,
                        &mut self.stats,
                    );
                    self.rotated = Some(older);
                    self.drop_rotated();
                }
                // Its lines come before the new file's; dnsmasq may add a few more
                // until it reopens (SIGUSR2), read on the next passes.
                if let Some(mut old) = self.current.take() {
                    // Its grace period starts now, whenever it last grew.
                    old.last_growth = now;
                    read_tail(
                        &mut old,
                        &mut self.buf,
                        &mut unlimited,
                        now,
                        sink,
                        &mut self.stats,
                    );
                    self.rotated = Some(old);
                }
                self.resume = Resume::FromStart;
                self.open_current(now);
            }
            Ok(_) => match cur.file.metadata() {
                Ok(m) if m.len() < cur.offset => {
                    info!(
                        "dnsmasq log: {} shrank (copytruncate rotation); reading it from its start",
                        self.path.display()
                    );
                    self.stats.rotations_truncate += 1;
                    cur.offset = 0;
                    cur.backlog_end = 0;
                    cur.skipping = false;
                    if !cur.partial.is_empty() {
                        cur.partial.clear();
                        self.stats.broken_lines += 1;
                    }
                }
                _ => {}
            },
            // Renamed away or deleted: dnsmasq may still write to the open file, which is
            // read on; a new file at the path is followed from its start (the branch
            // above) as soon as it appears.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.gone {
                    self.gone = true;
                    self.stats.vanished += 1;
                    info!(
                        "dnsmasq log: {} is gone; reading the open file on until a new one appears",
                        self.path.display()
                    );
                }
            }
            Err(e) => debug!("dnsmasq log: stat {}: {e}", self.path.display()),
        }
        let Some(cur) = self.current.as_mut() else {
            return false;
        };
        read_tail(cur, &mut self.buf, &mut budget, now, sink, &mut self.stats)
    }

    fn drop_rotated(&mut self) {
        if let Some(old) = self.rotated.take()
            && !old.partial.is_empty()
        {
            self.stats.broken_lines += 1;
        }
    }

    fn open_current(&mut self, now: Instant) {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                if !self.warned_missing {
                    warn!(
                        "dnsmasq log: cannot open {} ({e}); waiting for it. Does dnsmasq run \
                         with log-queries and log-facility={} (OpenWrt: uci set \
                         dhcp.@dnsmasq[0].logqueries=1, dhcp.@dnsmasq[0].logfacility=...)?",
                        self.path.display(),
                        self.path.display()
                    );
                    self.warned_missing = true;
                }
                // Whatever appears later was written after now.
                self.resume = Resume::FromStart;
                return;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                warn!("dnsmasq log: stat {}: {e}", self.path.display());
                return;
            }
        };
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());
        let mut skipping = false;
        let (offset, backlog_end) = match &self.resume {
            Resume::Saved(s) if s.dev == dev && s.ino == ino && s.offset <= size => {
                info!(
                    "dnsmasq log: following {} from offset {} (where the last run stopped)",
                    self.path.display(),
                    s.offset
                );
                (s.offset, size)
            }
            Resume::Saved(_) => {
                info!(
                    "dnsmasq log: following {} from its start (a new file since the last run)",
                    self.path.display()
                );
                (0, size)
            }
            Resume::AtEnd => {
                info!(
                    "dnsmasq log: following {} from its end (first start: history is not read)",
                    self.path.display()
                );
                // Mid-line? Then the rest of that line is not a line.
                let mut last = [0u8; 1];
                if size > 0 && file.read_at(&mut last, size - 1).is_ok_and(|n| n == 1) {
                    skipping = last[0] != b'\n';
                }
                (size, size)
            }
            Resume::FromStart => (0, 0),
        };
        self.warned_missing = false;
        self.resume = Resume::FromStart;
        self.current = Some(Tail {
            file,
            dev,
            ino,
            offset,
            partial: Vec::new(),
            skipping,
            backlog_end,
            last_growth: now,
        });
    }

    /// Writes the offset (atomically: temp file + rename) when it changed, at most every
    /// [`STATE_SAVE_INTERVAL`] unless `force`.
    pub fn save_state(&mut self, now: Instant, force: bool) {
        let (Some(state_path), Some(cur)) = (self.state_path.as_ref(), self.current.as_ref())
        else {
            return;
        };
        let state = SavedOffset {
            path: self.path.clone(),
            dev: cur.dev,
            ino: cur.ino,
            offset: cur.consumed(),
        };
        if self.saved.as_ref() == Some(&state)
            || (!force
                && self
                    .last_save
                    .is_some_and(|t| now.duration_since(t) < STATE_SAVE_INTERVAL))
        {
            return;
        }
        self.last_save = Some(now);
        let tmp = state_path.with_extension("dnsmasq-offset.tmp");
        let result = serde_json::to_vec(&state)
            .map_err(io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, state_path));
        match result {
            Ok(()) => {
                self.saved = Some(state);
                self.warned_state = false;
            }
            Err(e) if !self.warned_state => {
                warn!(
                    "dnsmasq log: cannot save the read offset to {}: {e}; after a restart \
                     netmon starts at the end of the log",
                    state_path.display()
                );
                self.warned_state = true;
            }
            Err(_) => {}
        }
    }
}

/// Reads `t` from its offset to the end (or until `budget` is spent), handing complete
/// lines to `sink`. True when the budget ran out first.
fn read_tail(
    t: &mut Tail,
    buf: &mut [u8],
    budget: &mut u64,
    now: Instant,
    sink: &mut dyn FnMut(&[u8], bool),
    stats: &mut FollowStats,
) -> bool {
    loop {
        if *budget == 0 {
            return true;
        }
        let want = buf
            .len()
            .min(usize::try_from(*budget).unwrap_or(usize::MAX));
        let n = match t.file.read_at(&mut buf[..want], t.offset) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!("dnsmasq log: read: {e}");
                return false;
            }
        };
        let start = t.offset;
        t.offset += n as u64;
        *budget = budget.saturating_sub(n as u64);
        t.last_growth = now;
        let mut data = &buf[..n];
        let mut pos = start;
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            pos += i as u64 + 1;
            let live = pos > t.backlog_end;
            if t.skipping {
                t.skipping = false;
            } else if t.partial.is_empty() {
                sink(&data[..i], live);
            } else {
                t.partial.extend_from_slice(&data[..i]);
                sink(&t.partial, live);
                t.partial.clear();
            }
            data = &data[i + 1..];
        }
        if !t.skipping {
            t.partial.extend_from_slice(data);
            if t.partial.len() > MAX_LINE_BYTES {
                t.partial.clear();
                t.skipping = true;
                stats.broken_lines += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The collector thread
// ---------------------------------------------------------------------------------------

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
        if !self.warned_no_queries && self.stats.parsed == 0 && self.stats.ignored >= 500 {
            warn!(
                "dnsmasq log: {} lines and not one DNS query in {}: does dnsmasq run with \
                 log-queries (OpenWrt: uci set dhcp.@dnsmasq[0].logqueries=1)?",
                self.stats.ignored,
                self.follower.path.display()
            );
            self.warned_no_queries = true;
        }
        more
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
    pub fn start(
        config: &Config,
        writer: WriterHandle,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<DnsmasqLogCollector> {
        describe_metrics();
        let path = config.dns.log_file.clone();
        let state_path = config.db_path.with_extension("dnsmasq-offset");
        let follower = Follower::new(path, Some(state_path));
        let source = LogSource::new(follower, Zone::System);
        let thread = std::thread::Builder::new()
            // Thread names are cut at 15 bytes.
            .name("netmon-dnslog".into())
            .spawn(move || run(source, writer, &shutdown))?;
        Ok(DnsmasqLogCollector { thread })
    }

    /// Waits for the thread after `shutdown` was set; it has flushed what it read.
    pub fn join(self) {
        if self.thread.join().is_err() {
            error!("dnsmasq log: the follower thread panicked");
        }
    }
}

fn run(mut source: LogSource, writer: WriterHandle, shutdown: &AtomicBool) {
    let metrics = Metrics::new();
    let (wake_tx, wake_rx) = sync_channel::<()>(1);
    let mut watch =
        crate::collect::FileWatch::new(&source.follower.path, wake_tx.clone(), "dnsmasq log");
    info!(
        "dnsmasq log: reading {} ({})",
        source.follower.path.display(),
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

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

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
    use std::io::Write;
    use std::sync::atomic::AtomicUsize;

    /// 2026-11-24T22:40:00Z, a few minutes after the fixtures were captured.
    const NOW_S: i64 = 1_795_560_000;
    /// The capture window (22:34–22:38 UTC; the lab's clock ran in UTC).
    const WINDOW_MS: std::ops::Range<i64> = 1_795_559_640_000..1_795_559_880_000;
    const C1: &str = "10.77.0.10";
    const C2: &str = "10.77.0.11";

    // Real captures from the lab: see fixtures/dnsmasq/README.md.
    const FILE_EXTRA: &str = include_str!("fixtures/dnsmasq/file-extra.log");
    const FILE: &str = include_str!("fixtures/dnsmasq/file.log");
    const RSYSLOG_EXTRA: &str = include_str!("fixtures/dnsmasq/rsyslog-extra.log");
    const RSYSLOG: &str = include_str!("fixtures/dnsmasq/rsyslog.log");
    const RFC3339_EXTRA: &str = include_str!("fixtures/dnsmasq/rfc3339-extra.log");
    const RFC3339: &str = include_str!("fixtures/dnsmasq/rfc3339.log");
    const LOGREAD_EXTRA: &str = include_str!("fixtures/dnsmasq/logread-extra.log");
    const LOGREAD: &str = include_str!("fixtures/dnsmasq/logread.log");
    const RAW_EXTRA: &str = include_str!("fixtures/dnsmasq/syslog-extra.raw");
    const RAW: &str = include_str!("fixtures/dnsmasq/syslog.raw");
    const HOSTS_DHCP_EXTRA: &str = include_str!("fixtures/dnsmasq/hosts-dhcp-extra.log");
    const HOSTS_DHCP: &str = include_str!("fixtures/dnsmasq/hosts-dhcp.log");

    const STANDARD: [(&str, &str); 10] = [
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
    struct Run {
        obs: Vec<DnsObservation>,
        parsed: u64,
        ignored: u64,
        malformed: u64,
        stats: AssemblerStats,
    }

    /// Parses and assembles a whole text at one instant, then finishes (pending queries
    /// come out unanswered).
    fn assemble(text: &str) -> Run {
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

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn find<'a>(
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
    fn expect(
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

    fn addr(name: &str, a: &str) -> DnsAnswer {
        DnsAnswer {
            name: name.into(),
            ttl: None,
            data: AnswerData::Addr(ip(a)),
        }
    }

    fn cname(name: &str, target: &str) -> DnsAnswer {
        DnsAnswer {
            name: name.into(),
            ttl: None,
            data: AnswerData::Cname(target.into()),
        }
    }

    /// What `queries.sh` and `evil.sh` (fixtures/dnsmasq/capture/) asked, and what each
    /// client got, in every format.
    #[track_caller]
    fn check_standard(label: &str, run: &Run) {
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
    fn every_captured_format_gives_the_same_answers() {
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
    fn formats_agree_line_by_line() {
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

    #[test]
    fn timestamps() {
        let ts = |line: &str, now_s: i64, zone: Zone| match LineParser::new(zone).parse(line, now_s)
        {
            Parsed::Entry { ts_ms, .. } => ts_ms,
            other => panic!("{line}: {other:?}"),
        };
        let q = "query[A] x.test from 10.0.0.2";
        // ctime pads the day with a space.
        assert_eq!(
            ts(
                &format!("Mar  4 05:06:07 dnsmasq[1]: {q}"),
                NOW_S,
                Zone::Fixed(0)
            ),
            1_772_600_767_000
        );
        // New Year: a December line read in January is last year's, and the reverse.
        let dec31 = format!("Dec 31 23:59:59 dnsmasq[1]: {q}");
        assert_eq!(ts(&dec31, 1_798_761_605, Zone::Fixed(0)), 1_798_761_599_000);
        let jan1 = format!("Jan  1 00:00:01 dnsmasq[1]: {q}");
        assert_eq!(ts(&jan1, 1_798_761_598, Zone::Fixed(0)), 1_798_761_601_000);
        // Local time east of UTC.
        let line = format!("Nov 24 22:03:18 dnsmasq[1]: {q}");
        assert_eq!(ts(&line, NOW_S, Zone::Fixed(3600)), 1_795_554_198_000);
        // RFC 3339 keeps milliseconds and its own offset; `Z` works too.
        let line = format!("2026-11-24T16:03:18.123456-05:00 h dnsmasq[1]: {q}");
        assert_eq!(ts(&line, NOW_S, Zone::Fixed(7200)), 1_795_554_198_123);
        let line = format!("2026-11-24T21:03:18.5Z h dnsmasq[1]: {q}");
        assert_eq!(ts(&line, NOW_S, Zone::Fixed(0)), 1_795_554_198_500);
        // Far-off years neither overflow nor calibrate the clock.
        let far = format!("Fri Nov 24 22:03:18 9999 daemon.info dnsmasq[1]: {q}");
        let mut p = LineParser::new(Zone::Fixed(0));
        let Parsed::Entry { ts_ms, .. } = p.parse(&far, NOW_S) else {
            panic!("{far}")
        };
        for _ in 0..ZONE_CONFIRM_LINES {
            p.clock.calibrate(ts_ms, NOW_S);
        }
        assert_eq!(p.clock.correction_s, 0);
        // Impossible dates and times are malformed.
        for bad in [
            "Nov 24 25:03:18",
            "Nov 32 22:03:18",
            "Foo 24 22:03:18",
            "2026-13-24T21:03:18Z",
        ] {
            let line = format!("{bad} dnsmasq[1]: {q}");
            assert_eq!(
                LineParser::new(Zone::Fixed(0)).parse(&line, NOW_S),
                Parsed::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_system_zone_is_the_c_library_s() {
        // Whatever TZ this machine has, mktime and localtime_r agree.
        let mut tm = blank_tm();
        let t: libc::time_t = NOW_S;
        // SAFETY: valid pointers.
        assert!(!unsafe { libc::localtime_r(&t, &mut tm) }.is_null());
        let line = format!(
            "{} {:2} {:02}:{:02}:{:02} dnsmasq[1]: query[A] x.test from 10.0.0.2",
            MONTHS[tm.tm_mon as usize], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
        );
        match LineParser::new(Zone::System).parse(&line, NOW_S) {
            Parsed::Entry {
                ts_ms, local_time, ..
            } => {
                assert_eq!(ts_ms, NOW_S * 1000, "{line}");
                assert!(local_time);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn live_lines_correct_a_wrong_zone() {
        // dnsmasq writes UTC+2 while netmon reads UTC: three live lines agree, then
        // local stamps are corrected.
        let mut p = LineParser::new(Zone::Fixed(0));
        let line = "Nov 24 23:03:18 dnsmasq[1]: query[A] x.test from 10.0.0.2"; // 21:03:18Z
        let now_s = 1_795_554_199;
        for i in 0..3 {
            let Parsed::Entry { ts_ms, .. } = p.parse(line, now_s) else {
                panic!()
            };
            assert_eq!(ts_ms, 1_795_561_398_000, "line {i} is not corrected yet");
            p.clock.calibrate(ts_ms, now_s);
        }
        let Parsed::Entry { ts_ms, .. } = p.parse(line, now_s) else {
            panic!()
        };
        assert_eq!(ts_ms, 1_795_554_198_000);
        // A line read late (not a whole zone step off) changes nothing.
        p.clock.calibrate(ts_ms, now_s + 400);
        assert_eq!(p.clock.correction_s, -7200);
    }

    #[test]
    fn line_kinds() {
        let entry = |msg: &str| -> Option<Entry> {
            match LineParser::new(Zone::Fixed(0))
                .parse(&format!("Nov 24 22:03:18 dnsmasq[1]: {msg}"), NOW_S)
            {
                Parsed::Entry { entry, .. } => Some(entry),
                Parsed::Ignored => None,
                Parsed::Malformed => panic!("malformed: {msg}"),
            }
        };
        let answer = |msg: &str| match entry(msg) {
            Some(Entry::Answer(a)) => a,
            other => panic!("{msg}: {other:?}"),
        };
        assert_eq!(
            entry("5 10.77.0.10/35032 query[A] nope.example.test from 10.77.0.10"),
            Some(Entry::Query {
                serial: Some(5),
                client: ip(C1),
                name: "nope.example.test".into(),
                qtype: 1
            })
        );
        assert_eq!(
            entry("query[type=65534] Q.test from fd77::10"),
            Some(Entry::Query {
                serial: None,
                client: ip("fd77::10"),
                name: "q.test".into(),
                qtype: 65534
            })
        );
        assert_eq!(
            entry("12 fe80::1%br-lan/5353 query[CAA] x.test from fe80::1%br-lan"),
            Some(Entry::Query {
                serial: Some(12),
                client: ip("fe80::1"),
                name: "x.test".into(),
                qtype: 257
            })
        );
        assert_eq!(
            entry("forwarded x.test to 203.0.113.53#5353"),
            Some(Entry::Forwarded {
                serial: None,
                name: "x.test".into()
            })
        );
        assert_eq!(
            entry("42 10.77.0.11/3243 reply query is duplicate"),
            Some(Entry::Duplicate { serial: 42 })
        );
        let a = answer("/etc/hosts printer.home is 10.77.0.60");
        assert_eq!(
            (a.source, a.value),
            (AnswerSource::Hosts, Value::Addr(ip("10.77.0.60")))
        );
        let a = answer("DHCP laptop is fd77::10");
        assert_eq!(
            (a.source, a.value),
            (AnswerSource::Dhcp, Value::Addr(ip("fd77::10")))
        );
        assert_eq!(
            answer("cached-stale x.test is 1.2.3.4").source,
            AnswerSource::Cached
        );
        assert_eq!(
            answer("auth x.test is NODATA-IPv4").value,
            Value::NoData(Some(1))
        );
        assert_eq!(
            answer("config error is REFUSED (EDE: not ready)").value,
            Value::Rcode(5)
        );
        assert_eq!(
            answer("reply x.test is 1.2.3.4 (DNSSEC signed)").value,
            Value::Addr(ip("1.2.3.4"))
        );
        assert_eq!(
            answer("reply error is not implemented").value,
            Value::Rcode(4)
        );
        assert_eq!(
            answer("reply x.test is <SRV>").value,
            Value::Record(Some(33))
        );
        assert_eq!(
            answer("reply x.test is <type=4242>").value,
            Value::Record(Some(4242))
        );
        assert_eq!(
            answer("reply x.test is some text").value,
            Value::Record(None)
        );
        // PTR: owner is the address; the hostile target stays one opaque record.
        let a = answer("reply 203.0.113.84 is evil is 1.2.3.4");
        assert_eq!(a.name, "84.113.0.203.in-addr.arpa");
        assert_eq!(a.value, Value::Record(Some(12)));
        let a = answer("reply 2001:db8::1 is NXDOMAIN");
        assert_eq!(
            a.reverse_name.as_deref(),
            Some("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")
        );
        // Not query-log lines.
        for msg in [
            "started, version 2.90 cachesize 150",
            "using nameserver 203.0.113.53#53 for domain example.test ",
            "validation x.test is BOGUS",
            "5 10.77.0.10/1 dnssec-query[DS] x.test to 1.2.3.4",
            "/etc/hosts: no such file",
        ] {
            assert_eq!(entry(msg), None, "{msg}");
        }
        let mut p = LineParser::new(Zone::Fixed(0));
        for (line, want) in [
            (
                "Nov 24 22:03:18 dnsmasq-dhcp[1]: DHCPACK(br-lan) 10.0.0.5",
                Parsed::Ignored,
            ),
            (
                "Nov 24 22:03:18 host kernel: [1.0] eth0 up",
                Parsed::Ignored,
            ),
            ("", Parsed::Ignored),
            ("garbage", Parsed::Malformed),
            (
                "Nov 24 22:03:18 dnsmasq[1]: query[A] x.test from nowhere",
                Parsed::Malformed,
            ),
            (
                "Nov 24 22:03:18 dnsmasq[1]: query[BOGUS] x.test from 10.0.0.1",
                Parsed::Malformed,
            ),
            (
                "Nov 24 22:03:18 dnsmasq[1]: reply x.test has no verb",
                Parsed::Malformed,
            ),
        ] {
            assert_eq!(p.parse(line, NOW_S), want, "{line}");
        }
    }

    #[test]
    fn hostile_names_are_canonical() {
        let name = |text: &str| match LineParser::new(Zone::Fixed(0)).parse(
            &format!("Nov 24 22:03:18 dnsmasq[1]: query[A] {text} from 10.0.0.2"),
            NOW_S,
        ) {
            Parsed::Entry {
                entry: Entry::Query { name, client, .. },
                ..
            } => {
                assert_eq!(client, ip("10.0.0.2"), "{text}");
                name
            }
            other => panic!("{text}: {other:?}"),
        };
        // Spaces and the separator words inside a name: split at the last ` from `.
        assert_eq!(
            name("a from 1.2.3.4 b.test"),
            "a\\032from\\0321.2.3.4\\032b.test"
        );
        assert_eq!(
            name("<img src=x onerror=alert(1)>.test"),
            "<img\\032src=x\\032onerror=alert(1)>.test"
        );
        // A backslash in the log is a byte, not an escape.
        assert_eq!(name("a\\065b.Test."), "a\\\\065b.test");
        // Bytes no dnsmasq would write (a corrupt file): escaped, never raw.
        assert_eq!(name("caf\u{e9}.test"), "caf\\195\\169.test");
        assert_eq!(name("nul\u{0}.test"), "nul\\000.test");
        let label = "x".repeat(63);
        let long = format!("{label}.{label}.{label}.{}", "y".repeat(61));
        assert_eq!(long.len(), 253);
        assert_eq!(name(&long), long);
        // Longer than any DNS name: cut, marked, bounded.
        let huge = name(&"z".repeat(3000));
        assert!(huge.len() <= crate::dns_name::MAX_NAME_CHARS && huge.ends_with("\\~"));
    }

    /// A line of dnsmasq's own format at `NOW_S`.
    fn line(msg: &str) -> String {
        format!("Nov 24 22:29:59 dnsmasq[1]: {msg}")
    }

    fn push_lines(asm: &mut Assembler, now: Instant, msgs: &[&str]) {
        let mut p = LineParser::new(Zone::Fixed(0));
        for msg in msgs {
            match p.parse(&line(msg), NOW_S) {
                Parsed::Entry { ts_ms, entry, .. } => asm.push(ts_ms, entry, now),
                other => panic!("{msg}: {other:?}"),
            }
        }
    }

    #[test]
    fn without_serials_the_address_family_picks_the_query() {
        let mut asm = Assembler::new();
        let t0 = Instant::now();
        push_lines(
            &mut asm,
            t0,
            &[
                "query[A] x.test from 10.0.0.2",
                "forwarded x.test to 1.1.1.1",
                "query[AAAA] x.test from 10.0.0.2",
                "forwarded x.test to 1.1.1.1",
                "reply x.test is 2001:db8::1",
                "reply x.test is 2001:db8::2",
                "reply x.test is 192.0.2.1",
            ],
        );
        asm.finish();
        let obs = std::mem::take(&mut asm.ready);
        assert_eq!(obs.len(), 2, "{obs:#?}");
        let v6 = obs.iter().find(|o| o.qtype == 28).expect("AAAA");
        assert_eq!(
            v6.answers,
            [addr("x.test", "2001:db8::1"), addr("x.test", "2001:db8::2")]
        );
        let v4 = obs.iter().find(|o| o.qtype == 1).expect("A");
        assert_eq!(v4.answers, [addr("x.test", "192.0.2.1")]);
    }

    #[test]
    fn answers_complete_on_idle_and_queries_time_out() {
        let mut asm = Assembler::new();
        let t0 = Instant::now();
        push_lines(
            &mut asm,
            t0,
            &["2 10.0.0.3/1 query[A] slow.test from 10.0.0.3"],
        );
        push_lines(
            &mut asm,
            t0,
            &[
                "1 10.0.0.2/1 query[A] x.test from 10.0.0.2",
                "1 10.0.0.2/1 reply x.test is 192.0.2.1",
            ],
        );
        assert!(asm.ready.is_empty(), "more records of x.test may follow");
        asm.tick(t0 + Duration::from_millis(100));
        assert!(asm.ready.is_empty());
        assert_eq!(asm.deadline(), Some(t0 + ANSWER_IDLE));
        asm.tick(t0 + ANSWER_IDLE);
        assert_eq!(asm.ready.len(), 1);
        assert_eq!(asm.ready[0].rcode, Some(0));
        asm.tick(t0 + UNANSWERED_AFTER - Duration::from_millis(1));
        assert_eq!(asm.ready.len(), 1);
        asm.tick(t0 + UNANSWERED_AFTER);
        assert_eq!(asm.ready.len(), 2);
        assert_eq!(
            (asm.ready[1].qname.as_str(), asm.ready[1].rcode),
            ("slow.test", None)
        );
        assert_eq!(asm.deadline(), None);
        // Another query's line completes an answer at once.
        push_lines(
            &mut asm,
            t0,
            &[
                "3 10.0.0.2/1 query[A] y.test from 10.0.0.2",
                "3 10.0.0.2/1 reply y.test is 192.0.2.2",
            ],
        );
        push_lines(
            &mut asm,
            t0,
            &["4 10.0.0.2/1 query[A] z.test from 10.0.0.2"],
        );
        assert_eq!(asm.ready.len(), 3);
    }

    #[test]
    fn state_is_bounded() {
        let mut asm = Assembler::new();
        let t0 = Instant::now();
        let mut p = LineParser::new(Zone::Fixed(0));
        for i in 0..MAX_PENDING + 100 {
            let msg = format!("{i} 10.0.0.2/1 query[A] n{i}.test from 10.0.0.2");
            let Parsed::Entry { ts_ms, entry, .. } = p.parse(&line(&msg), NOW_S) else {
                panic!()
            };
            asm.push(ts_ms, entry, t0);
        }
        assert_eq!(asm.pending.len(), MAX_PENDING);
        assert_eq!(asm.by_serial.len(), MAX_PENDING);
        assert_eq!(asm.by_name.len(), MAX_PENDING);
        assert_eq!(asm.stats.dropped, 100);
        // An answer with too many records keeps the first MAX_ANSWERS.
        let mut asm = Assembler::new();
        push_lines(&mut asm, t0, &["query[A] big.test from 10.0.0.2"]);
        for i in 0..MAX_ANSWERS + 5 {
            push_lines(
                &mut asm,
                t0,
                &[&format!("reply big.test is 10.1.{}.{}", i / 256, i % 256)],
            );
        }
        asm.finish();
        assert_eq!(asm.ready[0].answers.len(), MAX_ANSWERS);
        assert_eq!(asm.stats.dropped, 5);
    }

    #[test]
    fn addresses_only_for_the_type_asked() {
        let mut asm = Assembler::new();
        push_lines(
            &mut asm,
            Instant::now(),
            &[
                "3 10.0.0.2/1 query[TXT] t.test from 10.0.0.2",
                "3 10.0.0.2/1 reply t.test is 192.0.2.66",
            ],
        );
        asm.finish();
        assert_eq!(asm.ready[0].answers, []);
        assert_eq!(asm.ready[0].rcode, Some(0));
    }

    #[test]
    fn hosts_and_dhcp_answers() {
        for (label, text) in [("extra", HOSTS_DHCP_EXTRA), ("plain", HOSTS_DHCP)] {
            let run = assemble(text);
            assert_eq!(run.obs.len(), 9, "{label}");
            assert_eq!(run.stats.unmatched, 0, "{label}");
            let p = "printer.home";
            expect(&run, C1, p, 1, 2, Some(0), &[addr(p, "10.77.0.60")]);
            expect(&run, C1, p, 28, 1, Some(0), &[addr(p, "fd77::60")]);
            expect(&run, C1, "nas.home", 28, 1, Some(5), &[]);
            expect(
                &run,
                C1,
                "laptop.home",
                1,
                1,
                Some(0),
                &[addr("laptop.home", C1)],
            );
            expect(&run, C1, "laptop", 1, 1, Some(0), &[addr("laptop", C1)]);
            expect(
                &run,
                C1,
                "shop.example.test",
                1,
                1,
                Some(0),
                &[addr("shop.example.test", "203.0.113.84")],
            );
            expect(&run, C1, "60.0.77.10.in-addr.arpa", 12, 1, Some(0), &[]);
            expect(&run, C1, "10.0.77.10.in-addr.arpa", 12, 1, Some(0), &[]);
        }
    }

    // ---- the follower, on temporary files ------------------------------------------------

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("netmon-dnsmasq-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(text.as_bytes()).expect("append");
    }

    /// Everything the follower reads now.
    fn read(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        let mut sink = |b: &[u8], _live: bool| out.push(String::from_utf8_lossy(b).into_owned());
        while f.poll(Instant::now(), &mut sink) {}
        out
    }

    #[test]
    fn first_start_reads_only_what_comes_next() {
        let dir = TempDir::new("first");
        let log = dir.path("dnsmasq.log");
        append(&log, "old 1\nold 2\nhalf a li");
        let mut f = Follower::new(log.clone(), Some(dir.path("netmon.dnsmasq-offset")));
        assert_eq!(read(&mut f), Vec::<String>::new());
        append(&log, "ne\nnew 1\nnew");
        assert_eq!(
            read(&mut f),
            ["new 1"],
            "the line begun before start is not a line"
        );
        append(&log, " 2\n");
        assert_eq!(
            read(&mut f),
            ["new 2"],
            "a partial line waits for its newline"
        );
    }

    #[test]
    fn rename_rotation_finishes_the_old_file_first() {
        let dir = TempDir::new("rename");
        let log = dir.path("dnsmasq.log");
        let old = dir.path("dnsmasq.log.1");
        append(&log, "");
        let mut f = Follower::new(log.clone(), None);
        assert!(read(&mut f).is_empty());
        append(&log, "a\n");
        assert_eq!(read(&mut f), ["a"]);
        std::fs::rename(&log, &old).expect("rename");
        append(&old, "b\n"); // dnsmasq has not reopened yet
        assert_eq!(read(&mut f), ["b"], "the renamed file is still read");
        append(&log, "c\n"); // logrotate's create, dnsmasq's SIGUSR2
        append(&old, "late\n");
        assert_eq!(read(&mut f), ["late", "c"]);
        append(&log, "d\n");
        assert_eq!(read(&mut f), ["d"]);
        assert_eq!(f.stats.rotations_rename, 1);
    }

    #[test]
    fn copytruncate_restarts_at_zero() {
        let dir = TempDir::new("truncate");
        let log = dir.path("dnsmasq.log");
        append(&log, "");
        let mut f = Follower::new(log.clone(), None);
        read(&mut f);
        append(&log, "line one\nline two\n");
        assert_eq!(read(&mut f), ["line one", "line two"]);
        std::fs::copy(&log, dir.path("dnsmasq.log.1")).expect("copy");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&log, "three\n");
        assert_eq!(read(&mut f), ["three"]);
        assert_eq!(f.stats.rotations_truncate, 1);
    }

    #[test]
    fn restart_resumes_without_duplicates() {
        let dir = TempDir::new("restart");
        let log = dir.path("dnsmasq.log");
        let state = dir.path("netmon.dnsmasq-offset");
        append(&log, "history\n");
        let mut f = Follower::new(log.clone(), Some(state.clone()));
        read(&mut f);
        append(&log, "x\ny\npart");
        assert_eq!(read(&mut f), ["x", "y"]);
        f.save_state(Instant::now(), true);
        drop(f);
        append(&log, "ial\nz\n");
        let mut f = Follower::new(log.clone(), Some(state.clone()));
        assert_eq!(
            read(&mut f),
            ["partial", "z"],
            "resumes at the incomplete line"
        );
        f.save_state(Instant::now(), true);
        drop(f);
        // Rotated while netmon was down: the new file is read from its start.
        std::fs::rename(&log, dir.path("dnsmasq.log.1")).expect("rename");
        append(&log, "n1\n");
        let mut f = Follower::new(log.clone(), Some(state.clone()));
        assert_eq!(read(&mut f), ["n1"]);
        f.save_state(Instant::now(), true);
        drop(f);
        // Another log file configured: its history is not read.
        let other = dir.path("other.log");
        append(&other, "other history\n");
        let mut f = Follower::new(other.clone(), Some(state));
        assert!(read(&mut f).is_empty());
    }

    #[test]
    fn a_vanished_file_is_picked_up_when_it_reappears() {
        let dir = TempDir::new("vanish");
        let log = dir.path("dnsmasq.log");
        let mut f = Follower::new(log.clone(), None);
        assert!(read(&mut f).is_empty(), "missing at start");
        append(&log, "first\n");
        assert_eq!(
            read(&mut f),
            ["first"],
            "created later: read from its start"
        );
        std::fs::remove_file(&log).expect("remove");
        assert!(read(&mut f).is_empty());
        append(&log, "again\n");
        assert_eq!(read(&mut f), ["again"]);
    }

    #[test]
    fn overlong_lines_are_skipped() {
        let dir = TempDir::new("long");
        let log = dir.path("dnsmasq.log");
        append(&log, "");
        let mut f = Follower::new(log.clone(), None);
        read(&mut f);
        append(&log, &"x".repeat(MAX_LINE_BYTES + 10));
        assert!(read(&mut f).is_empty());
        append(&log, &format!("{}\nok\n", "x".repeat(100_000)));
        assert_eq!(read(&mut f), ["ok"]);
        assert_eq!(f.stats.broken_lines, 1);
    }

    #[test]
    fn collector_thread_feeds_the_writer_and_stops_promptly() {
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
        let collector =
            DnsmasqLogCollector::start(&config, writer, shutdown.clone()).expect("start");
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
    fn fragment() -> impl Strategy<Value = String> {
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

    fn feed_all(lines: &[String]) {
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
