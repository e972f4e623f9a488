//! Reverse DNS (PTR) of remote hosts with a small DNS client of netmon's own.
//!
//! Why not libc's `getnameinfo`: netmon is one static binary, and a static binary has no
//! NSS, so libc resolution is unreliable there (and blocking). Why not hickory-resolver:
//! it pulls idna and the ICU tables into the router binary for names netmon only ever
//! displays. A PTR query is one UDP datagram each way; `simple-dns` (already used to read
//! captured answers) builds the query and parses the reply, and names are made canonical
//! with [`crate::dns_name::name_from_labels`] like every other name netmon stores.
//!
//! Each query uses its own socket (a random source port) and a random id, and the reply
//! must echo both the id and the question (RFC 5452): an off-path attacker has to guess
//! both to plant a name. Answers are cached in memory: a PTR for its TTL (within
//! [`MIN_POSITIVE_TTL_S`]..[`MAX_TTL_S`]), "no PTR" for the negative TTL of RFC 2308
//! (the SOA's minimum, at least the configured `rdns_negative_ttl_s`), a failure
//! (timeout, SERVFAIL) for [`FAILURE_RETRY_S`]. The database keeps the same expiry, so a
//! restart does not re-ask either.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use crate::dns_name::name_from_labels;

/// A PTR is kept at least this long even when its TTL is shorter: remote hosts' names
/// change rarely, and a router should not re-ask every few minutes.
pub const MIN_POSITIVE_TTL_S: u32 = 3600;
/// Nothing is cached longer than a week, whatever the TTL says.
pub const MAX_TTL_S: u32 = 7 * 86_400;
/// After a timeout or a server failure the address is tried again this much later.
pub const FAILURE_RETRY_S: u32 = 600;
/// Addresses cached in memory. Past it expired entries are dropped, and if that is not
/// enough the cache starts over: the database still holds every answer's expiry, so a
/// cleared cache costs no extra queries.
pub const CACHE_CAP: usize = 4096;
/// How long one attempt waits for the reply; there is one retry.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a reverse lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtrAnswer {
    /// The PTR name, canonical.
    Name(String),
    /// The address has no PTR (NXDOMAIN, an empty answer, or a server that refuses the
    /// zone): shown as "none".
    NoPtr,
    /// Timeout or server failure: nothing is known; try again later.
    Failed,
}

/// A lookup's answer and when it stops being valid (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtrResult {
    pub answer: PtrAnswer,
    pub expires_at_ms: i64,
}

/// One parsed reply, before TTL policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ptr {
        name: String,
        ttl: u32,
    },
    /// No PTR; `ttl` from the SOA in the authority section when the server sent one.
    Negative {
        ttl: Option<u32>,
    },
    /// SERVFAIL and other failures.
    Failure,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("not a DNS message: {0}")]
    Malformed(String),
    #[error("reply does not match the query (id or question)")]
    Mismatch,
}

/// `d.c.b.a.in-addr.arpa` / the 32 nibbles `….ip6.arpa` (RFC 1035 §3.5, RFC 3596 §2.5).
/// An IPv4-mapped IPv6 address is asked as the IPv4 address it is.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => reverse_name(IpAddr::V4(v4)),
            None => {
                let mut s = String::with_capacity(72);
                for byte in v6.octets().iter().rev() {
                    for nibble in [byte & 0xf, byte >> 4] {
                        s.push(char::from_digit(nibble.into(), 16).unwrap_or('0'));
                        s.push('.');
                    }
                }
                s.push_str("ip6.arpa");
                s
            }
        },
    }
}

/// The query datagram for the PTR of `qname`, recursion desired.
pub fn encode_query(id: u16, qname: &str) -> Result<Vec<u8>, ReplyError> {
    encode_question(id, qname, TYPE::PTR)
}

/// A query datagram asking for `qname`'s `qtype` records, recursion desired.
pub fn encode_question(id: u16, qname: &str, qtype: TYPE) -> Result<Vec<u8>, ReplyError> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let name = Name::new(qname).map_err(|e| ReplyError::Malformed(e.to_string()))?;
    packet.questions.push(Question::new(
        name,
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet
        .build_bytes_vec()
        .map_err(|e| ReplyError::Malformed(e.to_string()))
}

/// `msg` parsed, when it is the reply to [`encode_question`]`(id, qname, qtype)`: a
/// response echoing the id and the question (RFC 5452 — anything else is a stray or a
/// spoofing attempt, [`ReplyError::Mismatch`]).
pub fn reply_to<'a>(
    msg: &'a [u8],
    id: u16,
    qname: &str,
    qtype: TYPE,
) -> Result<Packet<'a>, ReplyError> {
    let packet = Packet::parse(msg).map_err(|e| ReplyError::Malformed(e.to_string()))?;
    let asked = packet.questions.first().map(|q| {
        (
            name_from_labels(q.qname.as_bytes()),
            q.qtype == QTYPE::TYPE(qtype),
        )
    });
    if packet.id() != id
        || !packet.has_flags(PacketFlag::RESPONSE)
        || asked != Some((qname.to_ascii_lowercase(), true))
    {
        return Err(ReplyError::Mismatch);
    }
    Ok(packet)
}

