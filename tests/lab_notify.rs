//! Issue 5, acceptance 6, proven in the router lab (`tests/lab/`): webhook notifications.
//!
//! A small HTTP receiver runs inside the router namespace on its loopback (a listener
//! bound by a thread that entered the namespace), where netmon posts to
//! `http://127.0.0.1:18088/hook`: nothing leaves the lab. A port scan from the LAN
//! client (non-blocking connects to 45 ports across 30 unassigned wan-side addresses:
//! the router creates a conntrack entry for every SYN it forwards) opens a
//! PORT_SCAN_LIKE incident; the receiver must get exactly one JSON message per incident
//! netmon stored, carrying the incident and a readable message.
//!
//! Then the receiver hangs (accepts, reads, never answers) and the second LAN client
//! scans: netmon's attempts time out and are retried
//! (`netmon_notify_messages_total{result="retried"}`) while the writer commits the
//! scan in ticks as short as before (`netmon_writer_tick_seconds`: no tick above 2.5 s,
//! while one attempt waits 5 s). When the receiver answers again the retried message arrives —
//! still one per incident.
//!
//! Needs root and the packages `.ci/run` installs. Run with
//! `cargo build --bins && cargo test --test lab_notify -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

const RECEIVER: &str = "127.0.0.1:18088";

/// Non-blocking connects from the client to 45 ports on 30 addresses nobody holds
/// (203.0.113.100–.129: ARP fails on the wan side, but the router forwarded each SYN,
/// so each is a conntrack entry), kept half-open for two seconds.
const SCAN: &str = r#"
import socket, time
socks = []
for i in range(45):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(("203.0.113.%d" % (100 + i % 30), 2000 + i))
    except BlockingIOError:
        pass
    socks.append(s)
time.sleep(2)
"#;

/// What the receiver got: answered messages (JSON bodies), and requests it left
/// unanswered while hanging.
#[derive(Default)]
struct Received {
    answered: Vec<Value>,
    unanswered: usize,
}

struct Receiver {
    received: Arc<Mutex<Received>>,
    /// While set, requests are read and never answered (the peer times out).
    hang: Arc<AtomicBool>,
}

impl Receiver {
    /// Binds inside the router namespace and serves on a thread until the test ends.
    fn start(lab: &Lab) -> Receiver {
        let path = format!("/run/netns/{}", lab.ns("rtr"));
        let addr: SocketAddr = RECEIVER.parse().unwrap();
        let listener = std::thread::spawn(move || {
            let ns = File::open(&path).expect("open the router namespace");
            // SAFETY: setns on this short-lived thread only; the fd is valid.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns: {}",
                std::io::Error::last_os_error()
            );
            TcpListener::bind(addr).expect("bind the receiver in the router")
        })
        .join()
        .expect("bind thread");
        let received = Arc::new(Mutex::new(Received::default()));
        let hang = Arc::new(AtomicBool::new(false));
        let (r, h) = (received.clone(), hang.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, h) = (r.clone(), h.clone());
                std::thread::spawn(move || serve(stream, &r, &h));
            }
        });
        Receiver { received, hang }
    }

    fn answered(&self) -> Vec<Value> {
        self.received.lock().unwrap().answered.clone()
    }

    fn unanswered(&self) -> usize {
        self.received.lock().unwrap().unanswered
    }
}

fn serve(stream: TcpStream, received: &Mutex<Received>, hang: &AtomicBool) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    let mut first = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if first.is_empty() {
            first = line.to_owned();
        }
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            length = v.parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    assert_eq!(first, "POST /hook HTTP/1.1", "netmon's request line");
    if hang.load(Ordering::SeqCst) {
        received.lock().unwrap().unanswered += 1;
        // Past netmon's 5 s timeout; then the connection just closes.
        std::thread::sleep(Duration::from_secs(8));
        return;
    }
    let value: Value = serde_json::from_slice(&body).expect("a JSON body");
    received.lock().unwrap().answered.push(value);
    let mut stream = reader.into_inner();
    let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
}

