//! What netmon does when its storage or its DNS tap fails, proven in the router lab
//! (`tests/lab/`):
//!
//! - `a_full_disk_is_reported_and_netmon_starts_and_recovers_on_it`: the database lives
//!   on a 6 MiB tmpfs with `max_db_mb = 4`. A flood of random names and flows keeps the
//!   file, its WAL and the storage reserve within the 4 MiB budget (the disk never fills
//!   by netmon's own hand); then a filler file takes every byte left, so commits fail
//!   with `SQLITE_FULL`. `/healthz`, the health page and `netmon_storage_ok` report it.
//!   netmon is killed on the full disk and started again on it: it starts (the reserve
//!   is released, pragmas write nothing), reports the failure, and once the filler is
//!   gone commits again by itself, within its budget, with an intact database.
//! - `a_dns_tap_without_its_queue_is_reported_missing` and
//!   `a_dns_tap_without_iptables_is_reported_missing`: another program holds the NFQUEUE
//!   number, or the firewall cannot install the queue rule (no `iptables` for the
//!   fallback on a kernel without nftables' queue expression); `/healthz`, the health
//!   page and `netmon_dns_capture_active` say the tap is missing, why, and the fix.
//!
//! Needs root and the packages `.ci/run` installs. Run one with e.g.
//! `cargo test --test lab_storage full_disk -- --nocapture`.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The tmpfs holding the database, and the budget inside it.
const DISK: &str = "6m";
const DISK_BYTES: u64 = 6 << 20;
const BUDGET_MIB: u64 = 4;

/// Appends to `path` until the kernel says ENOSPC; returns the bytes written.
fn fill_up(path: &Path) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the filler file");
    let mut written = 0u64;
    for chunk in [64 << 10, 4 << 10, 512] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = f.flush();
    written
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The database's file plus its WAL.
fn on_disk(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    file_len(db) + file_len(Path::new(&wal))
}

fn healthz(lab: &Lab) -> Value {
    let (status, body) = lab.http("/healthz").expect("GET /healthz");
    assert_eq!(status, 200, "/healthz: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz ({e}): {body}"))
}

/// The `/healthz` problem about `part`, if listed.
fn problem<'a>(health: &'a Value, part: &str) -> Option<&'a Value> {
    health["problems"]
        .as_array()?
        .iter()
        .find(|p| p["part"] == part)
}

/// A few TCP connections from the lab client to the wan server on source ports `ports`
/// ("a-b"); they end at once.
fn connections(lab: &Lab, ports: &str, count: u64) -> Value {
    lab.loadgen(
        "lan",
        &[
            "--mode",
            "tcp",
            "--target",
            &format!("{WAN4}:{BURST_PORT}"),
            "--rate",
            "200",
            "--count",
            &count.to_string(),
            "--duration",
            "5",
            "--sports",
            ports,
            "--threads",
            "1",
        ],
    )
}

/// Random names and one-packet UDP flows from the lab client at `rate` per second for
/// `secs` seconds, both at once.
fn spawn_flood(lab: &Lab, rate: u64, secs: u64) -> Vec<std::process::Child> {
    let count = (rate * secs).to_string();
    let (rate, secs) = (rate.to_string(), (secs + 5).to_string());
    vec![
        lab.spawn(
            "lan",
            &[
                LOADGEN,
                "run",
                "--mode",
                "dns",
                "--target",
                &format!("{RTR_LAN4}:53"),
                "--domain",
                "flood.lab",
                "--rate",
                &rate,
                "--count",
                &count,
                "--duration",
                &secs,
                "--threads",
                "2",
            ],
        ),
        lab.spawn(
            "lan",
            &[
                LOADGEN,
                "run",
                "--mode",
                "udp",
                "--target",
                &format!("{WAN4}:{LOADGEN_UDP_PORT}"),
                "--ports",
                "10000-59999",
                "--rate",
                &rate,
                "--count",
                &count,
                "--duration",
                &secs,
            ],
        ),
    ]
}