/// Parses the reply to [`encode_query`]`(id, qname)`.
pub fn parse_reply(msg: &[u8], id: u16, qname: &str) -> Result<Reply, ReplyError> {
    let packet = reply_to(msg, id, qname, TYPE::PTR)?;
    // REFUSED (a resolver not serving us, or a zone it has no server for) says nothing
    // about the address: a failure, retried later — never cached as "no name".
    match packet.rcode() {
        RCODE::NoError | RCODE::NameError => {}
        _ => return Ok(Reply::Failure),
    }
    // Any PTR in the answer: with RFC 2317 classless delegation it sits behind a CNAME.
    let ptr = packet.answers.iter().find_map(|rr| match &rr.rdata {
        RData::PTR(p) => Some((name_from_labels(p.0.as_bytes()), rr.ttl)),
        _ => None,
    });
    if let Some((name, ttl)) = ptr.filter(|(name, _)| !name.is_empty()) {
        return Ok(Reply::Ptr { name, ttl });
    }
    // RFC 2308 §5: a negative answer is cached for min(SOA TTL, SOA MINIMUM).
    let ttl = packet.name_servers.iter().find_map(|rr| match &rr.rdata {
        RData::SOA(soa) => Some(rr.ttl.min(soa.minimum)),
        _ => None,
    });
    Ok(Reply::Negative { ttl })
}

/// Applies the TTL policy to a reply (or to no reply at all: `None` = timed out).
pub fn result_of(reply: Option<Reply>, now_ms: i64, negative_ttl_s: u32) -> PtrResult {
    let (answer, ttl) = match reply {
        Some(Reply::Ptr { name, ttl }) => (
            PtrAnswer::Name(name),
            ttl.clamp(MIN_POSITIVE_TTL_S, MAX_TTL_S),
        ),
        Some(Reply::Negative { ttl }) => (
            PtrAnswer::NoPtr,
            ttl.unwrap_or(0)
                .clamp(negative_ttl_s, MAX_TTL_S.max(negative_ttl_s)),
        ),
        Some(Reply::Failure) | None => (PtrAnswer::Failed, FAILURE_RETRY_S),
    };
    PtrResult {
        answer,
        expires_at_ms: now_ms + i64::from(ttl) * 1000,
    }
}

/// In-memory answers, keyed by address. `now_ms` is passed in, so tests drive the clock.
#[derive(Debug, Default)]
pub struct PtrCache {
    entries: HashMap<IpAddr, PtrResult>,
}

impl PtrCache {
    /// The cached answer for `ip` if it has not expired.
    pub fn get(&self, ip: IpAddr, now_ms: i64) -> Option<&PtrResult> {
        self.entries.get(&ip).filter(|r| r.expires_at_ms > now_ms)
    }

