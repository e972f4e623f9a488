//! Flash-friendly storage in the lab: with the database in RAM and snapshots on, a `kill -9` followed by the
//! loss of the RAM copy (a reboot) restarts from the last snapshot: everything up to the
//! snapshot is there and the database is intact.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn snapshot_survives_kill9_and_lost_ram_copy() {
    let lab = Lab::up("persist");
    let extra = "persist = \"on\"\npersist_interval_s = 5\n";
    let mut nm = lab.start_netmon(extra);
    for port in 47401..47406 {
        lab.download("lan", port, &format!("http://{WAN4}/small.bin"));
    }
    let snapshot = lab.dir.join("persist.db");
    // Wait for a snapshot taken after the downloads were committed.
    let committed = wait_until(Duration::from_secs(10), || {
        lab.db_i64("SELECT count(*) FROM flows WHERE dst_port = 80") >= 5
    });
    assert!(committed, "the five downloads were not stored");
    let stored_before = lab.db_i64("SELECT count(*) FROM flows WHERE dst_port = 80");
    let snap_flows = || -> i64 {
        rusqlite::Connection::open_with_flags(&snapshot, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM flows WHERE dst_port = 80", [], |r| {
                    r.get(0)
                })
            })
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(15), || snap_flows() >= stored_before),
        "no snapshot with the {stored_before} downloads within 15 s; log:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    let in_snapshot = snap_flows();
    let metrics = lab.metrics();
    assert!(metric(&metrics, "netmon_snapshots_total").unwrap_or(0.0) >= 1.0);

    nm.sigkill();
    // The reboot: RAM is gone.
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", lab.db_path().display());
        let _ = std::fs::remove_file(path);
    }
    let mut nm = lab.start_netmon(extra);
    let restored = lab.db_i64("SELECT count(*) FROM flows WHERE dst_port = 80");
    assert!(
        restored >= in_snapshot,
        "restart restored {restored} download flows, the snapshot held {in_snapshot}"
    );
    let check: String = lab
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    assert!(
        std::fs::read_to_string(lab.netmon_log())
            .unwrap_or_default()
            .contains("restored"),
        "netmon logged the restore"
    );
    // And it keeps recording.
    lab.download("lan", 47410, &format!("http://{WAN4}/small.bin"));
    assert!(
        wait_until(Duration::from_secs(5), || {
            lab.db_i64("SELECT count(*) FROM flows WHERE src_port = 47410") == 1
        }),
        "a flow after the restore was not recorded"
    );
    let (status, took) = nm.sigterm();
    assert!(
        status.is_some(),
        "netmon did not stop on SIGTERM ({took:?})"
    );
}

/// A fault: SIGHUP with a bad config file keeps netmon running on its old
/// config and says why; with a good one netmon restarts itself in place (same pid, so
/// procd/systemd keep tracking it) with the new config and the same data.
#[test]
fn sighup_reloads_a_good_config_and_keeps_running_on_a_bad_one() {
    let lab = Lab::up("hup");
    let mut netmon = lab.start_netmon("");
    lab.download("lan", 47921, "http://203.0.113.84/small.bin");
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .db_i64("SELECT count(*) FROM flows WHERE src_port = 47921")
            == 1),
        "flow not stored"
    );
    let good = std::fs::read_to_string(lab.config_path()).unwrap();
    let pid = netmon.pid as i32;
    let hup = |what: &str| {
        // SAFETY: plain kill(2) of the process this test started.
        let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill -HUP ({what})");
    };

    std::fs::write(lab.config_path(), format!("{good}\ntick_msec = 5\n")).unwrap();
    hup("bad config");
    let refused = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(lab.netmon_log())
            .unwrap_or_default()
            .contains("SIGHUP: not reloading")
    });
    assert!(refused, "no refusal logged:\n{}", netmon.log_tail(20));
    assert!(netmon.is_running(), "a bad config on SIGHUP stopped netmon");
    assert!(matches!(lab.http("/healthz"), Ok((200, _))));

    std::fs::write(
        lab.config_path(),
        good.replace("tick_ms = 250", "tick_ms = 300"),
    )
    .unwrap();
    hup("good config");
    let restarted = wait_until(Duration::from_secs(20), || {
        let log = std::fs::read_to_string(lab.netmon_log()).unwrap_or_default();
        log.contains("SIGHUP: stopping") && log.matches("web UI on").count() >= 2
    });
    assert!(
        restarted,
        "netmon did not restart:\n{}",
        netmon.log_tail(30)
    );
    assert!(netmon.is_running(), "the pid changed or exited on reload");
    assert!(wait_until(Duration::from_secs(10), || matches!(
        lab.http("/healthz"),
        Ok((200, _))
    )));
    assert_eq!(
        lab.db_i64("SELECT count(*) FROM flows WHERE src_port = 47921"),
        1,
        "data survives a reload"
    );
    lab.download("lan", 47922, "http://203.0.113.84/small.bin");
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .db_i64("SELECT count(*) FROM flows WHERE src_port = 47922")
            == 1),
        "no new flow stored after the reload:\n{}",
        netmon.log_tail(30)
    );
}
