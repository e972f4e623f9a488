use super::*;
use crate::time::HOUR_MS;

/// A config with the RAM database and the history in two directories of `dir`.
fn config(dir: &Path) -> Config {
    Config {
        db_path: dir.join("ram/netmon.db"),
        persist: Persist::On,
        persist_path: dir.join("flash/history.db"),
        ..Config::default()
    }
}

/// Opens the RAM database the way the writer does, with its history.
fn open(config: &Config) -> (Connection, History) {
    let start = before_open(config).unwrap();
    let mut conn = schema::open_rw(&config.db_path).unwrap();
    let history = History::open(config, &mut conn, start).unwrap().unwrap();
    (conn, history)
}

/// A reboot: the RAM database is gone.
fn reboot(config: &Config) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = config.db_path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn history_count(config: &Config, sql: &str) -> i64 {
    let c = Connection::open_with_flags(&config.persist_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    count(&c, sql)
}

/// What an owner expects to find after a reboot: a named device with its address and
/// rollups, a remote host with its name, AS and port, a baseline, an incident, a rule,
/// a saved search; and raw rows (a flow, a DNS query) that are not history.
fn fill(conn: &Connection, now: i64) {
    let day = now - now.rem_euclid(DAY_MS);
    conn.execute_batch(&format!(
        "INSERT INTO devices (id, mac, ip, name, first_seen, last_seen, bytes_up, bytes_down, flows)
             VALUES (1, 'aa:bb:cc:00:00:01', '192.168.1.10', 'laptop', {day}, {now}, 999, 999, 9);
         INSERT INTO device_addrs (ip, device_id, first_seen, last_seen)
             VALUES ('192.168.1.10', 1, {day}, {now});
         INSERT INTO remote_hosts (id, ip, first_seen, last_seen, rdns, asn, org)
             VALUES (7, '203.0.113.7', {day}, {now}, 'www.example.net', 64500, 'Example');
         INSERT INTO dns_names (id, name) VALUES (3, 'video.example.test'), (4, 'raw.example.test');
         INSERT INTO remote_host_domains (remote_host_id, qname_id, first_seen, last_seen, flows)
             VALUES (7, 3, {day}, {now}, 5);
         INSERT INTO remote_host_ports (remote_host_id, proto, port, first_seen, last_seen, flows)
             VALUES (7, 6, 443, {day}, {now}, 5);
         INSERT INTO device_hours (device_id, hour, bytes_up, bytes_down, flows_new)
             VALUES (1, {y0}, 100, 1000, 2), (1, {y1}, 10, 100, 1), (1, {h}, 5, 50, 1);
         INSERT INTO remote_host_hours (remote_host_id, hour, bytes_up, bytes_down, flows_new)
             VALUES (7, {y0}, 100, 1000, 2), (7, {h}, 5, 50, 1);
         INSERT INTO device_baselines (device_id, computed_at, history_from, minutes)
             VALUES (1, {now}, {y0}, 600);
         INSERT INTO incidents (id, fingerprint, device_id, codes, title, first_seen, last_seen, max_score)
             VALUES (1, 'fp', 1, 'NEW_DST', 'laptop: new destination', {now}, {now}, 60);
         INSERT INTO rules (id, action, domain, created_at) VALUES (1, 'allow', 'example.net', {now});
         INSERT INTO saved_searches (name, url, created_at, updated_at)
             VALUES ('video', '/flows?domain=video.example.test', {now}, {now});
         INSERT INTO flows (ident, ct_id, proto, direction, src_ip, dst_ip, status, first_seen,
                            last_seen, device_id, remote_host_id, qname_id)
             VALUES (1, 1, 6, 0, x'c0a8010a', x'cb007107', 14, {now}, {now}, 1, 7, 3);",
        y0 = day - DAY_MS + HOUR_MS,
        y1 = day - DAY_MS + 5 * HOUR_MS,
        h = now - now.rem_euclid(HOUR_MS),
    ))
    .unwrap();
}

#[test]
fn history_survives_a_reboot_without_the_raw_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let now = crate::time::now_ms();
    {
        let (mut conn, mut history) = open(&config);
        fill(&conn, now);
        let synced = history.sync(&mut conn).unwrap();
        assert!(synced.rows >= 12, "{synced:?}");
    }
    reboot(&config);
    let (conn, _history) = open(&config);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM flows"),
        0,
        "raw data is RAM's"
    );
    assert_eq!(
        conn.query_row(
            "SELECT name || ' ' || ip || ' ' || mac FROM devices WHERE id = 1",
            [],
            |r| r.get::<_, String>(0)
        )
        .unwrap(),
        "laptop 192.168.1.10 aa:bb:cc:00:00:01"
    );
    assert_eq!(
        conn.query_row(
            "SELECT h.rdns || ' AS' || h.asn || ' ' || n.name FROM remote_hosts h
             JOIN remote_host_domains d ON d.remote_host_id = h.id
             JOIN dns_names n ON n.id = d.qname_id",
            [],
            |r| r.get::<_, String>(0)
        )
        .unwrap(),
        "www.example.net AS64500 video.example.test"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM dns_names WHERE name = 'raw.example.test'"
        ),
        0,
        "a name no host link refers to is the DNS log's"
    );
    for (table, n) in [
        ("device_addrs", 1),
        ("remote_host_ports", 1),
        ("device_hours", 3),
        ("remote_host_hours", 2),
        ("device_days", 1),
        ("remote_host_days", 1),
        ("device_baselines", 1),
        ("incidents", 1),
        ("rules", 1),
        ("saved_searches", 1),
    ] {
        assert_eq!(
            count(&conn, &format!("SELECT count(*) FROM {table}")),
            n,
            "{table}"
        );
    }
    // Yesterday rolled into a day; the totals are the days and today's hours.
    assert_eq!(
        count(
            &conn,
            "SELECT bytes_down FROM device_days WHERE device_id = 1"
        ),
        1100
    );
    assert_eq!(
        count(&conn, "SELECT bytes_down + flows FROM devices WHERE id = 1"),
        1150 + 4
    );
    assert_eq!(
        count(&conn, "SELECT bytes_up FROM remote_hosts WHERE id = 7"),
        105
    );
    // Ids go on from where they were.
    conn.execute(
        "INSERT INTO devices (ip, first_seen, last_seen) VALUES ('192.168.1.11', 1, 1)",
        [],
    )
    .unwrap();
    assert_eq!(conn.last_insert_rowid(), 2);
    dir.close().unwrap();
}

