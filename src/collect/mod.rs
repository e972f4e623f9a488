//! Collectors: each reads one kernel or file source and sends [`crate::event::Event`]s
//! to the writer without ever waiting on it.

pub mod capture;
pub mod conntrack;
pub mod ctnetlink;
pub mod dns_packets;
pub mod dns_tap;
pub mod dnsmasq;
pub mod file_watch;
pub mod identity;
pub mod netlink;
pub mod nflog;
pub mod offload;
pub mod system;
pub mod tail;
pub mod tls_hello;
pub mod tls_names;
