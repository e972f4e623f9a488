//! From candidates to hits and incidents: the score, the alert policy, and the two
//! fingerprints that decide what folds into what. The SQL is `store::detect::record`.
//!
//! - **Score**: the sum of the reasons' weights, clamped to 100.
//! - **Hit**: a candidate scoring at least `hit_threshold`. Its fingerprint is the
//!   device, destination and the sorted codes for a flow (`"7|203.0.113.9|6|4444|…"`),
//!   or the device and its one code for a device-level candidate (`"7|device|PORT_SCAN_LIKE"`),
//!   so a scan is one hit whatever the number of ports. A repeat of a fingerprint within
//!   `dedup_s` of that hit's *first* occurrence folds into it (count, last_ts): a steady
//!   condition leaves one hit per `dedup_s`, a timeline rather than a single row.
//! - **Alertable**: score ≥ `alert_threshold`, at least one of `required_codes` (when
//!   the list is not empty), and not only `never_alone_codes`.
//! - **Incident**: alertable hits of one device and one [`Kind`] of behaviour share an
//!   incident while they keep coming: a hit joins the newest incident with its
//!   fingerprint whose `last_seen` is within `incident_window_s` (rolling), acknowledged
//!   or not — an acknowledged condition that goes on stays acknowledged. Once the window
//!   passes without a hit, the next one opens a new incident. The kind, not the
//!   destination, is in the fingerprint: BitTorrent reaching fifty peers on unusual
//!   ports is one "unusual traffic" incident, an upload burst and the flow that carried
//!   it (HIGH_EGRESS + UPLOAD_HEAVY) one "possible exfiltration".

use super::score::Candidate;
use super::{Code, Reason};
use crate::config;

/// The alert policy, from `[detect]`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub hit_threshold: u32,
    pub alert_threshold: u32,
    pub required: Vec<Code>,
    pub never_alone: Vec<Code>,
    pub dedup_ms: i64,
    pub window_ms: i64,
}

impl Policy {
    pub fn from_config(c: &config::Detect) -> Policy {
        Policy {
            hit_threshold: c.hit_threshold,
            alert_threshold: c.alert_threshold,
            required: c.required_codes.clone(),
            never_alone: c.never_alone_codes.clone(),
            dedup_ms: (c.dedup_s * 1000) as i64,
            window_ms: (c.incident_window_s * 1000) as i64,
        }
    }

    pub fn alertable(&self, score: u32, codes: &[Code]) -> bool {
        score >= self.alert_threshold
            && (self.required.is_empty() || codes.iter().any(|c| self.required.contains(c)))
            && !codes.iter().all(|c| self.never_alone.contains(c))
    }
}

/// Sum of the weights, clamped to 0..=100.
pub fn score(reasons: &[Reason]) -> u32 {
    reasons.iter().map(|r| r.weight).sum::<u32>().min(100)
}

/// The distinct codes, sorted.
pub fn codes(reasons: &[Reason]) -> Vec<Code> {
    let mut codes: Vec<Code> = reasons.iter().map(|r| r.code).collect();
    codes.sort();
    codes.dedup();
    codes
}

pub fn codes_text(codes: &[Code]) -> String {
    codes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// See the module docs.
pub fn hit_fingerprint(c: &Candidate, codes: &[Code]) -> String {
    match c.remote_ip {
        None => format!("{}|device|{}", c.device_id, codes_text(codes)),
        Some(ip) => format!(
            "{}|{ip}|{}|{}|{}",
            c.device_id,
            c.proto.unwrap_or(0),
            c.dport.map_or(String::new(), |p| p.to_string()),
            codes_text(codes)
        ),
    }
}

/// What kind of behaviour an incident is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PORT_SCAN_LIKE, HIGH_FANOUT: reaching out to many places.
    Scan,
    /// HIGH_EGRESS, UPLOAD_HEAVY: sending out much more than usual.
    Exfiltration,
    /// NXDOMAIN_BURST: asking for names that do not exist (DGA-like).
    Dga,
    /// BEACON: calling home at regular intervals.
    Beacon,
    /// Anything else alertable (an unusual port or protocol, …).
    Unusual,
}

impl Kind {
    /// The kind of a hit with `codes`, by the most specific code it carries.
    pub fn of(codes: &[Code]) -> Kind {
        [Kind::Scan, Kind::Exfiltration, Kind::Dga, Kind::Beacon]
            .into_iter()
            .find(|k| codes.iter().any(|c| k.codes().contains(c)))
            .unwrap_or(Kind::Unusual)
    }

