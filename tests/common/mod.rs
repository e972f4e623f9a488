//! The lab harness shared by netmon's integration tests.
//!
//! A [`Lab`] is one private copy of the router lab built by `tests/lab/lab.sh`: network
//! namespaces `NAME-lan` (and `NAME-lan2`, …), `NAME-rtr` and `NAME-wan`, with NAT,
//! nftables counters, dnsmasq and test servers (see the script's header for addresses
//! and ports). Every test builds its own lab under a unique name, so tests run in
//! parallel; dropping the `Lab` — also when the test panics — kills netmon and tears
//! the lab down. Set `NETMON_KEEP_LAB=1` to keep a failed test's lab for inspection
//! (`tests/lab/lab.sh status NAME`, then `lab.sh down NAME`).
//!
//! netmon runs inside `NAME-rtr` as on a router ([`Lab::start_netmon`]); tests talk to
//! its web server at 127.0.0.1:8080 *inside* that namespace through a socket opened
//! there ([`Lab::http`]), read its database read-only ([`Lab::db`]), and compare with
//! the lab's own truth: the router's nft counters, `conntrack -L`, and what the clients
//! reported sending.
//!
//! Needs root and the tools `.ci/run` installs; a test run without them fails with a
//! message that says so.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The HTTP tests' fixture: the router over a seeded database, no lab.
pub mod http;
/// Rows for the HTTP tests' databases.
pub mod seed;

pub const NETMON: &str = env!("CARGO_BIN_EXE_netmon");
pub const LOADGEN: &str = env!("CARGO_BIN_EXE_netmon-loadgen");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Lab addresses (fixed: each lab is isolated, so all labs reuse them).
pub const CLIENT4: &str = "10.77.0.10";
pub const CLIENT6: &str = "fd77::10";
pub const CLIENT2_4: &str = "10.77.0.11";
pub const RTR_LAN4: &str = "10.77.0.1";
pub const RTR_LAN6: &str = "fd77::1";
pub const RTR_WAN4: &str = "203.0.113.1";
pub const RTR_WAN6: &str = "2001:db8:77::1";
pub const WAN4: &str = "203.0.113.80";
pub const WAN6: &str = "2001:db8:77::80";
/// wan services.
pub const HTTP_PORT: u16 = 80;
pub const UDP_ECHO_PORT: u16 = 7;
pub const BURST_PORT: u16 = 9000;
pub const SINK_PORT: u16 = 9001;
pub const LOADGEN_UDP_PORT: u16 = 9007;
/// Size of `big.bin` on the wan HTTP server (5 MiB).
pub const BIG_FILE: u64 = 5 * 1024 * 1024;
/// Where netmon listens inside the router namespace.
pub const WEB: &str = "127.0.0.1:8080";

pub fn lab_script() -> PathBuf {
    Path::new(REPO).join("tests/lab/lab.sh")
}

pub fn client_script() -> String {
    Path::new(REPO)
        .join("tests/lab/client.py")
        .display()
        .to_string()
}

/// Unix time in milliseconds (the unit netmon stores).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Polls `cond` every 100 ms until it is true; false after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `f` every 100 ms until it returns `Some`; `None` after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fails the test early, with a clear message, when the lab cannot work here.
pub fn require_lab_prerequisites() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "netmon's lab tests need root: they create network namespaces, veth pairs and \
             nftables rules, and netmon reads conntrack over netlink. Run them as root \
             (e.g. `sudo -E cargo test` or `.ci/run`)."
        );
    }
    let missing: Vec<&str> = [
        "ip",
        "nft",
        "conntrack",
        "dnsmasq",
        "socat",
        "python3",
        "ss",
        "tc",
        "sysctl",
        "setsid",
    ]
    .into_iter()
    .filter(|t| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
    .collect();
    if !missing.is_empty() {
        panic!(
            "the lab needs these tools, missing here: {missing:?}. Install the Debian \
             packages nftables conntrack dnsmasq-base iproute2 socat python3 procps \
             util-linux (`.ci/run` does)."
        );
    }
}

/// One lab, torn down on drop.
pub struct Lab {
    /// Prefix of the namespace names (`NAME-lan`, `NAME-rtr`, `NAME-wan`).
    pub name: String,
    /// `/tmp/netmon-lab-NAME`: logs, pids, the netmon config and database.
    pub dir: PathBuf,
    pub lans: usize,
}

