//! `scripts/demo` comes up complete: the script runs headless (as `sudo scripts/demo`
//! would, with the test's own lab name and UI port, and this build's binaries instead
//! of a release build), and within [`DEADLINE`] of its start its UI's JSON API shows
//! every thing a page of the demo is for:
//! - devices named by their DHCP hostnames (laptop, phone, tv, iot);
//! - flows with the domain their client resolved (the DNS tap works);
//! - remote hosts with a reverse DNS name and an AS and organisation, IPv4 and IPv6;
//! - firewall drops (the wan's knocks on the router);
//! - at least one incident (the iot device's port scan).
//!
//! Then the test stops the demo as a user does (SIGINT, i.e. Ctrl-C) and checks that its
//! cleanup removed the lab: no namespace of it is left. The demo is stopped and the lab
//! checked whether or not everything appeared; the [`Demo`] guard stops it (and removes
//! a lab it left) if the test panics before that.
//!
//! Needs root and the packages `.ci/run` installs. Run with
//! `cargo test --test lab_demo -- --nocapture` (prints when each item appeared).

mod common;

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// What a new user may expect to see within two minutes of `sudo scripts/demo`.
const DEADLINE: Duration = Duration::from_secs(120);
/// How long the demo's Ctrl-C cleanup (stop netmon and the traffic, remove the lab) may
/// take.
const STOP_LIMIT: Duration = Duration::from_secs(30);
const HOSTNAMES: [&str; 4] = ["laptop", "phone", "tv", "iot"];

/// A running `scripts/demo`; dropping it stops the demo and removes its lab.
struct Demo {
    child: Child,
    name: String,
    port: u16,
    /// The script's own output (stdout and stderr).
    log: PathBuf,
    started: Instant,
}

impl Demo {
    fn start() -> Demo {
        require_lab_prerequisites();
        let name = format!("demo{}", std::process::id());
        let port = free_port();
        let log = std::env::temp_dir().join(format!("netmon-{name}.log"));
        let out = File::create(&log).expect("create the demo's log");
        let err = out.try_clone().expect("clone the log's handle");
        let started = Instant::now();
        let mut command = Command::new(Path::new(REPO).join("scripts/demo"));
        command
            .env("DEMO_NAME", &name)
            .env("DEMO_PORT", port.to_string())
            .env("NETMON_BIN", NETMON)
            .env("NETMON_LOADGEN", LOADGEN)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C meant for `cargo test` is not also a Ctrl-C
            // for the demo, which the test stops itself.
            .process_group(0);
        // SIGINT as a terminal delivers it: a test run in the background of a
        // non-interactive shell inherits SIGINT ignored, and bash can neither trap nor
        // reset a signal ignored when it started (bash(1), SIGNALS).
        // SAFETY: between fork and exec only signal(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = command.spawn().expect("start scripts/demo");
        Demo {
            child,
            name,
            port,
            log,
            started,
        }
    }

