//! Logged-in browsers: a server-side map from session id to session (DESIGN §5).
//!
//! The id is 256 bits from the OS's random source, sent once in the `netmon_session`
//! cookie; the map keys on its SHA-256, so neither a memory dump nor a timing
//! difference in the map lookup gives away a usable id. Each session has its own
//! CSRF token (another 256 random bits) that pages put into their forms.
//!
//! A session ends at logout, after `session_idle_minutes` without a request, after
//! `session_hours` whatever happens, and when netmon restarts (nothing is stored).
//! At most [`MAX_SESSIONS`] exist: a new login past that ends the one used least
//! recently, so memory stays bounded even if a script logs in in a loop.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Sessions held at once. A household has a few browsers; each entry is ~150 bytes.
pub const MAX_SESSIONS: usize = 64;

/// Random bytes in a session id and in a CSRF token (hex-encoded: twice as many chars).
const TOKEN_BYTES: usize = 32;

/// A fresh random token as lowercase hex; `None` if the OS has no randomness to give
/// (then nobody logs in, rather than with a guessable id).
pub fn random_token() -> Option<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    crate::random::random_bytes(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `text` has the shape of a token: cheap to check before hashing anything.
pub fn is_token_shaped(text: &str) -> bool {
    text.len() == TOKEN_BYTES * 2 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Equality that takes the same time wherever the first difference is, so a CSRF or
/// bearer token cannot be guessed byte by byte from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type Key = [u8; 32];

fn key(id: &str) -> Key {
    Sha256::digest(id.as_bytes()).into()
}

struct Session {
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// The session map; one `std::sync::Mutex` around it in [`super::auth::Auth`] (held for
/// a lookup, never across an await).
pub struct Sessions {
    by_key: HashMap<Key, Session>,
    /// `session_hours`.
    max_age: Duration,
    /// `session_idle_minutes`.
    idle: Duration,
}

impl Sessions {
    pub fn new(max_age: Duration, idle: Duration) -> Sessions {
        Sessions {
            by_key: HashMap::new(),
            max_age,
            idle,
        }
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.created) >= self.max_age
            || now.duration_since(s.last_used) >= self.idle
    }

    /// A new session: its id (for the cookie) and its CSRF token.
    pub fn create(&mut self, now: Instant) -> Option<(String, String)> {
        let id = random_token()?;
        let csrf = random_token()?;
        self.by_key.retain(|_, s| {
            now.duration_since(s.created) < self.max_age
                && now.duration_since(s.last_used) < self.idle
        });
        if self.by_key.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .by_key
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k)
        {
            self.by_key.remove(&oldest);
        }
        self.by_key.insert(
            key(&id),
            Session {
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        Some((id, csrf))
    }

    /// The CSRF token of the live session `id`, marking it used; `None` for an unknown
    /// or expired id (an expired one is removed).
    pub fn touch(&mut self, id: &str, now: Instant) -> Option<String> {
        if !is_token_shaped(id) {
            return None;
        }
        let k = key(id);
        let session = self.by_key.get(&k)?;
        if self.expired(session, now) {
            self.by_key.remove(&k);
            return None;
        }
        let session = self.by_key.get_mut(&k)?;
        session.last_used = now;
        Some(session.csrf.clone())
    }

    /// Logout.
    pub fn remove(&mut self, id: &str) {
        if is_token_shaped(id) {
            self.by_key.remove(&key(id));
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn create_touch_remove() {
        let t0 = Instant::now();
        let mut s = Sessions::new(24 * HOUR, 2 * HOUR);
        let (id, csrf) = s.create(t0).unwrap();
        assert!(is_token_shaped(&id) && is_token_shaped(&csrf) && id != csrf);
        assert_eq!(s.touch(&id, t0 + HOUR).as_deref(), Some(csrf.as_str()));
        assert_eq!(s.touch(&"0".repeat(64), t0), None);
        assert_eq!(s.touch("short", t0), None);
        s.remove(&id);
        assert_eq!(s.touch(&id, t0), None);
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let t0 = Instant::now();
        let mut s = Sessions::new(24 * HOUR, 2 * HOUR);
        let (idle, _) = s.create(t0).unwrap();
        assert_eq!(s.touch(&idle, t0 + 2 * HOUR), None, "idle for 2 h");
        let (busy, _) = s.create(t0).unwrap();
        for h in 1..24 {
            assert!(
                s.touch(&busy, t0 + h * HOUR).is_some(),
                "used every hour: {h}"
            );
        }
        assert_eq!(s.touch(&busy, t0 + 24 * HOUR), None, "24 h at most");
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn capped_by_evicting_the_least_recently_used() {
        let t0 = Instant::now();
        let mut s = Sessions::new(24 * HOUR, 2 * HOUR);
        let ids: Vec<String> = (0..MAX_SESSIONS)
            .map(|i| s.create(t0 + Duration::from_secs(i as u64)).unwrap().0)
            .collect();
        // The first one is used again, so the second is now the least recent.
        let later = t0 + Duration::from_secs(1000);
        assert!(s.touch(&ids[0], later).is_some());
        s.create(later).unwrap();
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.touch(&ids[0], later).is_some());
        assert!(s.touch(&ids[1], later).is_none());
        assert!(s.touch(&ids[2], later).is_some());
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
