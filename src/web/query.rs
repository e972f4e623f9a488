//! Everything a query string means: parsing the parameters pages and the JSON API take
//! into the typed, bounded filters the store reads
//! ([`FlowFilter`](crate::store::flows::read::FlowFilter),
//! [`HostFilter`](crate::store::hosts::read::HostFilter),
//! [`DnsFilter`](crate::store::dns::read::DnsFilter), the hit and incident filters), and
//! rendering a filter back into its canonical query string.
//!
//! Filters arrive as text ([`FlowQuery`], [`HostQuery`], [`DnsQuery`], [`HitQuery`],
//! [`IncidentQuery`]); an invalid value becomes a [`FilterError`] naming the parameter,
//! never a query. The same filter renders back to a canonical query string (`to_query`),
//! so every view is a shareable link. This file holds what every page's grammar shares
//! (paging, order, addresses, times, windows, domains, the URL builder); one file per
//! page family below it holds that family's parameters.

mod detect;
mod dns;
mod flows;
mod hosts;

pub use detect::{HitQuery, IncidentQuery};
pub use dns::DnsQuery;
pub use flows::{
    FlowQuery, QueryStringError, directions_param, parse_directions, parse_flow_filter,
};
pub use hosts::HostQuery;

use crate::detect::Code;
use crate::store::filter::{AddrMatch, MAX_PAGE, MAX_PER_PAGE, Order, TimeBound, Window};

/// An invalid query-string value; the message names the parameter, the value and the
/// accepted form, and the web layer turns it into a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query parameter `{param}` = {value:?}: expected {expected}")]
pub struct FilterError {
    pub param: &'static str,
    pub value: String,
    pub expected: &'static str,
}

fn bad(param: &'static str, value: &str, expected: &'static str) -> FilterError {
    FilterError {
        param,
        value: value.chars().take(100).collect(),
        expected,
    }
}

/// The oldest age a bound may name: longer than any retention.
const MAX_AGE_DAYS: i64 = 3650;

/// Parsing of the time bound `from=`/`to=`.
impl TimeBound {
    fn parse(param: &'static str, text: &str) -> Result<TimeBound, FilterError> {
        const EXPECTED: &str = "an age such as 30m, 1h, 7d, or a time such as 2026-12-04T21:00Z or 2026-12-04 22:00+01:00";
        let err = || bad(param, text, EXPECTED);
        let t = text.trim();
        if let Some(unit) = t.chars().last().filter(|c| "smhd".contains(*c))
            && t.len() > 1
            && t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit())
        {
            let n: i64 = t[..t.len() - 1].parse().map_err(|_| err())?;
            let unit_ms = match unit {
                's' => 1000,
                'm' => 60_000,
                'h' => 3_600_000,
                _ => 86_400_000,
            };
            if n > MAX_AGE_DAYS * 86_400_000 / unit_ms {
                return Err(err());
            }
            return Ok(TimeBound::Ago {
                ms: n * unit_ms,
                text: format!("{n}{unit}"),
            });
        }
        let (ms, canonical) = parse_utc(t).ok_or_else(err)?;
        Ok(TimeBound::At {
            ms,
            text: canonical,
        })
    }
}

