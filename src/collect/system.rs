//! Router health: the router's own CPU, load, memory, storage, interface traffic,
//! conntrack table fill, uptime and temperatures, read from `/proc` and
//! `/sys` every `[system] sample_interval_s`. Over 800 lines: a quarter is tests on
//! captured `/proc` and `/sys` text.
//!
//! One sampler thread reads everything, keeps the latest [`SystemSample`] in memory for
//! `/router`, `/api/router` and the Prometheus gauges ([`latest`]), and sends each
//! sample to the writer as [`Event::System`], which folds it into the minute rollups
//! (`store::system`).
//!
//! A plain thread, not a tokio task: every read is a blocking syscall, and `statvfs` of
//! a USB disk or a network mount can hang for seconds — that must not stall one of the
//! web runtime's two workers. It also starts right after the writer, before the runtime
//! exists, and stops like the other collectors: [`SystemSampler::stop`] drops a channel
//! the thread waits on, so it wakes at once instead of finishing its sleep.
//!
//! Everything is read in netmon's own network namespace: `/proc/net/dev` and
//! `/proc/sys/net/netfilter/nf_conntrack_*` are per namespace (the kernel resolves
//! `/proc/net` through `/proc/self`), so on a router they describe the router's
//! interfaces and table, and in the lab the lab router's. CPU, load, memory and uptime
//! are global to the kernel.
//!
//! Counters: interface byte/packet counters are 64-bit in the kernel
//! (`rtnl_link_stats64`) and only go backwards when the interface is recreated (PPPoE
//! reconnect, driver reload) or a 32-bit driver counter wraps. A smaller value than last
//! time restarts the baseline: that interval has no rate, never a negative one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Config;
use crate::event::Event;
use crate::event::{
    Conntrack, Filesystem, InterfaceCounters, InterfaceSample, Load, Memory, Role, SystemSample,
    Temperature, WriterHandle,
};

/// Interfaces sampled at most (configured LAN/WAN ones first). A router with hundreds
/// of container veths must not get hundreds of minute rows per minute.
pub const MAX_INTERFACES: usize = 32;
/// Temperature sensors read at most.
pub const MAX_SENSORS: usize = 16;

// --- pure parsers ----------------------------------------------------------------------

/// Aggregate CPU time from the first line of `/proc/stat`, in USER_HZ ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice` (proc(5)).
/// Idle is `idle + iowait`; guest time is already inside `user`/`nice`, so it is not
/// added again.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if n.len() < 4 {
        return None;
    }
    let total: u64 = n.iter().sum();
    let idle = n[3] + n.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// Busy share between two readings; `None` when no time passed or counters went back.
pub fn cpu_ratio(prev: CpuTimes, now: CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(prev.total).filter(|t| *t > 0)?;
    let busy = now.busy.checked_sub(prev.busy)?;
    Some((busy as f64 / total as f64).clamp(0.0, 1.0))
}

/// `/proc/loadavg`: `0.52 0.58 0.59 1/467 12345`.
pub fn parse_loadavg(text: &str) -> Option<Load> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some(Load {
        one: it.next()?.ok()?,
        five: it.next()?.ok()?,
        fifteen: it.next()?.ok()?,
    })
}

/// `/proc/meminfo` (values in kB, i.e. KiB). Kernels before 3.14 have no
/// `MemAvailable`; `MemFree + Buffers + Cached` is the old approximation.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib.saturating_mul(1024))
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable").or_else(|| {
        Some(field("MemFree")? + field("Buffers").unwrap_or(0) + field("Cached").unwrap_or(0))
    })?;
    Some(Memory {
        total_bytes: total,
        available_bytes: available.min(total),
    })
}

/// `/proc/uptime`: seconds since boot, then idle seconds.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `/proc/net/dev` (read by the sampler and by the Prometheus exporter at scrape time):
/// two header lines, then `name: rx_bytes rx_packets errs drop fifo frame compressed
/// multicast tx_bytes tx_packets …` (`dev_seq_printf_stats` in `net/core/net-procfs.c`). The name ends at the last `:` before the numbers (a large
/// counter may follow it without a space).
pub fn parse_net_dev(text: &str) -> Vec<(String, InterfaceCounters)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.rsplit_once(':')?;
            let n: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (n.len() >= 10).then(|| {
                (
                    name.trim().to_owned(),
                    InterfaceCounters {
                        rx_bytes: n[0],
                        rx_packets: n[1],
                        tx_bytes: n[8],
                        tx_packets: n[9],
                    },
                )
            })
        })
        .collect()
}

