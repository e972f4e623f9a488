//! Devices that resolve names around the router: DNS-over-TLS and -QUIC (port 853),
//! DNS-over-HTTPS to a known resolver, and plain DNS to an outside resolver.
//!
//! Such a device asks questions the router's resolver never answers, so netmon sees no
//! answer for its flows (except plain DNS to an outside resolver, whose answers the DNS
//! tap still reads): their names come from TLS server names (`store::dns`, match
//! "sni") or not at all, and detection would otherwise take its browsing for
//! connections by address. The owner should know: the device keeps the latest such
//! resolver (`devices.encrypted_dns`, shown on its page) and
//! `netmon_encrypted_dns_flows_total` counts the flows by kind.
//!
//! A DNS-over-HTTPS resolver is an HTTPS server like any other; it is recognised by its
//! name or its address. The shipped list ([`KNOWN`]) holds the public resolvers browsers
//! and phones offer, with their published anycast addresses; `dns.encrypted_resolvers`
//! adds names or addresses. Addresses of a listed name are also learned from the answers
//! a device gets when it looks the resolver up (its bootstrap query), and from a
//! ClientHello that names it.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use rusqlite::{Transaction, params};

use crate::flow::{PROTO_TCP, PROTO_UDP};
use crate::time::MINUTE_MS;

/// Public DNS-over-HTTPS resolvers and their published addresses.
pub const KNOWN: &[(&str, &[&str])] = &[
    (
        "dns.google",
        &[
            "8.8.8.8",
            "8.8.4.4",
            "2001:4860:4860::8888",
            "2001:4860:4860::8844",
        ],
    ),
    (
        "cloudflare-dns.com",
        &[
            "1.1.1.1",
            "1.0.0.1",
            "2606:4700:4700::1111",
            "2606:4700:4700::1001",
        ],
    ),
    ("mozilla.cloudflare-dns.com", &[]),
    ("chrome.cloudflare-dns.com", &[]),
    ("one.one.one.one", &[]),
    (
        "dns.quad9.net",
        &["9.9.9.9", "149.112.112.112", "2620:fe::fe", "2620:fe::9"],
    ),
    ("doh.opendns.com", &["208.67.222.222", "208.67.220.220"]),
    ("dns.nextdns.io", &[]),
    ("dns.adguard-dns.com", &["94.140.14.14", "94.140.15.15"]),
    ("doh.cleanbrowsing.org", &[]),
    ("dns.mullvad.net", &["194.242.2.2"]),
    ("doh.dns.apple.com", &[]),
    ("dns.alidns.com", &["223.5.5.5", "223.6.6.6"]),
];

/// A flow to a resolver around the router's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverUse {
    /// `netmon_encrypted_dns_flows_total`'s `kind`: dot, doq, doh, outside-port-53.
    pub kind: &'static str,
    /// What the device page says, e.g. "DNS-over-HTTPS via dns.google".
    pub text: String,
}

/// Resolver addresses learned from answers, at most (past it the learned ones restart).
const LEARNED_CAP: usize = 4096;

/// The writer's knowledge of encrypted resolvers, and when each device was last
/// written.
pub struct Resolvers {
    names: HashSet<String>,
    /// Address → the resolver's name (or the address itself, for a configured one).
    addrs: HashMap<IpAddr, Arc<str>>,
    /// Addresses learned from answers and ClientHellos.
    learned: HashMap<IpAddr, Arc<str>>,
    /// Device → (minute last written, what was written): one update per device and
    /// minute at most.
    written: HashMap<i64, (i64, String)>,
}

impl Resolvers {
    /// The shipped list and `extra` (`dns.encrypted_resolvers`: names or addresses).
    pub fn new(extra: &[String]) -> Resolvers {
        let mut r = Resolvers {
            names: HashSet::new(),
            addrs: HashMap::new(),
            learned: HashMap::new(),
            written: HashMap::new(),
        };
        for (name, addrs) in KNOWN {
            let name: Arc<str> = Arc::from(*name);
            r.names.insert(name.to_string());
            for a in *addrs {
                if let Ok(ip) = a.parse() {
                    r.addrs.insert(ip, name.clone());
                }
            }
        }
        for e in extra {
            match e.parse::<IpAddr>() {
                Ok(ip) => {
                    r.addrs.insert(ip, Arc::from(e.as_str()));
                }
                Err(_) => {
                    r.names.insert(crate::dns_name::normalize_name(e));
                }
            }
        }
        r
    }

