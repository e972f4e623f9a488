//! Storage: the schema, the one writer, and the read-only queries pages use.
//!
//! Reads: each table family's queries are in its `read` module (`flows::read`,
//! `devices::read`, `dns::read`, `hosts::read`, `rollups::read`, `detect::read`), page-wide
//! ones in `overview` and `peers`; they run on the connections of `pool` and build their
//! `WHERE` clauses with `filter`.

pub mod addr;
pub mod budget;
pub mod commands;
pub mod detect;
pub mod devices;
pub mod dns;
pub mod drops;
pub mod enrich;
pub mod filter;
pub mod flows;
pub mod history;
pub mod hosts;
pub mod offload;
pub mod overview;
pub mod peers;
pub mod pool;
pub mod reserve;
pub mod resolvers;
pub mod retention;
pub mod rollups;
pub mod saved;
pub mod schema;
pub mod system;
pub mod table;
pub mod tables;
#[cfg(test)]
pub(crate) mod testdata;
pub mod writer;