/// `YYYY-MM-DD`, optionally `THH:MM` or `THH:MM:SS` (a space works for the `T`), then
/// `Z`, nothing (both UTC) or an offset `±HH:MM` after a time (the pages' script adds
/// the browser's, so people type local times). Returns unix ms and the canonical text,
/// in UTC.
fn parse_utc(text: &str) -> Option<(i64, String)> {
    let at_zone = text.len().checked_sub(6);
    let (text, offset_min) = match at_zone.and_then(|i| text.split_at_checked(i)) {
        Some((t, zone)) if t.contains(['T', 't', ' ']) && zone.starts_with(['+', '-']) => {
            let (h, m) = zone[1..].split_once(':')?;
            let valid = |s: &str, max: i64| {
                (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<i64>().ok())
                    .flatten()
                    .filter(|v| *v <= max)
            };
            let minutes = valid(h, 14)? * 60 + valid(m, 59)?;
            (
                t,
                if zone.starts_with('-') {
                    -minutes
                } else {
                    minutes
                },
            )
        }
        _ => (
            text.strip_suffix('Z')
                .or_else(|| text.strip_suffix('z'))
                .unwrap_or(text),
            0,
        ),
    };
    let t = text;
    let (date, time) = match t.split_once(['T', 't', ' ']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let num = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) {
        return None;
    }
    let month_days = [
        31,
        if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
            29
        } else {
            28
        },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if da < 1 || da > month_days[(mo - 1) as usize] {
        return None;
    }
    let (h, mi, se) = match time {
        None => (0, 0, 0),
        Some(tm) => {
            let mut p = tm.split(':');
            let h = num(p.next()?, 2)?;
            let mi = num(p.next()?, 2)?;
            let se = match p.next() {
                Some(s) => num(s, 2)?,
                None => 0,
            };
            if p.next().is_some() || h > 23 || mi > 59 || se > 59 {
                return None;
            }
            (h, mi, se)
        }
    };
    let ms = ((crate::time::days_from_civil(y, mo, da) * 24 + h) * 60 + mi - offset_min) * 60_000
        + se * 1000;
    Some((ms, super::format::utc_iso(ms)))
}

impl AddrMatch {
    fn parse(param: &'static str, text: &str) -> Result<AddrMatch, FilterError> {
        let text = text.trim();
        if text.len() > 64 {
            return Err(bad(
                param,
                text,
                "an IP address or its first characters (at most 64)",
            ));
        }
        if text.contains('/') {
            return text
                .parse::<ipnet::IpNet>()
                .map(|net| AddrMatch::Net(net.trunc().to_string()))
                .map_err(|_| {
                    bad(
                        param,
                        text,
                        "a CIDR network such as 10.0.0.0/8 or 2001:db8::/32",
                    )
                });
        }
        Ok(match text.parse::<std::net::IpAddr>() {
            Ok(ip) => AddrMatch::Exact(ip.to_string()),
            Err(_) => AddrMatch::Prefix(text.to_owned()),
        })
    }
}

/// `Some(trimmed)` for a present, non-blank value.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn parse_id(param: &'static str, v: &str) -> Result<i64, FilterError> {
    v.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| bad(param, v, "a positive id number"))
}

fn parse_page(v: &Option<String>) -> Result<u32, FilterError> {
    given(v).map_or(Ok(1), |s| {
        s.parse::<u32>()
            .ok()
            .filter(|p| (1..=MAX_PAGE).contains(p))
            .ok_or_else(|| bad("page", s, "a page number from 1 to 10000"))
    })
}

fn parse_per_page(v: &Option<String>, default: u32) -> Result<u32, FilterError> {
    given(v).map_or(Ok(default), |s| {
        s.parse::<u32>()
            .ok()
            .filter(|p| (1..=MAX_PER_PAGE).contains(p))
            .ok_or_else(|| bad("per_page", s, "a number of rows from 1 to 500"))
    })
}

/// Longest domain filter accepted, in characters: the longest DNS name in presentation
/// form (RFC 1035 §2.3.4: 255 octets on the wire).
pub const MAX_DOMAIN_FILTER_CHARS: usize = 253;

/// A domain filter (`domain=` on flows, `name=` on the DNS log) in the canonical form
/// names are stored in ([`crate::dns_name::normalize_name`]: lowercase, `\DDD` escapes), so
/// `Shop.Example.TEST.` finds `shop.example.test`. Leading dots and a leading `*.` are
/// dropped: `*.example.test` and `.example.test` mean what `example.test` means.
pub fn parse_domain(param: &'static str, text: &str) -> Result<String, FilterError> {
    const EXPECTED: &str = "a domain name such as example.com (at most 253 characters)";
    if text.chars().count() > MAX_DOMAIN_FILTER_CHARS {
        return Err(bad(param, text, EXPECTED));
    }
    // `*.` and leading dots in any mix and number ("..*..x"), all of them, and from the
    // canonical form (`\*.x` decodes to `*.x`): a filter must accept its own `to_query`
    // unchanged (the query-string fuzz target checks that).
    let canonical = crate::dns_name::normalize_name(text);
    let mut bare = canonical.as_str();
    loop {
        let next = bare.trim_start_matches('.');
        let next = next.strip_prefix("*.").unwrap_or(next);
        if next.len() == bare.len() {
            break;
        }
        bare = next;
    }
    let name = bare.to_owned();
    // The bound holds for the canonical form too: control bytes grow fourfold when
    // escaped (`\000`), and a filter must accept its own `to_query`.
    if name.is_empty() || name == "*" || name.chars().count() > MAX_DOMAIN_FILTER_CHARS {
        return Err(bad(param, text, EXPECTED));
    }
    Ok(name)
}

