//! The detection lists' query strings: hits (`/anomalies`, `/api/hits`) and incidents
//! (`/incidents`, `/api/incidents`).

use std::net::IpAddr;

use serde::Deserialize;

use super::{
    FilterError, QueryString, bad, given, parse_code, parse_desc, parse_device, parse_domain,
    parse_page, parse_per_page, parse_score, parse_window,
};
use crate::store::detect::read::{
    AckState, Destination, HitFilter, HitSort, IncidentFilter, IncidentSort, IncidentState,
};
use crate::store::filter::{DEFAULT_PER_PAGE, Window};

impl Destination {
    fn parse(text: &str) -> Result<Destination, FilterError> {
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(Destination::Ip(ip)),
            Err(_) => parse_domain("dst", text).map(Destination::Domain),
        }
    }

    fn as_param(&self) -> String {
        match self {
            Destination::Ip(ip) => ip.to_string(),
            Destination::Domain(d) => d.clone(),
        }
    }
}

/// `/anomalies` parameters as they arrive; empty values mean "not set".
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HitQuery {
    pub window: Option<String>,
    pub min_score: Option<String>,
    pub code: Option<String>,
    pub device: Option<String>,
    /// `open` (not acknowledged), `acked`, or all.
    pub ack: Option<String>,
    /// A remote address, or a domain (subdomains match).
    pub dst: Option<String>,
    /// `time`, `score` or `count`.
    pub sort: Option<String>,
    pub order: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

impl HitFilter {
    pub fn parse(q: &HitQuery) -> Result<HitFilter, FilterError> {
        Ok(HitFilter {
            window: parse_window(&q.window)?,
            min_score: parse_score(&q.min_score)?,
            code: parse_code(&q.code)?,
            device_id: parse_device(&q.device)?,
            ack: match given(&q.ack) {
                None | Some("all") => AckState::All,
                Some("open") => AckState::Open,
                Some("acked") => AckState::Acked,
                Some(s) => return Err(bad("ack", s, "open, acked or all")),
            },
            dst: given(&q.dst).map(Destination::parse).transpose()?,
            sort: match given(&q.sort) {
                None => HitSort::Time,
                Some(s) => HitSort::ALL
                    .into_iter()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| bad("sort", s, "time, score or count"))?,
            },
            desc: parse_desc(&q.order)?,
            page: parse_page(&q.page)?,
            per_page: parse_per_page(&q.per_page, DEFAULT_PER_PAGE)?,
        })
    }

    /// Canonical query string without defaults: `parse(to_query(f)) == f`.
    pub fn to_query(&self) -> String {
        let mut q = QueryString::default();
        if self.window != Window::DEFAULT {
            q.push("window", self.window.as_str());
        }
        if let Some(s) = self.min_score {
            q.push("min_score", &s.to_string());
        }
        if let Some(c) = self.code {
            q.push("code", c.as_str());
        }
        if let Some(d) = self.device_id {
            q.push("device", &d.to_string());
        }
        if self.ack != AckState::All {
            q.push("ack", self.ack.as_str());
        }
        if let Some(d) = &self.dst {
            q.push("dst", &d.as_param());
        }
        if self.sort != HitSort::Time {
            q.push("sort", self.sort.as_str());
        }
        q.push_order(self.desc);
        q.push_page(self.page, self.per_page, DEFAULT_PER_PAGE);
        q.0
    }

    pub fn with_page(&self, page: u32) -> HitFilter {
        HitFilter {
            page,
            ..self.clone()
        }
    }

    /// The same filter sorted by `sort` (descending, or flipped when it already is).
    pub fn sorted_by(&self, sort: HitSort) -> HitFilter {
        HitFilter {
            sort,
            desc: self.sort != sort || !self.desc,
            page: 1,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IncidentQuery {
    pub window: Option<String>,
    /// `open` (default), `acked`, `muted` or `all`.
    pub state: Option<String>,
    pub code: Option<String>,
    pub device: Option<String>,
    pub min_score: Option<String>,
    /// `last` (default), `first`, `score` or `count`.
    pub sort: Option<String>,
    pub order: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

impl IncidentFilter {
    pub fn parse(q: &IncidentQuery) -> Result<IncidentFilter, FilterError> {
        Ok(IncidentFilter {
            window: parse_window(&q.window)?,
            state: match given(&q.state) {
                None => IncidentState::Open,
                Some(s) => IncidentState::ALL
                    .into_iter()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| bad("state", s, "open, acked, muted or all"))?,
            },
            code: parse_code(&q.code)?,
            device_id: parse_device(&q.device)?,
            min_score: parse_score(&q.min_score)?,
            sort: match given(&q.sort) {
                None => IncidentSort::Last,
                Some(s) => IncidentSort::ALL
                    .into_iter()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| bad("sort", s, "last, first, score or count"))?,
            },
            desc: parse_desc(&q.order)?,
            page: parse_page(&q.page)?,
            per_page: parse_per_page(&q.per_page, DEFAULT_PER_PAGE)?,
        })
    }

    pub fn to_query(&self) -> String {
        let mut q = QueryString::default();
        if self.window != Window::DEFAULT {
            q.push("window", self.window.as_str());
        }
        if self.state != IncidentState::Open {
            q.push("state", self.state.as_str());
        }
        if let Some(c) = self.code {
            q.push("code", c.as_str());
        }
        if let Some(d) = self.device_id {
            q.push("device", &d.to_string());
        }
        if let Some(s) = self.min_score {
            q.push("min_score", &s.to_string());
        }
        if self.sort != IncidentSort::Last {
            q.push("sort", self.sort.as_str());
        }
        q.push_order(self.desc);
        q.push_page(self.page, self.per_page, DEFAULT_PER_PAGE);
        q.0
    }

    pub fn with_page(&self, page: u32) -> IncidentFilter {
        IncidentFilter {
            page,
            ..self.clone()
        }
    }

    pub fn sorted_by(&self, sort: IncidentSort) -> IncidentFilter {
        IncidentFilter {
            sort,
            desc: self.sort != sort || !self.desc,
            page: 1,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_and_name_bad_values() {
        let q = HitQuery {
            window: Some("1h".into()),
            code: Some("BEACON".into()),
            dst: Some("Example.COM".into()),
            sort: Some("score".into()),
            page: Some("2".into()),
            ..HitQuery::default()
        };
        let f = HitFilter::parse(&q).unwrap();
        let text = f.to_query();
        assert_eq!(
            text,
            "window=1h&code=BEACON&dst=example.com&sort=score&page=2"
        );
        let back: HitQuery = serde_urlencoded::from_str(&text).unwrap();
        assert_eq!(HitFilter::parse(&back).unwrap(), f);
        for (q, param) in [
            (
                HitQuery {
                    window: Some("2h".into()),
                    ..HitQuery::default()
                },
                "window",
            ),
            (
                HitQuery {
                    min_score: Some("101".into()),
                    ..HitQuery::default()
                },
                "min_score",
            ),
            (
                HitQuery {
                    code: Some("NOPE".into()),
                    ..HitQuery::default()
                },
                "code",
            ),
            (
                HitQuery {
                    ack: Some("x".into()),
                    ..HitQuery::default()
                },
                "ack",
            ),
            (
                HitQuery {
                    page: Some("0".into()),
                    ..HitQuery::default()
                },
                "page",
            ),
        ] {
            assert_eq!(HitFilter::parse(&q).unwrap_err().param, param);
        }
        let f = IncidentFilter::parse(&IncidentQuery {
            state: Some("all".into()),
            sort: Some("count".into()),
            order: Some("asc".into()),
            ..IncidentQuery::default()
        })
        .unwrap();
        assert_eq!(f.to_query(), "state=all&sort=count&order=asc");
        assert_eq!(
            IncidentFilter::parse(&IncidentQuery {
                state: Some("closed".into()),
                ..IncidentQuery::default()
            })
            .unwrap_err()
            .param,
            "state"
        );
    }
}