    /// `GET path` on the demo's UI port; the body as JSON.
    fn api(&self, path: &str) -> Option<Value> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Ctrl-C, then waits for the script's cleanup. `Err` says what is wrong: the demo
    /// did not exit in time, or it left namespaces of its lab behind.
    fn stop(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) with the pid of a child this process has not reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
            let ended = wait_until(STOP_LIMIT, || self.exited());
            if !ended {
                problems.push(format!(
                    "the demo did not exit within {STOP_LIMIT:?} of SIGINT"
                ));
                // The whole group: the script and its UI forwarder on this machine (the
                // lab's own processes go with the lab below).
                // SAFETY: kill(2) on the process group the child leads (process_group(0)).
                unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = self.child.wait();
            }
        }
        let left = lab_namespaces(&self.name);
        if !left.is_empty() {
            problems.push(format!("the demo's cleanup left namespaces {left:?}"));
            let _ = Command::new(lab_script())
                .args(["down", &self.name])
                .status();
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("---- demo guard: {e}");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A port nothing on this machine listens on now (the kernel picks it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn lab_namespaces(name: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.strip_prefix(name).is_some_and(|r| r.starts_with('-')))
        .map(str::to_owned)
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One thing the demo must show: `check` looks at the API and says what it found.
struct Item {
    what: &'static str,
    check: fn(&Demo) -> Option<String>,
    seen: Option<(Duration, String)>,
}

fn hostnames(demo: &Demo) -> Option<String> {
    let v = demo.api("/api/devices")?;
    let named: Vec<&str> = v["devices"]
        .as_array()?
        .iter()
        .filter_map(|d| d["hostname"].as_str())
        .collect();
    HOSTNAMES
        .iter()
        .all(|h| named.contains(h))
        .then(|| named.join(", "))
}

fn flow_domains(demo: &Demo) -> Option<String> {
    let v = demo.api("/api/flows?show=all&direction=all&limit=200")?;
    let mut domains: Vec<&str> = v["flows"]
        .as_array()?
        .iter()
        .filter_map(|f| f["domain"].as_str())
        .collect();
    domains.sort_unstable();
    domains.dedup();
    (!domains.is_empty()).then(|| domains.join(", "))
}

/// A remote host at `ip` with a PTR name and an AS with its organisation.
fn enriched(demo: &Demo, ip: &str) -> Option<String> {
    let v = demo.api(&format!("/api/hosts?q={ip}"))?;
    let host = v["hosts"].as_array()?.iter().find(|h| h["ip"] == ip)?;
    let rdns = host["rdns"].as_str().filter(|r| *r != "none")?;
    let asn = host["asn"].as_i64()?;
    let org = host["org"].as_str()?;
    Some(format!("{ip} {rdns} AS{asn} {org}"))
}

fn hosts_enriched(demo: &Demo) -> Option<String> {
    let v4 = enriched(demo, "203.0.113.80")?;
    let v6 = enriched(demo, "2001:db8:77::80")?;
    Some(format!("{v4}; {v6}"))
}

fn drops(demo: &Demo) -> Option<String> {
    let v = demo.api("/api/drops")?;
    let attempts = v["attempts"].as_i64().filter(|n| *n > 0)?;
    let sources = v["sources"].as_array().map_or(0, Vec::len);
    Some(format!("{attempts} attempts from {sources} sources"))
}

fn incidents(demo: &Demo) -> Option<String> {
    let v = demo.api("/api/incidents")?;
    let titles: Vec<&str> = v["incidents"]
        .as_array()?
        .iter()
        .filter_map(|i| i["title"].as_str())
        .collect();
    (!titles.is_empty()).then(|| titles.join("; "))
}

#[test]
fn demo_comes_up_complete_and_ctrl_c_removes_its_lab() {
    let mut demo = Demo::start();
    let mut items = [
        Item {
            what: "device hostnames from DHCP",
            check: hostnames,
            seen: None,
        },
        Item {
            what: "domains on flows",
            check: flow_domains,
            seen: None,
        },
        Item {
            what: "rDNS and ASN on remote hosts (v4 and v6)",
            check: hosts_enriched,
            seen: None,
        },
        Item {
            what: "firewall drops",
            check: drops,
            seen: None,
        },
        Item {
            what: "incident",
            check: incidents,
            seen: None,
        },
    ];
    let deadline = demo.started + DEADLINE;
    while Instant::now() < deadline && items.iter().any(|i| i.seen.is_none()) {
        if demo.exited() {
            break;
        }
        for item in items.iter_mut().filter(|i| i.seen.is_none()) {
            if let Some(found) = (item.check)(&demo) {
                let at = demo.started.elapsed();
                eprintln!("{:>5.1} s  {}: {found}", at.as_secs_f64(), item.what);
                item.seen = Some((at, found));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let missing: Vec<&str> = items
        .iter()
        .filter(|i| i.seen.is_none())
        .map(|i| i.what)
        .collect();
    let exited_early = demo.exited();
    let netmon_log = tail(
        &PathBuf::from(format!("/tmp/netmon-lab-{}/netmon.log", demo.name)),
        40,
    );
    let stopped = demo.stop();
    assert!(
        missing.is_empty() && !exited_early,
        "after {:.0} s the demo {}shows no {}\n---- scripts/demo output:\n{}\n---- netmon.log:\n{}",
        demo.started.elapsed().as_secs_f64(),
        if exited_early { "has exited and " } else { "" },
        missing.join(", no "),
        demo.log_tail(40),
        netmon_log
    );
    if let Err(e) = stopped {
        panic!("{e}\n---- scripts/demo output:\n{}", demo.log_tail(40));
    }
}
