//! Per-device baselines (table `device_baselines`): what is normal for one device,
//! taken from its minute and hour rollups, so the volume codes compare a device with
//! itself and not with a fixed number.
//!
//! The writer recomputes every device's baseline at start and then every
//! `detect.baseline_interval_s` (hourly by default) from the last `detect.baseline_days`
//! of rollups; [`compute`] is the pure part. Percentiles are over *active* minutes (a
//! rollup row exists only for a minute with traffic), so idle nights do not drag the
//! 95th percentile to zero.
//!
//! Fan-out and port counts come from the minute rows' true unions: a 10-minute bucket's
//! fan-out is the *sum* of its minutes' distinct hosts (an upper bound: a host seen in
//! two minutes counts twice) and its ports the *largest* minute's distinct ports (a
//! lower bound). The bound on fan-out errs towards a higher baseline, i.e. fewer alerts.

use serde::Serialize;

use crate::time::{HOUR_MS, MINUTE_MS};

/// A device's normal, as stored in `device_baselines`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    pub device_id: i64,
    /// unix ms
    pub computed_at: i64,
    /// The device's oldest rollup (minute or hour), unix ms: how long it has been seen.
    pub history_from: i64,
    /// Active minutes the percentiles were taken over.
    pub minutes: u64,
    /// Bytes uploaded per active minute, 95th percentile.
    pub egress_p95: u64,
    /// Hosts contacted per 10 minutes (upper bound, see the module docs), p95.
    pub fanout_p95: u64,
    /// Distinct destination ports per 10 minutes (lower bound), p95.
    pub ports_p95: u64,
    /// DNS queries per active DNS minute, p95.
    pub dns_p95: u64,
    /// NXDOMAIN answers per active DNS minute, p95.
    pub nxdomain_p95: u64,
    /// Bytes up ÷ bytes down per active hour, p95.
    pub upload_ratio_p95: f64,
    /// `egress_p95` per UTC hour of day; 0 where that hour has too few samples.
    pub egress_by_hour: [u64; 24],
}

/// Fewest active minutes in one hour of day (over the look-back) for that hour to get
/// its own egress percentile: fewer is noise, and the overall p95 is used.
const MIN_HOUR_SAMPLES: usize = 30;
/// Hours moving less than this (bytes, both ways) say nothing about the upload ratio.
const MIN_RATIO_HOUR_BYTES: u64 = 1 << 20;
const TEN_MINUTES_MS: i64 = 10 * MINUTE_MS;

/// One `device_minutes` row as the baseline needs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinuteRow {
    pub minute: i64,
    pub bytes_up: u64,
    pub unique_dsts: u64,
    pub unique_ports: u64,
}

/// Everything one device's baseline is computed from (`store::detect::baseline_inputs`).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub device_id: i64,
    pub history_from: i64,
    /// Minute rows in time order.
    pub minutes: Vec<MinuteRow>,
    /// `dns_device_minutes` rows: (queries, nxdomain).
    pub dns: Vec<(u64, u64)>,
    /// `device_hours` rows: (bytes up, bytes down).
    pub hours: Vec<(u64, u64)>,
}

impl Baseline {
    /// Less than `learning_hours` of history: too little to say what is normal.
    pub fn learning(&self, now: i64, learning_hours: u32) -> bool {
        now - self.history_from < i64::from(learning_hours) * HOUR_MS
    }

    /// The usual upload per minute at `at`'s hour of day (when that hour is known well
    /// enough), else overall.
    pub fn egress_at(&self, at: i64) -> u64 {
        let hour = (at.rem_euclid(24 * HOUR_MS) / HOUR_MS) as usize;
        match self.egress_by_hour[hour] {
            0 => self.egress_p95,
            by_hour => by_hour,
        }
    }
}

/// The 95th (or any) percentile as the replaced system took it: sorted ascending, index
/// `ceil(p × (n − 1))`; 0 for no samples.
pub fn percentile(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let idx = (p * (values.len() - 1) as f64).ceil() as usize;
    values[idx.min(values.len() - 1)]
}

