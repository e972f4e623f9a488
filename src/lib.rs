//! netmon: a router's own network monitor. See `DESIGN.md` in the shared docs and the
//! README for the architecture; the data path reads collector → event → writer →
//! table → page.

pub mod collect;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod disk;
pub mod dns_name;
pub mod enrich;
pub mod event;
pub mod export;
pub mod firewall;
pub mod flow;
pub mod fuzzing;
pub mod idmap;
pub mod memory;
pub mod netif;
pub mod passwd;
pub mod privs;
pub mod random;
pub mod store;
pub mod sysctl;
pub mod time;
pub mod web;
