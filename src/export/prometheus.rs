//! What `/metrics` says, and how it is named (DESIGN §5).
//!
//! Naming follows <https://prometheus.io/docs/practices/naming/>: the `netmon_` prefix,
//! base units in the name (`_bytes`, `_seconds`), `_total` on counters, and a HELP line
//! for every series netmon emits ([`describe_all`]; `promtool check metrics` runs on a
//! live scrape in `tests/lab_export.rs`). Every series carries a `router` label from
//! `[export] router_label` (a global label of the recorder), so one Prometheus scraping
//! several routers keeps them apart without relabelling rules. Duration and batch-size
//! histograms have explicit buckets: unlike a summary's quantiles, buckets can be
//! aggregated across routers.
//!
//! Where the numbers come from:
//! - Collectors, the writer and the history store count as they work
//!   (`netmon_conntrack_*`, `netmon_collector_*`, `netmon_writer_*`, `netmon_history_*`).
//! - Per-device traffic comes from the writer after each commit ([`DeviceSeries`],
//!   which [`install`] creates and the daemon hands to the writer): the very byte/packet
//!   deltas that went into the rollups,
//!   so `netmon_device_bytes_total` matches the stored flows exactly (since netmon
//!   started). Devices past `max_device_series` share one `device="other"` series.
//! - What is cheaper to read than to keep current is read when Prometheus scrapes
//!   ([`refresh_on_scrape`]): conntrack table fill, interface counters, process memory.
//!
//! Not here yet, on purpose: DNS queries/NXDOMAIN per device (the DNS pipeline is being
//! built alongside) and open incidents by severity (incidents do not exist yet). Their
//! HELP text belongs in [`describe_all`], and per-device DNS series behind the same cap
//! as [`DeviceSeries`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use metrics::{Counter, Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::Config;
use crate::event::InterfaceCounters;

/// Bucket bounds (seconds) of duration histograms: 1 ms (an idle writer tick) to 10 s
/// (a writer stalled on a slow disk).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds of events per writer transaction: one event up to `max_batch`'s default.
const BATCH_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 50_000.0];
/// How often histogram samples are folded into their buckets. The recorder keeps every
/// raw sample until then; without upkeep a router nobody scrapes would keep one sample
/// per writer tick forever.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Label value of the series that takes the traffic of devices past `max_device_series`.
pub const OTHER_DEVICE: &str = "other";

/// The installed recorder: the handle `/metrics` renders, and the per-device series for
/// the writer (a writer given none — unit tests, benchmarks — keeps no device series).
pub struct Installed {
    pub handle: PrometheusHandle,
    pub devices: DeviceSeries,
}

/// Installs the global recorder with netmon's naming, buckets and `router` label, and
/// describes every metric. Call once, before any thread records a metric.
pub fn install(config: &Config) -> anyhow::Result<Installed> {
    let handle = PrometheusBuilder::new()
        .add_global_label("router", router_label(&config.export.router_label))
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("netmon_writer_batch_events".into()),
                BATCH_BUCKETS,
            )
        })
        .context("configuring histogram buckets")?
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    describe_all();
    metrics::gauge!("netmon_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!("process_start_time_seconds").set(crate::time::now_ms() as f64 / 1000.0);
    Ok(Installed {
        handle,
        devices: DeviceSeries::new(config.export.max_device_series),
    })
}

/// Interfaces whose counters are read at scrape time, with their role label: the
/// configured LAN, then WAN interfaces, each once.
fn scraped_interfaces(config: &Config) -> Vec<(&str, &'static str)> {
    let mut interfaces: Vec<(&str, &'static str)> = Vec::new();
    for (names, role) in [
        (&config.lan_interfaces, "lan"),
        (&config.wan_interfaces, "wan"),
    ] {
        for name in names {
            if !interfaces.iter().any(|(n, _)| n == name) {
                interfaces.push((name, role));
            }
        }
    }
    interfaces
}

/// Folds histogram samples into buckets every [`UPKEEP_INTERVAL`]; runs on the web
/// runtime and ends with it.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        interval.tick().await;
        handle.run_upkeep();
    }
}

/// `router_label` as configured, else the kernel's hostname (what `uname -n` says),
/// else "router".
fn router_label(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    crate::sysctl::read_sysctl("kernel.hostname")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "router".to_owned())
}

