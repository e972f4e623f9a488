//! Collectors: each reads one kernel or file source and sends [`crate::event::Event`]s
//! to the writer without ever waiting on it.

pub mod conntrack;
pub mod ctnetlink;
pub mod dns;
pub mod dnsmasq;
pub mod nflog;
pub mod offload;
pub mod system;