#[test]
fn a_sync_writes_only_what_changed_and_an_idle_router_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let now = crate::time::now_ms();
    let (mut conn, mut history) = open(&config);
    fill(&conn, now);
    history.sync(&mut conn).unwrap();
    assert_eq!(history.sync(&mut conn).unwrap().rows, 0);
    // Traffic moves totals and last-seen to the millisecond: the history keeps neither.
    conn.execute_batch(&format!(
        "UPDATE devices SET bytes_up = bytes_up + 1, flows = flows + 1;
         UPDATE remote_hosts SET last_seen = {}, bytes_up = bytes_up + 1;",
        now - now.rem_euclid(DAY_MS) + 1
    ))
    .unwrap();
    assert_eq!(history.sync(&mut conn).unwrap().rows, 0);
    conn.execute("UPDATE devices SET name = 'work laptop'", [])
        .unwrap();
    conn.execute("DELETE FROM rules", []).unwrap();
    assert_eq!(history.sync(&mut conn).unwrap().rows, 2);
    assert_eq!(
        history_count(
            &config,
            "SELECT count(*) FROM devices WHERE name = 'work laptop'"
        ),
        1
    );
    assert_eq!(history_count(&config, "SELECT count(*) FROM rules"), 0);
    // The schedule: nothing committed since the last sync, nothing written.
    history.synced_at_seq = Some(5);
    assert!(history.sync_if_changed(&mut conn, 5).is_none());
    assert!(history.sync_if_changed(&mut conn, 6).is_some());
    dir.close().unwrap();
}

#[test]
fn an_older_netmons_snapshot_becomes_the_history_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let now = crate::time::now_ms();
    {
        // What the hourly snapshot of an older netmon left: a whole database.
        let conn = schema::open_rw(&config.persist_path).unwrap();
        fill(&conn, now);
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
            .unwrap();
    }
    assert_eq!(before_open(&config).unwrap(), Start::Migrated);
    let mut conn = schema::open_rw(&config.db_path).unwrap();
    History::open(&config, &mut conn, Start::Migrated)
        .unwrap()
        .unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM flows"),
        1,
        "restored whole"
    );
    assert_eq!(
        history_count(
            &config,
            "SELECT count(*) FROM sqlite_master WHERE name = 'flows'"
        ),
        0,
        "the snapshot was replaced by a history"
    );
    for table in [
        "devices",
        "remote_host_hours",
        "device_days",
        "incidents",
        "rules",
    ] {
        assert!(
            history_count(&config, &format!("SELECT count(*) FROM {table}")) > 0,
            "{table}"
        );
    }
    drop(conn);
    reboot(&config);
    assert_eq!(before_open(&config).unwrap(), Start::Fresh);
    let (conn, _h) = open(&config);
    assert_eq!(count(&conn, "SELECT count(*) FROM incidents"), 1);
    assert_eq!(count(&conn, "SELECT count(*) FROM flows"), 0);
    dir.close().unwrap();
}

