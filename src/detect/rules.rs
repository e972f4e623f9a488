//! Allow and suppress rules (table `rules`): one table for both, matched in memory.

use serde::{Deserialize, Serialize};

use super::Code;

/// What allows or suppresses; `None` fields match anything. Mirrors a `rules` row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub action: Action,
    /// Suppress only: the code removed (`None` = every code).
    pub code: Option<Code>,
    pub device_id: Option<i64>,
    /// An address or a CIDR prefix, v4 or v6.
    pub remote: Option<ipnet::IpNet>,
    pub asn: Option<u32>,
    /// Case-insensitive substring of the remote host's ASN organisation.
    pub org: Option<String>,
    /// Domain suffix on label boundaries: "example.com" matches "cdn.example.com".
    pub domain: Option<String>,
    pub proto: Option<u8>,
    /// Destination port range, inclusive.
    pub ports: Option<(u16, u16)>,
    /// unix ms; `None` = never expires.
    pub expires_at: Option<i64>,
    pub notes: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Allow,
    Suppress,
}