impl Lab {
    /// A lab with one LAN client. `tag` names the test (short, a-z0-9); the process id is
    /// appended so concurrent runs never share a name.
    pub fn up(tag: &str) -> Lab {
        Lab::up_with(tag, 1)
    }

    /// A lab with `lans` LAN client namespaces (`lan`, `lan2`, …; clients .10, .11, …).
    pub fn up_with(tag: &str, lans: usize) -> Lab {
        require_lab_prerequisites();
        let name = format!("{tag}{}", std::process::id());
        assert!(name.len() <= 16, "lab tag '{tag}' too long");
        let out = Command::new(lab_script())
            .args(["up", &name, &lans.to_string()])
            .env("NETMON_LOADGEN", LOADGEN)
            .output()
            .expect("run tests/lab/lab.sh");
        if !out.status.success() {
            let _ = Command::new(lab_script()).args(["down", &name]).status();
            panic!(
                "lab.sh up {name} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Lab {
            dir: PathBuf::from(format!("/tmp/netmon-lab-{name}")),
            name,
            lans,
        }
    }

    /// Full namespace name: `ns("rtr")` → `NAME-rtr`.
    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.name)
    }

    /// Runs `f` on a thread inside the lab router's network namespace (for sockets whose
    /// bindings are per namespace: NFQUEUE, NFLOG).
    pub fn in_router<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let path = format!("/run/netns/{}", self.ns("rtr"));
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("open the router's namespace");
                // SAFETY: setns on this short-lived thread only; the fd is valid.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("router thread")
        })
    }

    fn ns_cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns)]).args(args);
        c
    }

    /// Runs a command in namespace `ns` ("lan", "lan2", "rtr", "wan") and waits.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        self.ns_cmd(ns, args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {args:?}: {e}", self.ns(ns)))
    }

    /// Like [`Lab::exec`], but the command must succeed; returns its stdout.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.exec(ns, args);
        if !out.status.success() {
            panic!(
                "in {}: {args:?} failed ({}):\nstdout: {}\nstderr: {}",
                self.ns(ns),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `bash -c script` in namespace `ns`; must succeed; returns stdout.
    pub fn sh(&self, ns: &str, script: &str) -> String {
        self.exec_ok(ns, &["bash", "-c", script])
    }

    /// Starts a command in namespace `ns` without waiting: stdin and stdout piped (read
    /// the result with `wait_with_output`), stderr too. The lab's teardown ends it if
    /// the test does not.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> Child {
        self.ns_cmd(ns, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn in {}: {args:?}: {e}", self.ns(ns)))
    }

    /// `client.py hold` in namespace `ns`: opens each TCP connection `"ADDR:PORT:LOCAL"`
    /// of `conns`, keeps them open for `seconds`, and returns once all are connected.
    pub fn hold_tcp(&self, ns: &str, seconds: u32, conns: &[String]) -> Child {
        let script = client_script();
        let seconds = seconds.to_string();
        let mut args = vec![
            "python3",
            script.as_str(),
            "hold",
            "--seconds",
            seconds.as_str(),
        ];
        for c in conns {
            args.extend(["--tcp", c.as_str()]);
        }
        let mut hold = self.spawn(ns, &args);
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(hold.stdout.as_mut().expect("hold stdout"))
            .read_line(&mut line)
            .expect("read hold");
        assert_eq!(line.trim(), "ready", "client.py hold did not connect");
        hold
    }

    /// A TLS echo server in the wan (`client.py tls-serve`) on each `ADDR:PORT` of
    /// `listen`, with a self-signed certificate made in the lab's directory; ended when
    /// dropped.
    pub fn tls_server(&self, listen: &[&str]) -> Server {
        let (cert, key) = (self.dir.join("tls-cert.pem"), self.dir.join("tls-key.pem"));
        if !cert.exists() {
            let out = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=netmon-lab", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl req: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let script = client_script();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let mut args = vec!["python3", script.as_str(), "tls-serve", &cert, &key];
        for l in listen {
            args.extend(["--listen", l]);
        }
        let mut server = Server(self.spawn("wan", &args));
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(server.0.stdout.as_mut().expect("server stdout"))
            .read_line(&mut line)
            .expect("read tls-serve");
        assert_eq!(line.trim(), "ready", "client.py tls-serve did not start");
        server
    }

    /// Runs `tests/lab/client.py` in a lan namespace; returns stdout.
    pub fn client(&self, ns: &str, args: &[&str]) -> String {
        let script = client_script();
        let mut full = vec!["python3", script.as_str()];
        full.extend_from_slice(args);
        self.exec_ok(ns, &full)
    }

    /// Downloads `url` with curl in namespace `ns` from client port `local_port`
    /// (so the test knows the flow's tuple in advance), discarding the body.
    pub fn download(&self, ns: &str, local_port: u16, url: &str) -> Download {
        let args = curl_args(local_port, url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Download::parse(&self.exec_ok(ns, &args))
    }

    /// Like [`Lab::download`] without waiting; parse the child's stdout with
    /// [`Download::parse`].
    pub fn spawn_download(&self, ns: &str, local_port: u16, url: &str) -> Child {
        let args = curl_args(local_port, url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(ns, &args)
    }

    /// Runs `netmon-loadgen run ARGS` in a lan namespace and returns its JSON report.
    pub fn loadgen(&self, ns: &str, args: &[&str]) -> Value {
        let mut full = vec![LOADGEN, "run"];
        full.extend_from_slice(args);
        let out = self.exec_ok(ns, &full);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("loadgen printed no JSON ({e}): {out}"))
    }

    /// Throttles wan → lan traffic to `rate` (tc syntax, e.g. "3mbit").
    pub fn shape(&self, rate: &str) {
        self.lab_sh(&["shape", &self.name, rate]);
    }

    pub fn unshape(&self) {
        self.lab_sh(&["unshape", &self.name]);
    }

    /// Runs `tests/lab/lab.sh ARGS`; it must succeed; returns its stdout.
    pub fn lab_sh(&self, args: &[&str]) -> String {
        let out = Command::new(lab_script())
            .args(args)
            .output()
            .expect("run lab.sh");
        assert!(
            out.status.success(),
            "lab.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    // --- router truth -------------------------------------------------------------------

    /// Every counter of the router's `inet netmon_lab` table: name → (packets, bytes).
    pub fn nft_counters(&self) -> BTreeMap<String, (u64, u64)> {
        let out = self.exec_ok(
            "rtr",
            &[
                "nft",
                "-j",
                "list",
                "counters",
                "table",
                "inet",
                "netmon_lab",
            ],
        );
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("nft -j output ({e}): {out}"));
        let mut m = BTreeMap::new();
        for item in v["nftables"].as_array().into_iter().flatten() {
            if let Some(c) = item.get("counter") {
                m.insert(
                    c["name"].as_str().unwrap_or_default().to_owned(),
                    (
                        c["packets"].as_u64().unwrap_or(0),
                        c["bytes"].as_u64().unwrap_or(0),
                    ),
                );
            }
        }
        m
    }

    /// (packets, bytes) of one named counter.
    pub fn nft_counter(&self, name: &str) -> (u64, u64) {
        *self
            .nft_counters()
            .get(name)
            .unwrap_or_else(|| panic!("no nft counter {name} in {}", self.ns("rtr")))
    }

    /// New connections the router forwarded (lan ↔ wan): one per new conntrack entry.
    pub fn nft_new_conn_count(&self) -> u64 {
        self.nft_counter("new_conns").0
    }

    /// Adds a named counter and a forward-chain rule `MATCH counter name NAME`, e.g.
    /// `nft_add_counter("dl_down", "ip daddr 10.77.0.10 tcp sport 80")`. Counts the same
    /// IP-level bytes conntrack accounting counts, so it is exact truth for a flow.
    pub fn nft_add_counter(&self, name: &str, rule_match: &str) {
        self.exec_ok(
            "rtr",
            &["nft", "add", "counter", "inet", "netmon_lab", name],
        );
        let rule = format!("add rule inet netmon_lab forward {rule_match} counter name \"{name}\"");
        self.exec_ok("rtr", &["nft", &rule]);
    }

    /// `conntrack ARGS` in the router; stdout.
    pub fn conntrack(&self, args: &[&str]) -> String {
        let mut full = vec!["conntrack"];
        full.extend_from_slice(args);
        let out = self.exec("rtr", &full);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Conntrack entries (lines of `conntrack -L`) matching `filter` args.
    pub fn conntrack_entries(&self, filter: &[&str]) -> Vec<String> {
        let mut args = vec!["-L"];
        args.extend_from_slice(filter);
        self.conntrack(&args)
            .lines()
            .filter(|l| l.contains("src="))
            .map(str::to_owned)
            .collect()
    }

    // --- netmon -------------------------------------------------------------------------

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("netmon.toml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("netmon.db")
    }

    pub fn netmon_log(&self) -> PathBuf {
        self.dir.join("netmon.log")
    }

    /// The config the tests run netmon with: the lab's interfaces, a loopback listener
    /// inside the router, the database in the lab dir, a 250 ms tick, no login
    /// (`[web] auth = "none"`, allowed on loopback); then `extra` (TOML; a top-level key
    /// given there replaces the default here, and a `[web]` table there replaces the
    /// default one — e.g. [`password_web`] for a test of the login).
    pub fn netmon_config(&self, extra: &str) -> String {
        let extra_keys: Vec<String> = extra
            .lines()
            .take_while(|l| !l.trim_start().starts_with('['))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
            .collect();
        let base = [
            ("lan_interfaces", "[\"br-lan\"]".to_owned()),
            ("wan_interfaces", "[\"wan\"]".to_owned()),
            ("listen", format!("[\"{WEB}\"]")),
            ("db_path", format!("\"{}\"", self.db_path().display())),
            // The history (when a test turns it on) stays in the lab dir, never the host's /etc.
            (
                "persist_path",
                format!("\"{}\"", self.dir.join("persist.db").display()),
            ),
            ("tick_ms", "250".to_owned()),
            // Root on purpose: the lab dir belongs to root, and a `netmon` account left on
            // the machine (an unpurged package) must not change what every test runs as.
            // `lab_privs` sets its own user.
            ("user", "\"\"".to_owned()),
        ];
        let mut text = String::from("# written by tests/common/mod.rs\n");
        for (k, v) in base {
            if !extra_keys.iter().any(|e| e == k) {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text.push_str(extra);
        text.push('\n');
        if !extra.lines().any(|l| l.trim() == "[web]") {
            text.push_str("\n[web]\nauth = \"none\"\n");
        }
        text
    }

    /// Writes the config and starts `netmon run` inside the router; returns once
    /// `/healthz` answers 200 (panics with netmon's log if it does not within 20 s).
    /// Calling it again after a stop restarts netmon on the same database.
    pub fn start_netmon(&self, extra_toml: &str) -> NetmonProc {
        std::fs::write(self.config_path(), self.netmon_config(extra_toml))
            .expect("write netmon config");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.netmon_log())
            .expect("open netmon log");
        let _ = writeln!(
            log,
            "==== netmon run started by the test harness at {} ms",
            now_ms()
        );
        let log_err = log.try_clone().expect("clone log fd");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("rtr"), NETMON, "run", "--config"])
            .arg(self.config_path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .expect("spawn netmon");
        let mut proc = NetmonProc {
            pid: child.id(),
            child: Some(child),
            log: self.netmon_log(),
            started: Instant::now(),
            started_ms: now_ms(),
        };
        let healthy = wait_until(Duration::from_secs(20), || {
            if let Some(status) = proc.try_wait() {
                panic!(
                    "netmon exited during start-up ({status}); log:\n{}",
                    tail(&self.netmon_log(), 60)
                );
            }
            matches!(self.http("/healthz"), Ok((200, _)))
        });
        if !healthy {
            panic!(
                "netmon did not answer /healthz within 20 s; log:\n{}",
                tail(&self.netmon_log(), 60)
            );
        }
        proc
    }

    // --- web ----------------------------------------------------------------------------

    /// A TCP connection to `addr` made inside namespace `ns` (a thread enters the
    /// namespace, connects and leaves; the socket stays in the namespace).
    pub fn connect_in(&self, ns: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let path = format!("/run/netns/{}", self.ns(ns));
        std::thread::scope(|s| {
            s.spawn(|| {
                let f = File::open(&path)?;
                // SAFETY: setns on this short-lived thread only; the fd is valid.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("connect thread panicked")))
        })
    }

    /// GET `path` from netmon's web server inside the router: (status, body).
    pub fn http(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = self.connect_in("rtr", WEB.parse().expect("WEB addr"))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {WEB}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        parse_http_response(&raw)
    }

    /// Any request to netmon's web server inside the router: `METHOD path` with extra
    /// header lines and a body (sent with `Content-Length`).
    pub fn http_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> std::io::Result<HttpResponse> {
        let mut s = self.connect_in("rtr", WEB.parse().expect("WEB addr"))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {WEB}\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        HttpResponse::parse(&raw)
    }

    /// `POST /login` with `password`; the session (cookie and CSRF token) on success.
    pub fn login(&self, password: &str) -> Option<WebSession> {
        let body = format!("password={}", form_encode(password));
        let r = self
            .http_request(
                "POST",
                "/login",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                &body,
            )
            .expect("POST /login");
        if r.status != 303 {
            return None;
        }
        let cookie = r.header("set-cookie")?.split(';').next()?.trim().to_owned();
        let page = self
            .http_request("GET", "/devices", &[("Cookie", &cookie)], "")
            .expect("GET /devices");
        let csrf = csrf_of(&page.body)?;
        Some(WebSession { cookie, csrf })
    }

    /// GET that must answer 2xx; the body.
    pub fn http_get(&self, path: &str) -> String {
        match self.http(path) {
            Ok((status, body)) if (200..300).contains(&status) => body,
            Ok((status, body)) => panic!("GET {path} → {status}: {}", truncate(&body, 2000)),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// GET returning JSON.
    pub fn api(&self, path: &str) -> Value {
        let body = self.http_get(path);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", truncate(&body, 2000)))
    }

    /// `GET /api/flows?QUERY`.
    pub fn api_flows(&self, query: &str) -> Value {
        self.api(&format!("/api/flows?{query}"))
    }

    /// Every flow netmon has (all states, all directions), through the API's pages.
    pub fn all_flows(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for page in 1..=200 {
            let v = self.api_flows(&format!("show=all&direction=all&per_page=500&page={page}"));
            let flows = v["flows"].as_array().cloned().unwrap_or_default();
            let total = v["total"].as_u64().unwrap_or(0) as usize;
            let empty = flows.is_empty();
            out.extend(flows);
            if empty || out.len() >= total {
                break;
            }
        }
        out
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> String {
        self.http_get("/metrics")
    }

    /// The database, read-only (netmon owns writing).
    pub fn db(&self) -> rusqlite::Connection {
        let db = rusqlite::Connection::open_with_flags(
            self.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", self.db_path().display()));
        // netmon_ip() and netmon_ip_blob() for queries on stored addresses.
        netmon::store::pool::register_functions(&db).expect("register netmon's SQL functions");
        db
    }

    /// Rows with hostile text written while netmon is stopped: per payload a device (DHCP
    /// hostname), a remote host (PTR name), a DNS name with a query, a flow and a host
    /// domain. Returns (device ids, host ids).
    pub fn seed_hostile(&self, payloads: &[&str]) -> (Vec<i64>, Vec<i64>) {
        let db = rusqlite::Connection::open(self.db_path()).expect("open the database");
        db.busy_timeout(Duration::from_secs(5)).ok();
        let now = now_ms();
        let never = now + 365 * 86_400_000; // enrichment not due again
        let mut devices = Vec::new();
        let mut hosts = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            let ip = format!("10.77.0.{}", 200 + i);
            db.execute(
                "INSERT INTO devices (mac, ip, hostname, first_seen, last_seen, bytes_up, bytes_down, flows)
                 VALUES (?1, ?2, ?3, ?4, ?4, 100, 200, 1)",
                rusqlite::params![format!("02:00:00:00:00:0{i}"), ip, payload, now],
            )
            .unwrap();
            let device = db.last_insert_rowid();
            devices.push(device);
            let remote = format!("198.51.100.{}", 10 + i);
            db.execute(
                "INSERT INTO remote_hosts (ip, first_seen, last_seen, rdns, asn, org, bytes_up, bytes_down, flows,
                                           rdns_expires_at, asn_checked_at)
                 VALUES (?1, ?2, ?2, ?3, 64496, ?4, 100, 200, 1, ?5, ?5)",
                rusqlite::params![remote, now, payload, payloads[(i + 1) % payloads.len()], never],
            )
            .unwrap();
            let host = db.last_insert_rowid();
            hosts.push(host);
            let name = format!("{payload}.evil.test");
            db.execute("INSERT INTO dns_names (name) VALUES (?1)", [&name])
                .unwrap();
            let name_id = db.last_insert_rowid();
            db.execute(
                "INSERT INTO dns_queries (ts, client, device_id, qname_id, qtype, rcode, answers, cname_id, source)
                 VALUES (?1, ?2, ?3, ?4, 1, 0, 1, ?4, 0)",
                rusqlite::params![now - 1000, ip_blob(&ip), device, name_id],
            )
            .unwrap();
            db.execute(
                "INSERT INTO flows (ident, ct_id, proto, direction, src_ip, src_port, dst_ip, dst_port,
                                    reply_dst_ip, state, status, bytes_up, packets_up, bytes_down,
                                    packets_down, first_seen, last_seen, ended_at, device_id,
                                    remote_host_id, qname_id, cname_id, dns_match)
                 VALUES (?1, ?1, 6, 0, ?2, 40000, ?3, 443, ?8, 8, 0,
                         100, 1, 200, 2, ?4, ?4, ?4, ?5, ?6, ?7, ?7, 1)",
                rusqlite::params![
                    9_000_000 + i as i64,
                    ip_blob(&ip),
                    ip_blob(&remote),
                    now - 2000,
                    device,
                    host,
                    name_id,
                    ip_blob("203.0.113.1")
                ],
            )
            .unwrap();
            db.execute(
                "INSERT INTO remote_host_domains (remote_host_id, qname_id, first_seen, last_seen, flows, last_device_id)
                 VALUES (?1, ?2, ?3, ?3, 1, ?4)",
                rusqlite::params![host, name_id, now - 2000, device],
            )
            .unwrap();
        }
        (devices, hosts)
    }

    /// One integer from a query on the database (e.g. a count).
    pub fn db_i64(&self, sql: &str) -> i64 {
        let db = self.db();
        db.busy_timeout(Duration::from_secs(5)).ok();
        db.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            eprintln!(
                "---- lab {} failed; netmon log (tail):\n{}",
                self.name,
                tail(&self.netmon_log(), 80)
            );
            if std::env::var_os("NETMON_KEEP_LAB").is_some() {
                eprintln!(
                    "---- NETMON_KEEP_LAB set: lab {} kept (state in {}; `tests/lab/lab.sh down {}` removes it)",
                    self.name,
                    self.dir.display(),
                    self.name
                );
                return;
            }
        }
        let _ = Command::new(lab_script())
            .args(["down", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The `[web]` table of a config with password login: the argon2id hash of
/// `password` made by `netmon passwd` itself (reading the password from stdin) in a
/// scratch config file.
pub fn password_web(password: &str) -> String {
    let dir = tempfile::tempdir().expect("scratch dir");
    let file = dir.path().join("netmon.toml");
    let mut child = Command::new(NETMON)
        .args(["passwd", "--config"])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netmon passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("netmon passwd");
    assert!(
        out.status.success(),
        "netmon passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("netmon passwd wrote the config");
    let hash_line = text
        .lines()
        .find(|l| l.starts_with("password_hash"))
        .unwrap_or_else(|| panic!("no password_hash in {text}"));
    format!("[web]\nauth = \"password\"\n{hash_line}\n")
}

/// A logged-in browser: the `Cookie` header value and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub cookie: String,
    pub csrf: String,
}

/// One HTTP response, headers included (names lowercase).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn parse(raw: &[u8]) -> std::io::Result<HttpResponse> {
        let (status, body) = parse_http_response(raw)?;
        let head_end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(raw.len());
        let headers = String::from_utf8_lossy(&raw[..head_end])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// The first header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The CSRF token in a page's forms.
pub fn csrf_of(html: &str) -> Option<String> {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker)? + marker.len();
    let len = html[start..].find('"')?;
    Some(html[start..start + len].to_owned())
}

/// `application/x-www-form-urlencoded` / query value encoding.
pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A running `netmon run` inside the lab router.
pub struct NetmonProc {
    pub pid: u32,
    child: Option<Child>,
    log: PathBuf,
    pub started: Instant,
    /// Wall-clock start (unix ms), to compare with stored times.
    pub started_ms: i64,
}

impl NetmonProc {
    /// Exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid (not yet reaped: we hold the Child).
        unsafe { libc::kill(self.pid as libc::pid_t, sig) };
    }

    /// Sends SIGTERM and waits for the exit (at most `limit`, then SIGKILL). Returns the
    /// exit status (None if it had to be killed) and how long the exit took.
    pub fn sigterm_within(&mut self, limit: Duration) -> (Option<ExitStatus>, Duration) {
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        let mut status = None;
        while t0.elapsed() < limit {
            if let Some(s) = self.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = t0.elapsed();
        if status.is_none() {
            self.sigkill();
        }
        self.child = None;
        (status, took)
    }

    /// SIGTERM with a 10 s limit; see [`NetmonProc::sigterm_within`].
    pub fn sigterm(&mut self) -> (Option<ExitStatus>, Duration) {
        self.sigterm_within(Duration::from_secs(10))
    }

    /// `kill -9` and reap.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.signal(libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Peak resident set size (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        peak_rss(self.pid)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for NetmonProc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// A count from the environment variable `name`, else `default` (the benches' sizes).
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The times (µs) a `client.py` bench command printed (`{"us": [...]}`), sorted.
pub fn sorted_us(json: &str) -> Vec<u64> {
    let v: Value = serde_json::from_str(json).expect("client.py bench JSON");
    let mut us: Vec<u64> = v["us"]
        .as_array()
        .expect("times")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    us.sort_unstable();
    us
}

/// The `p` quantile (0–1) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A server a test started in the lab; killed and reaped when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one curl download moved (application bytes, as curl counts them).
#[derive(Debug, Clone, Copy)]
pub struct Download {
    pub body: u64,
    pub headers: u64,
    pub request: u64,
}

impl Download {
    pub fn parse(curl_out: &str) -> Download {
        let n: Vec<u64> = curl_out
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        assert_eq!(n.len(), 3, "unexpected curl -w output: {curl_out}");
        Download {
            body: n[0],
            headers: n[1],
            request: n[2],
        }
    }

    /// Payload that flowed server → client (response headers and body).
    pub fn down(&self) -> u64 {
        self.body + self.headers
    }

    /// Payload that flowed client → server (the request).
    pub fn up(&self) -> u64 {
        self.request
    }
}

/// curl arguments: fetch `url` from source port `local_port`, discard the body, print
/// "body-bytes header-bytes request-bytes". `-g` lets IPv6 literals in brackets through.
pub fn curl_args(local_port: u16, url: &str) -> Vec<String> {
    [
        "curl",
        "-sS",
        "--fail",
        "-g",
        "--local-port",
        &local_port.to_string(),
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{size_header} %{size_request}",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// VmHWM of a process, in bytes (0 if unreadable).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Last `n` lines of a file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_owned()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}

/// Status and body of a raw HTTP/1.1 response (Content-Length, chunked or to EOF).
pub fn parse_http_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = &raw[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let decoded;
    if chunked {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("bad chunk"))?;
            let size_s = String::from_utf8_lossy(&rest[..nl]);
            let size = usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size {
                return Err(bad("short chunk"));
            }
            out.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        decoded = out;
        body = &decoded;
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body = &body[..len.min(body.len())];
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

/// The value of one Prometheus series, e.g. `metric(text, "netmon_conntrack_overruns_total")`
/// or `metric(text, r#"netmon_conntrack_events_total{type="new"}"#)`. Labels must be
/// written as netmon renders them.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(k, _)| without_router_label(k.trim()) == series)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// A series as the tests name it: netmon adds a global `router="…"` label (for
/// multi-router scraping) that no test cares about.
fn without_router_label(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_owned();
    };
    let labels = labels.trim_end_matches('}');
    let kept: Vec<&str> = labels
        .split(',')
        .filter(|l| !l.is_empty() && !l.starts_with("router="))
        .collect();
    if kept.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", kept.join(","))
    }
}

/// Sum of every series of metric `name` (all label sets).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for (k, v) in text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
    {
        let k = k.trim();
        let base = k.split('{').next().unwrap_or(k);
        if base == name
            && let Ok(x) = v.trim().parse::<f64>()
        {
            sum += x;
            found = true;
        }
    }
    found.then_some(sum)
}

// --- flow helpers ---------------------------------------------------------------------

/// A field of a flow as i64 (None when null/missing).
pub fn int(f: &Value, key: &str) -> Option<i64> {
    f.get(key).and_then(Value::as_i64)
}

pub fn text<'a>(f: &'a Value, key: &str) -> &'a str {
    f.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The first flow matching: protocol name, original source address and port (None: any
/// port), original destination address and port.
pub fn find_flow<'a>(
    flows: &'a [Value],
    proto: &str,
    src: &str,
    sport: Option<u16>,
    dst: &str,
    dport: Option<u16>,
) -> Option<&'a Value> {
    flows.iter().find(|f| {
        text(f, "proto") == proto
            && text(f, "src_ip") == src
            && text(f, "dst_ip") == dst
            && sport.is_none_or(|p| int(f, "src_port") == Some(i64::from(p)))
            && dport.is_none_or(|p| int(f, "dst_port") == Some(i64::from(p)))
    })
}

/// A flow's identity as a test knows it in advance: protocol and original tuple.
#[derive(Clone, Copy, Debug)]
pub struct FlowKey<'a> {
    pub proto: &'a str,
    pub src: &'a str,
    pub sport: Option<u16>,
    pub dst: &'a str,
    pub dport: Option<u16>,
}

impl FlowKey<'_> {
    pub fn find<'f>(&self, flows: &'f [Value]) -> Option<&'f Value> {
        find_flow(
            flows, self.proto, self.src, self.sport, self.dst, self.dport,
        )
    }
}

impl std::fmt::Display for FlowKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let port = |p: Option<u16>| p.map(|p| format!(" port {p}")).unwrap_or_default();
        write!(
            f,
            "{} {}{} → {}{}",
            self.proto,
            self.src,
            port(self.sport),
            self.dst,
            port(self.dport)
        )
    }
}

pub fn key<'a>(
    proto: &'a str,
    src: &'a str,
    sport: Option<u16>,
    dst: &'a str,
    dport: Option<u16>,
) -> FlowKey<'a> {
    FlowKey {
        proto,
        src,
        sport,
        dst,
        dport,
    }
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

// --- DNS attribution --------------------------------------------------------------

/// A stored flow's name, canonical name and match (`flows.qname_id`/`cname_id`/
/// `dns_match`: 1 exact, 2 stale, 3 other client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub domain: Option<String>,
    pub canonical: Option<String>,
    pub dns_match: Option<i64>,
}

/// An exact match to `domain` (with `canonical` at the end of its CNAME chain).
pub fn exact(domain: &str, canonical: Option<&str>) -> Named {
    Named {
        domain: Some(domain.into()),
        canonical: canonical.map(Into::into),
        dns_match: Some(1),
    }
}

/// An address as the flows table stores it.
pub fn ip_blob(ip: &str) -> netmon::store::addr::IpBlob {
    netmon::store::addr::IpBlob::new(ip.parse().expect("an address"))
}

/// What netmon stored for a client's connection from `sport` to `dst`, if anything.
pub fn named(lab: &Lab, dst: &str, sport: u16) -> Option<Named> {
    let db = lab.db();
    db.busy_timeout(Duration::from_secs(5)).ok();
    db.query_row(
        "SELECT q.name, c.name, f.dns_match FROM flows f
         LEFT JOIN dns_names q ON q.id = f.qname_id
         LEFT JOIN dns_names c ON c.id = f.cname_id
         WHERE f.dst_ip = ?1 AND f.src_port = ?2",
        rusqlite::params![ip_blob(dst), sport],
        |r| {
            Ok(Named {
                domain: r.get(0)?,
                canonical: r.get(1)?,
                dns_match: r.get(2)?,
            })
        },
    )
    .ok()
}

/// Waits (at most `within`) until that flow is stored with a name; what it has then.
#[track_caller]
pub fn wait_named(lab: &Lab, dst: &str, sport: u16, within: Duration) -> Named {
    let mut last = None;
    wait_until(within, || {
        last = named(lab, dst, sport);
        last.as_ref().is_some_and(|n| n.domain.is_some())
    });
    last.unwrap_or_else(|| {
        panic!(
            "no flow to {dst} from port {sport}; netmon log:\n{}",
            tail(&lab.netmon_log(), 40)
        )
    })
}

/// A tmpfs of `size` mounted on a directory; unmounted on drop (also when the test
/// fails), lazily, so a process still holding a file there cannot keep it.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).expect("tmpfs mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Every route `router()` declares, with its methods, read from `mod.rs` itself so a
/// route added later is covered by these tests without editing them.
pub fn declared_routes() -> Vec<(String, Vec<&'static str>)> {
    let routes: Vec<_> = include_str!("../../src/web/mod.rs")
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix(".route(\"")?;
            let (path, handlers) = rest.split_once('"')?;
            let methods = [
                ("get(", "GET"),
                ("post(", "POST"),
                ("put(", "PUT"),
                ("delete(", "DELETE"),
                ("patch(", "PATCH"),
            ]
            .into_iter()
            .filter(|(call, _)| handlers.contains(call))
            .map(|(_, m)| m)
            .collect();
            Some((path.to_owned(), methods))
        })
        .collect();
    assert!(
        routes.len() > 20,
        "router() routes not found in mod.rs: {routes:?}"
    );
    routes
}
