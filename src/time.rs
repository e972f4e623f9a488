//! Clocks and calendar maths: the one "now" every module reads, and the proleptic
//! Gregorian day arithmetic pages use to turn dates into unix ms and back.
//!
//! Times are unix ms UTC everywhere (DESIGN §3); local time is the browser's business.
//! The day arithmetic is Howard Hinnant's
//! (<https://howardhinnant.github.io/date_algorithms.html>): exact over the whole `i64`
//! range we use, and no date crate needed.

use std::time::{SystemTime, UNIX_EPOCH};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Unix milliseconds now. A clock before 1970 reads as 0 and one past the `i64` range
/// saturates: a wrong clock must not panic a router daemon.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Start of the minute containing `ms` (the key of every per-minute rollup).
pub fn minute_start(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

/// Start of the UTC hour containing `ms` (the key of every per-hour rollup).
pub fn hour_start(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (`days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count since 1970-01-01 (`civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_and_hour_starts_floor_towards_the_past() {
        assert_eq!(minute_start(3 * MINUTE_MS + 59_999), 3 * MINUTE_MS);
        assert_eq!(minute_start(-1), -MINUTE_MS);
        assert_eq!(hour_start(5 * HOUR_MS + 1), 5 * HOUR_MS);
        assert_eq!(hour_start(-1), -HOUR_MS);
    }

    #[test]
    fn days_round_trip_through_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-1, 59, 60, 10_956, 11_016, 11_017, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }
}