/// [`spawn_flood`], calling `during` every 100 ms until it has ended.
fn flood(lab: &Lab, rate: u64, secs: u64, mut during: impl FnMut()) {
    let mut children = spawn_flood(lab, rate, secs);
    while !children.is_empty() {
        during();
        children.retain_mut(|c| c.try_wait().ok().flatten().is_none());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_disk_is_reported_and_netmon_starts_and_recovers_on_it() {
    let lab = Lab::up("dskful");
    let fs = Tmpfs::mount(lab.dir.join("dbfs"), DISK);
    let db = fs.dir.join("netmon.db");
    let filler = fs.dir.join("filler");
    let config = format!(
        "db_path = \"{}\"\npersist = \"off\"\n[retention]\nmax_db_mb = {BUDGET_MIB}\n",
        db.display()
    );
    let mut nm = lab.start_netmon(&config);

    // --- the flood fills the budget and the disk ----------------------------------------
    let mut peak = 0;
    let mut failed_seen = false;
    let started = Instant::now();
    flood(&lab, 5_000, 20, || {
        peak = peak.max(on_disk(&db));
        let h = healthz(&lab);
        failed_seen |= h.get("write_failure").is_some();
    });
    eprintln!(
        "full disk: flood over after {:?}; file + WAL peaked at {} KiB (disk {} KiB); \
         write failure seen {failed_seen}",
        started.elapsed(),
        peak >> 10,
        DISK_BYTES >> 10
    );
    assert!(
        nm.is_running(),
        "netmon died in the flood:\n{}",
        nm.log_tail(40)
    );
    // netmon alone stays within its budget: the flood never fills the disk.
    assert!(!failed_seen, "the flood alone made commits fail");
    assert!(
        peak <= BUDGET_MIB << 20,
        "file + WAL peaked at {} KiB, past the {BUDGET_MIB} MiB budget",
        peak >> 10
    );

    // --- the disk is full: a filler takes every byte left, and keeps taking what frees
    // up until a commit has failed and all three places report it --------------------------
    let failed_before = metric(&lab.metrics(), "netmon_writer_failed_commits_total").unwrap_or(0.0);
    // More of the flood: new rows need new pages, and with the filler taking each one
    // the file and its log cannot grow.
    let mut traffic = spawn_flood(&lab, 3_000, 40);
    let mut filled = 0;
    let mut health = Value::Null;
    let mut storage_ok = None;
    let mut page = String::new();
    let failing = wait_until(Duration::from_secs(40), || {
        filled += fill_up(&filler);
        health = healthz(&lab);
        if problem(&health, "storage").is_none() {
            return false;
        }
        // Caught while it lasts (at least the writer's first retry pause, 500 ms): the
        // gauge and the health page say the same.
        storage_ok = metric(&lab.metrics(), "netmon_storage_ok");
        page = lab.http_get("/settings");
        storage_ok == Some(0.0) && page.contains("id=\"write-failure\"")
    });
    for c in &mut traffic {
        let _ = c.kill();
        let _ = c.wait();
    }
    let failed_after = metric(&lab.metrics(), "netmon_writer_failed_commits_total").unwrap_or(0.0);
    eprintln!(
        "full disk: filler {filled} bytes; failed commits {failed_before} → {failed_after}; \
         netmon_storage_ok {storage_ok:?}; /healthz {health}"
    );
    assert!(
        failing,
        "the storage failure was not reported by /healthz, netmon_storage_ok ({storage_ok:?}) \
         and the health page at once with the disk full (failed commits {failed_before} → \
         {failed_after}): {health}\n{}\n{}",
        truncate(&page, 2000),
        nm.log_tail(30)
    );
    assert_eq!(health["ok"], false, "{health}");
    let p = problem(&health, "storage").expect("storage problem");
    assert!(
        p["error"].as_str().is_some_and(|e| e.contains("full")),
        "{health}"
    );
    assert!(!p["fix"].as_str().unwrap_or("").is_empty(), "{health}");

    // --- killed on the full disk, started again on it -----------------------------------
    nm.sigkill();
    let more = fill_up(&filler);
    eprintln!(
        "full disk: killed; filler grew {more} bytes; file + WAL {} KiB",
        on_disk(&db) >> 10
    );
    let mut nm = lab.start_netmon(&config);
    connections(&lab, "28000-28049", 50);
    let reported = wait_until(Duration::from_secs(30), || {
        problem(&healthz(&lab), "storage").is_some()
    });
    assert!(
        reported,
        "netmon restarted on the full disk does not report it: {}\n{}",
        healthz(&lab),
        nm.log_tail(40)
    );

    // --- room comes back: writes resume by themselves ----------------------------------
    std::fs::remove_file(&filler).expect("remove the filler");
    let healed_from = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || healthz(&lab)
            .get("write_failure")
            .is_none()),
        "writes did not resume once the disk had room: {}\n{}",
        healthz(&lab),
        nm.log_tail(40)
    );
    // Commits go on (the held start-up dump first, then new data).
    let seq = |h: &Value| h["last_commit_seq"].as_i64().unwrap_or(0);
    let healed_seq = seq(&healthz(&lab));
    assert!(
        wait_until(Duration::from_secs(30), || seq(&healthz(&lab))
            >= healed_seq + 5),
        "commits stopped after the writer recovered: {}\n{}",
        healthz(&lab),
        nm.log_tail(30)
    );
    let m = lab.metrics();
    eprintln!(
        "full disk: writes resumed {:?} after the filler went, file + WAL {} KiB",
        healed_from.elapsed(),
        on_disk(&db) >> 10,
    );
    assert_eq!(metric(&m, "netmon_storage_ok"), Some(1.0));
    assert!(
        on_disk(&db) <= BUDGET_MIB << 20,
        "file + WAL {} KiB past the {BUDGET_MIB} MiB budget after recovery",
        on_disk(&db) >> 10
    );
    let (status, took) = nm.sigterm();
    assert!(
        status.is_some_and(|s| s.success()),
        "netmon: exit {status:?} after {took:?}\n{}",
        nm.log_tail(30)
    );
    let ok: String =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
            .expect("integrity_check");
    assert_eq!(ok, "ok");
}

