//! Hash maps and sets keyed by numbers netmon or the kernel assigns — row ids of devices,
//! hosts, flows and names, minute numbers, ports — hashed with foldhash instead of std's
//! SipHash.
//!
//! The writer looks up several such keys per flow change (live flows, rollups, detection
//! state); SipHash made those lookups ≈ 5 % of its instructions, and where it is not
//! inlined (opt-level "z", as OpenWrt builds every Rust package) each one is three calls.
//! SipHash's keyed resistance to chosen-key floods is not needed for keys no remote
//! sender picks; maps keyed by addresses or names a packet carries keep std's hasher.

pub use foldhash::{HashMapExt, HashSetExt};

/// A `HashMap` for id keys: `IdMap::new()` and `IdMap::with_capacity(n)` with
/// [`HashMapExt`] in scope, or `IdMap::default()`.
pub type IdMap<K, V> = foldhash::HashMap<K, V>;
/// A `HashSet` for id keys (see [`IdMap`]).
pub type IdSet<T> = foldhash::HashSet<T>;
/// An `IndexMap` for id keys: `IdIndexMap::default()`.
pub type IdIndexMap<K, V> = indexmap::IndexMap<K, V, foldhash::fast::RandomState>;
