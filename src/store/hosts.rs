//! Remote hosts: the internet addresses LAN devices talked to, with their reverse DNS,
//! AS and the names that led there.

pub mod read;