    pub fn insert(&mut self, ip: IpAddr, result: PtrResult, now_ms: i64) {
        if self.entries.len() >= CACHE_CAP && !self.entries.contains_key(&ip) {
            self.entries.retain(|_, r| r.expires_at_ms > now_ms);
            if self.entries.len() >= CACHE_CAP {
                self.entries.clear();
            }
        }
        self.entries.insert(ip, result);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The reverse resolver: one upstream server, a concurrency bound, the cache.
pub struct PtrResolver {
    server: SocketAddr,
    /// Queries in flight at most: a burst of new hosts (a scan, a torrent) must not turn
    /// into a burst of hundreds of datagrams at the router's resolver.
    permits: Semaphore,
    /// A `std` mutex: held only to read or insert, never across an await.
    cache: Mutex<PtrCache>,
    negative_ttl_s: u32,
    timeout: Duration,
}

impl PtrResolver {
    pub fn new(server: SocketAddr, concurrency: usize, negative_ttl_s: u32) -> PtrResolver {
        PtrResolver {
            server,
            permits: Semaphore::new(concurrency.max(1)),
            cache: Mutex::new(PtrCache::default()),
            negative_ttl_s,
            timeout: ATTEMPT_TIMEOUT,
        }
    }

    /// The PTR of `ip`: from the cache while valid, else asked (one retry on timeout).
    pub async fn lookup(&self, ip: IpAddr) -> PtrResult {
        if let Some(hit) = self.cached(ip, crate::time::now_ms()) {
            return hit;
        }
        let reply = {
            let Ok(_permit) = self.permits.acquire().await else {
                return result_of(None, crate::time::now_ms(), self.negative_ttl_s);
            };
            self.ask(ip).await
        };
        let now = crate::time::now_ms();
        let result = result_of(reply, now, self.negative_ttl_s);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ip, result.clone(), now);
        result
    }

    fn cached(&self, ip: IpAddr, now_ms: i64) -> Option<PtrResult> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ip, now_ms)
            .cloned()
    }

    /// Two attempts, each on a fresh socket with a fresh id. `None`: no usable reply.
    async fn ask(&self, ip: IpAddr) -> Option<Reply> {
        let qname = reverse_name(ip);
        for attempt in 0..2 {
            metrics::counter!("netmon_rdns_queries_total").increment(1);
            match tokio::time::timeout(self.timeout, self.attempt(&qname)).await {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => log::debug!("PTR {qname} via {}: {e:#}", self.server),
                Err(_) => log::debug!(
                    "PTR {qname} via {}: no reply (attempt {})",
                    self.server,
                    attempt + 1
                ),
            }
        }
        metrics::counter!("netmon_rdns_failures_total").increment(1);
        None
    }

    async fn attempt(&self, qname: &str) -> anyhow::Result<Reply> {
        let id = random_id();
        let query = encode_query(id, qname)?;
        let bind: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(self.server).await?;
        socket.send(&query).await?;
        let mut buf = [0u8; 1500];
        // Datagrams that do not match (late replies, spoofing attempts) are skipped.
        loop {
            let n = socket.recv(&mut buf).await?;
            match parse_reply(&buf[..n], id, qname) {
                Ok(reply) => return Ok(reply),
                Err(e) => log::debug!("PTR {qname}: ignoring a datagram: {e}"),
            }
        }
    }
}

/// A query id no one off-path can predict: std's `RandomState` is seeded from the OS.
fn random_id() -> u16 {
    (RandomState::new().hash_one(crate::time::now_ms()) & 0xffff) as u16
}

