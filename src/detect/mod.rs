//! Detection (DESIGN §3 "Detection"): every flow the writer stores is scored
//! against its device's in-memory state and baseline; hits above the threshold are stored
//! and deduplicated, alertable ones grouped into incidents, and new incidents handed to the
//! notifier without ever blocking the writer.
//!
//! - [`score`]: the reason codes, their triggers and weights, per-device state.
//! - [`baseline`]: per-device percentiles from the rollups, recomputed hourly.
//! - [`incident`]: hit dedup, alert policy, incident grouping, ack/mute.
//! - [`rules`]: allow and suppress rules, matched in memory.
//! - [`notify`]: syslog and webhook delivery with retry, bounded queue and digest.
//!
//! Tables: `migrations/0006_detect.sql`.

pub mod baseline;
pub mod incident;
pub mod notify;
pub mod rules;
pub mod score;

use serde::{Deserialize, Serialize};

/// Why a flow or device scored: one code, its weight, and evidence a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: Code,
    pub weight: u32,
    pub evidence: String,
}

/// Every reason code, named as stored (`codes`, `reasons` JSON, rule `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    NewDst,
    DormantDst,
    NewAsn,
    RarePort,
    UnexpectedProto,
    NoRdns,
    HighEgress,
    HighFanout,
    PortScanLike,
    NewDomain,
    DirectIp,
    Beacon,
    UploadHeavy,
    NxdomainBurst,
}

impl Code {
    pub const ALL: [Code; 14] = [
        Code::NewDst,
        Code::DormantDst,
        Code::NewAsn,
        Code::RarePort,
        Code::UnexpectedProto,
        Code::NoRdns,
        Code::HighEgress,
        Code::HighFanout,
        Code::PortScanLike,
        Code::NewDomain,
        Code::DirectIp,
        Code::Beacon,
        Code::UploadHeavy,
        Code::NxdomainBurst,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::NewDst => "NEW_DST",
            Code::DormantDst => "DORMANT_DST",
            Code::NewAsn => "NEW_ASN",
            Code::RarePort => "RARE_PORT",
            Code::UnexpectedProto => "UNEXPECTED_PROTO",
            Code::NoRdns => "NO_RDNS",
            Code::HighEgress => "HIGH_EGRESS",
            Code::HighFanout => "HIGH_FANOUT",
            Code::PortScanLike => "PORT_SCAN_LIKE",
            Code::NewDomain => "NEW_DOMAIN",
            Code::DirectIp => "DIRECT_IP",
            Code::Beacon => "BEACON",
            Code::UploadHeavy => "UPLOAD_HEAVY",
            Code::NxdomainBurst => "NXDOMAIN_BURST",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A newly opened incident, as the writer hands it to the notifier (after commit).
#[derive(Debug, Clone, Serialize)]
pub struct NewIncident {
    pub id: i64,
    /// unix ms
    pub first_seen: i64,
    pub device_id: i64,
    /// The device's display name (user name, else DHCP hostname, else address).
    pub device: String,
    pub title: String,
    pub score: u32,
    pub codes: Vec<Code>,
    pub reasons: Vec<Reason>,
}