/// One device's baseline from its rollups.
pub fn compute(inputs: &Inputs, now: i64) -> Baseline {
    let mut egress: Vec<u64> = inputs.minutes.iter().map(|m| m.bytes_up).collect();
    let mut by_hour: Vec<Vec<u64>> = vec![Vec::new(); 24];
    for m in &inputs.minutes {
        let hour = (m.minute.rem_euclid(24 * HOUR_MS) / HOUR_MS) as usize;
        by_hour[hour].push(m.bytes_up);
    }
    let mut egress_by_hour = [0u64; 24];
    for (slot, samples) in egress_by_hour.iter_mut().zip(by_hour.iter_mut()) {
        if samples.len() >= MIN_HOUR_SAMPLES {
            *slot = percentile(samples, 0.95);
        }
    }
    // 10-minute buckets: (sum of distinct hosts, largest distinct ports).
    let mut buckets: Vec<(i64, u64, u64)> = Vec::new();
    for m in &inputs.minutes {
        let bucket = m.minute - m.minute.rem_euclid(TEN_MINUTES_MS);
        match buckets.last_mut() {
            Some(b) if b.0 == bucket => {
                b.1 += m.unique_dsts;
                b.2 = b.2.max(m.unique_ports);
            }
            _ => buckets.push((bucket, m.unique_dsts, m.unique_ports)),
        }
    }
    let mut fanout: Vec<u64> = buckets.iter().map(|b| b.1).collect();
    let mut ports: Vec<u64> = buckets.iter().map(|b| b.2).collect();
    let mut dns: Vec<u64> = inputs.dns.iter().map(|d| d.0).collect();
    let mut nx: Vec<u64> = inputs.dns.iter().map(|d| d.1).collect();
    let mut ratios: Vec<f64> = inputs
        .hours
        .iter()
        .filter(|(up, down)| up + down >= MIN_RATIO_HOUR_BYTES)
        .map(|&(up, down)| up as f64 / down.max(1) as f64)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let upload_ratio_p95 = if ratios.is_empty() {
        0.0
    } else {
        ratios[((0.95 * (ratios.len() - 1) as f64).ceil() as usize).min(ratios.len() - 1)]
    };
    Baseline {
        device_id: inputs.device_id,
        computed_at: now,
        history_from: inputs.history_from,
        minutes: inputs.minutes.len() as u64,
        egress_p95: percentile(&mut egress, 0.95),
        fanout_p95: percentile(&mut fanout, 0.95),
        ports_p95: percentile(&mut ports, 0.95),
        dns_p95: percentile(&mut dns, 0.95),
        nxdomain_p95: percentile(&mut nx, 0.95),
        upload_ratio_p95,
        egress_by_hour,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_the_replaced_systems_index() {
        assert_eq!(percentile(&mut [], 0.95), 0);
        assert_eq!(percentile(&mut [5], 0.95), 5);
        let mut v: Vec<u64> = (1..=100).collect();
        // ceil(0.95 × 99) = 95 → the 96th value.
        assert_eq!(percentile(&mut v, 0.95), 96);
    }

    #[test]
    fn baseline_from_rollups_with_time_of_day() {
        let day = 24 * HOUR_MS;
        let mut minutes = Vec::new();
        // Two days of one active minute in two; hour 3 uploads 10× more.
        for i in 0..(2 * 24 * 30) {
            let minute = i * 2 * MINUTE_MS;
            let hour = (minute % day) / HOUR_MS;
            minutes.push(MinuteRow {
                minute,
                bytes_up: if hour == 3 { 10_000 } else { 1_000 },
                unique_dsts: 4,
                unique_ports: 2,
            });
        }
        let inputs = Inputs {
            device_id: 1,
            history_from: 0,
            minutes,
            dns: vec![(10, 0); 50],
            hours: vec![(1 << 20, 10 << 20); 48],
        };
        let b = compute(&inputs, 2 * day);
        // Hour 3 is 1/24 of the samples: under the overall 95th percentile …
        assert_eq!(b.egress_p95, 1_000);
        // … but it has its own (60 samples), and other hours fall back to the overall.
        assert_eq!(b.egress_at(3 * HOUR_MS + 5), 10_000);
        assert_eq!(b.egress_at(5 * HOUR_MS), 1_000);
        // Five active minutes of 4 hosts per 10-minute bucket.
        assert_eq!(b.fanout_p95, 20);
        assert_eq!(b.ports_p95, 2);
        assert_eq!(b.dns_p95, 10);
        assert!((b.upload_ratio_p95 - 0.1).abs() < 1e-9);
        assert!(!b.learning(2 * day, 24));
        assert!(b.learning(day - 1, 24));
    }
}
