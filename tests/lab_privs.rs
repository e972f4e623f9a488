//! Privileges in the lab: netmon started as root switches to an
//! unprivileged account keeping only CAP_NET_ADMIN, and everything that needs the kernel
//! after start still works as that account: conntrack events, the start-up dump (the
//! only way to see a connection opened before netmon), DNS answers from NFQUEUE (each
//! needs a verdict, and nfnetlink checks CAP_NET_ADMIN on every message), the history store, a
//! SIGHUP reload (a re-executed process that keeps the switch), and a clean stop that
//! removes netmon's nftables table. Root, before the switch, never gives away a file
//! that is not netmon's (a hard link planted in the database directory), and what
//! netmon writes is not readable by every local user.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// `CAP_NET_ADMIN` (12), the one capability netmon keeps with a port ≥ 1024.
const NET_ADMIN_ONLY: u64 = 1 << 12;

/// A throw-away system account, removed (with its group) on drop.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TempUser {
    /// `tag` tells apart the accounts of tests running at once (same pid).
    fn create(tag: &str) -> TempUser {
        let name = format!("nm{tag}{}", std::process::id());
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                &name,
            ])
            .output()
            .expect("run useradd (package passwd)");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric id")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        TempUser { name, uid, gid }
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

/// A field of `/proc/PID/status`, whitespace-split.
fn status_field(pid: u32, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn status_hex(pid: u32, name: &str) -> u64 {
    let v = status_field(pid, name);
    u64::from_str_radix(v.first().map_or("", String::as_str), 16)
        .unwrap_or_else(|_| panic!("/proc/{pid}/status has no {name}"))
}

/// Asserts the process runs as `user` with CAP_NET_ADMIN only and no_new_privs.
#[track_caller]
fn assert_dropped(pid: u32, user: &TempUser) {
    let uid = user.uid.to_string();
    let gid = user.gid.to_string();
    assert_eq!(status_field(pid, "Uid:"), [uid.as_str(); 4], "Uid");
    assert_eq!(status_field(pid, "Gid:"), [gid.as_str(); 4], "Gid");
    assert_eq!(
        status_field(pid, "Groups:"),
        [gid.as_str()],
        "supplementary groups"
    );
    assert_eq!(status_hex(pid, "CapEff:"), NET_ADMIN_ONLY, "CapEff");
    assert_eq!(status_hex(pid, "CapPrm:"), NET_ADMIN_ONLY, "CapPrm");
    assert_eq!(status_hex(pid, "CapInh:"), NET_ADMIN_ONLY, "CapInh");
    assert_eq!(status_hex(pid, "CapAmb:"), NET_ADMIN_ONLY, "CapAmb");
    assert_eq!(status_hex(pid, "CapBnd:"), NET_ADMIN_ONLY, "CapBnd");
    assert_eq!(status_field(pid, "NoNewPrivs:"), ["1"], "NoNewPrivs");
    // Every thread, not only the main one: capabilities are per thread.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let tid = task.expect("task").file_name();
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/task/{}/status", tid.to_string_lossy()))
                .unwrap_or_default();
        if text.is_empty() {
            continue; // the thread ended meanwhile
        }
        let eff = text
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap_or(u64::MAX));
        assert_eq!(eff, Some(NET_ADMIN_ONLY), "thread {tid:?} CapEff");
    }
}

fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// The stored flow's name for a client connection from `sport` to `dst`.
fn stored_name(db: &Path, dst: &str, sport: u16) -> Option<String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.busy_timeout(Duration::from_secs(5)).ok();
    c.query_row(
        "SELECT q.name FROM flows f JOIN dns_names q ON q.id = f.qname_id
         WHERE f.dst_ip = ?1 AND f.src_port = ?2",
        rusqlite::params![ip_blob(dst), sport],
        |r| r.get(0),
    )
    .ok()
}