    /// The codes that make a hit this kind.
    fn codes(self) -> &'static [Code] {
        match self {
            Kind::Scan => &[Code::PortScanLike, Code::HighFanout],
            Kind::Exfiltration => &[Code::HighEgress, Code::UploadHeavy],
            Kind::Dga => &[Code::NxdomainBurst],
            Kind::Beacon => &[Code::Beacon],
            Kind::Unusual => &[],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Scan => "scan",
            Kind::Exfiltration => "exfiltration",
            Kind::Dga => "dga",
            Kind::Beacon => "beacon",
            Kind::Unusual => "unusual",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Scan => "Scanning or fan-out",
            Kind::Exfiltration => "Possible exfiltration",
            Kind::Dga => "Burst of non-existent names (DGA-like)",
            Kind::Beacon => "Regular call-home (beacon)",
            Kind::Unusual => "Unusual traffic",
        }
    }
}

/// The incident fingerprint of an alertable hit: device and kind (see the module docs).
pub fn incident_fingerprint(device_id: i64, codes: &[Code]) -> String {
    format!("{device_id}|{}", Kind::of(codes).as_str())
}

/// One line for the incident list: the kind, then the first required code's evidence
/// (else the first reason's), then where to.
pub fn title(c: &Candidate, policy: &Policy) -> String {
    let codes = codes(&c.reasons);
    let kind = Kind::of(&codes);
    let main = c
        .reasons
        .iter()
        .find(|r| kind.codes().contains(&r.code))
        .or_else(|| c.reasons.iter().find(|r| policy.required.contains(&r.code)))
        .or(c.reasons.first());
    let mut title = kind.label().to_owned();
    if let Some(r) = main {
        title.push_str(": ");
        title.push_str(&r.evidence);
    }
    if let Some(ip) = c.remote_ip {
        let to = match (&c.domain, c.dport) {
            (Some(d), Some(p)) => format!(" — to {d} ({ip}) port {p}"),
            (Some(d), None) => format!(" — to {d} ({ip})"),
            (None, Some(p)) => format!(" — to {ip} port {p}"),
            (None, None) => format!(" — to {ip}"),
        };
        if !title.contains(&ip.to_string()) {
            title.push_str(&to);
        }
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(code: Code, weight: u32) -> Reason {
        Reason {
            code,
            weight,
            evidence: format!("{code} evidence"),
        }
    }

    fn candidate(remote: Option<&str>, reasons: Vec<Reason>) -> Candidate {
        Candidate {
            at: 0,
            device_id: 7,
            flow_id: remote.map(|_| 1),
            remote_host_id: None,
            remote_ip: remote.map(|r| r.parse().unwrap()),
            proto: remote.map(|_| 6),
            dport: remote.map(|_| 4444),
            domain: None,
            reasons,
        }
    }

    #[test]
    fn score_is_clamped_and_policy_needs_required_codes() {
        let p = Policy::from_config(&config::Detect::default());
        assert_eq!(
            score(&[reason(Code::PortScanLike, 70), reason(Code::NewDst, 50)]),
            100
        );
        assert!(p.alertable(65, &[Code::NewDst, Code::RarePort]));
        assert!(!p.alertable(59, &[Code::NewDst, Code::RarePort]));
        assert!(!p.alertable(90, &[Code::NewDst, Code::NoRdns]));
        let mut open = p.clone();
        open.required.clear();
        assert!(!open.alertable(90, &[Code::NoRdns]));
        assert!(open.alertable(90, &[Code::NoRdns, Code::NewDst]));
    }

    #[test]
    fn device_level_fingerprints_ignore_destinations() {
        let scan = candidate(None, vec![reason(Code::PortScanLike, 70)]);
        let codes = codes(&scan.reasons);
        assert_eq!(hit_fingerprint(&scan, &codes), "7|device|PORT_SCAN_LIKE");
        let flow = candidate(
            Some("203.0.113.9"),
            vec![reason(Code::RarePort, 25), reason(Code::NewDst, 30)],
        );
        let codes = super::codes(&flow.reasons);
        assert_eq!(
            hit_fingerprint(&flow, &codes),
            "7|203.0.113.9|6|4444|NEW_DST,RARE_PORT"
        );
        assert_eq!(incident_fingerprint(7, &codes), "7|unusual");
        assert_eq!(
            incident_fingerprint(7, &[Code::HighEgress]),
            incident_fingerprint(7, &[Code::NewDst, Code::UploadHeavy])
        );
        let p = Policy::from_config(&config::Detect::default());
        assert_eq!(
            title(&flow, &p),
            "Unusual traffic: RARE_PORT evidence — to 203.0.113.9 port 4444"
        );
    }
}
