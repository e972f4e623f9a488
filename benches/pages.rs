//! Page benchmark: every page and fragment rendered by the real router —
//! handlers, read pool, SQLite — against a generated database of 1 million flows over
//! 30 days with their rollups, DNS log and detection rows, as a busy household's router
//! would hold. Reports p50/p95/max server-side time per page (the request goes through
//! the whole axum stack in-process; no sockets, so the numbers are render + query time).
//!
//! Run: `cargo bench --bench pages` (env `FLOWS` to change the size, `RUNS` the samples
//! per page (default 40), `DB_DIR` where the database is built (default /var/tmp),
//! `KEEP_DB=1` to keep it and `DB=path` to reuse a kept one). Without `--bench` (as
//! `cargo test --all-targets` runs it) a 20 000-flow database and 3 runs per page prove
//! the path without spending CI minutes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use netmon::config::{Config, WebAuth};
use netmon::flow::Network;
use netmon::store::pool::ReadPool;
use netmon::store::writer::WriterThread;
use netmon::web;
use tower::ServiceExt;

const DAY_MS: i64 = 86_400_000;
const DEVICES: i64 = 40;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills a freshly migrated database: `flows` flows spread evenly over 30 days (the
/// newest 300 still live), 40 devices, 20 000 remote hosts, minute rollups for the
/// 7 days they are kept and hour rollups for 30, a DNS query (and answer) per two flows,
/// system and interface minutes, and a few thousand detection hits and incidents.
fn generate(path: &Path, flows: i64, now: i64) {
    let conn = rusqlite::Connection::open(path).expect("open bench db");
    netmon::store::schema::migrate(&conn).expect("migrate");
    let start = now - 30 * DAY_MS;
    let step = (30 * DAY_MS / flows).max(1);
    let hosts = (flows / 50).clamp(100, 20_000);
    let names = (hosts / 4).max(50);
    let minute = |t: i64| t - t.rem_euclid(60_000);
    let sql = format!(
        "BEGIN;
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {DEVICES})
        INSERT INTO devices (id, mac, ip, hostname, vendor, first_seen, last_seen, bytes_up, bytes_down, flows)
        SELECT i, printf('02:00:00:00:%02x:%02x', i / 256, i % 256), '10.77.0.' || (9 + i),
               'device-' || i, 'Example Vendor', {start}, {now}, 0, 0, 0 FROM n;
        INSERT INTO device_addrs (ip, device_id, first_seen, last_seen)
        SELECT ip, id, first_seen, last_seen FROM devices;
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {hosts})
        INSERT INTO remote_hosts (id, ip, first_seen, last_seen, rdns, asn, org, bytes_up, bytes_down, flows)
        SELECT i, '198.' || (18 + i / 65536) || '.' || ((i / 256) % 256) || '.' || (i % 256),
               {start} + (i * 7919) % ({now} - {start}), {now},
               CASE WHEN i % 3 = 0 THEN NULL ELSE 'host-' || i || '.example.net' END,
               64496 + i % 50, 'Example Org ' || (i % 50), 0, 0, 0 FROM n;
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {names})
        INSERT INTO dns_names (id, name) SELECT i, 'name' || i || '.site' || (i % 500) || '.example' FROM n;
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {flows} - 1)
        INSERT INTO flows (id, ident, ct_id, proto, direction, src_ip, src_port, dst_ip, dst_port,
                           reply_src_port, reply_dst_ip, state, status,
                           bytes_up, packets_up, bytes_down, packets_down, first_seen, last_seen, ended_at,
                           device_id, remote_host_id, qname_id, cname_id, dns_match)
        SELECT i + 1, CASE WHEN i >= {flows} - 300 THEN i ELSE 0 END, i,
               CASE WHEN i % 5 = 0 THEN 17 ELSE 6 END, 0,
               netmon_ip_blob('10.77.0.' || (10 + (i * 7) % {DEVICES})), 1024 + i % 60000,
               netmon_ip_blob('198.' || (18 + h / 65536) || '.' || ((h / 256) % 256) || '.' || (h % 256)),
               CASE i % 10 WHEN 0 THEN 53 WHEN 1 THEN 80 WHEN 2 THEN 123 WHEN 3 THEN 8080
                           WHEN 4 THEN 1024 + (i * 13) % 60000 ELSE 443 END,
               CASE WHEN i % 10 < 5 THEN 443 END,
               netmon_ip_blob('203.0.113.1'),
               CASE WHEN i % 5 = 0 THEN NULL ELSE 7 END, 14,
               (i * 2654435761) % 200000, 10 + i % 90, (i * 40503) % 2000000, 20 + i % 900,
               {start} + i * {step}, {start} + i * {step} + 30000,
               CASE WHEN i >= {flows} - 300 THEN NULL ELSE {start} + i * {step} + 30000 END,
               1 + (i * 7) % {DEVICES}, h,
               CASE WHEN i % 4 = 0 THEN NULL ELSE 1 + i % {names} END,
               CASE WHEN i % 4 = 0 THEN NULL ELSE 1 + i % {names} END,
               CASE WHEN i % 4 = 0 THEN NULL ELSE 1 END
        FROM (SELECT i, 1 + (i * 7919) % {hosts} AS h FROM n);
        UPDATE flows SET ended_at = NULL, last_seen = {now} WHERE ended_at IS NULL;
        INSERT INTO device_hours (device_id, hour, bytes_up, bytes_down, packets_up, packets_down, flows_new)
        SELECT device_id, first_seen - first_seen % 3600000, sum(bytes_up), sum(bytes_down),
               sum(packets_up), sum(packets_down), count(*)
        FROM flows GROUP BY 1, 2;
        INSERT INTO remote_host_hours (remote_host_id, hour, bytes_up, bytes_down, packets_up, packets_down, flows_new)
        SELECT remote_host_id, first_seen - first_seen % 3600000, sum(bytes_up), sum(bytes_down),
               sum(packets_up), sum(packets_down), count(*)
        FROM flows GROUP BY 1, 2;
        WITH RECURSIVE m(t) AS (SELECT {m0} UNION ALL SELECT t + 60000 FROM m WHERE t < {m1}),
             d(id) AS (SELECT id FROM devices)
        INSERT INTO device_minutes (device_id, minute, bytes_up, bytes_down, packets_up, packets_down,
                                    flows_new, unique_dsts, unique_ports)
        SELECT id, t, (t / 60000 * id) % 50000, (t / 60000 * id * 7) % 900000, 40, 700, (t / 60000 + id) % 9,
               (t / 60000 + id) % 6, (t / 60000 + id) % 4 FROM m, d;
        INSERT INTO remote_host_minutes (remote_host_id, minute, bytes_up, bytes_down, packets_up, packets_down,
                                         flows_new, unique_devices)
        SELECT remote_host_id, first_seen - first_seen % 60000, sum(bytes_up), sum(bytes_down),
               sum(packets_up), sum(packets_down), count(*), 1
        FROM flows WHERE first_seen >= {m0} GROUP BY 1, 2;
        WITH RECURSIVE m(t) AS (SELECT {m0} UNION ALL SELECT t + 60000 FROM m WHERE t < {m1}),
             d(id) AS (SELECT id FROM devices)
        INSERT INTO dns_device_minutes (device_id, minute, queries, nxdomain, names)
        SELECT id, t, 1 + (t / 60000 + id) % 7, (t / 60000 + id) % 2, 1 + (t / 60000 + id) % 5 FROM m, d;
        INSERT INTO dns_queries (id, ts, client, device_id, qname_id, qtype, rcode, answers, cname_id, source)
        SELECT id / 2, first_seen - 50, src_ip, device_id, qname_id, 1, 0, 1, cname_id, 0
        FROM flows WHERE qname_id IS NOT NULL AND id % 2 = 0;
        INSERT INTO dns_answers (query_id, ip, client, ttl)
        SELECT q.id, f.dst_ip, q.client, 300 FROM dns_queries q JOIN flows f ON f.id = q.id * 2;
        INSERT OR IGNORE INTO remote_host_domains (remote_host_id, qname_id, first_seen, last_seen, flows, last_device_id)
        SELECT remote_host_id, qname_id, min(first_seen), max(first_seen), count(*), max(device_id)
        FROM flows WHERE qname_id IS NOT NULL GROUP BY 1, 2;
        INSERT OR IGNORE INTO remote_host_ports (remote_host_id, proto, port, first_seen, last_seen, flows)
        SELECT remote_host_id, proto, dst_port, min(first_seen), max(first_seen), count(*)
        FROM flows GROUP BY 1, 2, 3;
        UPDATE devices SET (bytes_up, bytes_down, flows) =
            (SELECT sum(bytes_up), sum(bytes_down), count(*) FROM flows WHERE device_id = devices.id);
        UPDATE remote_hosts SET (bytes_up, bytes_down, flows) =
            (SELECT coalesce(sum(bytes_up), 0), coalesce(sum(bytes_down), 0), count(*)
             FROM flows WHERE remote_host_id = remote_hosts.id);
        WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < 2999)
        INSERT INTO hits (ts, last_ts, count, device_id, flow_id, remote_host_id, remote_ip, proto, dport,
                          score, codes, reasons, fingerprint, alertable, incident_id)
        SELECT f.first_seen, f.first_seen, 1, f.device_id, f.id, f.remote_host_id, netmon_ip(f.dst_ip), f.proto, f.dst_port,
               40 + n % 60, 'NEW_DST,RARE_PORT',
               '[{{\"code\":\"NEW_DST\",\"weight\":30,\"evidence\":\"first contact\"}},{{\"code\":\"RARE_PORT\",\"weight\":25,\"evidence\":\"port\"}}]',
               'fp' || n, n % 3 = 0, CASE WHEN n % 3 = 0 THEN 1 + n / 3 ELSE NULL END
        FROM i JOIN flows f ON f.id = 1 + (n * 331) % {flows};
        INSERT INTO incidents (id, fingerprint, device_id, remote_ip, proto, dport, codes, title,
                               first_seen, last_seen, count, max_score, acked_at)
        SELECT incident_id, fingerprint, device_id, remote_ip, proto, dport, codes,
               'NEW_DST, RARE_PORT to ' || remote_ip, ts, last_ts, 1, score,
               CASE WHEN incident_id % 2 = 0 THEN last_ts ELSE NULL END
        FROM hits WHERE incident_id IS NOT NULL;
        WITH RECURSIVE m(t) AS (SELECT {m0} UNION ALL SELECT t + 60000 FROM m WHERE t < {m1})
        INSERT INTO interface_minutes (interface, minute, role, rx_bytes, tx_bytes, rx_packets, tx_packets)
        SELECT 'wan', t, 'wan', (t / 60000) % 9000000, (t / 60000) % 900000, 9000, 900 FROM m;
        COMMIT;",
        m0 = minute(now - 7 * DAY_MS),
        m1 = minute(now),
    );
    conn.execute_batch(&sql)
        .expect("generate the bench database");
    conn.execute_batch("PRAGMA journal_mode = WAL; ANALYZE;")
        .expect("analyze");
}

