//! The clock of dnsmasq's log lines: the traditional formats write local wall-clock time
//! without a year or a zone, so the year is guessed from now and the zone is the C
//! library's, corrected when live lines agree it is wrong.

use log::warn;

use std::time::{SystemTime, UNIX_EPOCH};

/// Time zones differ from UTC by multiples of 15 minutes.
const ZONE_STEP_S: i64 = 900;
/// Live lines that must agree before the zone correction changes.
const ZONE_CONFIRM_LINES: u32 = 3;

/// A line's timestamp as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stamp {
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
    pub(super) fn unix_ms(&mut self, stamp: Stamp, now_s: i64) -> Option<i64> {
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
    pub(super) fn calibrate(&mut self, ts_ms: i64, now_s: i64) {
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

/// Unix seconds as the C library's `time_t`: 64 bits on most targets, 32 on 32-bit
/// ones whose libc ABI the `libc` crate binds with 32-bit time (glibc without
/// `_TIME_BITS=64`, musl before 1.2), where a time past 2038 has no value.
// The crate deprecates the alias on musl, where it will become 64-bit: converting through
// `try_from` is right for either width.
#[allow(deprecated)]
fn time_t(s: i64) -> Option<libc::time_t> {
    libc::time_t::try_from(s).ok()
}

/// The other way: widening where `time_t` is 32 bits, the identity where it is 64.
#[allow(deprecated, clippy::useless_conversion)]
fn from_time_t(t: libc::time_t) -> i64 {
    i64::from(t)
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
pub(super) fn utc_to_unix(
    y: i32,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
) -> Option<i64> {
    let mut tm = fill_tm(y, month, day, hour, min, sec)?;
    // SAFETY: `tm` is a valid, initialised struct; timegm only normalises it.
    let t = unsafe { libc::timegm(&mut tm) };
    (t != -1).then_some(from_time_t(t))
}

/// A local calendar time as unix seconds (libc `mktime`, DST decided by the zone).
fn local_to_unix(y: i32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    let mut tm = fill_tm(y, month, day, hour, min, sec)?;
    tm.tm_isdst = -1;
    // SAFETY: as above; mktime reads the process's zone (TZ, /etc/localtime) under
    // glibc's/musl's own lock, and netmon never changes its environment.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(from_time_t(t))
}

fn utc_year(now_s: i64) -> Option<i32> {
    let mut tm = blank_tm();
    let t = time_t(now_s)?;
    // SAFETY: both pointers are valid for the call.
    let ok = unsafe { libc::gmtime_r(&t, &mut tm) };
    (!ok.is_null()).then_some(tm.tm_year + 1900)
}

/// Unix time now, seconds.
pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::dnsmasq::line::MONTHS;
    use crate::collect::dnsmasq::line::{LineParser, Parsed};
    use crate::collect::dnsmasq::tests::*;

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
        // Far-off years neither overflow nor calibrate the clock. Where `time_t` is 32
        // bits (32-bit glibc; musl before 1.2), a year past 2038 is a malformed line.
        let far = format!("Fri Nov 24 22:03:18 9999 daemon.info dnsmasq[1]: {q}");
        let mut p = LineParser::new(Zone::Fixed(0));
        match p.parse(&far, NOW_S) {
            Parsed::Entry { ts_ms, .. } => {
                for _ in 0..ZONE_CONFIRM_LINES {
                    p.clock.calibrate(ts_ms, NOW_S);
                }
                assert_eq!(p.clock.correction_s, 0);
            }
            other => {
                assert!(time_t(253_402_300_799).is_none(), "{far}: {other:?}");
                assert_eq!(other, Parsed::Malformed, "{far}");
            }
        }
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
        let t = time_t(NOW_S).unwrap();
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
}
