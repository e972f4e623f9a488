//! The remote hosts list's query string (`/hosts`, `/api/hosts`).

use serde::Deserialize;

use super::{FilterError, QueryString, bad, given, parse_order, parse_page, parse_per_page};
use crate::store::filter::Order;
use crate::store::hosts::read::{DEFAULT_HOSTS_PER_PAGE, HostFilter, HostSort};

/// Remote host list parameters as they arrive in a query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HostQuery {
    /// Address prefix, or reverse-DNS name or domain text (substring).
    pub q: Option<String>,
    pub sort: Option<String>,
    pub order: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

impl HostFilter {
    pub fn parse(q: &HostQuery) -> Result<HostFilter, FilterError> {
        let text = given(&q.q).map(str::to_owned);
        if let Some(t) = &text
            && t.len() > 253
        {
            return Err(bad(
                "q",
                t,
                "an address or name fragment (at most 253 characters)",
            ));
        }
        let sort = match given(&q.sort) {
            None | Some("last_seen") => HostSort::LastSeen,
            Some("first_seen") => HostSort::FirstSeen,
            Some("bytes") => HostSort::Bytes,
            Some("flows") => HostSort::Flows,
            Some(s) => {
                return Err(bad(
                    "sort",
                    s,
                    "`last_seen`, `first_seen`, `bytes` or `flows`",
                ));
            }
        };
        Ok(HostFilter {
            q: text,
            sort,
            order: parse_order(&q.order, Order::Desc)?,
            page: parse_page(&q.page)?,
            per_page: parse_per_page(&q.per_page, DEFAULT_HOSTS_PER_PAGE)?,
        })
    }

    /// Canonical query string without defaults (see [`FlowFilter::to_query`]).
    pub fn to_query(&self) -> String {
        let mut qs = QueryString::default();
        if let Some(t) = &self.q {
            qs.push("q", t);
        }
        if self.sort != HostSort::LastSeen {
            qs.push("sort", self.sort.as_str());
        }
        if self.order != Order::Desc {
            qs.push("order", self.order.as_str());
        }
        qs.push_page(self.page, self.per_page, DEFAULT_HOSTS_PER_PAGE);
        qs.0
    }

    pub fn with_page(&self, page: u32) -> HostFilter {
        HostFilter {
            page,
            ..self.clone()
        }
    }

    /// Sorted by `sort`, descending first; a second click flips the order.
    pub fn with_sort(&self, sort: HostSort) -> HostFilter {
        let order = if self.sort == sort {
            self.order.reverse()
        } else {
            Order::Desc
        };
        HostFilter {
            sort,
            order,
            page: 1,
            ..self.clone()
        }
    }
}
