//! Feeding engines built for more than one router (DESIGN §6): the Prometheus endpoint's
//! content and the IPFIX flow exporter. netmon grows no cluster of its own; these two
//! speak the standard formats that Prometheus/VictoriaMetrics and nfdump, GoFlow2 or
//! ElastiFlow already scale.

pub mod ipfix;
pub mod prometheus;