/// Resolves `shop.example.test` through the router and downloads from it on `sport`;
/// the flow must be stored with that name (the DNS answer passed NFQUEUE).
#[track_caller]
fn named_flow_works(lab: &Lab, db: &Path, sport: u16) {
    let answer = lab.client(
        "lan",
        &["dns", RTR_LAN4, "shop.example.test", "--type", "A"],
    );
    assert_eq!(answer.trim(), "203.0.113.84", "the router's DNS answers");
    lab.download("lan", sport, "http://203.0.113.84/small.bin");
    let mut got = None;
    let ok = wait_until(Duration::from_secs(10), || {
        got = stored_name(db, "203.0.113.84", sport);
        got.is_some()
    });
    assert!(
        ok,
        "flow from port {sport} not stored with its name; netmon log:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    assert_eq!(got.as_deref(), Some("shop.example.test"));
}

fn metric_value(lab: &Lab, series: &str) -> f64 {
    metric(&lab.metrics(), series).unwrap_or(0.0)
}

fn table_present(lab: &Lab) -> bool {
    lab.exec("rtr", &["nft", "list", "table", "inet", "netmon"])
        .status
        .success()
}

#[test]
fn runs_as_an_unprivileged_user_with_cap_net_admin_only_and_keeps_working() {
    let lab = Lab::up("privs");
    let user = TempUser::create("priv");
    let data: PathBuf = lab.dir.join("data");
    let db = data.join("netmon.db");
    let flash = lab.dir.join("flash");
    // A connection opened before netmon: only the start-up dump (a message that needs
    // CAP_NET_ADMIN) can find it.
    let mut hold = lab.hold_tcp("lan", 120, &[format!("{WAN4}:{SINK_PORT}:47611")]);

    let mut nm = lab.start_netmon(&format!(
        "user = \"{}\"\ndb_path = \"{}\"\npersist = \"on\"\npersist_path = \"{}\"\n\
         dump_interval_s = 2\n",
        user.name,
        db.display(),
        flash.join("netmon.db").display()
    ));
    let pid = nm.pid;
    assert_dropped(pid, &user);
    let log = std::fs::read_to_string(lab.netmon_log()).unwrap_or_default();
    assert!(
        log.contains(&format!("running as user {}", user.name)) && log.contains("CAP_NET_ADMIN"),
        "the log says who netmon runs as:\n{}",
        tail(&lab.netmon_log(), 30)
    );
    assert_eq!(metric_value(&lab, "netmon_privileges_dropped"), 1.0);
    // The directories netmon writes were given to the account, as root, before the switch.
    assert_eq!(owner(&data), (user.uid, user.gid), "database directory");
    assert_eq!(owner(&db), (user.uid, user.gid), "database file");
    assert_eq!(owner(&flash), (user.uid, user.gid), "history directory");
    assert!(table_present(&lab), "the nftables table is loaded");

    // The start-up dump found the connection opened before netmon.
    let held = key("tcp", CLIENT4, Some(47611), WAN4, Some(SINK_PORT));
    assert!(
        wait_until(Duration::from_secs(10), || held
            .find(&lab.all_flows())
            .is_some()),
        "{held} (opened before netmon) not found by the start-up dump; log:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    // Periodic dumps keep succeeding (each is a netlink request checked for CAP_NET_ADMIN).
    let dumps = metric_value(&lab, "netmon_conntrack_dumps_total");
    assert!(
        wait_until(Duration::from_secs(10), || metric_value(
            &lab,
            "netmon_conntrack_dumps_total"
        ) >= dumps + 2.0),
        "no periodic conntrack dumps after the switch; log:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    // Events: a new flow, named from the DNS answer NFQUEUE passed (with a verdict).
    named_flow_works(&lab, &db, 47612);
    assert_eq!(metric_value(&lab, "netmon_dns_capture_active"), 1.0);

    // SIGHUP: the re-executed process (same pid) starts unprivileged and keeps the switch.
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    let marker = format!("running as uid {}", user.uid);
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(lab.netmon_log()).is_ok_and(|l| l.contains(&marker))
                && matches!(lab.http("/healthz"), Ok((200, _)))
        }),
        "no reload as uid {}; log:\n{}",
        user.uid,
        tail(&lab.netmon_log(), 40)
    );
    assert!(nm.is_running(), "netmon exited at the reload");
    assert_dropped(pid, &user);
    assert!(
        table_present(&lab),
        "the reloaded netmon loaded its table again"
    );
    named_flow_works(&lab, &db, 47613);
    assert!(
        !std::fs::read_to_string(lab.netmon_log())
            .unwrap_or_default()
            .contains("Operation not permitted"),
        "something was refused after the switch:\n{}",
        tail(&lab.netmon_log(), 60)
    );

    // A clean stop: committed, history written as the account, table removed.
    let (status, _) = nm.sigterm();
    assert!(
        status.is_some_and(|s| s.success()),
        "netmon did not stop cleanly ({status:?}); log:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    assert!(!table_present(&lab), "the nftables table is left behind");
    assert_eq!(
        owner(&flash.join("netmon.db")),
        (user.uid, user.gid),
        "history"
    );
    let _ = hold.kill();
    let _ = hold.wait();
}

/// Owner, group and permission bits (symbolic links not followed).
fn stat(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Runs `netmon run` inside the router with `extra_toml`, expecting it to refuse to
/// start: returns its exit status (`None`: still running after 20 s, so it started
/// instead, and was killed) and what it printed.
fn run_expecting_refusal(
    lab: &Lab,
    extra_toml: &str,
) -> (Option<std::process::ExitStatus>, String) {
    std::fs::write(lab.config_path(), lab.netmon_config(extra_toml)).expect("write config");
    let config = lab.config_path();
    let mut child = lab.spawn(
        "rtr",
        &[
            NETMON,
            "run",
            "--config",
            config.to_str().expect("UTF-8 path"),
        ],
    );
    let exited = wait_until(Duration::from_secs(20), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait for netmon");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (exited.then_some(out.status), text)
}

/// root's file that a link planted in a database directory names (think /etc/shadow),
/// and its owner, group and mode.
fn precious_file(lab: &Lab) -> (PathBuf, (u32, u32, u32)) {
    use std::os::unix::fs::PermissionsExt;
    let precious = lab.dir.join("precious");
    std::fs::write(&precious, "root:$6$not-for-netmon\n").expect("write");
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = stat(&precious);
    assert_eq!(before, (0, 0, 0o600));
    (precious, before)
}

/// A database directory someone else made (the default db_path is under /tmp), holding
/// a hard link to a root file: netmon refuses to start, root's file keeps its owner,
/// and the message names the directory, its owner and what to do.
#[test]
fn refuses_a_database_directory_owned_by_someone_else() {
    const STRANGER: u32 = 54_321;
    let lab = Lab::up("prdir");
    let user = TempUser::create("dir");
    let (precious, before) = precious_file(&lab);
    let foreign = lab.dir.join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::hard_link(&precious, foreign.join("netmon.db-wal")).unwrap();
    chown(&foreign, STRANGER, STRANGER);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (status, out) = run_expecting_refusal(
        &lab,
        &format!(
            "user = \"{}\"\ndb_path = \"{}\"\n",
            user.name,
            foreign.join("netmon.db").display()
        ),
    );
    assert_eq!(stat(&precious), before, "root gave its file away:\n{out}");
    assert!(
        status.is_some_and(|s| !s.success()),
        "netmon did not refuse ({status:?}):\n{out}"
    );
    assert!(
        out.contains(&foreign.display().to_string())
            && out.contains(&format!("uid {STRANGER}"))
            && out.contains("rm -r"),
        "the message names the directory, its owner and what to do:\n{out}"
    );
}

/// The account's own database directory (as after every first start) holding a hard
/// link to a root file under a database file's name: netmon refuses to start, root's
/// file keeps its owner, and the message names the file, its links and what to do.
#[test]
fn never_gives_away_a_hard_linked_file_in_the_database_directory() {
    let lab = Lab::up("prlink");
    let user = TempUser::create("link");
    let (precious, before) = precious_file(&lab);
    let ours = lab.dir.join("ours");
    std::fs::create_dir(&ours).unwrap();
    chown(&ours, user.uid, user.gid);
    let planted = ours.join("netmon.db");
    std::fs::hard_link(&precious, &planted).unwrap();
    let (status, out) = run_expecting_refusal(
        &lab,
        &format!(
            "user = \"{}\"\ndb_path = \"{}\"\n",
            user.name,
            planted.display()
        ),
    );
    assert_eq!(stat(&precious), before, "root gave its file away:\n{out}");
    assert!(
        status.is_some_and(|s| !s.success()),
        "netmon did not refuse ({status:?}):\n{out}"
    );
    assert!(
        out.contains(&planted.display().to_string())
            && out.contains("2 hard links")
            && out.contains("-samefile"),
        "the message names the file, its links and what to do:\n{out}"
    );
}

/// Asserts `path` has no group write and no bit for others.
#[track_caller]
fn assert_private(path: &Path) {
    let mode = stat(path).2;
    assert_eq!(
        mode & 0o7027,
        0,
        "{} is mode {mode:04o}: readable or writable by others",
        path.display()
    );
}

/// The database, its WAL and -shm, its directory and the history are created without
/// access for others (umask 027), also when the history file is readable by all.
#[test]
fn database_wal_and_history_are_not_world_readable() {
    let lab = Lab::up("prmode");
    let user = TempUser::create("mode");
    let data = lab.dir.join("data");
    let db = data.join("netmon.db");
    let flash = lab.dir.join("flash");
    let history = flash.join("netmon.db");
    let config = format!(
        "user = \"{}\"\ndb_path = \"{}\"\npersist = \"on\"\npersist_path = \"{}\"\n",
        user.name,
        db.display(),
        history.display()
    );
    let mut nm = lab.start_netmon(&config);
    // Something to write: a flow.
    lab.download("lan", 47711, "http://203.0.113.80/small.bin");
    let wal = data.join("netmon.db-wal");
    let shm = data.join("netmon.db-shm");
    assert!(
        wait_until(Duration::from_secs(10), || wal.exists() && shm.exists()),
        "no WAL; log:\n{}",
        tail(&lab.netmon_log(), 30)
    );
    for path in [&data, &db, &wal, &shm] {
        assert_private(path);
        assert_eq!(stat(path).0, user.uid, "{}", path.display());
    }
    let (status, _) = nm.sigterm();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_private(&history);

    // RAM cleared by a reboot, and a history file made 0644 by hand: the database loaded
    // from it is private all the same (here with netmon running as root).
    for path in [&db, &wal, &shm] {
        let _ = std::fs::remove_file(path);
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&history, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut nm = lab.start_netmon(&config.replace(&format!("\"{}\"", user.name), "\"\""));
    let log = std::fs::read_to_string(lab.netmon_log()).unwrap_or_default();
    assert!(
        log.contains("of history from"),
        "no load:\n{}",
        tail(&lab.netmon_log(), 30)
    );
    assert_private(&db);
    let _ = nm.sigterm();
}
