//! A real Prometheus server scraping netmon in the router lab (`tests/lab/`).
//!
//! Prometheus (Debian's `prometheus` package) runs inside the lab router next to netmon
//! and scrapes `/metrics` every second with the bearer token of the scrape config in
//! `docs/export.md`. After a download from a LAN client, its HTTP API must show the
//! device's download counter grown by the download, the collector's health series,
//! and the drop counters (at 0 rather than missing). Then every query of the shipped
//! Grafana dashboard (`packaging/grafana-netmon.json`), with Grafana's variables filled
//! in, must return data: a panel that says "No data" on a working router is a bug in
//! netmon's series or in the query.
//!
//! Needs root and the packages `.ci/run` installs. Run with
//! `cargo build --bins && cargo test --test lab_prometheus -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Where Prometheus listens inside the lab router.
const PROMETHEUS: &str = "127.0.0.1:9090";
/// The scrape job's name (the `job` label of `up`).
const JOB: &str = "netmon";
/// netmon's `[export] router_label` here: the dashboard's `$router` variable lists it.
const ROUTER: &str = "lab-prom";
/// `[web] metrics_token`: Prometheus sends it, as a router scraped from another host
/// needs it.
const TOKEN: &str = "lab-prometheus-scrape-token";
/// Where the IPFIX exporter sends (a socat that discards what it receives), so the
/// dashboard's export panel has a live exporter to show.
const IPFIX_PORT: u16 = 4739;
/// What Grafana's `$__rate_interval` becomes: at least four scrape intervals (1 s), as
/// Grafana computes it, with room for a late scrape.
const RATE_INTERVAL: &str = "15s";

/// A Prometheus server in the lab router. Dropping it (also when the test panics) kills
/// it and removes its configuration and database, unless `NETMON_KEEP_LAB` keeps a
/// failed test's lab for inspection.
struct PrometheusServer<'a> {
    lab: &'a Lab,
    child: Option<Child>,
    /// Its configuration, log and TSDB, inside the lab's directory.
    dir: PathBuf,
}

impl<'a> PrometheusServer<'a> {
    /// Starts Prometheus scraping netmon every second; returns once it is ready.
    fn start(lab: &'a Lab) -> PrometheusServer<'a> {
        let dir = lab.dir.join("prometheus");
        std::fs::create_dir_all(&dir).expect("Prometheus directory");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config()).expect("write prometheus.yml");
        let log = File::create(dir.join("prometheus.log")).expect("Prometheus log");
        let log_err = log.try_clone().expect("clone log fd");
        // `ip netns exec` execs Prometheus in place: the child is Prometheus itself.
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns("rtr"), "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .expect("run prometheus (Debian package prometheus; .ci/run installs it)");
        let mut server = PrometheusServer {
            lab,
            child: Some(child),
            dir,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                panic!(
                    "prometheus exited at start ({status}):\n{}",
                    server.log_tail()
                );
            }
            matches!(server.get("/-/ready"), Ok((200, _)))
        });
        assert!(
            ready,
            "prometheus not ready within 30 s:\n{}",
            server.log_tail()
        );
        server
    }

    /// GET `path` from Prometheus's web server, over a socket opened in the router.
    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = self
            .lab
            .connect_in("rtr", PROMETHEUS.parse().expect("Prometheus address"))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {PROMETHEUS}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        parse_http_response(&raw)
    }

    /// The `data` of a successful API answer.
    fn api(&self, path: &str) -> Value {
        let (status, body) = self
            .get(path)
            .unwrap_or_else(|e| panic!("GET {path} from Prometheus: {e}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", truncate(&body, 2000)));
        assert!(
            status == 200 && v["status"] == "success",
            "GET {path} → {status}: {}",
            truncate(&body, 2000)
        );
        v["data"].clone()
    }

    /// An instant query at the newest data: its result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", form_encode(promql)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The series of an instant query: their own labels ([`labels_of`]) → value.
    fn series(&self, promql: &str) -> BTreeMap<String, f64> {
        self.query(promql)
            .iter()
            .map(|s| (labels_of(s), value_of(s)))
            .collect()
    }

    /// The single value an instant query returns (None for an empty result).
    fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        assert!(
            result.len() <= 1,
            "{promql} returns several series: {result:?}"
        );
        result.first().map(value_of)
    }

    fn log_tail(&self) -> String {
        tail(&self.dir.join("prometheus.log"), 30)
    }
}