fn incident_ids(lab: &Lab) -> Vec<i64> {
    let db = lab.db();
    let mut stmt = db
        .prepare("SELECT id FROM incidents ORDER BY id")
        .expect("incidents table");
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn scan_incidents(lab: &Lab, device_ip: &str) -> Vec<i64> {
    let db = lab.db();
    let mut stmt = db
        .prepare(
            "SELECT i.id FROM incidents i JOIN devices d ON d.id = i.device_id \
             WHERE d.ip = ?1 AND (',' || i.codes || ',') LIKE '%,PORT_SCAN_LIKE,%'",
        )
        .unwrap();
    stmt.query_map([device_ip], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn ids_of(messages: &[Value]) -> Vec<i64> {
    let mut ids: Vec<i64> = messages
        .iter()
        .map(|m| m["id"].as_i64().expect("an incident id"))
        .collect();
    ids.sort();
    ids
}

/// The writer tick histogram: (ticks, ticks at or below 2.5 s).
fn ticks(metrics: &str) -> (f64, f64) {
    let mut buckets = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("netmon_writer_tick_seconds_bucket{") else {
            continue;
        };
        let Some(le) = rest.split('"').skip_while(|s| !s.ends_with("le=")).nth(1) else {
            continue;
        };
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        buckets.insert(le.to_owned(), value);
    }
    let at = |le: &str| {
        buckets
            .iter()
            .find(|(k, _)| k.parse::<f64>().ok() == le.parse::<f64>().ok())
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no le={le} bucket in {buckets:?}"))
    };
    (at("+Inf"), at("2.5"))
}

fn notify_metric(lab: &Lab, result: &str) -> f64 {
    metric(
        &lab.metrics(),
        &format!("netmon_notify_messages_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn webhook_gets_one_message_per_incident_and_retries_without_slowing_the_writer() {
    let lab = Lab::up_with("notify", 2);
    let receiver = Receiver::start(&lab);
    let _netmon = lab.start_netmon(&format!(
        "[notify]\nwebhook_url = \"http://{RECEIVER}/hook\"\nformat = \"json\"\n"
    ));

    // 1. A scan: one incident, one message.
    lab.exec_ok("lan", &["python3", "-c", SCAN]);
    let scan = wait_for(Duration::from_secs(60), || {
        Some(scan_incidents(&lab, CLIENT4)).filter(|ids| !ids.is_empty())
    })
    .unwrap_or_else(|| {
        panic!(
            "no PORT_SCAN_LIKE incident for {CLIENT4} within 60 s; log:\n{}",
            tail(&lab.netmon_log(), 40)
        )
    });
    assert!(
        wait_until(Duration::from_secs(20), || !receiver.answered().is_empty()),
        "no webhook message within 20 s of incident {scan:?}; log:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    // Let anything else settle, then: exactly one message per stored incident.
    std::thread::sleep(Duration::from_secs(5));
    let messages = receiver.answered();
    assert_eq!(
        ids_of(&messages),
        incident_ids(&lab),
        "one message per incident"
    );
    let m = messages
        .iter()
        .find(|m| m["id"].as_i64() == Some(scan[0]))
        .expect("the scan's message");
    assert!(
        m["codes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "PORT_SCAN_LIKE"),
        "{m}"
    );
    assert!(
        m["reasons"].as_array().is_some_and(|r| !r.is_empty()),
        "{m}"
    );
    assert!(m["message"].as_str().is_some_and(|t| !t.is_empty()), "{m}");
    assert!(
        m["score"].as_u64().is_some() && m["device_id"].as_i64().is_some(),
        "{m}"
    );
    assert_eq!(notify_metric(&lab, "sent") as usize, messages.len());

    // 2. The receiver hangs: the next incident's message is retried, the writer is not
    // held up.
    receiver.hang.store(true, Ordering::SeqCst);
    let (ticks_before, fast_before) = ticks(&lab.metrics());
    let retried_before = notify_metric(&lab, "retried");
    lab.exec_ok("lan2", &["python3", "-c", SCAN]);
    let second = wait_for(Duration::from_secs(60), || {
        Some(scan_incidents(&lab, CLIENT2_4)).filter(|ids| !ids.is_empty())
    })
    .unwrap_or_else(|| {
        panic!(
            "no PORT_SCAN_LIKE incident for {CLIENT2_4} within 60 s; log:\n{}",
            tail(&lab.netmon_log(), 40)
        )
    });
    assert!(
        wait_until(Duration::from_secs(30), || notify_metric(&lab, "retried")
            > retried_before),
        "no retry counted within 30 s (unanswered requests: {}); log:\n{}",
        receiver.unanswered(),
        tail(&lab.netmon_log(), 40)
    );
    assert!(receiver.unanswered() >= 1);
    // Histogram samples reach /metrics at the recorder's next upkeep (every 10 s).
    std::thread::sleep(Duration::from_secs(11));
    let (ticks_after, fast_after) = ticks(&lab.metrics());
    eprintln!(
        "writer ticks while the receiver hung: {} (all at or below 2.5 s: {})",
        ticks_after - ticks_before,
        fast_after - fast_before
    );
    assert!(
        ticks_after > ticks_before,
        "the writer committed the second scan: {ticks_before} → {ticks_after}"
    );
    assert_eq!(
        ticks_after - ticks_before,
        fast_after - fast_before,
        "a writer tick took longer than 2.5 s while the webhook hung"
    );

    // 3. The receiver answers again: the retried message arrives, once.
    receiver.hang.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(90), || ids_of(&receiver.answered())
            .contains(&second[0])),
        "incident {second:?} never delivered after the receiver came back; log:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        ids_of(&receiver.answered()),
        incident_ids(&lab),
        "one message per incident, retries included"
    );
    assert_eq!(notify_metric(&lab, "failed"), 0.0);
}
