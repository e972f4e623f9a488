//! The router end to end, without a socket: a temporary database built from
//! `schema.sql` with rows inserted directly ([`super::seed`]), requests through
//! `tower::ServiceExt::oneshot`, and the writer's channel read by the test itself, which
//! answers commands as a stand-in writer.
//!
//! One fixture for every `tests/http_*.rs` file: [`Fixture::build`] takes the seed and
//! the authentication mode; [`fixture`] is the common case (`auth = "none"`, [`seed`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, sync_channel};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use metrics_exporter_prometheus::PrometheusBuilder;
use netmon::config::Config;
use netmon::event::Event;
use netmon::event::{Tick, WriterHandle};
use netmon::store::pool::ReadPool;
use netmon::web::{AppState, Auth, router};
use rusqlite::{Connection, params};
use tempfile::TempDir;
use tokio::sync::watch;
use tower::ServiceExt as _;

use super::seed::{db_path, insert_flows, insert_queries, name_id, set_flow_domain, temp_db};

/// A router on a seeded database, and the ends of its channels a test drives.
pub struct Fixture {
    /// Holds the database; removed on drop.
    pub dir: TempDir,
    pub state: AppState,
    pub app: Router,
    /// The writer's side of the commit ticks (`/events`, cached counts).
    pub ticks: watch::Sender<Tick>,
    /// What the app sent to the writer.
    pub writer_rx: Receiver<Event>,
}

impl Fixture {
    /// A fresh database (`name` tells test directories apart) filled by `seed`, and the
    /// router over it with `auth` and, when given, the running `config` (the settings
    /// page shows it).
    pub fn build(
        name: &str,
        auth: Auth,
        config: Option<Config>,
        seed: impl FnOnce(&Connection),
    ) -> Fixture {
        let (dir, conn) = temp_db(name);
        seed(&conn);
        drop(conn);
        let reads = ReadPool::open(&db_path(&dir), 2).unwrap();
        let (tx, writer_rx) = sync_channel(8);
        let writer = WriterHandle::new(tx, Arc::new(AtomicUsize::new(0)));
        let (ticks, ticks_rx) = watch::channel(Tick::default());
        let metrics = PrometheusBuilder::new().build_recorder().handle();
        let state = AppState::new(reads, writer, ticks_rx, metrics, db_path(&dir), auth);
        let state = match config {
            Some(c) => state.with_config(Arc::new(c)),
            None => state,
        };
        Fixture {
            dir,
            app: router(state.clone()),
            state,
            ticks,
            writer_rx,
        }
    }

    /// The database file.
    pub fn db(&self) -> PathBuf {
        db_path(&self.dir)
    }
}

/// No login (`auth = "none"`): for tests of everything but authentication.
pub fn open_auth() -> Auth {
    let web = netmon::config::Web {
        auth: netmon::config::WebAuth::None,
        ..netmon::config::Web::default()
    };
    Auth::from_config(&web, false).expect("random bytes")
}

/// The router with `auth = "none"`: everything but the login tests.
pub fn fixture() -> Fixture {
    fixture_with(open_auth())
}

/// The router with `auth` on the [`seed`] data.
pub fn fixture_with(auth: Auth) -> Fixture {
    Fixture::build("web", auth, None, seed)
}

/// The seeded flows' `last_seen`: a fixed instant, so their times print the same
/// on every run.
pub const NOW_ISH: i64 = 1_714_568_645_000;

/// Hostile DNS names, as the writer stores them (canonical text: printable ASCII stays,
/// other bytes become `\DDD`).
pub const EVIL_SCRIPT: &str = "<script>alert(1)</script>.evil.test";
pub const EVIL_SCRIPT_HTML: &str = "&lt;script&gt;alert(1)&lt;/script&gt;.evil.test";
pub const EVIL_ATTR: &str = "\"onmouseover=alert(1)";
pub const EVIL_ATTR_HTML: &str = "&quot;onmouseover=alert(1)";
pub const EVIL_BYTES: &str = "a\\000b\\255.evil.test";