// --- the DNS tap ----------------------------------------------------------------------

/// Asserts that `/healthz`, the health page, the overview and `/metrics` all say the DNS
/// tap is missing, with an error containing `error_has` and a fix containing `fix_has`.
fn assert_tap_reported_missing(lab: &Lab, error_has: &str, fix_has: &str) {
    let health = healthz(lab);
    eprintln!("dns tap: /healthz {health}");
    assert_eq!(health["ok"], false, "{health}");
    assert_eq!(health["capture"]["dns_tap"]["state"], "broken", "{health}");
    let p = problem(&health, "dns_tap").unwrap_or_else(|| panic!("no dns_tap problem: {health}"));
    assert!(
        p["error"].as_str().is_some_and(|e| e.contains(error_has)),
        "error must contain {error_has:?}: {health}"
    );
    assert!(
        p["fix"].as_str().is_some_and(|f| f.contains(fix_has)),
        "fix must contain {fix_has:?}: {health}"
    );
    let page = lab.http_get("/settings");
    assert!(
        page.contains("id=\"capture-broken-dns_tap\"") && page.contains(fix_has),
        "the health page must show the missing tap: {}",
        truncate(&page, 3000)
    );
    assert!(lab.http_get("/").contains("broken: DNS tap"));
    assert_eq!(
        metric(&lab.metrics(), "netmon_dns_capture_active"),
        Some(0.0),
        "netmon_dns_capture_active with the tap missing"
    );
}

#[test]
fn a_dns_tap_without_its_queue_is_reported_missing() {
    let lab = Lab::up("tapq");
    // Another program binds netmon's queue number first (NFQUEUE bindings are per
    // network namespace: this one is the router's).
    let queue_num = 5353;
    let _other = lab.in_router(|| {
        let mut q = nfq::Queue::open().expect("open an NFQUEUE socket");
        q.bind(queue_num).expect("bind the queue before netmon");
        q
    });
    let _nm = lab.start_netmon("");
    assert_tap_reported_missing(&lab, &format!("NFQUEUE {queue_num}"), "dns.queue_num");
}

/// Whether this kernel makes nftables `queue` expressions (`CONFIG_NFT_QUEUE`), probed
/// with a scratch table in the lab router.
fn kernel_has_nft_queue(lab: &Lab) -> bool {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.ns("rtr"), "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            b"table inet netmon_probe {\n chain o {\n  type filter hook output priority 0;\n  \
              udp sport 53 queue num 9 bypass\n }\n}\n",
        )
        .expect("write to nft");
    let ok = child.wait().is_ok_and(|s| s.success());
    lab.exec("rtr", &["nft", "delete", "table", "inet", "netmon_probe"]);
    ok
}

#[test]
fn a_dns_tap_without_iptables_is_reported_missing() {
    let lab = Lab::up("tapx");
    // A PATH with everything netmon runs but iptables: `nft` and `ip`.
    let bin = lab.dir.join("bin-without-iptables");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for tool in ["nft", "ip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .expect("sh");
        let found = String::from_utf8_lossy(&found.stdout).trim().to_owned();
        assert!(!found.is_empty(), "{tool} is not installed");
        std::os::unix::fs::symlink(&found, bin.join(tool)).expect("symlink");
    }
    let has_nft_queue = kernel_has_nft_queue(&lab);
    std::fs::write(lab.config_path(), lab.netmon_config("")).expect("write config");
    let log = File::create(lab.netmon_log()).expect("log");
    let mut child = Command::new("/usr/sbin/ip")
        .args(["netns", "exec", &lab.ns("rtr"), NETMON, "run", "--config"])
        .arg(lab.config_path())
        .env("PATH", &bin)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log fd")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn netmon");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(&mut child);
    assert!(
        wait_until(Duration::from_secs(20), || matches!(
            lab.http("/healthz"),
            Ok((200, _))
        )),
        "netmon did not start without iptables:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    if has_nft_queue {
        // nftables queues the answers itself: iptables is not needed, the tap is there.
        let health = healthz(&lab);
        assert_eq!(health["capture"]["dns_tap"]["state"], "ok", "{health}");
    } else {
        assert_tap_reported_missing(&lab, "iptables", "install iptables");
    }
    drop(child);
}
