//! Read-only queries for pages (owned by the web work; placeholder).