/// HELP text (and unit) of the metrics of the conntrack collector, the writer, storage,
/// web and export, in one list a reviewer checks against the naming rules (collectors
/// added since describe their own metrics where they count them; nothing is described
/// twice, so the HELP text is never a matter of start-up order).
///
/// (Long: one HELP line per metric, a list reviewed against the naming rules as a whole.)
pub fn describe_all() {
    describe_gauge!(
        "netmon_dns_capture_active",
        "1 while DNS answers are read from packets (NFQUEUE bound and the firewall rule feeding it loaded), 0 when capture is off or the tap is missing (/healthz says why)."
    );
    describe_gauge!(
        "netmon_capture_ok",
        "1 while a capture source (dns_tap, dnsmasq_log, nflog, conntrack) delivers or is off, 0 while it is broken (/healthz and the health page say why and what fixes it)."
    );
    describe_gauge!(
        "netmon_storage_ok",
        "1 while the writer's commits succeed, 0 while they fail for a storage reason (disk full, I/O error; /healthz has the error)."
    );
    describe_gauge!(
        "netmon_privileges_dropped",
        "1 when netmon runs as its unprivileged `user` with only the capabilities it needs, 0 when it runs as root."
    );
    describe_counter!(
        "netmon_source_file_vanished_total",
        "Times a followed file disappeared from its path, by source (leases, dnsmasq_log); it is read again when it reappears."
    );
    describe_counter!(
        "netmon_web_connections_refused_total",
        "Web connections closed at once because the connection limit (512) was reached, or the peer's address held its share (32 once half the limit is taken)."
    );
    describe_counter!(
        "netmon_web_connections_timed_out_total",
        "Web connections closed for a deadline: request headers not complete within 10 s, or nothing sent or received for 20 s."
    );
    describe_gauge!(
        "netmon_firewall_table_loaded",
        "1 when netmon's nftables table is in place (or the router's firewall owns it), 0 when loading it failed."
    );
    // Collector health and drops.
    describe_counter!(
        "netmon_conntrack_events_total",
        "Conntrack events received, by type (new, update, destroy)."
    );
    describe_counter!(
        "netmon_conntrack_dumps_total",
        "Conntrack table dumps requested (start-up, periodic and resync)."
    );
    describe_counter!(
        "netmon_conntrack_resync_dumps_total",
        "Conntrack table dumps requested because events were lost (overrun)."
    );
    describe_counter!(
        "netmon_conntrack_dump_failures_total",
        "Conntrack table dumps that ended in an error or were incomplete."
    );
    describe_counter!(
        "netmon_conntrack_overruns_total",
        "Times the kernel dropped conntrack events because netmon's receive buffer was full (ENOBUFS)."
    );
    describe_counter!(
        "netmon_conntrack_reconciled_ends_total",
        "Flows found ended by a dump although their DESTROY event was never received."
    );
    describe_counter!(
        "netmon_conntrack_parse_errors_total",
        "Conntrack netlink messages that could not be parsed."
    );
    describe_gauge!(
        "netmon_conntrack_tracked_flows",
        "Flows in the conntrack collector's in-memory table (live plus ended not yet sent)."
    );
    describe_gauge!(
        "netmon_conntrack_entries",
        "Entries in the kernel's conntrack table (net.netfilter.nf_conntrack_count), read at scrape time."
    );
    describe_gauge!(
        "netmon_conntrack_entries_limit",
        "Size of the kernel's conntrack table (net.netfilter.nf_conntrack_max); new connections are dropped when it is full."
    );
    describe_counter!(
        "netmon_collector_drops_total",
        "Items a collector dropped because a bound was reached, by stream."
    );
    describe_counter!(
        "netmon_collector_channel_full_total",
        "Times a collector found the writer's channel full and kept its changes for the next tick, by stream."
    );
    // The writer.
    describe_histogram!(
        "netmon_writer_tick_seconds",
        Unit::Seconds,
        "Time to apply and commit one writer transaction."
    );
    describe_histogram!(
        "netmon_writer_batch_events",
        "Events applied in one writer transaction."
    );
    describe_counter!(
        "netmon_writer_commits_total",
        "Writer transactions committed."
    );
    describe_counter!(
        "netmon_writer_failed_commits_total",
        "Writer transactions rolled back after an error (disk full, I/O)."
    );
    describe_counter!(
        "netmon_writer_dropped_changes_total",
        "Changes lost: their transaction failed for a reason other than storage, or \
         storage still failed at shutdown."
    );
    describe_gauge!(
        "netmon_writer_held_changes",
        "Changes of a batch whose commit failed for lack of storage, waiting to be \
         written again (0 while writes work)."
    );
    describe_gauge!("netmon_channel_depth", "Messages queued for the writer.");
    describe_gauge!("netmon_active_flows", "Live flows (ended_at IS NULL).");
    describe_counter!(
        "netmon_flows_stored_total",
        "Flow lifetimes inserted into the database."
    );
    describe_counter!(
        "netmon_flows_ended_while_down_total",
        "Stored live flows that vanished while netmon was not running."
    );
    // DNS (the lead's pipeline describes its collector; these two live in the writer).
    describe_counter!(
        "netmon_dns_queries_stored_total",
        "DNS queries with their answers stored by the writer."
    );
    describe_counter!(
        "netmon_dns_late_attributions_total",
        "Flows given a domain name by a DNS answer that was committed after the flow."
    );
    // Storage.
    describe_gauge!(
        "netmon_db_size_bytes",
        Unit::Bytes,
        "Size of the SQLite database: main file plus write-ahead log."
    );
    describe_gauge!(
        "netmon_db_used_bytes",
        Unit::Bytes,
        "Database pages in use (allocated minus free) times the page size, as the storage budget measures it."
    );
    describe_gauge!(
        "netmon_db_budget_bytes",
        Unit::Bytes,
        "The storage budget (retention.max_db_mb): main file plus write-ahead log."
    );
    describe_counter!(
        "netmon_storage_pruned_rows_total",
        "Rows deleted to keep storage bounded, by reason (device_cap, domain_cap, host_names, budget, unreferenced) and table; the traffic they describe stays in the rollups."
    );
    describe_counter!(
        "netmon_storage_wal_truncations_total",
        "Times the write-ahead log had outgrown its share of the storage budget and was checkpointed and truncated."
    );
    describe_histogram!(
        "netmon_storage_pass_seconds",
        Unit::Seconds,
        "Time one storage budget pass (caps, size budget, unused-name collection) held the writer."
    );
    describe_counter!(
        "netmon_history_syncs_total",
        "Syncs of the history store on persistent storage."
    );
    describe_counter!(
        "netmon_history_syncs_skipped_total",
        "History syncs skipped because nothing was committed since the previous one."
    );
    describe_counter!(
        "netmon_history_rows_written_total",
        "Rows the history syncs wrote or deleted."
    );
    describe_counter!(
        "netmon_history_bytes_written_total",
        Unit::Bytes,
        "Bytes written to persistent storage by the history store (flash wear)."
    );
    describe_counter!(
        "netmon_history_failures_total",
        "History syncs that failed."
    );
    describe_gauge!(
        "netmon_history_file_bytes",
        Unit::Bytes,
        "Size of the history database on persistent storage."
    );
    // Device identity (collect::identity, store::devices).
    describe_counter!(
        "netmon_device_sightings_total",
        "Address/MAC pairings sent to the writer, from the neighbour table and DHCP leases."
    );
    describe_counter!(
        "netmon_neighbour_messages_total",
        "Neighbour-table netlink problems, by result (malformed, overrun)."
    );
    describe_counter!(
        "netmon_lease_lines_skipped_total",
        "Lines of DHCP lease files that fit no known format."
    );
    describe_counter!(
        "netmon_device_merges_total",
        "Devices known only by address merged into their MAC's device, history included."
    );
    describe_gauge!(
        "netmon_history_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last successful history sync."
    );
    // Detection (detect::score, store::detect).
    describe_counter!(
        "netmon_detect_hits_total",
        "Scored events at or above detect.hit_threshold, including repeats folded into an earlier hit."
    );
    describe_counter!(
        "netmon_detect_incidents_total",
        "Incidents opened (alertable hits that joined no open incident)."
    );
    // Notifications (detect::notify).
    describe_counter!(
        "netmon_notify_messages_total",
        "Incident notifications by result: sent (webhook answered 2xx), retried (an attempt failed and will be repeated), failed (given up after the last attempt), dropped (queue full)."
    );
    // Web.
    describe_gauge!(
        "netmon_web_event_streams",
        "Open Server-Sent-Events streams (browser tabs watching live)."
    );
    // Traffic.
    describe_counter!(
        "netmon_device_bytes_total",
        Unit::Bytes,
        "Bytes of stored flows per LAN device, direction up (sent by the device) or down; devices past export.max_device_series are summed in device=\"other\"."
    );
    describe_counter!(
        "netmon_device_packets_total",
        "Packets of stored flows per LAN device, direction up (sent by the device) or down; devices past export.max_device_series are summed in device=\"other\"."
    );
    describe_counter!(
        "netmon_interface_bytes_total",
        Unit::Bytes,
        "Bytes received (rx) or transmitted (tx) by a configured LAN or WAN interface (/proc/net/dev)."
    );
    describe_counter!(
        "netmon_interface_packets_total",
        "Packets received (rx) or transmitted (tx) by a configured LAN or WAN interface (/proc/net/dev)."
    );
    // Export.
    describe_counter!(
        "netmon_export_records_total",
        "Flow records sent to a collector, by exporter."
    );
    describe_counter!(
        "netmon_export_messages_total",
        "Messages (UDP datagrams) sent to a collector, by exporter."
    );
    describe_counter!(
        "netmon_export_bytes_total",
        Unit::Bytes,
        "Bytes of messages (UDP payload) sent to a collector, by exporter."
    );
    describe_counter!(
        "netmon_export_drops_total",
        "Flow changes or records an exporter dropped, by exporter and reason (queue_full: the exporter fell behind; send_error: the collector is unreachable)."
    );
    describe_gauge!(
        "netmon_export_tracked_flows",
        "Flows an exporter keeps counters for, to export deltas."
    );
    // The process.
    describe_gauge!(
        "netmon_build_info",
        "Always 1; the version label says which netmon runs."
    );
    describe_gauge!(
        "process_start_time_seconds",
        Unit::Seconds,
        "Unix time netmon started."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the netmon process."
    );
}

