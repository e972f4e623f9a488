//! Webhook notifications, proven in the router lab (`tests/lab/`).
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
//! A second test posts over HTTPS to a receiver *named* in the lab's DNS
//! (`hooks.wan.lab`, answered by the router's dnsmasq) on the wan side, with a
//! certificate from a CA the test makes: netmon resolves the name itself, checks the
//! certificate against `notify.ca_file`, and delivers one message per incident; with
//! another CA as `ca_file` the same receiver is refused (retried, nothing delivered).
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

/// Runs [`SCAN`] from client namespace `ns` (address `ip`) and waits up to 60 s for its
/// PORT_SCAN_LIKE incident; returns that device's scan incidents.
fn scan_from(lab: &Lab, ns: &str, ip: &str) -> Vec<i64> {
    lab.exec_ok(ns, &["python3", "-c", SCAN]);
    wait_for(Duration::from_secs(60), || {
        Some(scan_incidents(lab, ip)).filter(|ids| !ids.is_empty())
    })
    .unwrap_or_else(|| {
        panic!(
            "no PORT_SCAN_LIKE incident for {ip} within 60 s; log:\n{}",
            tail(&lab.netmon_log(), 40)
        )
    })
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
    let scan = scan_from(&lab, "lan", CLIENT4);
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
    let second = scan_from(&lab, "lan2", CLIENT2_4);
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

/// The HTTPS receiver's name: `*.wan.lab` resolves to the wan server in the lab's DNS.
const HOOK_NAME: &str = "hooks.wan.lab";
const HOOK_PORT: u16 = 8443;

/// An HTTPS server on the wan host that appends each POST as a JSON line
/// (`{"host", "path", "body"}`) to a file and answers 200.
const HTTPS_RECEIVER: &str = r#"
import http.server, json, ssl, sys
cert, key, addr, port, out = sys.argv[1:6]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open(out, "a") as f:
            f.write(json.dumps({"host": self.headers.get("Host"), "path": self.path,
                                "body": json.loads(body)}) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((addr, int(port)), Hook)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"#;

/// A CA (`NAME.pem`, `NAME.key`) in `dir`, made with openssl (P-256 keys: quick).
fn make_ca(dir: &std::path::Path, name: &str) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ])
        .args(["-days", "2", "-subj", &format!("/CN=netmon lab {name}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign"])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server certificate for [`HOOK_NAME`] signed by CA `ca`: `hook.pem`, `hook.key`.
fn make_server_cert(dir: &std::path::Path, ca: &str) {
    std::fs::write(
        dir.join("hook.ext"),
        format!(
            "subjectAltName=DNS:{HOOK_NAME}\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    let subject = format!("/CN={HOOK_NAME}");
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    let request = [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "hook.key",
        "-out",
        "hook.csr",
        "-subj",
        &subject,
    ];
    let sign = [
        "x509",
        "-req",
        "-in",
        "hook.csr",
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "hook.pem",
        "-days",
        "2",
        "-extfile",
        "hook.ext",
    ];
    for args in [&request[..], &sign[..]] {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What the HTTPS receiver got so far.
fn https_received(file: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("receiver line"))
        .collect()
}

#[test]
fn https_webhook_by_name_checks_the_certificate() {
    let lab = Lab::up_with("notifytls", 2);
    make_ca(&lab.dir, "ca");
    make_ca(&lab.dir, "otherca");
    make_server_cert(&lab.dir, "ca");
    let received = lab.dir.join("received.jsonl");
    let (cert, key) = (lab.dir.join("hook.pem"), lab.dir.join("hook.key"));
    let mut server = lab.spawn(
        "wan",
        &[
            "python3",
            "-c",
            HTTPS_RECEIVER,
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            WAN4,
            &HOOK_PORT.to_string(),
            received.to_str().unwrap(),
        ],
    );
    let mut ready = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready", "the HTTPS receiver did not start");
    let config = |ca: &str| {
        format!(
            "[notify]\nwebhook_url = \"https://{HOOK_NAME}:{HOOK_PORT}/hook?token=t\"\n\
             ca_file = \"{}\"\n[enrich]\nresolver = \"{RTR_LAN4}\"\n",
            lab.dir.join(format!("{ca}.pem")).display()
        )
    };

    // 1. The right CA: one message per incident, to the name in the URL.
    let mut netmon = lab.start_netmon(&config("ca"));
    let scan = scan_from(&lab, "lan", CLIENT4);
    assert!(
        wait_until(Duration::from_secs(20), || !https_received(&received)
            .is_empty()),
        "no HTTPS message within 20 s of incident {scan:?}; log:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    std::thread::sleep(Duration::from_secs(3));
    let messages = https_received(&received);
    let bodies: Vec<Value> = messages.iter().map(|m| m["body"].clone()).collect();
    assert_eq!(
        ids_of(&bodies),
        incident_ids(&lab),
        "one message per incident"
    );
    assert_eq!(messages[0]["host"], format!("{HOOK_NAME}:{HOOK_PORT}"));
    assert_eq!(messages[0]["path"], "/hook?token=t");
    assert_eq!(notify_metric(&lab, "failed"), 0.0);
    netmon.sigterm();

    // 2. A CA that did not sign the receiver's certificate: refused, retried, nothing
    // delivered.
    let _netmon = lab.start_netmon(&config("otherca"));
    let delivered = messages.len();
    scan_from(&lab, "lan2", CLIENT2_4);
    assert!(
        wait_until(Duration::from_secs(30), || notify_metric(&lab, "retried")
            >= 1.0),
        "no retry counted; log:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    let log = tail(&lab.netmon_log(), 40);
    assert!(
        log.contains(&format!("https://{HOOK_NAME}:{HOOK_PORT}/(not shown)"))
            && log.contains("certificate")
            && !log.contains("token=t"),
        "the retry's log line names the URL's host (not its path or token) and the \
         certificate:\n{log}"
    );
    assert_eq!(
        https_received(&received).len(),
        delivered,
        "nothing delivered"
    );
    let _ = server.kill();
    let _ = server.wait();
}
