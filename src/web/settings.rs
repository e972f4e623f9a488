//! `/settings`: health and settings on one page — is netmon keeping up (last commit,
//! queue, storage failures), what every collector counted (each `netmon_*` series of
//! `/metrics` with its HELP text, drops and failures highlighted), what the database
//! holds against its budget, and the effective configuration with its secrets hidden.
//!
//! The counters are read from the same Prometheus registry `/metrics` renders, so the
//! page and a scrape can never disagree, and a counter added anywhere shows up here
//! without a line of this file.

use axum::extract::State;
use maud::{Markup, html};

use super::format::{self, time};
use super::layout::{Nav, page as shell};
use super::{AppState, WebError, health, router_health};
use crate::collect::capture;
use crate::time::now_ms;

/// One series of the Prometheus text: family, labels as written, value.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    name: String,
    labels: String,
    value: f64,
}

/// A metric family with its HELP text and series, in the order `/metrics` has them.
#[derive(Debug, Clone, PartialEq)]
struct Family {
    name: String,
    help: String,
    series: Vec<Series>,
}

impl Family {
    /// A family whose non-zero value means something was lost or failed. Reverse DNS
    /// is not: most addresses have no PTR record, and their servers time out.
    fn is_trouble(&self) -> bool {
        !self.name.starts_with("netmon_rdns_")
            && [
                "drop",
                "overrun",
                "fail",
                "error",
                "refused",
                "timed_out",
                "held",
            ]
            .iter()
            .any(|w| self.name.contains(w))
    }
}