/// Sets the series that are read rather than kept current; called by the `/metrics`
/// handler just before it renders, with the running configuration (interface counters
/// need its interface names; without one, none are read). A few small `/proc` reads.
pub fn refresh_on_scrape(config: Option<&Config>) {
    if let (Ok(count), Ok(max)) = (
        crate::sysctl::read_sysctl("net.netfilter.nf_conntrack_count"),
        crate::sysctl::read_sysctl("net.netfilter.nf_conntrack_max"),
    ) && let (Ok(count), Ok(max)) = (count.parse::<f64>(), max.parse::<f64>())
    {
        metrics::gauge!("netmon_conntrack_entries").set(count);
        metrics::gauge!("netmon_conntrack_entries_limit").set(max);
    }
    if let Some(interfaces) = config.map(scraped_interfaces)
        && let Ok(text) = std::fs::read_to_string("/proc/net/dev")
    {
        for (dev, counters) in crate::collect::system::parse_net_dev(&text) {
            if let Some((name, role)) = interfaces.iter().find(|(n, _)| *n == dev) {
                record_interface(name, role, &counters);
            }
        }
    }
    let (rss, _) = crate::memory::rss_bytes();
    if rss > 0 {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
}

fn record_interface(name: &str, role: &'static str, s: &InterfaceCounters) {
    for (metric, direction, value) in [
        ("netmon_interface_bytes_total", "rx", s.rx_bytes),
        ("netmon_interface_bytes_total", "tx", s.tx_bytes),
        ("netmon_interface_packets_total", "rx", s.rx_packets),
        ("netmon_interface_packets_total", "tx", s.tx_packets),
    ] {
        metrics::counter!(metric, "interface" => name.to_owned(), "role" => role, "direction" => direction)
            .absolute(value);
    }
}

/// The per-device counters and their cardinality cap.
///
/// The first `cap` devices that carry traffic after start get their own series; the
/// rest share `device="other"`. Only devices with their own series are remembered, so
/// memory is bounded by the cap too. Labels are unique: a second device with the same
/// name gets ` #<id>` appended, so two series never silently merge.
pub struct DeviceSeries {
    cap: usize,
    devices: HashMap<i64, DeviceCounters>,
    labels: HashSet<String>,
    other: Option<DeviceCounters>,
}

/// Handles of one device's four series (a registry lookup by name per tick would cost
/// more than the addition).
#[derive(Clone)]
struct DeviceCounters([Counter; 4]);

impl DeviceCounters {
    fn new(label: &str) -> DeviceCounters {
        let series = |metric: &'static str, direction: &'static str| metrics::counter!(metric, "device" => label.to_owned(), "direction" => direction);
        DeviceCounters([
            series("netmon_device_bytes_total", "up"),
            series("netmon_device_bytes_total", "down"),
            series("netmon_device_packets_total", "up"),
            series("netmon_device_packets_total", "down"),
        ])
    }

    fn add(&self, traffic: [u64; 4]) {
        for (counter, value) in self.0.iter().zip(traffic) {
            if value > 0 {
                counter.increment(value);
            }
        }
    }
}

impl DeviceSeries {
    pub fn new(cap: usize) -> DeviceSeries {
        DeviceSeries {
            cap,
            devices: HashMap::new(),
            labels: HashSet::from([OTHER_DEVICE.to_owned()]),
            other: None,
        }
    }

    /// Adds one writer transaction's per-device traffic, `(device id, [bytes up, bytes
    /// down, packets up, packets down])`, "up" being what the device sent. Called by the
    /// writer right after a successful commit. `label` names a device the first time it
    /// carries traffic (the writer looks it up once, with
    /// `store::devices::metric_label`); the series keeps it for the life of the process.
    pub fn record(
        &mut self,
        totals: impl IntoIterator<Item = (i64, [u64; 4])>,
        mut label: impl FnMut(i64) -> String,
    ) {
        for (device_id, traffic) in totals {
            self.add(device_id, traffic, || label(device_id));
        }
    }

    /// A device merged into another (`store::devices::merge`: an address-only device
    /// turned out to be a known MAC's). The survivor takes over the merged device's
    /// series when it has none of its own, so one device's traffic keeps adding to one
    /// series; when both have one, the merged device's series stops growing (a counter
    /// never goes down).
    pub fn merge(&mut self, from: i64, into: i64) {
        if let Some(counters) = self.devices.remove(&from) {
            self.devices.entry(into).or_insert(counters);
        }
    }

    /// Adds `traffic` to the device's series; `label` names a device seen for the
    /// first time (only called while under the cap).
    pub fn add(&mut self, device_id: i64, traffic: [u64; 4], label: impl FnOnce() -> String) {
        if let Some(counters) = self.devices.get(&device_id) {
            counters.add(traffic);
            return;
        }
        if self.devices.len() < self.cap {
            let mut name = label();
            if self.labels.contains(&name) {
                name = format!("{name} #{device_id}");
            }
            let counters = DeviceCounters::new(&name);
            self.labels.insert(name);
            counters.add(traffic);
            self.devices.insert(device_id, counters);
            return;
        }
        self.other
            .get_or_insert_with(|| DeviceCounters::new(OTHER_DEVICE))
            .add(traffic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusRecorder;

    fn recorder() -> PrometheusRecorder {
        PrometheusBuilder::new()
            .add_global_label("router", "r1")
            .build_recorder()
    }

    #[test]
    fn a_merged_device_s_series_follows_it() {
        let rec = recorder();
        metrics::with_local_recorder(&rec, || {
            let mut series = DeviceSeries::new(1);
            series.add(1, [100, 0, 1, 0], || "fd77::10".into());
            series.add(2, [5, 0, 1, 0], || unreachable!("past the cap"));
            // Address-only device 1 is MAC device 2: its series is 2's from now on.
            series.merge(1, 2);
            series.add(2, [7, 0, 1, 0], || unreachable!("took over 1's series"));
        });
        let text = rec.handle().render();
        assert!(
            text.contains(
                r#"netmon_device_bytes_total{router="r1",device="fd77::10",direction="up"} 107"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"netmon_device_bytes_total{router="r1",device="other",direction="up"} 5"#
            ),
            "{text}"
        );
    }

    #[test]
    fn devices_past_the_cap_share_the_other_series() {
        let rec = recorder();
        metrics::with_local_recorder(&rec, || {
            let mut series = DeviceSeries::new(2);
            series.add(1, [100, 1000, 1, 2], || "laptop".into());
            series.add(2, [5, 6, 1, 1], || "laptop".into());
            series.add(3, [7, 0, 1, 0], || unreachable!("past the cap: no lookup"));
            series.add(4, [3, 0, 1, 0], || unreachable!("past the cap: no lookup"));
            series.add(1, [1, 0, 1, 0], || unreachable!("known device"));
        });
        let text = rec.handle().render();
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        assert_eq!(
            value(r#"netmon_device_bytes_total{router="r1",device="laptop",direction="up"}"#),
            Some(101),
            "{text}"
        );
        assert_eq!(
            value(r#"netmon_device_bytes_total{router="r1",device="laptop #2",direction="down"}"#),
            Some(6),
            "{text}"
        );
        assert_eq!(
            value(r#"netmon_device_bytes_total{router="r1",device="other",direction="up"}"#),
            Some(10),
            "{text}"
        );
        assert_eq!(
            value(r#"netmon_device_packets_total{router="r1",device="other",direction="up"}"#),
            Some(2),
            "{text}"
        );
    }

    #[test]
    fn every_series_has_help_and_the_router_label() {
        let rec = recorder();
        metrics::with_local_recorder(&rec, || {
            describe_all();
            DeviceSeries::new(1).add(1, [1, 1, 1, 1], || "a".into());
            record_interface(
                "wan",
                "wan",
                &InterfaceCounters {
                    rx_bytes: 1,
                    rx_packets: 1,
                    tx_bytes: 1,
                    tx_packets: 1,
                },
            );
        });
        let text = rec.handle().render();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{text}"
            );
            assert!(line.contains("router=\"r1\""), "{line}");
        }
    }
}