/// Devices 1 (named with markup, to test escaping) and 2; flows of every direction.
pub fn seed(conn: &Connection) {
    conn.execute_batch(
        "INSERT INTO devices (id, ip, mac, name, hostname, first_seen, last_seen, bytes_up, bytes_down, flows) VALUES
           (1, '10.0.0.5', 'aa:bb:cc:dd:ee:01', '<script>alert(1)</script>', 'laptop', 1000, 2000, 10, 20, 3),
           (2, '10.0.0.6', NULL, NULL, 'phone', 1000, 3000, 30, 40, 2);
         INSERT INTO remote_hosts (id, ip, rdns, first_seen, last_seen, bytes_up, bytes_down, flows) VALUES
           (1, '198.51.100.1', '<b>evil</b>.example', 1000, 5000, 1, 2, 2),
           (2, '198.51.100.2', NULL, 1000, 6000, 3, 4, 1);
         INSERT INTO remote_host_ports (remote_host_id, proto, port, first_seen, last_seen, flows) VALUES
           (1, 6, 443, 1000, 5000, 2);
         INSERT INTO device_minutes (device_id, minute, bytes_up, bytes_down, packets_up, packets_down, flows_new, unique_dsts, unique_ports) VALUES
           (1, 60000, 1, 2, 3, 4, 5, 6, 7), (1, 120000, 10, 20, 30, 40, 50, 60, 70);
         INSERT INTO remote_host_minutes (remote_host_id, minute, bytes_up, bytes_down, packets_up, packets_down, flows_new, unique_devices) VALUES
           (1, 60000, 1, 2, 3, 4, 5, 6);",
    )
    .unwrap();
    #[rustfmt::skip]
    insert_flows(conn, &[
        (1, "outbound", "10.0.0.5", "198.51.100.1", Some(443), 100, NOW_ISH, None, Some(1)),
        (2, "outbound", "10.0.0.6", "198.51.100.2", Some(80), 900, NOW_ISH - 1, None, Some(2)),
        (3, "router-local", "10.0.0.5", "10.0.0.1", Some(53), 50, NOW_ISH, None, Some(1)),
        (4, "lan", "10.0.0.5", "10.0.0.6", Some(22), 10, NOW_ISH, None, Some(1)),
        (5, "outbound", "10.0.0.5", "198.51.100.1", Some(443), 500, NOW_ISH - 9, Some(NOW_ISH - 5), Some(1)),
        (6, "inbound", "192.0.2.9", "10.0.0.6", Some(8080), 70, NOW_ISH - 2, None, Some(2)),
    ]);
    conn.execute("UPDATE flows SET remote_host_id = 1 WHERE id IN (1, 5)", [])
        .unwrap();
    // An ICMP flow: no ports.
    conn.execute(
        "INSERT INTO flows (id, ident, ct_id, proto, direction, src_ip, dst_ip, reply_dst_ip, \
         icmp_type, icmp_code, status, first_seen, last_seen) \
         VALUES (7, 7, 77, 1, 0, netmon_ip_blob('10.0.0.6'), netmon_ip_blob('198.51.100.2'), \
         netmon_ip_blob('203.0.113.1'), 8, 0, 0, ?1, ?1)",
        params![NOW_ISH - 3],
    )
    .unwrap();
    seed_dns(conn);
}

/// Domains on flows 1 (stale, with a CNAME), 2 (other client), 6 and 7 (LIKE
/// metacharacters); host 1's names; device 1's queries and DNS minutes, timed against
/// the real clock because device pages chart the last hour.
pub fn seed_dns(conn: &Connection) {
    set_flow_domain(conn, 1, EVIL_SCRIPT, Some(EVIL_ATTR), 2);
    set_flow_domain(conn, 2, EVIL_BYTES, None, 3);
    set_flow_domain(conn, 6, "a_b.test", None, 1);
    set_flow_domain(conn, 7, "axb.test", None, 1);
    for (name, flows, device) in [(EVIL_SCRIPT, 9, 1), (EVIL_ATTR, 1, 2), (EVIL_BYTES, 5, 1)] {
        conn.execute(
            "INSERT INTO remote_host_domains (remote_host_id, qname_id, first_seen, last_seen, \
             flows, last_device_id) VALUES (1, ?, 1000, 5000, ?, ?)",
            params![name_id(conn, name), flows, device],
        )
        .unwrap();
    }
    let now = super::now_ms();
    #[rustfmt::skip]
    insert_queries(conn, &[
        (1, now - 1000, "10.0.0.5", Some(1), EVIL_SCRIPT, 1, Some(0), 1, Some(EVIL_ATTR)),
        (2, now - 2000, "10.0.0.5", Some(1), EVIL_BYTES, 28, Some(3), 0, None),
        (3, now - 3000, "10.0.0.6", Some(2), "shop.example.test", 1, None, 0, None),
        (4, now - 4000, "10.0.0.9", None, EVIL_ATTR, 65, Some(2), 0, None),
        (5, now - 5000, "10.0.0.5", Some(1), EVIL_SCRIPT, 1, Some(0), 1, Some(EVIL_ATTR)),
    ]);
    let minute = now / 60_000 * 60_000;
    conn.execute(
        "INSERT INTO dns_device_minutes (device_id, minute, queries, nxdomain, names) VALUES \
         (1, ?1, 30, 3, 4), (1, ?2, 10, 0, 2), (1, ?3, 100, 100, 1), (2, ?1, 5, 5, 1)",
        params![
            minute - 5 * 60_000,
            minute - 3 * 60_000,
            minute - 120 * 60_000
        ],
    )
    .unwrap();
}

/// The peer the server sees when a test does not say: a browser on the router itself,
/// as every request has one in production (`conn::serve`).
pub fn loopback_peer() -> ConnectInfo<SocketAddr> {
    ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50000)))
}

/// Sends `request` through the router as a client on loopback (unless the request
/// names its own peer); the status, headers and body.
pub async fn send(app: &Router, mut request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    if request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_none()
    {
        request.extensions_mut().insert(loopback_peer());
    }
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// `GET uri`.
pub async fn get(app: &Router, uri: &str) -> (StatusCode, HeaderMap, String) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// `GET uri`, which must answer 200 with JSON.
pub async fn get_json(app: &Router, uri: &str) -> serde_json::Value {
    let (status, headers, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    serde_json::from_str(&body).unwrap()
}

/// The CSRF token in a page's forms (`<input type="hidden" name="csrf" value="…">`).
pub fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form with a CSRF field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// The CSRF token of `auth = "none"`, as the device page's rename form carries it.
pub async fn open_csrf(app: &Router) -> String {
    csrf_of(&get(app, "/devices/1").await.2)
}

/// The ids of an `/api/flows` answer's flows, in order.
pub fn flow_ids(v: &serde_json::Value) -> Vec<i64> {
    v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect()
}