impl Drop for PrometheusServer<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- prometheus log (tail):\n{}", self.log_tail());
            if std::env::var_os("NETMON_KEEP_LAB").is_some() {
                return;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process of the test killed and reaped when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One scrape job for netmon, as `docs/export.md` shows it, at a 1 s interval.
fn scrape_config() -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {JOB}
    scrape_interval: 1s
    scrape_timeout: 1s
    authorization:
      credentials: "{TOKEN}"
    static_configs:
      - targets: ["{WEB}"]
"#
    )
}

/// A result series' own labels (not the name, nor the `router`, `job` and `instance`
/// every series has), as `{a=x,b=y}`.
fn labels_of(series: &Value) -> String {
    let labels: Vec<String> = series["metric"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "router" | "job" | "instance"))
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    format!("{{{}}}", labels.join(","))
}

/// The value of an instant-vector sample (`[time, "value"]`).
fn value_of(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {series}"))
}

/// Every `targets[].expr` of the dashboard's panels (rows' panels included).
fn dashboard_queries(path: &Path) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.to_owned(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let text = std::fs::read_to_string(path).expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A dashboard query as Grafana sends it with every router selected.
fn with_grafana_variables(expr: &str) -> String {
    let filled = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$router", ".*");
    assert!(
        !filled.contains('$'),
        "a dashboard variable this test does not fill in: {expr}"
    );
    filled
}

/// One lab run: the scrape, the traffic, the health and drop series (A), then every
/// dashboard query (B).
#[test]
fn real_prometheus_scrapes_netmon_and_every_dashboard_query_has_data() {
    let t0 = Instant::now();
    let lab = Lab::up("promsrv");
    let _sink = KillOnDrop(lab.spawn(
        "rtr",
        &[
            "socat",
            "-u",
            &format!("UDP4-RECV:{IPFIX_PORT},bind=127.0.0.1"),
            "OPEN:/dev/null",
        ],
    ));
    let _nm = lab.start_netmon(&format!(
        "[export]\nrouter_label = \"{ROUTER}\"\nipfix_collector = \"127.0.0.1:{IPFIX_PORT}\"\n\
         [web]\nauth = \"none\"\nmetrics_token = \"{TOKEN}\"\n"
    ));
    let (status, _) = lab.http("/metrics").expect("GET /metrics");
    assert_eq!(
        status, 401,
        "/metrics must want the token it is configured with"
    );
    // The client known by its MAC before its traffic, so one device series takes it all.
    lab.sh("lan", &format!("ping -c1 -W2 {RTR_LAN4}"));
    let identified = wait_until(Duration::from_secs(15), || {
        lab.db_i64(&format!(
            "SELECT count(*) FROM device_addrs a JOIN devices d ON d.id = a.device_id
             WHERE d.mac IS NOT NULL AND a.ip = '{CLIENT4}'"
        )) == 1
    });
    assert!(identified, "the lab client was not identified by its MAC");

    let prom = PrometheusServer::start(&lab);
    let up = format!("up{{job=\"{JOB}\"}}");
    let scraping = wait_until(Duration::from_secs(15), || prom.value(&up) == Some(1.0));
    assert!(
        scraping,
        "Prometheus does not scrape netmon: {up} = {:?}; targets: {}\n{}",
        prom.value(&up),
        prom.api("/api/v1/targets"),
        prom.log_tail()
    );
    let down_bytes = "netmon_device_bytes_total{direction=\"down\"}";
    let before = prom.series(down_bytes);

    let download = lab.download("lan", 46301, &format!("http://{WAN4}/big.bin"));
    assert_eq!(download.body, BIG_FILE, "curl: {download:?}");

    // --- A: traffic, health and drops as Prometheus stored them ---
    let mut grown = BTreeMap::new();
    let rose = wait_until(Duration::from_secs(20), || {
        grown = prom
            .series(down_bytes)
            .into_iter()
            .map(|(device, v)| {
                let was = before.get(&device).copied().unwrap_or(0.0);
                (device, v - was)
            })
            .collect();
        grown.values().any(|&d| d >= download.down() as f64)
    });
    assert!(
        rose,
        "no device's {down_bytes} rose by the download's {} bytes: before {before:?}, \
         increase {grown:?}",
        download.down()
    );
    eprintln!(
        "download of {} bytes; {down_bytes} increase: {grown:?}",
        download.down()
    );

    let build = prom.query("netmon_build_info");
    assert_eq!(build.len(), 1, "netmon_build_info: {build:?}");
    assert_eq!(value_of(&build[0]), 1.0, "{build:?}");
    assert_eq!(
        build[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{build:?}"
    );
    // The dashboard's `$router` variable: label_values(netmon_build_info, router).
    let routers = prom.api("/api/v1/label/router/values?match%5B%5D=netmon_build_info");
    assert_eq!(routers, serde_json::json!([ROUTER]), "routers");
    let events = prom.series("netmon_conntrack_events_total");
    for kind in ["new", "update", "destroy"] {
        assert!(
            events.contains_key(&format!("{{type={kind}}}")),
            "netmon_conntrack_events_total has no type=\"{kind}\": {events:?}"
        );
    }
    let new_events = events["{type=new}"];
    assert!(new_events > 0.0, "conntrack events: {events:?}");
    let (entries, limit) = (
        prom.value("netmon_conntrack_entries").unwrap_or(-1.0),
        prom.value("netmon_conntrack_entries_limit").unwrap_or(-1.0),
    );
    assert!(
        entries >= 1.0 && limit >= entries,
        "conntrack fill {entries}/{limit}"
    );
    let stored = prom.value("netmon_flows_stored_total").unwrap_or(0.0);
    assert!(stored >= 1.0, "netmon_flows_stored_total = {stored}");
    let storage_ok = prom.value("netmon_storage_ok");
    assert_eq!(storage_ok, Some(1.0), "netmon_storage_ok");
    let rss = prom.value("process_resident_memory_bytes").unwrap_or(0.0);
    assert!(rss > 1e6, "process_resident_memory_bytes = {rss}");
    eprintln!(
        "health: conntrack events {events:?}, fill {entries}/{limit}, flows stored {stored}, \
         RSS {:.1} MiB",
        rss / 1048576.0
    );

    // Drops and losses: present from start (at 0 while nothing is lost), so a
    // dashboard shows 0 and `rate()` sees the first loss.
    let mut drops = BTreeMap::new();
    for (metric, want) in [
        ("netmon_collector_drops_total", &["{stream=conntrack}"][..]),
        ("netmon_conntrack_overruns_total", &["{}"][..]),
        ("netmon_writer_dropped_changes_total", &["{}"][..]),
        ("netmon_writer_failed_commits_total", &["{}"][..]),
        (
            "netmon_export_drops_total",
            &[
                "{exporter=ipfix,reason=queue_full}",
                "{exporter=ipfix,reason=send_error}",
            ][..],
        ),
    ] {
        let series = prom.series(metric);
        for labels in want {
            let v = series.get(*labels).copied();
            assert!(
                v.is_some_and(|v| v >= 0.0),
                "{metric}{labels} = {v:?} (series: {series:?})"
            );
            drops.insert(format!("{metric}{labels}"), v.unwrap_or_default());
        }
    }
    eprintln!("drops and losses: {drops:?}");

    // --- B: every dashboard query returns data ---
    let queries = dashboard_queries(&Path::new(REPO).join("packaging/grafana-netmon.json"));
    assert!(queries.len() >= 10, "dashboard queries: {queries:?}");
    let mut counts: Vec<(String, String, usize)> = Vec::new();
    let all_have_data = wait_until(Duration::from_secs(15), || {
        counts = queries
            .iter()
            .map(|(title, expr)| {
                let promql = with_grafana_variables(expr);
                let n = prom.query(&promql).len();
                (title.clone(), promql, n)
            })
            .collect();
        counts.iter().all(|(_, _, n)| *n > 0)
    });
    let report: Vec<String> = counts
        .iter()
        .map(|(title, promql, n)| format!("{n:>3}  {title}: {promql}"))
        .collect();
    eprintln!(
        "dashboard queries (series returned):\n{}",
        report.join("\n")
    );
    assert!(
        all_have_data,
        "dashboard queries without data (0 series):\n{}",
        report
            .iter()
            .zip(&counts)
            .filter(|(_, (_, _, n))| *n == 0)
            .map(|(line, _)| line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("lab_prometheus took {:?}", t0.elapsed());
}
