//! Login throttling per source address (DESIGN §5): password guessing from the LAN
//! gets exponentially slower.
//!
//! Policy: [`FREE_FAILURES`] wrong passwords cost nothing; from then on each failure
//! locks the address out for 2 s, 4 s, 8 s, … up to [`MAX_LOCKOUT`] (15 min), during
//! which a login attempt is answered 429 with `Retry-After` and its password is not
//! even checked. A correct password clears the address's record. A record is forgotten
//! [`FORGET_AFTER`] after its last failure.
//!
//! A password being checked counts as a failure until its outcome is known
//! ([`LoginThrottle::begin`] … [`LoginThrottle::finish`]): an address may have as many
//! checks running at once as it has free failures left, and once those are spent, one
//! at a time. Without this, requests sent together all pass the check before the first
//! of them has failed, and every one of them gets its password verified.
//!
//! An IPv6 client is counted by its /64 (one LAN host can take any address of its
//! prefix); IPv4-mapped IPv6 addresses count as the IPv4 address.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] addresses (~40 bytes each). When full,
//! forgotten records go first, then the one whose last failure is oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong passwords allowed before the first lockout.
pub const FREE_FAILURES: u32 = 5;
/// Longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// A record with no failure for this long is dropped.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Addresses tracked at once.
pub const MAX_TRACKED: usize = 4096;
/// The wait asked of an address whose checks in progress already use up its free
/// failures: about one verification's time on a router.
pub const CHECKING_WAIT: Duration = Duration::from_secs(1);

struct Failures {
    count: u32,
    /// When the last failure was counted (when the record was made, before any).
    last: Instant,
    /// Passwords from this address being checked now.
    checking: u32,
}

impl Failures {
    /// When the address may try again (`None`: now).
    fn locked_until(&self) -> Option<Instant> {
        let over = self
            .count
            .checked_sub(FREE_FAILURES - 1)
            .filter(|n| *n > 0)?;
        // 2^over seconds: 2 s after the 5th failure, 4 s after the 6th, ….
        let secs = 1u64.checked_shl(over.min(20)).unwrap_or(u64::MAX);
        Some(self.last + Duration::from_secs(secs).min(MAX_LOCKOUT))
    }
}

/// The throttle; one `std::sync::Mutex` around it in [`super::auth::Auth`].
#[derive(Default)]
pub struct LoginThrottle {
    by_source: HashMap<IpAddr, Failures>,
}

/// How a check started with [`LoginThrottle::begin`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Wrong,
    Right,
    /// The request ended before its password was checked (the client went away while
    /// it waited for its turn): nothing was checked, nothing is counted.
    Abandoned,
}

/// The address a client is counted by: IPv4 as is, IPv6 by its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

impl LoginThrottle {
    /// How long `ip` must still wait before its password is checked; `None`: go ahead.
    pub fn wait(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.by_source.get(&source_key(ip))?.locked_until()?;
        (until > now).then(|| until - now)
    }

    /// Starts checking a password from `ip`: `Ok` if it may be checked now (it then
    /// counts against the address until [`LoginThrottle::finish`]), else how long the
    /// client must wait.
    pub fn begin(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if let Some(wait) = self.wait(ip, now) {
            return Err(wait);
        }
        let entry = self.record(source_key(ip), now);
        if entry.checking > 0 && entry.count.saturating_add(entry.checking) >= FREE_FAILURES {
            return Err(CHECKING_WAIT);
        }
        entry.checking += 1;
        Ok(())
    }

    /// Ends a check [`LoginThrottle::begin`] started.
    pub fn finish(&mut self, ip: IpAddr, outcome: Outcome, now: Instant) {
        let k = source_key(ip);
        if let Some(entry) = self.by_source.get_mut(&k) {
            entry.checking = entry.checking.saturating_sub(1);
        }
        match outcome {
            Outcome::Wrong => self.failure(ip, now),
            Outcome::Right => self.success(ip),
            Outcome::Abandoned => {
                if self
                    .by_source
                    .get(&k)
                    .is_some_and(|f| f.count == 0 && f.checking == 0)
                {
                    self.by_source.remove(&k);
                }
            }
        }
    }