    /// Whether `name` is a listed resolver.
    pub fn is_resolver(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// `ip` serves the listed resolver `name` (an answer for it, or a ClientHello
    /// naming it).
    pub fn learn(&mut self, name: &str, ip: IpAddr) {
        if !self.is_resolver(name)
            || self.addrs.contains_key(&ip)
            || self.learned.get(&ip).is_some_and(|n| &**n == name)
        {
            return;
        }
        if self.learned.len() >= LEARNED_CAP {
            // Learned addresses come back with the next lookup.
            self.learned.clear();
        }
        self.learned.insert(ip, Arc::from(name));
    }

    /// What a new outbound flow says about its device's DNS, if anything: e.g.
    /// "DNS-over-HTTPS via dns.google".
    pub fn classify(&self, proto: u8, dport: Option<u16>, dst: IpAddr) -> Option<ResolverUse> {
        if !matches!(dport, Some(53 | 443 | 853)) {
            return None;
        }
        let known = self
            .addrs
            .get(&dst)
            .or_else(|| self.learned.get(&dst))
            .map(|n| n.to_string());
        let via = || known.clone().unwrap_or(dst.to_string());
        let (kind, text) = match (proto, dport?) {
            (PROTO_TCP, 853) => ("dot", format!("DNS-over-TLS via {}", via())),
            (PROTO_UDP, 853) => ("doq", format!("DNS-over-QUIC via {}", via())),
            (PROTO_TCP | PROTO_UDP, 443) if known.is_some() => {
                ("doh", format!("DNS-over-HTTPS via {}", via()))
            }
            (PROTO_TCP | PROTO_UDP, 53) => (
                "outside-port-53",
                format!("DNS to the outside resolver {dst}"),
            ),
            _ => return None,
        };
        Some(ResolverUse { kind, text })
    }

    /// Records on `device` that it used a resolver at `at` (once a minute per device at
    /// most) and counts the flow.
    pub fn note(
        &mut self,
        tx: &Transaction,
        device: i64,
        used: ResolverUse,
        at: i64,
    ) -> rusqlite::Result<()> {
        metrics::counter!("netmon_encrypted_dns_flows_total", "kind" => used.kind).increment(1);
        let what = used.text;
        let minute = at - at.rem_euclid(MINUTE_MS);
        if self
            .written
            .get(&device)
            .is_some_and(|(m, w)| *m == minute && *w == what)
        {
            return Ok(());
        }
        tx.prepare_cached(
            "UPDATE devices SET encrypted_dns = ?2, encrypted_dns_at = max(coalesce(encrypted_dns_at, 0), ?3)
             WHERE id = ?1",
        )?
        .execute(params![device, what, at])?;
        if self.written.len() >= 4096 {
            self.written.clear();
        }
        self.written.insert(device, (minute, what));
        Ok(())
    }

    /// The writer's transaction rolled back: what was written may not be.
    pub fn rolled_back(&mut self) {
        self.written.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn encrypted_and_outside_dns_are_told_by_port_address_and_name() {
        let mut r = Resolvers::new(&["DoH.Example.Test".into(), "192.0.2.53".into()]);
        r.learn("doh.example.test", ip("198.51.100.8"));
        let c = |proto, port, dst: &str| r.classify(proto, Some(port), ip(dst)).map(|u| u.text);
        assert_eq!(
            c(PROTO_TCP, 853, "8.8.8.8").as_deref(),
            Some("DNS-over-TLS via dns.google")
        );
        assert_eq!(
            c(PROTO_UDP, 853, "198.51.100.9").as_deref(),
            Some("DNS-over-QUIC via 198.51.100.9")
        );
        assert_eq!(
            c(PROTO_TCP, 443, "2606:4700:4700::1111").as_deref(),
            Some("DNS-over-HTTPS via cloudflare-dns.com")
        );
        assert_eq!(
            c(PROTO_TCP, 443, "198.51.100.8").as_deref(),
            Some("DNS-over-HTTPS via doh.example.test")
        );
        assert_eq!(
            c(PROTO_TCP, 443, "192.0.2.53").as_deref(),
            Some("DNS-over-HTTPS via 192.0.2.53")
        );
        assert_eq!(
            c(PROTO_UDP, 53, "198.51.100.9").as_deref(),
            Some("DNS to the outside resolver 198.51.100.9")
        );
        // Ordinary HTTPS, and other ports, say nothing.
        assert_eq!(c(PROTO_TCP, 443, "198.51.100.9"), None);
        assert_eq!(c(PROTO_TCP, 8853, "8.8.8.8"), None);
        assert_eq!(r.classify(1, None, ip("8.8.8.8")), None);
        // Each use carries the kind the metric counts it by.
        let kind = |proto, port, dst: &str| r.classify(proto, Some(port), ip(dst)).map(|u| u.kind);
        assert_eq!(kind(PROTO_TCP, 853, "8.8.8.8"), Some("dot"));
        assert_eq!(kind(PROTO_UDP, 853, "8.8.8.8"), Some("doq"));
        assert_eq!(kind(PROTO_TCP, 443, "8.8.8.8"), Some("doh"));
        assert_eq!(kind(PROTO_UDP, 53, "8.8.8.8"), Some("outside-port-53"));
    }

    #[test]
    fn addresses_of_a_listed_resolver_are_learned() {
        let mut r = Resolvers::new(&[]);
        let doh = ip("198.51.100.77");
        assert_eq!(r.classify(PROTO_TCP, Some(443), doh), None);
        r.learn("video.example.test", doh);
        assert_eq!(r.classify(PROTO_TCP, Some(443), doh), None);
        r.learn("dns.nextdns.io", doh);
        assert_eq!(
            r.classify(PROTO_TCP, Some(443), doh)
                .map(|u| u.text)
                .as_deref(),
            Some("DNS-over-HTTPS via dns.nextdns.io")
        );
        // Bounded: past the cap the learned addresses restart, the shipped ones stay.
        for i in 0..=LEARNED_CAP as u32 {
            r.learn(
                "dns.nextdns.io",
                IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
            );
        }
        assert!(r.learned.len() < LEARNED_CAP);
        assert!(r.classify(PROTO_TCP, Some(443), ip("8.8.8.8")).is_some());
    }
}