/// The `netmon_*` families of a Prometheus text exposition, without histogram buckets
/// and per-device series (those are for Grafana; the device pages show devices).
fn families(text: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if wanted(name) {
                out.push(Family {
                    name: name.to_owned(),
                    help: help.to_owned(),
                    series: Vec::new(),
                });
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = match line.rsplit_once(' ') {
            Some(kv) => kv,
            None => continue,
        };
        let (name, labels) = match key.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (key, ""),
        };
        if name.ends_with("_bucket") || !wanted(name) {
            continue;
        }
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let base = name.trim_end_matches("_sum").trim_end_matches("_count");
        let family = match out
            .iter_mut()
            .rev()
            .find(|f| f.name == name || f.name == base)
        {
            Some(f) => f,
            None => {
                out.push(Family {
                    name: name.to_owned(),
                    help: String::new(),
                    series: Vec::new(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        // A router label on every series says nothing here: one router.
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty() && !l.starts_with("router="))
            .collect::<Vec<_>>()
            .join(", ");
        let suffix = name.strip_prefix(&family.name).unwrap_or_default();
        family.series.push(Series {
            name: suffix.trim_start_matches('_').to_owned(),
            labels,
            value,
        });
    }
    out.retain(|f| !f.series.is_empty());
    out
}

fn wanted(name: &str) -> bool {
    name.starts_with("netmon_") && !name.starts_with("netmon_device_")
}

/// The part of netmon a family belongs to, by its name, in the order the page lists
/// them: (heading, name prefixes after `netmon_`). The last one takes the rest.
const SOURCES: [(&str, &[&str]); 10] = [
    (
        "Capture",
        &["capture_", "dns_capture_", "firewall_table_", "privileges_"],
    ),
    (
        "Connections (conntrack)",
        &[
            "conntrack_",
            "collector_",
            "channel_",
            "active_flows",
            "flowtables_",
            "flows_",
        ],
    ),
    (
        "DNS and names",
        &[
            "dns_",
            "dnsmasq_",
            "tls_",
            "encrypted_dns_",
            "rdns_",
            "source_file_",
        ],
    ),
    ("Firewall drops", &["nflog_", "firewall_"]),
    (
        "Devices",
        &["devices_", "neighbour_", "lease_", "interface_"],
    ),
    ("Detection and notifications", &["detect_", "notify_"]),
    ("Database", &["writer_", "db_", "storage_", "history_"]),
    ("Router and web", &["router_", "web_", "build_", "session"]),
    ("Export", &["export_"]),
    ("Other", &[]),
];

fn source_of(family: &str) -> usize {
    let name = family.trim_start_matches("netmon_");
    SOURCES
        .iter()
        .position(|(_, prefixes)| prefixes.iter().any(|p| name.starts_with(p)))
        .unwrap_or(SOURCES.len() - 1)
}

/// A value for people, by the unit its name ends in: bytes, seconds, ratios, a Unix
/// time; counts with digit groups; other fractions to three significant digits.
fn value_text(family: &str, series: &str, v: f64) -> String {
    let name = if series.is_empty() {
        family.to_owned()
    } else {
        format!("{family}_{series}")
    };
    let unit = |u: &str| name.ends_with(u) || family.ends_with(u) && !series.ends_with("count");
    if name.ends_with("_timestamp_seconds") {
        return format::utc_text((v * 1000.0) as i64);
    }
    if unit("_bytes") || unit("_bytes_total") {
        return format::bytes(v as i64);
    }
    if unit("_seconds") {
        return match v {
            v if v >= 86_400.0 => format!("{:.1} d", v / 86_400.0),
            v if v >= 3_600.0 => format!("{:.1} h", v / 3_600.0),
            v if v >= 1.0 => format!("{v:.2} s"),
            v if v > 0.0 => format!("{:.1} ms", v * 1000.0),
            _ => "0".to_owned(),
        };
    }
    if unit("_ratio") {
        return format!("{:.1} %", v * 100.0);
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format::count(v as i64)
    } else {
        let digits = (3 - (v.abs().log10().floor() as i32 + 1)).clamp(0, 3) as usize;
        format!("{v:.digits$}")
    }
}

/// (Long: a maud template: the page's markup reads top to bottom in one piece.)
pub async fn page(State(state): State<AppState>) -> Result<Markup, WebError> {
    let now = now_ms();
    let shared = &state.shared;
    let tick = shared.ticks.borrow().clone();
    let budget = state.reads().run(crate::store::budget::status).await.ok();
    let db_file = health::db_size_bytes(&shared.db_path);
    let write_failure = shared.writer.write_failure();
    let families = families(&shared.metrics.render());
    let config = shared.config.as_deref().map(|c| c.redacted());
    Ok(shell(
        "Health and settings",
        Nav::Settings,
        false,
        html! {
            h1 { "Health and settings" }
            @if let Some(f) = &write_failure { (router_health::write_failure_notice(f)) }
            (router_health::capture_notices(&shared.capture))
            dl.facts #status {
                dt { "Version" } dd.mono { "netmon " (env!("CARGO_PKG_VERSION")) }
                dt { "Serving since" } dd.mono { (time(shared.started_ms)) " (" (format::duration(now - shared.started_ms)) ")" }
                dt { "Last commit" }
                dd.mono {
                    @if tick.seq > 0 {
                        (time(tick.at_ms)) " · #" (tick.seq)
                    } @else { "none yet" }
                }
                dt { "Writer queue" } dd.mono { (shared.writer.depth()) " messages" }
                dt { "Active flows" } dd.mono { (format::count(tick.active_flows as i64)) }
                dt { "Database" } dd.mono { (shared.db_path.display()) }
                dt { "Storage" }
                dd.mono #storage-state {
                    @if write_failure.is_some() { "failing" } @else { "ok" }
                }
                @for s in shared.capture.all() {
                    dt { (s.source.title()) }
                    dd.mono id={ "capture-" (s.source.name()) } {
                        @match &s.state {
                            capture::State::Ok => "ok",
                            capture::State::Off => "off",
                            capture::State::Broken(_) => "broken",
                        }
                        @if s.state != capture::State::Off { " since " (time(s.since_ms)) }
                    }
                }
            }
            @if let Some(b) = &budget { (router_health::budget_line(b, db_file)) }
            h2 { "Collectors and counters" }
            p.muted {
                "Every netmon series of " a href="/metrics" { "/metrics" } ", as Prometheus scrapes it "
                "(per-device series are on the device pages). Counters count since netmon started; "
                "a non-zero drop, overrun or failure is highlighted."
            }
            div.scroll {
                table.data.counters {
                    thead { tr { th { "Metric" } th { "Series" } th.num { "Value" } th.opt { "Meaning" } } }
                    @for (k, (heading, _)) in SOURCES.iter().enumerate() {
                    @let group: Vec<&Family> = families.iter().filter(|f| source_of(&f.name) == k).collect();
                    @if !group.is_empty() {
                    tbody {
                        tr.group { th colspan="4" scope="rowgroup" { (heading) } }
                        @for f in group {
                            @for (i, s) in f.series.iter().enumerate() {
                                tr.warn[f.is_trouble() && s.value > 0.0 && !s.name.ends_with("count")] {
                                    td.mono {
                                        @if i == 0 { (f.name) }
                                        @if !s.name.is_empty() { span.muted { " " (s.name) } }
                                    }
                                    td.mono { (s.labels) }
                                    td.num.mono title=(s.value) { (value_text(&f.name, &s.name, s.value)) }
                                    td.opt { @if i == 0 { (f.help) } }
                                }
                            }
                        }
                    }
                    }
                    }
                }
            }
            h2 { "Settings" }
            @match &config {
                Some(c) => {
                    p.muted {
                        "The effective configuration (defaults filled in, secrets hidden). "
                        "Change it in the config file (" code { "/etc/netmon/netmon.toml" } "), check it with "
                        code { "netmon check-config" } " and reload netmon (SIGHUP, "
                        code { "/etc/init.d/netmon reload" } ")."
                    }
                    pre.config { (c.to_toml()) }
                }
                None => p.muted { "The configuration is not available to this server." },
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP netmon_collector_drops_total Events a collector dropped.\n\
        # TYPE netmon_collector_drops_total counter\n\
        netmon_collector_drops_total{router=\"r1\",stream=\"conntrack\"} 3\n\
        netmon_collector_drops_total{router=\"r1\",stream=\"dns\"} 0\n\
        # HELP netmon_writer_tick_seconds Time one writer tick took.\n\
        # TYPE netmon_writer_tick_seconds histogram\n\
        netmon_writer_tick_seconds_bucket{router=\"r1\",le=\"0.005\"} 10\n\
        netmon_writer_tick_seconds_sum{router=\"r1\"} 0.125\n\
        netmon_writer_tick_seconds_count{router=\"r1\"} 12\n\
        # HELP netmon_device_bytes_total Bytes per device.\n\
        netmon_device_bytes_total{router=\"r1\",device=\"tv\",direction=\"up\"} 5\n\
        # HELP process_resident_memory_bytes RSS.\n\
        process_resident_memory_bytes 1000\n\
        netmon_active_flows{router=\"r1\"} 7\n";

    #[test]
    fn families_keep_netmon_series_without_buckets_devices_or_router_label() {
        let f = families(TEXT);
        let names: Vec<_> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "netmon_collector_drops_total",
                "netmon_writer_tick_seconds",
                "netmon_active_flows"
            ]
        );
        assert_eq!(f[0].help, "Events a collector dropped.");
        assert_eq!(f[0].series[0].labels, "stream=\"conntrack\"");
        assert_eq!(f[0].series[0].value, 3.0);
        assert!(f[0].is_trouble());
        let tick: Vec<_> = f[1]
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.value))
            .collect();
        assert_eq!(tick, [("sum", 0.125), ("count", 12.0)]);
        assert_eq!(
            (f[2].series[0].labels.as_str(), f[2].series[0].value),
            ("", 7.0)
        );
    }

    #[test]
    fn values_read_in_their_units_and_families_group_by_source() {
        let cases = [
            ("netmon_db_size_bytes", "", 25_276_182_528.0, "23.5 GiB"),
            ("netmon_writer_tick_seconds", "sum", 0.4445, "444.5 ms"),
            ("netmon_writer_tick_seconds", "count", 12.0, "12"),
            ("netmon_router_uptime_seconds", "", 7_200.0, "2.0 h"),
            ("netmon_router_cpu_ratio", "", 0.25, "25.0 %"),
            ("netmon_router_load1", "", 0.444_5, "0.445"),
            ("netmon_router_load1", "", 12.345, "12.3"),
            (
                "netmon_conntrack_events_total",
                "",
                1_234_567.0,
                "1\u{2009}234\u{2009}567",
            ),
        ];
        for (family, series, v, want) in cases {
            assert_eq!(value_text(family, series, v), want, "{family} {series} {v}");
        }
        let family = |name: &str| Family {
            name: name.to_owned(),
            help: String::new(),
            series: Vec::new(),
        };
        assert!(family("netmon_collector_drops_total").is_trouble());
        assert!(
            !family("netmon_rdns_failures_total").is_trouble(),
            "a PTR lookup that times out is normal"
        );
        let heading = |f: &str| SOURCES[source_of(f)].0;
        assert_eq!(
            heading("netmon_conntrack_events_total"),
            "Connections (conntrack)"
        );
        assert_eq!(heading("netmon_dnsmasq_log_lines_total"), "DNS and names");
        assert_eq!(heading("netmon_capture_ok"), "Capture");
        assert_eq!(heading("netmon_writer_commits_total"), "Database");
        assert_eq!(heading("netmon_something_new"), "Other");
    }

    #[test]
    fn junk_lines_are_skipped() {
        assert!(families("netmon_x{a=\"b\"} not-a-number\nnetmon_y\n# HELP\n").is_empty());
    }
}
