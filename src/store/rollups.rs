//! Rollups: per-minute and per-hour traffic sums per device, remote host and interface.

pub mod read;
