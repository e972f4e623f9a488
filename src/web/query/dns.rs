//! The DNS log's query string (`/dns`, `/api/dns`).

use serde::Deserialize;

use super::{
    FilterError, QueryString, bad, given, parse_domain, parse_id, parse_page, parse_per_page,
};
use crate::store::dns::read::{DnsFilter, RcodeMatch};
use crate::store::filter::{AddrMatch, DEFAULT_PER_PAGE};

/// DNS log parameters as they arrive in a query string (`/dns` and `/api/dns`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DnsQuery {
    /// A device id.
    pub device: Option<String>,
    /// The asking address: complete, or its first characters.
    pub client: Option<String>,
    /// A domain: the name asked for is it or one of its subdomains.
    pub name: Option<String>,
    /// A query type: `A`, `AAAA`, `HTTPS`, … or `TYPEnnn`.
    #[serde(rename = "type")]
    pub qtype: Option<String>,
    /// A response code name (`NXDOMAIN`, …), or `none` for queries no answer was seen to.
    pub rcode: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

impl RcodeMatch {
    /// The query-string value: the code's name, or `none`.
    pub fn as_param(self) -> String {
        match self {
            RcodeMatch::Code(code) => crate::dns_name::rcode_name(code),
            RcodeMatch::Unanswered => "none".to_owned(),
        }
    }
}

/// Response codes an answer header can carry with EDNS (12 bits).
const MAX_RCODE: u16 = 4095;

fn parse_rcode(text: &str) -> Result<RcodeMatch, FilterError> {
    const EXPECTED: &str = "NOERROR, NXDOMAIN, SERVFAIL, REFUSED, FORMERR, NOTIMP, a code 0-4095, or `none` (no answer seen)";
    let upper = text.to_ascii_uppercase();
    if upper == "NONE" {
        return Ok(RcodeMatch::Unanswered);
    }
    upper
        .strip_prefix("RCODE")
        .unwrap_or(&upper)
        .parse::<u16>()
        .ok()
        .or_else(|| (0..=5).find(|&c| crate::dns_name::rcode_name(c) == upper))
        .filter(|c| *c <= MAX_RCODE)
        .map(RcodeMatch::Code)
        .ok_or_else(|| bad("rcode", text, EXPECTED))
}

fn parse_qtype(text: &str) -> Result<u16, FilterError> {
    text.parse::<u16>()
        .ok()
        .or_else(|| crate::dns_name::qtype_from_name(text))
        .ok_or_else(|| {
            bad(
                "type",
                text,
                "a query type such as A, AAAA, HTTPS, MX, TXT, or TYPEnnn",
            )
        })
}

impl DnsFilter {
    /// Parses and bounds every parameter; the first invalid one is the error.
    pub fn parse(q: &DnsQuery) -> Result<DnsFilter, FilterError> {
        Ok(DnsFilter {
            device_id: given(&q.device)
                .map(|s| parse_id("device", s))
                .transpose()?,
            client: given(&q.client)
                .map(|s| AddrMatch::parse("client", s))
                .transpose()?,
            name: given(&q.name)
                .map(|s| parse_domain("name", s))
                .transpose()?,
            qtype: given(&q.qtype).map(parse_qtype).transpose()?,
            rcode: given(&q.rcode).map(parse_rcode).transpose()?,
            page: parse_page(&q.page)?,
            per_page: parse_per_page(&q.per_page, DEFAULT_PER_PAGE)?,
        })
    }

    /// Canonical query string without defaults: `parse(to_query(f)) == f`.
    pub fn to_query(&self) -> String {
        let mut q = QueryString::default();
        if let Some(id) = self.device_id {
            q.push("device", &id.to_string());
        }
        if let Some(client) = &self.client {
            q.push("client", client.as_str());
        }
        if let Some(name) = &self.name {
            q.push("name", name);
        }
        if let Some(t) = self.qtype {
            q.push("type", &crate::dns_name::qtype_name(t));
        }
        if let Some(r) = self.rcode {
            q.push("rcode", &r.as_param());
        }
        q.push_page(self.page, self.per_page, DEFAULT_PER_PAGE);
        q.0
    }

    pub fn with_page(&self, page: u32) -> DnsFilter {
        DnsFilter {
            page,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdata::{dns_query as dq, percent_decode};

    #[test]
    fn dns_filter_parses_round_trips_and_names_bad_parameters() {
        assert_eq!(
            DnsFilter::parse(&dq(&[("name", "")])).unwrap(),
            DnsFilter::default()
        );
        let f = DnsFilter::parse(&dq(&[
            ("device", "3"),
            ("client", "10.0.0."),
            ("name", "Example.TEST"),
            ("type", "aaaa"),
            ("rcode", "nxdomain"),
            ("page", "2"),
            ("per_page", "10"),
        ]))
        .unwrap();
        assert_eq!(f.qtype, Some(28));
        assert_eq!(f.rcode, Some(RcodeMatch::Code(3)));
        assert_eq!(
            f.to_query(),
            "device=3&client=10.0.0.&name=example.test&type=AAAA&rcode=NXDOMAIN&page=2&per_page=10"
        );
        let text = f.to_query();
        let back: Vec<(String, String)> = text
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), percent_decode(v))
            })
            .collect();
        let pairs: Vec<(&str, &str)> = back.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(DnsFilter::parse(&dq(&pairs)).unwrap(), f);
        let parse = |k, v| DnsFilter::parse(&dq(&[(k, v)])).unwrap();
        assert_eq!(parse("rcode", "none").rcode, Some(RcodeMatch::Unanswered));
        assert_eq!(parse("rcode", "2").rcode, Some(RcodeMatch::Code(2)));
        assert_eq!(parse("type", "TYPE65").qtype, Some(65));
        assert_eq!(parse("type", "https").qtype, Some(65));
        assert_eq!(
            parse("client", "2001:DB8::1").client,
            Some(AddrMatch::Exact("2001:db8::1".into()))
        );
        for (k, v) in [
            ("device", "x"),
            ("device", "0"),
            ("client", &"1".repeat(65)),
            ("name", "."),
            ("name", &"a".repeat(254)),
            ("type", "AAAAA"),
            ("type", "TYPE70000"),
            ("rcode", "BOGUS"),
            ("rcode", "4096"),
            ("page", "0"),
            ("per_page", "501"),
        ] {
            let e = DnsFilter::parse(&dq(&[(k, v)])).unwrap_err();
            assert_eq!(e.param, k, "{e}");
            assert!(e.to_string().contains(&format!("`{k}`")), "{e}");
        }
    }
}