/// One GET through the whole router, body read to the end: status, body bytes, time.
async fn timed_get(app: &axum::Router, page: &str) -> (StatusCode, usize, Duration) {
    let req = Request::get(page)
        .header("host", "127.0.0.1:8080")
        .body(Body::empty())
        .expect("request");
    let t = Instant::now();
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let size = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .map_or(0, |b| b.len());
    (status, size, t.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).ceil() as usize]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let flows = env_or("FLOWS", if full { 1_000_000 } else { 20_000 }) as i64;
    let runs = env_or("RUNS", if full { 40 } else { 3 });
    let now = netmon::time::now_ms();
    let (path, dir) = match std::env::var_os("DB") {
        Some(p) => (PathBuf::from(p), None),
        None => {
            let base = std::env::var("DB_DIR").unwrap_or_else(|_| "/var/tmp".into());
            let dir = Path::new(&base).join(format!("netmon-bench-pages-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("bench dir");
            let path = dir.join("pages.db");
            let t = Instant::now();
            generate(&path, flows, now);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            println!(
                "generated {flows} flows over 30 days in {:.1} s: {:.0} MiB",
                t.elapsed().as_secs_f64(),
                size as f64 / 1048576.0
            );
            (path, Some(dir))
        }
    };

    let mut config = Config {
        db_path: path.clone(),
        ..Config::default()
    };
    // Keep what was generated: no retention pass may run during the measurement.
    config.retention.flows_days = 3650;
    config.retention.minute_rollups_days = 3650;
    config.retention.hour_rollups_days = 3650;
    config.retention.max_db_mb = 1 << 20;
    config.retention.interval_s = 86_400;
    config.web.auth = WebAuth::None;
    let network = Arc::new(RwLock::new(Network::new(
        vec!["10.77.0.0/16".parse().unwrap()],
        vec!["10.77.0.1".parse().unwrap(), "203.0.113.1".parse().unwrap()],
    )));
    let t = Instant::now();
    let writer = WriterThread::start(&config, network, None, None).expect("writer");
    println!("writer started in {:.2} s", t.elapsed().as_secs_f64());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let reads = ReadPool::open(&path, 3).expect("read pool");
    let auth = web::Auth::from_config(&config.web, false).expect("auth");
    let state = web::AppState::new(
        reads,
        writer.handle.clone(),
        writer.ticks.clone(),
        metrics,
        path.clone(),
        auth,
    );
    let app = web::router(state);

    let pages = [
        "/flows",
        "/flows?show=all",
        "/flows?show=all&sort=bytes",
        "/flows?show=ended&device=7&port=443",
        "/flows?show=all&page=last",
        "/flows?show=all&sort=bytes&order=asc&page=150",
        "/flows?show=all&src=10.77.0.0/28",
        "/flows?show=all&dst=198.18.0.0/20&proto=udp",
        "/flows?show=all&state=TIME_WAIT&proto=tcp&port=8080",
        "/flows?show=all&min_score=80",
        "/flows?show=all&code=RARE_PORT&device=7",
        "/flows?show=all&from=1h",
        "/flows?show=all&from=3d&to=2d&sort=bytes",
        "/flows?show=all&min_bytes=1M",
        "/flows?show=all&domain=site7.example",
        "/flows?show=ended&direction=all&cols=device,dst,bytes,last_seen",
        "/fragment/flows",
        "/fragment/flows?show=all&device=7&min_bytes=100k",
        "/",
        "/?w=24h&w_hosts=24h&w_domains=24h&w_devices=24h&w_new=24h&w_ports=24h",
        "/?w=7d&w_hosts=7d&w_domains=7d&w_devices=7d&w_new=7d&w_ports=7d",
        "/?w=30d&w_hosts=30d&w_domains=30d&w_devices=30d&w_new=30d&w_ports=30d",
        "/fragment/overview/charts?w=30d",
        "/fragment/overview/tiles?w=30d",
        "/fragment/overview/hosts?w_hosts=24h",
        "/fragment/overview/hosts?w_hosts=30d",
        "/fragment/overview/domains?w_domains=24h",
        "/fragment/overview/domains?w_domains=30d",
        "/fragment/overview/devices?w_devices=30d",
        "/fragment/overview/new?w_new=30d",
        "/fragment/overview/ports?w_ports=24h",
        "/fragment/overview/ports?w_ports=30d",
        "/devices",
        "/devices/7",
        "/devices/7?window=1440",
        "/hosts",
        "/hosts?sort=bytes",
        "/hosts?q=198.18.1",
        "/hosts/17",
        "/hosts/17?window=1440",
        "/dns",
        "/dns?name=site7.example",
        "/dns?device=7&page=20",
        "/router",
        "/drops",
        "/anomalies",
        "/incidents",
        "/incidents/1",
        "/rules",
        "/help",
        "/searches",
        "/settings",
        "/api/flows",
        "/api/flows?show=all&per_page=500&page=100",
        "/api/flows?show=all&device=7&from=7d&state=TIME_WAIT",
        "/api/flows.csv?show=all&device=7&from=1d",
        "/api/flows.csv?show=all&min_score=50",
        "/api/devices",
        "/api/devices/7/minutes",
        "/api/hosts",
        "/api/hosts/17/minutes",
        "/api/dns",
        "/api/incidents",
        "/api/hits",
        "/healthz",
    ];
    println!(
        "{:<44} {:>6} {:>9} {:>9} {:>9}",
        "page", "status", "p50 ms", "p95 ms", "max ms"
    );
    let mut worst = Duration::ZERO;
    runtime.block_on(async {
        for page in pages {
            let mut times = Vec::with_capacity(runs);
            let mut status = StatusCode::OK;
            for _ in 0..runs {
                let (s, _, took) = timed_get(&app, page).await;
                status = s;
                times.push(took);
            }
            times.sort();
            let p95 = percentile(&times, 0.95);
            worst = worst.max(p95);
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "{page:<44} {:>6} {:>9.1} {:>9.1} {:>9.1}",
                status.as_u16(),
                ms(percentile(&times, 0.5)),
                ms(p95),
                ms(*times.last().unwrap())
            );
        }
    });
    println!("slowest p95: {:.1} ms", worst.as_secs_f64() * 1000.0);
    // Not a page: the largest CSV export (`store::flows::read::EXPORT_MAX_ROWS` rows), a download whose
    // time grows with its rows. Reported apart, from three runs.
    runtime.block_on(async {
        let page = "/api/flows.csv?show=all&direction=all";
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..3 {
            let (_, bytes, took) = timed_get(&app, page).await;
            size = bytes;
            times.push(took);
        }
        times.sort();
        println!(
            "download {page}: {:.0} ms median, {:.1} MiB",
            times[1].as_secs_f64() * 1000.0,
            size as f64 / 1048576.0
        );
    });
    drop(app);
    runtime.shutdown_timeout(Duration::from_secs(2));
    writer.stop();
    if let Some(dir) = dir {
        if std::env::var_os("KEEP_DB").is_some() {
            println!("kept {}", path.display());
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
