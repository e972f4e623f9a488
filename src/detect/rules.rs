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

/// A stored rule: its row id and what it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: i64,
    pub spec: RuleSpec,
}

/// What a rule is matched against: a scored outbound flow, or (all flow fields `None`)
/// a device as a whole.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    pub device_id: i64,
    pub remote: Option<std::net::IpAddr>,
    pub asn: Option<u32>,
    pub org: Option<&'a str>,
    /// The name the flow's client resolved (full name, not only the registrable part).
    pub domain: Option<&'a str>,
    pub proto: Option<u8>,
    pub port: Option<u16>,
}

impl RuleSpec {
    /// Every non-`None` field must match (AND); a field the target does not know (a
    /// flow without a name, a host not yet enriched) does not match it. A device-level
    /// target (no remote) is matched only by rules that name no flow field.
    pub fn matches(&self, t: &Target, now: i64) -> bool {
        if self.expires_at.is_some_and(|e| e <= now) {
            return false;
        }
        if self.device_id.is_some_and(|d| d != t.device_id) {
            return false;
        }
        if let Some(net) = &self.remote
            && !t.remote.is_some_and(|ip| net.contains(&ip))
        {
            return false;
        }
        if self.asn.is_some() && self.asn != t.asn {
            return false;
        }
        if let Some(org) = &self.org
            && !t
                .org
                .is_some_and(|o| o.to_lowercase().contains(&org.to_lowercase()))
        {
            return false;
        }
        if let Some(suffix) = &self.domain
            && !t.domain.is_some_and(|d| domain_has_suffix(d, suffix))
        {
            return false;
        }
        if self.proto.is_some() && self.proto != t.proto {
            return false;
        }
        if let Some((lo, hi)) = self.ports
            && !t.port.is_some_and(|p| (lo..=hi).contains(&p))
        {
            return false;
        }
        true
    }

    /// Checks a rule from the UI before it is stored; the error says what to fix.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.action == Action::Allow && self.code.is_some() {
            return Err(RuleError::AllowWithCode);
        }
        if let Some((lo, hi)) = self.ports
            && (lo == 0 || lo > hi)
        {
            return Err(RuleError::Ports { lo, hi });
        }
        if self.org.as_deref().is_some_and(|o| o.trim().is_empty()) {
            return Err(RuleError::EmptyOrg);
        }
        if let Some(d) = &self.domain {
            let d = d.trim_end_matches('.');
            if d.is_empty() || d.len() > 253 || d.split('.').any(|l| l.is_empty() || l.len() > 63) {
                return Err(RuleError::Domain(d.to_owned()));
            }
        }
        if self.notes.chars().count() > 1000 {
            return Err(RuleError::NotesTooLong);
        }
        Ok(())
    }
}

/// What is wrong with a rule ([`RuleSpec::validate`]), worded for the person fixing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("an allow rule takes no code (it drops the whole flow)")]
    AllowWithCode,
    #[error("port range {lo}-{hi}: give 1 to 65535, lowest first (e.g. 6881-6889)")]
    Ports { lo: u16, hi: u16 },
    #[error("the organisation is empty: leave it out to match any")]
    EmptyOrg,
    #[error("domain \"{0}\": give a name like example.com (matches its subdomains too)")]
    Domain(String),
    #[error("rule notes have at most 1000 characters")]
    NotesTooLong,
}

/// `name` is `suffix` or a subdomain of it, on label boundaries, ignoring case and a
/// trailing dot: "cdn.example.com" has suffix "example.com", "badexample.com" has not.
pub fn domain_has_suffix(name: &str, suffix: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let suffix = suffix.trim_end_matches('.').to_ascii_lowercase();
    name == suffix
        || name
            .strip_suffix(&suffix)
            .is_some_and(|head| head.ends_with('.'))
}

/// The rules in force, as the writer keeps them in memory (loaded at start, changed
/// only by the writer's own commands, so never stale).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    pub fn new(rules: Vec<Rule>) -> Rules {
        Rules { rules }
    }

    pub fn upsert(&mut self, rule: Rule) {
        match self.rules.iter_mut().find(|r| r.id == rule.id) {
            Some(r) => *r = rule,
            None => self.rules.push(rule),
        }
    }

    /// Device `from` merged into `into` (`store::devices::merge` moved the rows too).
    pub fn remap_device(&mut self, from: i64, into: i64) {
        for r in &mut self.rules {
            if r.spec.device_id == Some(from) {
                r.spec.device_id = Some(into);
            }
        }
    }

    pub fn remove(&mut self, id: i64) {
        self.rules.retain(|r| r.id != id);
    }

    /// The first allow rule matching `t`.
    pub fn allowing(&self, t: &Target, now: i64) -> Option<i64> {
        self.rules
            .iter()
            .find(|r| r.spec.action == Action::Allow && r.spec.matches(t, now))
            .map(|r| r.id)
    }

    /// The suppress rule that removes `code` for `t`, if any.
    pub fn suppressing(&self, t: &Target, code: Code, now: i64) -> Option<i64> {
        self.rules
            .iter()
            .find(|r| {
                r.spec.action == Action::Suppress
                    && r.spec.code.is_none_or(|c| c == code)
                    && r.spec.matches(t, now)
            })
            .map(|r| r.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(port: u16) -> Target<'static> {
        Target {
            device_id: 7,
            remote: Some("203.0.113.9".parse().unwrap()),
            asn: Some(64500),
            org: Some("Example Transit"),
            domain: Some("cdn.example.com"),
            proto: Some(6),
            port: Some(port),
        }
    }

    #[test]
    fn every_given_field_must_match() {
        let rule = RuleSpec {
            device_id: Some(7),
            ports: Some((6881, 6889)),
            ..RuleSpec::default()
        };
        assert!(rule.matches(&flow(6881), 0));
        assert!(rule.matches(&flow(6889), 0));
        assert!(!rule.matches(&flow(6890), 0));
        assert!(!rule.matches(
            &Target {
                device_id: 8,
                ..flow(6881)
            },
            0
        ));
        let cidr = RuleSpec {
            remote: Some("203.0.113.0/24".parse().unwrap()),
            org: Some("example".into()),
            domain: Some("example.com".into()),
            ..RuleSpec::default()
        };
        assert!(cidr.matches(&flow(443), 0));
        let other = RuleSpec {
            domain: Some("ample.com".into()),
            ..RuleSpec::default()
        };
        assert!(!other.matches(&flow(443), 0));
    }

    #[test]
    fn expired_rules_and_device_level_targets() {
        let rule = RuleSpec {
            expires_at: Some(1000),
            ..RuleSpec::default()
        };
        assert!(rule.matches(&flow(1), 999));
        assert!(!rule.matches(&flow(1), 1000));
        let port_rule = RuleSpec {
            ports: Some((1, 65535)),
            ..RuleSpec::default()
        };
        let device = Target {
            device_id: 7,
            ..Target::default()
        };
        assert!(!port_rule.matches(&device, 0));
        assert!(RuleSpec::default().matches(&device, 0));
    }

    #[test]
    fn validation_names_the_problem() {
        let bad = RuleSpec {
            ports: Some((6889, 6881)),
            ..RuleSpec::default()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(err, RuleError::Ports { lo: 6889, hi: 6881 });
        assert!(err.to_string().contains("6889-6881"));
        let allow_code = RuleSpec {
            code: Some(Code::NoRdns),
            ..RuleSpec::default()
        };
        assert!(allow_code.validate().is_err());
        assert!(domain_has_suffix("A.Example.com.", "example.com"));
        assert!(!domain_has_suffix("badexample.com", "example.com"));
    }
}