#[test]
fn a_year_of_days_for_50_devices_and_20000_hosts_fits_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let now = crate::time::now_ms();
    let today = now - now.rem_euclid(DAY_MS);
    let (mut conn, mut history) = open(&config);
    {
        // Each host is seen on 20 days of the year; every device every day; the last
        // 90 days also have hour rows for devices and for one host in ten.
        let tx = conn.transaction().unwrap();
        let mut host = tx
            .prepare(
                "INSERT INTO remote_hosts (id, ip, first_seen, last_seen, rdns, asn, org)
                 VALUES (?1, ?2, ?3, ?3, 'host.example.net', 64500, 'Example Networks')",
            )
            .unwrap();
        let mut host_day = tx
            .prepare(
                "INSERT INTO remote_host_days (remote_host_id, day, bytes_up, bytes_down, flows_new)
                 VALUES (?1, ?2, 1000, 100000, 3)",
            )
            .unwrap();
        let mut host_hour = tx
            .prepare(
                "INSERT INTO remote_host_hours (remote_host_id, hour, bytes_up, bytes_down, flows_new)
                 VALUES (?1, ?2, 1000, 100000, 3)",
            )
            .unwrap();
        for h in 0..20_000i64 {
            let first = today - (365 - h % 345) * DAY_MS;
            let mut last = first;
            for k in 0..20 {
                last = first + k * DAY_MS;
                host_day.execute(params![h + 1, last]).unwrap();
                if h % 10 == 0 && last > today - 90 * DAY_MS {
                    host_hour
                        .execute(params![h + 1, last + 13 * HOUR_MS])
                        .unwrap();
                }
            }
            host.execute(params![
                h + 1,
                format!("198.18.{}.{}", h / 250, h % 250),
                last
            ])
            .unwrap();
        }
        let mut device_day = tx
            .prepare(
                "INSERT INTO device_days (device_id, day, bytes_up, bytes_down, flows_new)
                 VALUES (?1, ?2, 1000000, 100000000, 300)",
            )
            .unwrap();
        let mut device_hour = tx
            .prepare(
                "INSERT INTO device_hours (device_id, hour, bytes_up, bytes_down, flows_new)
                 VALUES (?1, ?2, 100000, 10000000, 30)",
            )
            .unwrap();
        for d in 1..=50i64 {
            tx.execute(
                "INSERT INTO devices (id, ip, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4)",
                params![d, format!("192.168.1.{d}"), today - 365 * DAY_MS, now],
            )
            .unwrap();
            for day in 1..=365 {
                device_day
                    .execute(params![d, today - day * DAY_MS])
                    .unwrap();
            }
            for hour in 0..90 * 24 {
                device_hour
                    .execute(params![d, today - 90 * DAY_MS + hour * HOUR_MS])
                    .unwrap();
            }
        }
        drop((host, host_day, host_hour, device_day, device_hour));
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)",
            params![ROLLED_KEY, today.to_string()],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    history.rebuild(&mut conn).unwrap();
    let budget = u64::from(config.persist_max_mb) << 20;
    let size = std::fs::metadata(&config.persist_path).unwrap().len();
    assert!(size <= budget, "{size} bytes over a budget of {budget}");
    // The devices' year of days is kept whole; hours and host days went first.
    assert_eq!(
        history_count(&config, "SELECT count(*) FROM device_days"),
        50 * 365
    );
    assert!(history_count(&config, "SELECT count(*) FROM remote_host_days") > 0);
    // The RAM copy agrees with the history, and a sync after the rebuild writes nothing.
    assert_eq!(
        count(&conn, "SELECT count(*) FROM remote_host_days"),
        history_count(&config, "SELECT count(*) FROM remote_host_days")
    );
    assert_eq!(history.sync(&mut conn).unwrap().rows, 0);
    dir.close().unwrap();
}

#[test]
fn a_damaged_history_is_kept_aside_and_a_new_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::create_dir_all(config.persist_path.parent().unwrap()).unwrap();
    std::fs::write(&config.persist_path, b"not a database at all, just text").unwrap();
    let (conn, _history) = open(&config);
    assert_eq!(count(&conn, "SELECT count(*) FROM devices"), 0);
    assert_eq!(
        history_version(&config.persist_path).unwrap(),
        HISTORY_VERSION
    );
    let kept = std::fs::read_dir(config.persist_path.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(kept, "the damaged file is kept for the owner");
    dir.close().unwrap();
}

#[test]
fn auto_is_on_only_for_ram_backed_paths() {
    let mut config = Config {
        persist: Persist::Auto,
        ..Config::default()
    };
    config.db_path = PathBuf::from("/dev/shm/netmon-test/netmon.db");
    assert!(enabled(&config), "/dev/shm is tmpfs");
    config.db_path = PathBuf::from("/proc/netmon.db");
    assert!(!enabled(&config), "procfs is not RAM storage for us");
}

#[test]
fn check_config_warns_when_the_budget_is_more_than_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let (_, free) = crate::disk::statvfs(dir.path()).unwrap();
    assert_eq!(budget_warning(&config), None, "4 MiB fit here");
    config.persist_max_mb = u32::try_from((free >> 20) + 64).unwrap_or(u32::MAX);
    let warning = budget_warning(&config).expect("a warning");
    assert!(warning.contains("persist_max_mb"), "{warning}");
    config.persist = Persist::Off;
    assert_eq!(budget_warning(&config), None, "no history, no warning");
    dir.close().unwrap();
}
