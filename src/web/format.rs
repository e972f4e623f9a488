//! How numbers, times and addresses read on a page. Pure functions.
//!
//! Times are stored as unix ms UTC (DESIGN §3). Pages render them as
//! `<time datetime="…Z" data-ms="…">… UTC</time>`; `netmon.js` rewrites the text to the
//! browser's local time, so without JavaScript the page is still correct, just in UTC.

use maud::{Markup, html};

use crate::time::{DAY_MS, civil_from_days};

/// The UTC calendar fields of a unix ms time.
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    milli: i64,
}

fn utc(ms: i64) -> Utc {
    let (year, month, day) = civil_from_days(ms.div_euclid(DAY_MS));
    let in_day = ms.rem_euclid(DAY_MS);
    Utc {
        year,
        month,
        day,
        hour: in_day / 3_600_000,
        minute: in_day / 60_000 % 60,
        second: in_day / 1000 % 60,
        milli: in_day % 1000,
    }
}

/// ISO 8601 / RFC 3339 in UTC with milliseconds: `2024-05-01T13:04:05.123Z`.
pub fn iso_utc(ms: i64) -> String {
    let t = utc(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.milli
    )
}

/// Readable UTC: `2024-05-01 13:04:05 UTC`.
pub fn utc_text(ms: i64) -> String {
    let t = utc(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// A rate in bits per second, decimal units, three digits: `8.00 Mbit/s`. Every rate
/// on the pages is in bits (how links are sold); amounts of data are in bytes.
pub fn bit_rate(bits_per_s: f64) -> String {
    let (v, unit) = if bits_per_s >= 1e9 {
        (bits_per_s / 1e9, "Gbit/s")
    } else if bits_per_s >= 1e6 {
        (bits_per_s / 1e6, "Mbit/s")
    } else if bits_per_s >= 1e3 {
        (bits_per_s / 1e3, "kbit/s")
    } else {
        (bits_per_s, "bit/s")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

/// `2026-12-04T21:00:00Z`: a time as the filters take and show it.
pub fn utc_iso(ms: i64) -> String {
    let t = utc(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// `HH:MM` UTC, for chart axes.
pub fn hh_mm_utc(ms: i64) -> String {
    let t = utc(ms);
    format!("{:02}:{:02}", t.hour, t.minute)
}

/// `DD HH:MM` UTC (day of month), for the axis of a chart over days.
pub fn dd_hh_mm_utc(ms: i64) -> String {
    let t = utc(ms);
    format!("{:02} {:02}:{:02}", t.day, t.hour, t.minute)
}

/// `MM-DD` UTC, for the axis of a chart labelled in whole days.
pub fn mm_dd_utc(ms: i64) -> String {
    let t = utc(ms);
    format!("{:02}-{:02}", t.month, t.day)
}

/// A timestamp element the script localises.
pub fn time(ms: i64) -> Markup {
    html! { time datetime=(iso_utc(ms)) data-ms=(ms) { (utc_text(ms)) } }
}

/// A timestamp the script shows as an age ("3 min ago", kept current) with the local
/// time as its title; without the script, the UTC time.
pub fn time_ago(ms: i64) -> Markup {
    html! { time datetime=(iso_utc(ms)) data-ms=(ms) data-rel { (utc_text(ms)) } }
}

/// Same, or a dash when absent.
pub fn time_opt(ms: Option<i64>) -> Markup {
    match ms {
        Some(ms) => time(ms),
        None => html! { span.muted { "—" } },
    }
}

/// Byte counts with binary units, three significant figures: `999 B`, `1.21 KiB`,
/// `45.3 MiB`.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n.unsigned_abs() < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// A duration, two largest units: `45s`, `3m 12s`, `2h 05m`, `3d 04h`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// Integer with thin-space thousands groups: `1 234 567`.
pub fn count(n: impl Into<i128>) -> String {
    let n: i128 = n.into();
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// A count and its noun, singular for one: `1 incident`, `1 234 incidents`.
pub fn counted(n: impl Into<i128>, one: &str, many: &str) -> String {
    let n: i128 = n.into();
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// `part` as a percentage of `whole` with one decimal (`7.5 %`); a dash when `whole`
/// is zero (no ratio, rather than a misleading `0.0 %`).
pub fn ratio(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "—".to_owned();
    }
    format!("{:.1} %", part as f64 * 100.0 / whole as f64)
}

/// `addr:port`, with IPv6 in brackets (RFC 3986 style); the bare address without a port.
pub fn endpoint(ip: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if ip.contains(':') => format!("[{ip}]:{p}"),
        Some(p) => format!("{ip}:{p}"),
        None => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_matches_known_instants() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1714568645.123 +%FT%T.%3NZ`
        assert_eq!(iso_utc(1_714_568_645_123), "2024-05-01T13:04:05.123Z");
        // Leap day and end of a leap year.
        assert_eq!(iso_utc(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(iso_utc(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(utc_text(1_714_568_645_123), "2024-05-01 13:04:05 UTC");
        assert_eq!(hh_mm_utc(1_714_568_645_123), "13:04");
        assert_eq!(dd_hh_mm_utc(1_714_568_645_123), "01 13:04");
        assert_eq!(mm_dd_utc(1_714_568_645_123), "05-01");
    }

    #[test]
    fn one_of_a_thing_is_singular() {
        assert_eq!(counted(1, "incident", "incidents"), "1 incident");
        assert_eq!(counted(0, "incident", "incidents"), "0 incidents");
        assert_eq!(counted(1234, "host", "hosts"), "1\u{2009}234 hosts");
    }

    #[test]
    fn bytes_are_short() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(47_500_000), "45.3 MiB");
        assert_eq!(bytes(5 << 30), "5.00 GiB");
        assert_eq!(bytes(300 << 20), "300 MiB");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(999), "0s");
        assert_eq!(duration(45_000), "45s");
        assert_eq!(duration(192_000), "3m 12s");
        assert_eq!(duration(7_500_000), "2h 05m");
        assert_eq!(duration(273_600_000), "3d 04h");
        assert_eq!(duration(-5), "0s");
    }

    #[test]
    fn counts_and_endpoints() {
        assert_eq!(count(0u64), "0");
        assert_eq!(count(1234u64), "1\u{2009}234");
        assert_eq!(count(-1_234_567i64), "-1\u{2009}234\u{2009}567");
        assert_eq!(endpoint("10.0.0.1", Some(80)), "10.0.0.1:80");
        assert_eq!(endpoint("2001:db8::1", Some(443)), "[2001:db8::1]:443");
        assert_eq!(endpoint("2001:db8::1", None), "2001:db8::1");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(0, 0), "—");
        assert_eq!(ratio(0, 40), "0.0 %");
        assert_eq!(ratio(3, 40), "7.5 %");
        assert_eq!(ratio(1, 3), "33.3 %");
        assert_eq!(ratio(5, 5), "100.0 %");
    }
}
