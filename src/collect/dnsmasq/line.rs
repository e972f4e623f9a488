//! One dnsmasq log line: its header (four formats: dnsmasq's own file, traditional
//! syslog, RFC 3339 syslog, `logread`), then what the line says (query, forward, answer
//! record, error), as an [`Entry`] for the assembler.

use std::net::IpAddr;

use crate::dns_name::{normalize_name, qtype_from_name};

use super::clock::{LogClock, Stamp, Zone, utc_to_unix};

pub(super) const MONTHS: [&str; 12] = [
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::dnsmasq::tests::*;

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
}