fn parse_order(v: &Option<String>, default: Order) -> Result<Order, FilterError> {
    match given(v) {
        None => Ok(default),
        Some("asc") => Ok(Order::Asc),
        Some("desc") => Ok(Order::Desc),
        Some(s) => Err(bad("order", s, "`asc` or `desc`")),
    }
}

/// A `key=value&…` builder with percent-encoding (RFC 3986 unreserved characters pass).
#[derive(Default)]
struct QueryString(String);

impl QueryString {
    fn push(&mut self, key: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(key);
        self.0.push('=');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                self.0.push(b as char);
            } else {
                self.0.push_str(&format!("%{b:02X}"));
            }
        }
    }

    /// `order=asc` when ascending (descending is every list's default).
    fn push_order(&mut self, desc: bool) {
        if !desc {
            self.push("order", "asc");
        }
    }

    /// `page` and `per_page`, each only when it is not the default (page 1, the list's
    /// `default_per_page`), so the canonical URL of the first page is the bare filter.
    fn push_page(&mut self, page: u32, per_page: u32, default_per_page: u32) {
        if page != 1 {
            self.push("page", &page.to_string());
        }
        if per_page != default_per_page {
            self.push("per_page", &per_page.to_string());
        }
    }
}

impl Window {
    /// The window a URL or the remembering cookie names.
    pub fn parse(text: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == text)
    }
}

fn parse_window(v: &Option<String>) -> Result<Window, FilterError> {
    given(v).map_or(Ok(Window::DEFAULT), |s| {
        Window::parse(s).ok_or_else(|| bad("window", s, "one of 10m, 1h, 24h, 7d, 30d"))
    })
}

pub(crate) fn parse_score(v: &Option<String>) -> Result<Option<u32>, FilterError> {
    given(v)
        .map(|s| {
            s.parse::<u32>()
                .ok()
                .filter(|n| *n <= 100)
                .ok_or_else(|| bad("min_score", s, "a score from 0 to 100"))
        })
        .transpose()
}

pub(crate) fn parse_code(v: &Option<String>) -> Result<Option<Code>, FilterError> {
    given(v)
        .map(|s| {
            Code::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
                bad(
                    "code",
                    s,
                    "a reason code such as PORT_SCAN_LIKE (see /help)",
                )
            })
        })
        .transpose()
}

fn parse_device(v: &Option<String>) -> Result<Option<i64>, FilterError> {
    given(v)
        .map(|s| {
            s.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| bad("device", s, "a device id (a positive number)"))
        })
        .transpose()
}

fn parse_desc(v: &Option<String>) -> Result<bool, FilterError> {
    match given(v) {
        None | Some("desc") => Ok(true),
        Some("asc") => Ok(false),
        Some(s) => Err(bad("order", s, "asc or desc")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_filter_is_canonical_and_bounded() {
        let p = |s: &str| parse_domain("domain", s);
        assert_eq!(p("Shop.Example.TEST.").unwrap(), "shop.example.test");
        assert_eq!(p("*.example.test").unwrap(), "example.test");
        assert_eq!(p(".example.test").unwrap(), "example.test");
        assert_eq!(p("caf\u{e9}.test").unwrap(), "caf\\195\\169.test");
        assert_eq!(p("a\\000b.test").unwrap(), "a\\000b.test");
        assert!(p(&"a".repeat(253)).is_ok());
        let e = p(&"a".repeat(254)).unwrap_err();
        assert!(e.to_string().contains("at most 253"), "{e}");
        // 101 characters, 386 once escaped: refused, so a filter that parses always
        // survives its canonical query string.
        let e = p(&format!("a{}.test", "\0".repeat(95))).unwrap_err();
        assert!(e.to_string().contains("at most 253"), "{e}");
    }
}
