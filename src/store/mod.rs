//! Storage: the schema, the one writer, and the read-only queries pages use.

pub mod budget;
pub mod commands;
pub mod detect;
pub mod devices;
pub mod dns;
pub mod drops;
pub mod enrich;
pub mod flows;
pub mod hosts;
pub mod offload;
pub mod read;
pub mod read_detect;
pub mod read_overview;
pub mod read_peers;
pub mod reserve;
pub mod retention;
pub mod rollups;
pub mod saved;
pub mod schema;
pub mod snapshot;
pub mod system;
pub mod tables;
pub mod writer;