/// A sysfs temperature (`thermal_zone*/temp`, hwmon `temp*_input`): millidegrees
/// Celsius (Documentation/hwmon/sysfs-interface.rst). Readings outside −100…250 °C are
/// sensor errors, not temperatures.
pub fn parse_millidegrees(text: &str) -> Option<f64> {
    let c = text.trim().parse::<i64>().ok()? as f64 / 1000.0;
    (-100.0..=250.0).contains(&c).then_some(c)
}

// --- reading the system ----------------------------------------------------------------

/// Temperatures under a sysfs root (`/sys`): thermal zones, then hwmon chips. A sensor
/// that fails to read (many return EIO or ENODATA while idle) is skipped.
pub fn read_temperatures(sys: &Path) -> Vec<Temperature> {
    let mut out = Vec::new();
    for zone in sorted_entries(&sys.join("class/thermal"), "thermal_zone") {
        let Some(celsius) = read_trimmed(&zone.join("temp")).and_then(|t| parse_millidegrees(&t))
        else {
            continue;
        };
        let kind = read_trimmed(&zone.join("type")).unwrap_or_else(|| file_name(&zone));
        out.push(Temperature {
            sensor: format!("thermal/{kind}"),
            celsius,
        });
    }
    for chip in sorted_entries(&sys.join("class/hwmon"), "hwmon") {
        let name = read_trimmed(&chip.join("name")).unwrap_or_else(|| file_name(&chip));
        let inputs = std::fs::read_dir(&chip)
            .map(|d| {
                let mut v: Vec<String> = d
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("temp") && n.ends_with("_input"))
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default();
        for input in inputs {
            let Some(celsius) =
                read_trimmed(&chip.join(&input)).and_then(|t| parse_millidegrees(&t))
            else {
                continue;
            };
            let base = input.trim_end_matches("_input");
            let label =
                read_trimmed(&chip.join(format!("{base}_label"))).unwrap_or_else(|| base.into());
            out.push(Temperature {
                sensor: format!("hwmon/{name}/{label}"),
                celsius,
            });
        }
    }
    // Two zones of the same type (several "cpu-thermal") get their index appended.
    let mut seen: HashMap<String, u32> = HashMap::new();
    for t in &mut out {
        let n = seen.entry(t.sensor.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            t.sensor = format!("{}#{n}", t.sensor);
        }
    }
    out.truncate(MAX_SENSORS);
    out
}

/// Entries of `dir` whose name starts with `prefix`, in natural order (zone2 < zone10).
fn sorted_entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let index = name.strip_prefix(prefix)?.parse::<u64>().ok()?;
            Some((index, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The file systems shown: the database's directory, and the overlay (or `/`).
fn filesystem_paths(db_path: &Path) -> Vec<(&'static str, PathBuf)> {
    let db_dir = db_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let overlay = Path::new("/overlay");
    let system = if overlay.is_dir() {
        ("overlay", overlay.to_owned())
    } else {
        ("root", PathBuf::from("/"))
    };
    vec![("database", db_dir), system]
}

/// The sampler's memory between two samples: the previous counters.
struct Sampler {
    wan: Vec<String>,
    lan: Vec<String>,
    filesystems: Vec<(&'static str, PathBuf)>,
    prev_at: Option<Instant>,
    prev_cpu: Option<CpuTimes>,
    prev_ifaces: HashMap<String, InterfaceCounters>,
}

impl Sampler {
    fn new(config: &Config) -> Sampler {
        Sampler {
            wan: config.wan_interfaces.clone(),
            lan: config.lan_interfaces.clone(),
            filesystems: filesystem_paths(&config.db_path),
            prev_at: None,
            prev_cpu: None,
            prev_ifaces: HashMap::new(),
        }
    }

    fn role(&self, name: &str) -> Role {
        let is = |names: &[String], n: &str| names.iter().any(|x| x == n);
        // A bridge port's master, e.g. `lan1` → `br-lan`.
        let master = || {
            std::fs::read_link(format!("/sys/class/net/{name}/master"))
                .ok()
                .and_then(|p| p.file_name().map(|m| m.to_string_lossy().into_owned()))
        };
        if is(&self.wan, name) {
            Role::Wan
        } else if is(&self.lan, name) {
            Role::Lan
        } else {
            match master() {
                Some(m) if is(&self.wan, &m) => Role::WanPort,
                Some(m) if is(&self.lan, &m) => Role::LanPort,
                _ => Role::Other,
            }
        }
    }

    /// (Long: one reading of every health source, each a few lines.)
    fn sample(&mut self) -> SystemSample {
        let now = Instant::now();
        let at_ms = crate::time::now_ms();
        let interval = self.prev_at.map(|p| now.duration_since(p));
        self.prev_at = Some(now);
        let read = |p: &str| std::fs::read_to_string(p).ok();

        let cpu = read("/proc/stat").and_then(|t| parse_proc_stat(&t));
        let cpu_ratio = match (self.prev_cpu, cpu) {
            (Some(prev), Some(now)) => cpu_ratio(prev, now),
            _ => None,
        };
        self.prev_cpu = cpu;

        let mut interfaces: Vec<InterfaceSample> = read("/proc/net/dev")
            .map(|t| parse_net_dev(&t))
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, _)| name != "lo")
            .map(|(name, counters)| {
                let delta = self
                    .prev_ifaces
                    .get(&name)
                    .and_then(|prev| counters.since(prev));
                let per_s = |d: Option<u64>| {
                    let secs = interval?.as_secs_f64();
                    (secs > 0.0).then(|| d.map(|d| d as f64 / secs)).flatten()
                };
                InterfaceSample {
                    role: self.role(&name),
                    rx_bytes_per_s: per_s(delta.map(|d| d.rx_bytes)),
                    tx_bytes_per_s: per_s(delta.map(|d| d.tx_bytes)),
                    name,
                    counters,
                    delta,
                }
            })
            .collect();
        // Configured interfaces first, so the cap never hides the WAN.
        interfaces.sort_by_key(|i| i.role == Role::Other);
        interfaces.truncate(MAX_INTERFACES);
        self.prev_ifaces = interfaces
            .iter()
            .map(|i| (i.name.clone(), i.counters))
            .collect();

        let filesystems = self
            .filesystems
            .iter()
            .filter_map(|(name, path)| {
                let (size_bytes, free_bytes) = crate::disk::statvfs(path).ok()?;
                Some(Filesystem {
                    name,
                    path: path.display().to_string(),
                    size_bytes,
                    free_bytes,
                })
            })
            .collect();

        let sysctl = |name: &str| {
            crate::sysctl::read_sysctl(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
        };
        let conntrack = match (
            sysctl("net.netfilter.nf_conntrack_count"),
            sysctl("net.netfilter.nf_conntrack_max"),
        ) {
            (Some(count), Some(max)) => Some(Conntrack { count, max }),
            _ => None,
        };

        SystemSample {
            at_ms,
            interval_ms: interval.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            cpu_ratio,
            load: read("/proc/loadavg").and_then(|t| parse_loadavg(&t)),
            memory: read("/proc/meminfo").and_then(|t| parse_meminfo(&t)),
            filesystems,
            interfaces,
            conntrack,
            uptime_s: read("/proc/uptime").and_then(|t| parse_uptime(&t)),
            temperatures: read_temperatures(Path::new("/sys")),
        }
    }
}

impl SystemSample {
    /// Adds the interface deltas of an older sample the writer never got (its channel
    /// was full), so the minute rollups still add up to the kernel's counters.
    fn absorb(&mut self, older: &SystemSample) {
        for iface in &mut self.interfaces {
            let Some(delta) = &mut iface.delta else {
                continue; // reset since: the older delta belongs to a counter now gone
            };
            if let Some(old) = older
                .interfaces
                .iter()
                .find(|o| o.name == iface.name)
                .and_then(|o| o.delta.as_ref())
            {
                delta.add(old);
            }
        }
    }
}

// --- the latest sample ------------------------------------------------------------------

/// Where the latest sample is seen, for the page, the API and nothing else: the sampler
/// owns the sending side, the web state holds a receiver. `None` until the sampler's
/// first sample (or when it is off). `Arc` so a reader clones a pointer, not the sample.
pub type LatestSample = watch::Receiver<Option<Arc<SystemSample>>>;

fn publish(latest: &watch::Sender<Option<Arc<SystemSample>>>, sample: &SystemSample) {
    latest.send_replace(Some(Arc::new(sample.clone())));
    record_metrics(sample);
}

// --- Prometheus ---------------------------------------------------------------------------

/// HELP text of the router health gauges. Interface traffic and the conntrack table are
/// not repeated here: `export::prometheus` already reads them at scrape time as the
/// counters `netmon_interface_bytes_total{interface,role,direction}` (exact kernel
/// counters; `rate()` gives the rate without the sampler's lag) and the gauges
/// `netmon_conntrack_entries` / `netmon_conntrack_entries_limit`.
fn describe_metrics() {
    use metrics::{Unit, describe_gauge};
    describe_gauge!(
        "netmon_router_cpu_ratio",
        "Busy share of all the router's CPUs over the last sample interval (0-1, /proc/stat)."
    );
    describe_gauge!(
        "netmon_router_load1",
        "The router's 1-minute load average (/proc/loadavg)."
    );
    describe_gauge!(
        "netmon_router_memory_bytes",
        Unit::Bytes,
        "The router's memory: kind=total (MemTotal) or available (MemAvailable, /proc/meminfo)."
    );
    describe_gauge!(
        "netmon_router_filesystem_bytes",
        Unit::Bytes,
        "Size (kind=size) and space available (kind=free, statvfs f_bavail) of the database's and the overlay's (or root) file systems."
    );
    describe_gauge!(
        "netmon_router_uptime_seconds",
        Unit::Seconds,
        "Seconds since the router booted (/proc/uptime)."
    );
    describe_gauge!(
        "netmon_router_temperature_celsius",
        "Temperature of a sensor the kernel exposes (thermal zones, hwmon), in degrees Celsius."
    );
}

fn record_metrics(s: &SystemSample) {
    use metrics::gauge;
    if let Some(r) = s.cpu_ratio {
        gauge!("netmon_router_cpu_ratio").set(r);
    }
    if let Some(l) = s.load {
        gauge!("netmon_router_load1").set(l.one);
    }
    if let Some(m) = s.memory {
        gauge!("netmon_router_memory_bytes", "kind" => "total").set(m.total_bytes as f64);
        gauge!("netmon_router_memory_bytes", "kind" => "available").set(m.available_bytes as f64);
    }
    for f in &s.filesystems {
        for (kind, v) in [("size", f.size_bytes), ("free", f.free_bytes)] {
            gauge!("netmon_router_filesystem_bytes", "mount" => f.path.clone(), "kind" => kind)
                .set(v as f64);
        }
    }
    if let Some(u) = s.uptime_s {
        gauge!("netmon_router_uptime_seconds").set(u);
    }
    for t in &s.temperatures {
        gauge!("netmon_router_temperature_celsius", "sensor" => t.sensor.clone()).set(t.celsius);
    }
}

// --- the thread -------------------------------------------------------------------------

/// The running sampler. [`SystemSampler::stop`] ends it; dropping it does too (the
/// thread sees its channel close) but without waiting.
pub struct SystemSampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
    /// The latest sample, for the web state ([`SystemSampler::latest`]).
    latest: LatestSample,
}

impl SystemSampler {
    /// Takes the first sample now (so `/router` has values within one interval) and then
    /// one every `system.sample_interval_s`.
    pub fn start(config: &Config, writer: WriterHandle) -> anyhow::Result<SystemSampler> {
        describe_metrics();
        let interval = Duration::from_secs(config.system.sample_interval_s);
        let mut sampler = Sampler::new(config);
        let (stop, stopped) = mpsc::channel::<()>();
        let (latest_tx, latest) = watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("system".into())
            .spawn(move || {
                let channel_full = metrics::counter!(
                    "netmon_collector_channel_full_total", "stream" => "system"
                );
                // A sample the writer did not take; its deltas ride on the next one.
                let mut unsent: Option<SystemSample> = None;
                let mut next = Instant::now();
                loop {
                    let mut sample = sampler.sample();
                    publish(&latest_tx, &sample);
                    if let Some(older) = unsent.take() {
                        sample.absorb(&older);
                    }
                    match writer.try_send(Event::System(Box::new(sample))) {
                        Ok(()) => {}
                        Err(Event::System(back)) => {
                            channel_full.increment(1);
                            unsent = Some(*back);
                        }
                        Err(_) => {}
                    }
                    next += interval;
                    // Behind schedule (suspended, a hung statvfs): resume from now rather
                    // than firing a burst of catch-up samples.
                    let now = Instant::now();
                    if next < now {
                        next = now + interval;
                    }
                    match stopped.recv_timeout(next - now) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .context("starting the router health sampler thread")?;
        Ok(SystemSampler {
            stop,
            thread,
            latest,
        })
    }

    /// A receiver of the latest sample (see [`LatestSample`]).
    pub fn latest(&self) -> LatestSample {
        self.latest.clone()
    }

    /// Stops the thread (at once: it waits on the channel this closes) and joins it.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            log::error!("router health sampler thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = include_str!("fixtures/system/stat.txt");
    const STAT_1S: &str = include_str!("fixtures/system/stat-1s.txt");
    const MEMINFO: &str = include_str!("fixtures/system/meminfo.txt");
    const LOADAVG: &str = include_str!("fixtures/system/loadavg.txt");
    const UPTIME: &str = include_str!("fixtures/system/uptime.txt");
    const NET_DEV: &str = include_str!("fixtures/system/net_dev.txt");

    #[test]
    fn proc_stat_gives_busy_share_over_the_interval() {
        let a = parse_proc_stat(STAT).unwrap();
        let b = parse_proc_stat(STAT_1S).unwrap();
        // cpu  690198 6804 110476 1182690 6231 0 7469 438 0 0
        assert_eq!(
            a.total,
            690198 + 6804 + 110476 + 1182690 + 6231 + 7469 + 438
        );
        assert_eq!(a.busy, a.total - 1182690 - 6231);
        // Two CPUs at USER_HZ 100 over about one second: about 200 ticks.
        assert!((150..=260).contains(&(b.total - a.total)), "{a:?} {b:?}");
        let r = cpu_ratio(a, b).unwrap();
        assert!((0.0..=1.0).contains(&r));
        assert_eq!(cpu_ratio(b, a), None, "counters going back give no ratio");
        assert_eq!(cpu_ratio(a, a), None, "no time passed");
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
    }

    #[test]
    fn meminfo_loadavg_uptime() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m.total_bytes, 24_684_084 * 1024);
        assert_eq!(m.available_bytes, 23_938_852 * 1024);
        assert_eq!(m.used_bytes(), (24_684_084 - 23_938_852) * 1024);
        // A pre-3.14 kernel without MemAvailable.
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n";
        assert_eq!(parse_meminfo(old).unwrap().available_bytes, 420 * 1024);
        assert_eq!(parse_meminfo("garbage"), None);

        let l = parse_loadavg(LOADAVG).unwrap();
        assert_eq!(
            l,
            Load {
                one: 1.41,
                five: 1.74,
                fifteen: 1.92
            }
        );
        assert_eq!(parse_loadavg("1.0 x"), None);
        assert_eq!(parse_uptime(UPTIME), Some(10066.97));
        assert_eq!(parse_uptime(""), None);
    }

    #[test]
    fn net_dev_lists_every_interface() {
        let v = parse_net_dev(NET_DEV);
        let names: Vec<&str> = v.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["lo", "ifb0", "ifb1", "eth0"]);
        assert_eq!(
            v[3].1,
            InterfaceCounters {
                rx_bytes: 476_362_423,
                rx_packets: 22_580,
                tx_bytes: 1_319_036,
                tx_packets: 13_882
            }
        );
        // A 20-digit counter glued to the colon.
        let glued = "h1\nh2\n  wan:18446744073709551615 1 0 0 0 0 0 0 7 2 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(glued)[0].1.rx_bytes, u64::MAX);
    }

    /// Captured on the development VM with `cat /proc/net/dev` (Linux 6.18), plus a
    /// line with a counter glued to the colon as the kernel prints large values.
    const PROC_NET_DEV_GLUED: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 2033139    1294    0    0    0     0          0         0  2033139    1294    0    0    0     0       0          0
  ifb0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
br-lan:12345678901  99    0    0    0     0          0         0      500       7    0    0    0     0       0          0
";

    /// What the Prometheus exporter reads at scrape time goes through the same parser.
    #[test]
    fn proc_net_dev_is_parsed() {
        let stats = parse_net_dev(PROC_NET_DEV_GLUED);
        assert_eq!(stats.len(), 3);
        assert_eq!(
            stats[0],
            (
                "lo".to_owned(),
                InterfaceCounters {
                    rx_bytes: 2_033_139,
                    rx_packets: 1294,
                    tx_bytes: 2_033_139,
                    tx_packets: 1294,
                }
            )
        );
        assert_eq!(stats[2].0, "br-lan");
        assert_eq!(stats[2].1.rx_bytes, 12_345_678_901);
        assert_eq!((stats[2].1.tx_bytes, stats[2].1.tx_packets), (500, 7));
        assert!(parse_net_dev("garbage\n\nx: 1 2\n").is_empty());
    }

    #[test]
    fn a_smaller_counter_restarts_the_baseline() {
        let a = InterfaceCounters {
            rx_bytes: 1000,
            tx_bytes: 500,
            rx_packets: 10,
            tx_packets: 5,
        };
        let b = InterfaceCounters {
            rx_bytes: 3000,
            tx_bytes: 700,
            rx_packets: 12,
            tx_packets: 6,
        };
        assert_eq!(
            b.since(&a),
            Some(InterfaceCounters {
                rx_bytes: 2000,
                tx_bytes: 200,
                rx_packets: 2,
                tx_packets: 1
            })
        );
        // Interface recreated: its counters start again from zero.
        let reset = InterfaceCounters { rx_bytes: 40, ..b };
        assert_eq!(reset.since(&b), None);
    }

    #[test]
    fn an_unsent_sample_adds_its_deltas_to_the_next() {
        let iface = |delta: Option<u64>| InterfaceSample {
            name: "wan".into(),
            role: Role::Wan,
            counters: InterfaceCounters::default(),
            delta: delta.map(|d| InterfaceCounters {
                rx_bytes: d,
                ..InterfaceCounters::default()
            }),
            rx_bytes_per_s: None,
            tx_bytes_per_s: None,
        };
        let sample = |delta| SystemSample {
            at_ms: 0,
            interval_ms: None,
            cpu_ratio: None,
            load: None,
            memory: None,
            filesystems: vec![],
            interfaces: vec![iface(delta)],
            conntrack: None,
            uptime_s: None,
            temperatures: vec![],
        };
        let mut next = sample(Some(5));
        next.absorb(&sample(Some(7)));
        assert_eq!(next.interfaces[0].delta.unwrap().rx_bytes, 12);
        let mut reset = sample(None);
        reset.absorb(&sample(Some(7)));
        assert_eq!(reset.interfaces[0].delta, None);
    }

    /// This machine exposes no thermal zone or hwmon chip, so the sysfs layout is built
    /// here as the kernel lays it out (Documentation/hwmon/sysfs-interface.rst,
    /// Documentation/driver-api/thermal/sysfs-api.rst).
    #[test]
    fn temperatures_from_thermal_zones_and_hwmon() {
        let dir = tempfile::tempdir().unwrap();
        let put = |p: &str, v: &str| {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        };
        put("class/thermal/thermal_zone0/type", "cpu-thermal\n");
        put("class/thermal/thermal_zone0/temp", "48312\n");
        put("class/thermal/thermal_zone1/type", "cpu-thermal\n");
        put("class/thermal/thermal_zone1/temp", "51000\n");
        put("class/thermal/cooling_device0/type", "fan\n");
        put("class/hwmon/hwmon0/name", "coretemp\n");
        put("class/hwmon/hwmon0/temp1_input", "55000\n");
        put("class/hwmon/hwmon0/temp1_label", "Package id 0\n");
        put("class/hwmon/hwmon0/temp2_input", "-274000\n");
        let t = read_temperatures(dir.path());
        let got: Vec<(&str, f64)> = t.iter().map(|t| (t.sensor.as_str(), t.celsius)).collect();
        assert_eq!(
            got,
            [
                ("thermal/cpu-thermal", 48.312),
                ("thermal/cpu-thermal#2", 51.0),
                ("hwmon/coretemp/Package id 0", 55.0)
            ]
        );
        assert!(read_temperatures(&dir.path().join("missing")).is_empty());
        dir.close().unwrap();
    }

    #[test]
    fn live_sample_reads_this_machine() {
        let config = Config {
            db_path: std::env::temp_dir().join("netmon.db"),
            wan_interfaces: vec!["eth0".into()],
            ..Config::default()
        };
        let mut s = Sampler::new(&config);
        let first = s.sample();
        assert!(first.cpu_ratio.is_none() && first.interval_ms.is_none());
        assert!(first.interfaces.iter().all(|i| i.delta.is_none()));
        std::thread::sleep(Duration::from_millis(50));
        let second = s.sample();
        assert!(second.memory.unwrap().total_bytes > 0);
        assert!(second.uptime_s.unwrap() > 0.0);
        assert_eq!(second.filesystems[0].name, "database");
        assert!(second.filesystems[0].size_bytes >= second.filesystems[0].free_bytes);
        assert!(second.interfaces.iter().all(|i| i.name != "lo"));
        if let Some(i) = second.interfaces.iter().find(|i| i.name == "eth0") {
            assert_eq!(i.role, Role::Wan);
            assert!(i.delta.is_some() && i.rx_bytes_per_s.is_some());
        }
    }
}
