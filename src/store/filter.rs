//! The typed filter pieces several table families' reads share — paging bounds, sort
//! order, address and time bounds, the windows pages offer — and the `WHERE` builder
//! their SQL is made with.
//!
//! Filters are built by the web layer from query strings (`crate::web::query`); here they
//! only become SQL. Every value reaches SQLite as a bound parameter, and user text in
//! `LIKE` is escaped.

use rusqlite::types::Value;

use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

/// Largest page size: bounds the rows one request renders (DESIGN §1 principle 7).
pub const MAX_PER_PAGE: u32 = 500;
pub const DEFAULT_PER_PAGE: u32 = 50;
/// Largest page number accepted; deeper offsets are a scan the router should not do.
pub const MAX_PAGE: u32 = 10_000;

/// A time bound of the flow filter. An age stays an age in the URL, so a shared
/// "last hour" link means the last hour whenever it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeBound {
    /// This many milliseconds before the query runs; `text` is how the URL says it.
    Ago { ms: i64, text: String },
    /// Unix ms; `text` is the canonical ISO form (`2026-12-04T21:00:00Z`).
    At { ms: i64, text: String },
}

impl TimeBound {
    pub fn as_str(&self) -> &str {
        match self {
            TimeBound::Ago { text, .. } | TimeBound::At { text, .. } => text,
        }
    }

    /// Unix ms, ages counted back from `now`.
    pub fn at(&self, now: i64) -> i64 {
        match self {
            TimeBound::Ago { ms, .. } => now - ms,
            TimeBound::At { ms, .. } => *ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }

    pub fn reverse(self) -> Order {
        match self {
            Order::Asc => Order::Desc,
            Order::Desc => Order::Asc,
        }
    }
}

/// An address filter: a complete address matches exactly (in canonical form, so
/// `2001:DB8::0:1` finds `2001:db8::1`); a CIDR network (`10.0.0.0/8`, `2001:db8::/32`)
/// matches the addresses inside it, v4 and v6 alike; anything else is a text prefix
/// (`192.168.1.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrMatch {
    Exact(String),
    /// Canonical network text (host bits cleared: `10.1.2.3/8` becomes `10.0.0.0/8`).
    Net(String),
    Prefix(String),
}

impl AddrMatch {
    /// The text as the user should see it again in the form.
    pub fn as_str(&self) -> &str {
        match self {
            AddrMatch::Exact(s) | AddrMatch::Net(s) | AddrMatch::Prefix(s) => s,
        }
    }
}

/// `LIKE` pattern text with `%`, `_` and the escape character itself escaped, for use
/// with `ESCAPE '\'`: user text is matched literally, never as a wildcard.
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A WHERE clause built from `?` placeholders and their values, in order.
#[derive(Default)]
pub(crate) struct Where {
    pub(crate) clauses: Vec<String>,
    pub(crate) params: Vec<Value>,
}

impl Where {
    pub(crate) fn add(
        &mut self,
        clause: impl Into<String>,
        params: impl IntoIterator<Item = Value>,
    ) {
        self.clauses.push(clause.into());
        self.params.extend(params);
    }

    pub(crate) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// `column` (a `dns_names` id) is `name` or a subdomain of it. The label boundary is
/// the `.` in the pattern: `shop.test` matches `a.shop.test`, never `xshop.test`; the
/// name's own `%`, `_` and `\` are literal. `dns_names` holds each name once, so the
/// suffix scan runs over distinct names, not over flows or queries.
pub(crate) fn domain_clause(w: &mut Where, column: &str, name: &str) {
    w.add(
        format!("{column} IN (SELECT id FROM dns_names WHERE name = ? OR name LIKE ? ESCAPE '\\')"),
        [
            Value::Text(name.to_owned()),
            Value::Text(format!("%.{}", escape_like(name))),
        ],
    );
}

/// Pages needed for `total` rows, `per_page` at a time (at least one, even when empty).
pub(crate) fn page_count(total: u64, per_page: u32) -> u32 {
    let per = u64::from(per_page.max(1));
    u32::try_from(total.div_ceil(per))
        .unwrap_or(u32::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_escapes_wildcards() {
        assert_eq!(escape_like(r"a%b_c\d"), r"a\%b\_c\\d");
    }
}

/// A time window ending now, as every page's window selector offers it (the overview's
/// panels, the hits and incidents lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    M10,
    H1,
    H24,
    D7,
    D30,
}

impl Window {
    pub const ALL: [Window; 5] = [
        Window::M10,
        Window::H1,
        Window::H24,
        Window::D7,
        Window::D30,
    ];

    /// What a list shows when the query string names no window.
    pub const DEFAULT: Window = Window::H24;

    /// The form in URLs and in the remembering cookie.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::M10 => "10m",
            Window::H1 => "1h",
            Window::H24 => "24h",
            Window::D7 => "7d",
            Window::D30 => "30d",
        }
    }

    pub fn ms(self) -> i64 {
        match self {
            Window::M10 => 10 * MINUTE_MS,
            Window::H1 => HOUR_MS,
            Window::H24 => DAY_MS,
            Window::D7 => 7 * DAY_MS,
            Window::D30 => 30 * DAY_MS,
        }
    }

    /// Long windows read the hour rollups.
    pub fn hourly(self) -> bool {
        self.ms() > HOUR_MS
    }
}