    /// A wrong password from `ip`.
    pub fn failure(&mut self, ip: IpAddr, now: Instant) {
        let entry = self.record(source_key(ip), now);
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    /// The record of `k`, made (room permitting, see the module doc) if there is none;
    /// an old count is forgotten.
    fn record(&mut self, k: IpAddr, now: Instant) -> &mut Failures {
        if !self.by_source.contains_key(&k) && self.by_source.len() >= MAX_TRACKED {
            // Records with checks running stay: their `finish` is still to come.
            self.by_source
                .retain(|_, f| f.checking > 0 || now.duration_since(f.last) < FORGET_AFTER);
            if self.by_source.len() >= MAX_TRACKED
                && let Some(oldest) = self
                    .by_source
                    .iter()
                    .filter(|(_, f)| f.checking == 0)
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| *k)
            {
                self.by_source.remove(&oldest);
            }
        }
        let entry = self.by_source.entry(k).or_insert(Failures {
            count: 0,
            last: now,
            checking: 0,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry
    }

    /// A correct password from `ip`: its record is cleared.
    pub fn success(&mut self, ip: IpAddr) {
        self.by_source.remove(&source_key(ip));
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn five_free_failures_then_exponential_lockout() {
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut t = LoginThrottle::default();
        for _ in 0..4 {
            t.failure(ip, t0);
            assert_eq!(t.wait(ip, t0), None);
        }
        t.failure(ip, t0);
        assert_eq!(t.wait(ip, t0), Some(2 * SEC));
        assert_eq!(t.wait(ip, t0 + 2 * SEC), None);
        t.failure(ip, t0 + 2 * SEC);
        assert_eq!(t.wait(ip, t0 + 2 * SEC), Some(4 * SEC));
        for _ in 0..30 {
            t.failure(ip, t0 + 10 * SEC);
        }
        assert_eq!(t.wait(ip, t0 + 10 * SEC), Some(MAX_LOCKOUT));
        // Another address is not affected; success clears.
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        assert_eq!(t.wait(other, t0), None);
        t.success(ip);
        assert_eq!(t.wait(ip, t0 + 10 * SEC), None);
    }

    #[test]
    fn checks_in_progress_count_until_their_outcome() {
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut t = LoginThrottle::default();
        // Requests sent together: only as many start as there are free failures.
        let started = (0..200).filter(|_| t.begin(ip, t0).is_ok()).count();
        assert_eq!(started, FREE_FAILURES as usize);
        assert_eq!(t.begin(ip, t0), Err(CHECKING_WAIT));
        for _ in 0..FREE_FAILURES {
            t.finish(ip, Outcome::Wrong, t0);
        }
        // All wrong: locked out as if they had come one after another.
        assert_eq!(t.begin(ip, t0), Err(2 * SEC));
        // Past the free failures, one check at a time.
        let later = t0 + 2 * SEC;
        assert_eq!(t.begin(ip, later), Ok(()));
        assert_eq!(t.begin(ip, later), Err(CHECKING_WAIT));
        t.finish(ip, Outcome::Wrong, later);
        assert_eq!(t.begin(ip, later), Err(4 * SEC));
        // Another address is not affected.
        assert_eq!(t.begin("10.0.0.6".parse().unwrap(), later), Ok(()));
    }

    #[test]
    fn abandoned_checks_count_nothing_and_a_right_password_clears() {
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut t = LoginThrottle::default();
        t.begin(ip, t0).unwrap();
        t.finish(ip, Outcome::Abandoned, t0);
        assert_eq!(t.tracked(), 0, "no record left behind");
        for _ in 0..FREE_FAILURES - 1 {
            t.begin(ip, t0).unwrap();
            t.finish(ip, Outcome::Wrong, t0);
        }
        t.begin(ip, t0).unwrap();
        assert_eq!(t.begin(ip, t0), Err(CHECKING_WAIT));
        t.finish(ip, Outcome::Right, t0);
        assert_eq!(t.tracked(), 0);
        assert_eq!(t.begin(ip, t0), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let t0 = Instant::now();
        let mut t = LoginThrottle::default();
        for i in 0..FREE_FAILURES {
            let ip: IpAddr = format!("fd00:1:2:3::{:x}", i + 1).parse().unwrap();
            t.failure(ip, t0);
        }
        let same_prefix: IpAddr = "fd00:1:2:3:ffff::1".parse().unwrap();
        assert!(t.wait(same_prefix, t0).is_some());
        let other_prefix: IpAddr = "fd00:1:2:4::1".parse().unwrap();
        assert!(t.wait(other_prefix, t0).is_none());
        for _ in 0..FREE_FAILURES {
            t.failure("::ffff:10.0.0.9".parse().unwrap(), t0);
        }
        assert!(t.wait("10.0.0.9".parse().unwrap(), t0).is_some());
    }

    #[test]
    fn memory_is_bounded_and_old_records_are_forgotten() {
        let t0 = Instant::now();
        let mut t = LoginThrottle::default();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            t.failure(
                IpAddr::V4(i.into()),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            t.failure(ip, t0);
        }
        assert!(t.wait(ip, t0).is_some());
        // An hour later the count starts again.
        let later = t0 + FORGET_AFTER;
        t.failure(ip, later);
        assert_eq!(t.wait(ip, later), None);
    }
}