/// The first `nameserver` of resolv.conf text, if any.
pub fn first_nameserver(resolv_conf: &str) -> Option<IpAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
            // A scoped IPv6 address ("fe80::1%eth0") cannot be used without the scope.
            .and_then(|a| a.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as a server sends it: header, the question, then `records`.
    fn reply(id: u16, rcode: u8, qname: &str, answers: u16, auth: u16, records: &[u8]) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
        m.extend_from_slice(&answers.to_be_bytes());
        m.extend_from_slice(&auth.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&wire_name(qname));
        m.extend_from_slice(&[0, 12, 0, 1]);
        m.extend_from_slice(records);
        m
    }

    fn wire_name(name: &str) -> Vec<u8> {
        let mut w = Vec::new();
        for label in name.split('.') {
            w.push(label.len() as u8);
            w.extend_from_slice(label.as_bytes());
        }
        w.push(0);
        w
    }

    fn rr(rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
        // Owner: a pointer to the question name at offset 12.
        let mut r = vec![0xc0, 12];
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&[0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }

    const Q84: &str = "84.113.0.203.in-addr.arpa";

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("203.0.113.84".parse().unwrap()), Q84);
        assert_eq!(reverse_name("::ffff:203.0.113.84".parse().unwrap()), Q84);
        assert_eq!(
            reverse_name("2001:db8:77::84".parse().unwrap()),
            "4.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.7.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn query_is_a_ptr_question_with_recursion_desired() {
        let q = encode_query(0xbeef, Q84).unwrap();
        assert_eq!(&q[..4], &[0xbe, 0xef, 0x01, 0x00]);
        assert_eq!(&q[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        let mut question = wire_name(Q84);
        question.extend_from_slice(&[0, 12, 0, 1]);
        assert_eq!(&q[12..], &question[..]);
    }

    #[test]
    fn ptr_answer_is_canonical_name_with_ttl() {
        let msg = reply(
            7,
            0,
            Q84,
            1,
            0,
            &rr(12, 300, &wire_name("Shop.Example.TEST")),
        );
        assert_eq!(
            parse_reply(&msg, 7, Q84).unwrap(),
            Reply::Ptr {
                name: "shop.example.test".into(),
                ttl: 300
            }
        );
    }

    #[test]
    fn nxdomain_takes_negative_ttl_from_soa() {
        let mut soa = wire_name("ns.example.test");
        soa.extend_from_slice(&wire_name("hostmaster.example.test"));
        for v in [1u32, 1200, 180, 1_209_600, 900] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        let msg = reply(9, 3, Q84, 0, 1, &rr(6, 3600, &soa));
        assert_eq!(
            parse_reply(&msg, 9, Q84).unwrap(),
            Reply::Negative { ttl: Some(900) }
        );
        // NXDOMAIN without an SOA: no TTL from the server.
        let msg = reply(9, 3, Q84, 0, 0, &[]);
        assert_eq!(
            parse_reply(&msg, 9, Q84).unwrap(),
            Reply::Negative { ttl: None }
        );
        // REFUSED says nothing about the address.
        let msg = reply(9, 5, Q84, 0, 0, &[]);
        assert_eq!(parse_reply(&msg, 9, Q84).unwrap(), Reply::Failure);
        let msg = reply(9, 2, Q84, 0, 0, &[]);
        assert_eq!(parse_reply(&msg, 9, Q84).unwrap(), Reply::Failure);
    }

    #[test]
    fn mismatched_or_garbage_replies_are_rejected() {
        let msg = reply(7, 0, Q84, 0, 0, &[]);
        assert!(matches!(
            parse_reply(&msg, 8, Q84),
            Err(ReplyError::Mismatch)
        ));
        assert!(matches!(
            parse_reply(&msg, 7, "85.113.0.203.in-addr.arpa"),
            Err(ReplyError::Mismatch)
        ));
        assert!(parse_reply(&msg[..15], 7, Q84).is_err());
        assert!(parse_reply(&[], 7, Q84).is_err());
    }

    #[test]
    fn ttl_policy() {
        let now = 1_000_000;
        let r = result_of(
            Some(Reply::Ptr {
                name: "a.test".into(),
                ttl: 60,
            }),
            now,
            3600,
        );
        assert_eq!(r.expires_at_ms, now + i64::from(MIN_POSITIVE_TTL_S) * 1000);
        let r = result_of(Some(Reply::Negative { ttl: Some(900) }), now, 3600);
        assert_eq!(
            (r.answer, r.expires_at_ms),
            (PtrAnswer::NoPtr, now + 3_600_000)
        );
        let r = result_of(Some(Reply::Negative { ttl: Some(86_400) }), now, 3600);
        assert_eq!(r.expires_at_ms, now + 86_400_000);
        let r = result_of(None, now, 3600);
        assert_eq!(
            (r.answer, r.expires_at_ms),
            (PtrAnswer::Failed, now + i64::from(FAILURE_RETRY_S) * 1000)
        );
    }

    /// Negative caching with a fake clock: "none" is served from the cache until its
    /// negative TTL has passed, then the entry is gone and the address is asked again.
    #[test]
    fn negative_answer_is_cached_until_its_ttl() {
        let ip: IpAddr = "203.0.113.88".parse().unwrap();
        let mut cache = PtrCache::default();
        let t0 = 5_000_000;
        cache.insert(
            ip,
            result_of(Some(Reply::Negative { ttl: None }), t0, 3600),
            t0,
        );
        for later_s in [0, 1, 600, 3599] {
            let hit = cache.get(ip, t0 + later_s * 1000).map(|r| &r.answer);
            assert_eq!(hit, Some(&PtrAnswer::NoPtr), "{later_s} s later");
        }
        assert!(cache.get(ip, t0 + 3_600_000).is_none());
    }

    #[test]
    fn cache_stays_bounded() {
        let mut cache = PtrCache::default();
        let live = PtrResult {
            answer: PtrAnswer::NoPtr,
            expires_at_ms: 10_000,
        };
        for i in 0..(CACHE_CAP as u32 + 10) {
            cache.insert(IpAddr::V4(Ipv4Addr::from(i)), live.clone(), 0);
            assert!(cache.len() <= CACHE_CAP);
        }
        assert!(!cache.is_empty());
    }

    #[test]
    fn resolv_conf_first_nameserver() {
        let text =
            "# x\nsearch lan\nnameserver fe80::1%eth0\nnameserver 127.0.0.53\nnameserver 1.1.1.1\n";
        assert_eq!(first_nameserver(text), "127.0.0.53".parse().ok());
        assert_eq!(first_nameserver("search lan\n"), None);
    }

    /// The whole client against a local fake server: query out, crafted answer back.
    #[tokio::test]
    async fn resolver_asks_once_and_caches() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let fake = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let msg = reply(id, 3, "88.113.0.203.in-addr.arpa", 0, 0, &[]);
            assert!(n > 12);
            server.send_to(&msg, from).unwrap();
            // A second query would be answered here; the test checks there is none.
            server
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            server.recv_from(&mut buf).is_ok()
        });
        let resolver = PtrResolver::new(addr, 2, 3600);
        let ip: IpAddr = "203.0.113.88".parse().unwrap();
        let first = resolver.lookup(ip).await;
        assert_eq!(first.answer, PtrAnswer::NoPtr);
        let second = resolver.lookup(ip).await;
        assert_eq!(second, first);
        assert!(!fake.join().unwrap(), "the cached address was asked again");
    }
}
