//! End-to-end tests of the writer: events in, rows and ticks out, through the loop's
//! `apply` and every table family. (Long: one scenario per behaviour, each readable on
//! its own.)

use super::*;
use crate::event::DumpComplete;
use crate::event::{Command, CommandReply, FlowChange, MAX_NOTES_CHARS, MAX_QUEUED_FLOW_CHANGES};
use crate::flow::Tuple;
use crate::flow::{Counters, CtFlow};
use crate::time::MINUTE_MS;
use std::net::IpAddr;
use tokio::sync::oneshot;

fn network() -> Arc<RwLock<Network>> {
    Arc::new(RwLock::new(Network::new(
        vec![
            "10.77.0.0/24".parse().unwrap(),
            "fd77::/64".parse().unwrap(),
        ],
        vec!["10.77.0.1".parse().unwrap(), "203.0.113.1".parse().unwrap()],
    )))
}

pub(crate) fn tcp_flow(ct_id: u32, src: &str, sport: u16, dst: &str, dport: u16) -> CtFlow {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let nat: IpAddr = if src.is_ipv4() {
        "203.0.113.1".parse().unwrap()
    } else {
        src
    };
    CtFlow {
        ct_id,
        family: if src.is_ipv4() { 4 } else { 6 },
        proto: PROTO_TCP_NUM,
        orig: Tuple {
            src,
            dst,
            sport: Some(sport),
            dport: Some(dport),
            icmp: None,
        },
        reply: Tuple {
            src: dst,
            dst: nat,
            sport: Some(dport),
            dport: Some(sport),
            icmp: None,
        },
        status: 0x8,
        tcp_state: Some(3),
        mark: 0,
        zone: 0,
        counters: Counters::default(),
        kernel_start_ms: None,
        kernel_stop_ms: None,
    }
}
const PROTO_TCP_NUM: u8 = 6;

fn change(flow: &CtFlow, at: i64, ended: bool) -> FlowChange {
    FlowChange {
        flow: flow.clone(),
        observed_ms: at,
        ended,
    }
}

fn batch(changes: Vec<FlowChange>) -> Event {
    Event::Flows(FlowBatch {
        changed: changes,
        dump_complete: None,
    })
}

fn writer(path: &Path) -> Writer {
    let config = Config {
        db_path: path.to_owned(),
        ..Config::default()
    };
    Writer::new(schema::open_rw(path).unwrap(), network(), &config).unwrap()
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

use std::path::Path;

#[test]
fn deltas_land_in_the_minute_they_were_observed() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;
    let mut f = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
    f.counters = Counters {
        orig_bytes: 100,
        orig_packets: 2,
        reply_bytes: 1000,
        reply_packets: 2,
    };
    w.apply(vec![batch(vec![change(&f, t0 + 1000, false)])])
        .unwrap();
    f.counters = Counters {
        orig_bytes: 300,
        orig_packets: 5,
        reply_bytes: 61_000,
        reply_packets: 50,
    };
    w.apply(vec![batch(vec![change(&f, t0 + MINUTE_MS + 5, false)])])
        .unwrap();
    f.counters.reply_bytes = 121_000;
    let tick = w
        .apply(vec![batch(vec![change(&f, t0 + 2 * MINUTE_MS + 5, true)])])
        .unwrap();
    assert_eq!(tick.flows_ended, 1);
    assert_eq!(tick.active_flows, 0);

    let c = &w.conn;
    let minutes: Vec<(i64, i64, i64)> = c
        .prepare("SELECT minute, bytes_up, bytes_down FROM device_minutes ORDER BY minute")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        minutes,
        vec![
            (t0, 100, 1000),
            (t0 + MINUTE_MS, 200, 60_000),
            (t0 + 2 * MINUTE_MS, 0, 60_000)
        ]
    );
    assert_eq!(
        count(c, "SELECT sum(bytes_down) FROM remote_host_minutes"),
        121_000
    );
    assert_eq!(count(c, "SELECT bytes_down FROM flows"), 121_000);
    assert_eq!(
        count(c, "SELECT ended_at FROM flows"),
        t0 + 2 * MINUTE_MS + 5
    );
    assert_eq!(count(c, "SELECT direction = 0 FROM flows"), 1);
    assert_eq!(count(c, "SELECT bytes_down FROM devices"), 121_000);
    assert_eq!(
        count(c, "SELECT flows FROM remote_host_ports WHERE port = 80"),
        1
    );
    drop(dir);
}

#[test]
fn restart_resumes_live_flows_without_duplicates_or_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let now = crate::time::now_ms();
    let mut f = tcp_flow(7, "10.77.0.10", 40001, "198.51.100.80", 443);
    let gone = tcp_flow(8, "10.77.0.10", 40002, "198.51.100.81", 443);
    f.counters.reply_bytes = 5000;
    {
        let mut w = writer(&path);
        w.apply(vec![batch(vec![
            change(&f, now, false),
            change(&gone, now, false),
        ])])
        .unwrap();
    }
    // "kill -9": the new writer reloads both as live, then the collector's start-up
    // dump reports only `f`, with grown counters.
    let mut w = writer(&path);
    assert_eq!(w.tables.flows.live.len(), 2);
    f.counters.reply_bytes = 8000;
    let ev = Event::Flows(FlowBatch {
        changed: vec![change(&f, now + 10, false)],
        dump_complete: Some(DumpComplete {
            started_ms: now + 5,
        }),
    });
    let tick = w.apply(vec![ev]).unwrap();
    assert_eq!(tick.flows_new, 0);
    assert_eq!(tick.flows_ended, 1);
    let c = &w.conn;
    assert_eq!(count(c, "SELECT count(*) FROM flows"), 2);
    assert_eq!(
        count(c, "SELECT count(*) FROM flows WHERE ended_at IS NULL"),
        1
    );
    assert_eq!(count(c, "SELECT sum(bytes_down) FROM device_minutes"), 8000);
    assert_eq!(
        count(c, "SELECT bytes_down FROM flows WHERE ct_id = 7"),
        8000
    );
    drop(dir);
}

#[test]
fn reused_ident_after_end_is_a_new_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let f = tcp_flow(9, "10.77.0.10", 40003, "198.51.100.80", 80);
    w.apply(vec![batch(vec![change(&f, 1000, false)])]).unwrap();
    w.apply(vec![batch(vec![change(&f, 2000, true)])]).unwrap();
    w.apply(vec![batch(vec![change(&f, 3000, false)])]).unwrap();
    assert_eq!(count(&w.conn, "SELECT count(*) FROM flows"), 2);
    assert_eq!(
        count(&w.conn, "SELECT count(*) FROM flows WHERE ended_at IS NULL"),
        1
    );
    drop(dir);
}

#[test]
fn router_local_and_lan_flows_create_no_remote_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let mut dns = tcp_flow(10, "10.77.0.10", 40004, "10.77.0.1", 53);
    dns.reply.src = "10.77.0.1".parse().unwrap();
    dns.reply.dst = "10.77.0.10".parse().unwrap();
    let mut lan = tcp_flow(11, "10.77.0.10", 40005, "10.77.0.11", 22);
    lan.reply.dst = "10.77.0.10".parse().unwrap();
    w.apply(vec![batch(vec![
        change(&dns, 1000, false),
        change(&lan, 1000, false),
    ])])
    .unwrap();
    let c = &w.conn;
    assert_eq!(count(c, "SELECT count(*) FROM remote_hosts"), 0);
    assert_eq!(
        count(c, "SELECT count(*) FROM flows WHERE direction = 2"),
        1
    );
    assert_eq!(
        count(c, "SELECT count(*) FROM flows WHERE direction = 3"),
        1
    );
    drop(dir);
}

#[test]
fn unique_counts_are_unions_across_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;
    let a = tcp_flow(20, "10.77.0.10", 40010, "198.51.100.1", 443);
    let b = tcp_flow(21, "10.77.0.10", 40011, "198.51.100.2", 443);
    let c2 = tcp_flow(22, "10.77.0.10", 40012, "198.51.100.1", 8443);
    w.apply(vec![batch(vec![change(&a, t0 + 1, false)])])
        .unwrap();
    w.apply(vec![batch(vec![change(&b, t0 + 2, false)])])
        .unwrap();
    w.apply(vec![batch(vec![change(&c2, t0 + 3, false)])])
        .unwrap();
    let (dsts, ports, flows): (i64, i64, i64) = w
        .conn
        .query_row(
            "SELECT unique_dsts, unique_ports, flows_new FROM device_minutes",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((dsts, ports, flows), (2, 2, 3));
    drop(dir);
}

#[test]
fn rename_command_is_applied_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let f = tcp_flow(30, "10.77.0.10", 40020, "198.51.100.80", 80);
    w.apply(vec![batch(vec![change(&f, 1000, false)])]).unwrap();
    let (tx, mut rx) = oneshot::channel();
    let cmd = Command::RenameDevice {
        device_id: 1,
        name: " <b>laptop</b> ".into(),
    };
    let tick = w.apply(vec![Event::Command(cmd, tx)]).unwrap();
    assert!(tick.devices_changed);
    assert_eq!(rx.try_recv().unwrap(), Ok(CommandReply::Done));
    let name: String = w
        .conn
        .query_row("SELECT name FROM devices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "<b>laptop</b>");
    let (tx, mut rx) = oneshot::channel();
    w.apply(vec![Event::Command(
        Command::RenameDevice {
            device_id: 99,
            name: "x".into(),
        },
        tx,
    )]);
    assert_eq!(
        rx.try_recv().unwrap(),
        Err(CommandError::NotFound {
            what: "device",
            id: 99
        })
    );
    drop(dir);
}

#[test]
fn closed_tcp_connection_ends_at_close_and_lingering_entry_is_not_a_new_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let now = crate::time::now_ms();
    let mut f = tcp_flow(40, "10.77.0.10", 40030, "198.51.100.80", 80);
    {
        let mut w = writer(&path);
        w.apply(vec![batch(vec![change(&f, now, false)])]).unwrap();
        f.tcp_state = Some(7); // TIME_WAIT, from an UPDATE event without counters
        let tick = w
            .apply(vec![batch(vec![change(&f, now + 100, false)])])
            .unwrap();
        assert_eq!((tick.flows_ended, tick.active_flows), (1, 0));
        f.counters.reply_bytes = 9000; // the next dump brings the final counters
        w.apply(vec![batch(vec![change(&f, now + 600, false)])])
            .unwrap();
        let (ended, bytes): (i64, i64) = w
            .conn
            .query_row("SELECT ended_at, bytes_down FROM flows", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((ended, bytes), (now + 100, 9000));
    }
    // Restart while the entry lingers: the dump reports it again, still one row.
    let mut w = writer(&path);
    w.apply(vec![batch(vec![change(&f, now + 1000, false)])])
        .unwrap();
    w.apply(vec![batch(vec![change(&f, now + 2000, true)])])
        .unwrap();
    assert_eq!(count(&w.conn, "SELECT count(*) FROM flows"), 1);
    assert_eq!(count(&w.conn, "SELECT ended_at FROM flows"), now + 100);
    assert_eq!(
        count(&w.conn, "SELECT sum(bytes_down) FROM device_minutes"),
        9000
    );
    assert!(w.tables.flows.live.is_empty());
    drop(dir);
}

// --- DNS attribution (store::dns) -----------------------------------------------

fn answer(client: &str, name: &str, ip: &str, ttl: u32, at: i64) -> Event {
    use crate::event::{AnswerData, DnsAnswer, DnsObservation, DnsSource};
    Event::Dns(vec![DnsObservation {
        ts_ms: at,
        client: client.parse().unwrap(),
        qname: name.into(),
        qtype: 1,
        rcode: Some(0),
        answers: vec![DnsAnswer {
            name: name.into(),
            ttl: Some(ttl),
            data: AnswerData::Addr(ip.parse().unwrap()),
        }],
        source: DnsSource::Packet,
    }])
}

fn flow_name(conn: &Connection, sport: u16) -> (Option<String>, Option<i64>) {
    conn.query_row(
        "SELECT n.name, f.dns_match FROM flows f LEFT JOIN dns_names n ON n.id = f.qname_id
             WHERE f.src_port = ?1",
        [sport],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn flows_get_their_own_clients_name_with_a_confidence() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let t = crate::time::now_ms() - 600_000;
    w.apply(vec![
        answer("10.77.0.10", "a.test", "198.51.100.7", 60, t),
        answer("10.77.0.11", "b.test", "198.51.100.7", 60, t + 1_000),
        answer("10.77.0.10", "old.test", "198.51.100.8", 60, t),
    ])
    .unwrap();
    let f1 = tcp_flow(1, "10.77.0.10", 40001, "198.51.100.7", 443);
    let f2 = tcp_flow(2, "10.77.0.11", 40002, "198.51.100.7", 443);
    let f3 = tcp_flow(3, "10.77.0.12", 40003, "198.51.100.7", 443);
    // Starts 5 min after an answer with TTL 60 s + 60 s slack: expired.
    let f4 = tcp_flow(4, "10.77.0.10", 40004, "198.51.100.8", 443);
    let f5 = tcp_flow(5, "10.77.0.10", 40005, "198.51.100.9", 443);
    w.apply(vec![batch(vec![
        change(&f1, t + 2_000, false),
        change(&f2, t + 2_000, false),
        change(&f3, t + 2_000, false),
        change(&f4, t + 300_000, false),
        change(&f5, t + 2_000, false),
    ])])
    .unwrap();
    assert_eq!(flow_name(&w.conn, 40001), (Some("a.test".into()), Some(1)));
    assert_eq!(flow_name(&w.conn, 40002), (Some("b.test".into()), Some(1)));
    assert_eq!(flow_name(&w.conn, 40003), (Some("b.test".into()), Some(3)));
    assert_eq!(
        flow_name(&w.conn, 40004),
        (Some("old.test".into()), Some(2))
    );
    assert_eq!(flow_name(&w.conn, 40005), (None, None));
    assert_eq!(
        count(
            &w.conn,
            "SELECT count(*) FROM remote_host_domains d JOIN dns_names n ON n.id = d.qname_id
                 WHERE n.name IN ('a.test', 'b.test')"
        ),
        2
    );
    drop(dir);
}

#[test]
fn an_answer_arriving_after_its_flow_still_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let t = crate::time::now_ms() - 10_000;
    let f = tcp_flow(1, "10.77.0.10", 40001, "198.51.100.7", 443);
    let g = tcp_flow(2, "10.77.0.10", 40002, "198.51.100.7", 443);
    // g started before the answer: the answer cannot explain it.
    w.apply(vec![batch(vec![change(&g, t - 5_000, false)])])
        .unwrap();
    w.apply(vec![batch(vec![change(&f, t + 20, false)])])
        .unwrap();
    assert_eq!(flow_name(&w.conn, 40001), (None, None));
    w.apply(vec![answer(
        "10.77.0.10",
        "late.test",
        "198.51.100.7",
        60,
        t,
    )])
    .unwrap();
    assert_eq!(
        flow_name(&w.conn, 40001),
        (Some("late.test".into()), Some(1))
    );
    assert_eq!(flow_name(&w.conn, 40002), (None, None));
    assert_eq!(
        count(&w.conn, "SELECT sum(queries) FROM dns_device_minutes"),
        1
    );
    drop(dir);
}

fn tls(client: &str, sport: u16, server: &str, name: &str, at: i64) -> Event {
    Event::Tls(vec![crate::event::TlsName {
        ts_ms: at,
        conn: (client.parse().unwrap(), sport, server.parse().unwrap(), 443),
        name: name.into(),
    }])
}

#[test]
fn tls_server_names_name_flows_dns_did_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let t = crate::time::now_ms() - 10_000;
    w.apply(vec![answer(
        "10.77.0.10",
        "dns.test",
        "198.51.100.7",
        60,
        t,
    )])
    .unwrap();
    w.apply(vec![answer(
        "10.77.0.11",
        "guess.test",
        "198.51.100.9",
        60,
        t,
    )])
    .unwrap();
    // The ClientHello before its flow (the usual order), after it, and for flows DNS
    // named exactly (kept) or only by another client's answer (replaced).
    w.apply(vec![
        tls("10.77.0.10", 40001, "198.51.100.8", "first.test", t + 10),
        tls("10.77.0.10", 40003, "198.51.100.7", "other.test", t + 10),
    ])
    .unwrap();
    let f1 = tcp_flow(1, "10.77.0.10", 40001, "198.51.100.8", 443);
    let f2 = tcp_flow(2, "10.77.0.10", 40002, "198.51.100.8", 443);
    let f3 = tcp_flow(3, "10.77.0.10", 40003, "198.51.100.7", 443);
    let f4 = tcp_flow(4, "10.77.0.10", 40004, "198.51.100.9", 443);
    w.apply(vec![batch(vec![
        change(&f1, t, false),
        change(&f2, t, false),
        change(&f3, t + 20, false),
        change(&f4, t + 20, false),
    ])])
    .unwrap();
    assert_eq!(
        flow_name(&w.conn, 40001),
        (Some("first.test".into()), Some(4))
    );
    assert_eq!(flow_name(&w.conn, 40002), (None, None));
    assert_eq!(
        flow_name(&w.conn, 40004),
        (Some("guess.test".into()), Some(3))
    );
    w.apply(vec![
        tls("10.77.0.10", 40002, "198.51.100.8", "late.test", t + 50),
        tls("10.77.0.10", 40004, "198.51.100.9", "real.test", t + 50),
    ])
    .unwrap();
    assert_eq!(
        flow_name(&w.conn, 40002),
        (Some("late.test".into()), Some(4))
    );
    assert_eq!(
        flow_name(&w.conn, 40003),
        (Some("dns.test".into()), Some(1))
    );
    assert_eq!(
        flow_name(&w.conn, 40004),
        (Some("real.test".into()), Some(4))
    );
    // The remote host knows the names it was reached by.
    assert_eq!(
        count(
            &w.conn,
            "SELECT count(*) FROM remote_host_domains d JOIN dns_names n ON n.id = d.qname_id
                 WHERE n.name IN ('first.test', 'late.test', 'real.test')"
        ),
        3
    );
    drop(dir);
}

#[test]
fn a_device_using_encrypted_dns_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let t = crate::time::now_ms() - 10_000;
    // The device looks its DNS-over-HTTPS resolver up, then talks HTTPS to it.
    w.apply(vec![answer(
        "10.77.0.10",
        "dns.nextdns.io",
        "198.51.100.53",
        60,
        t,
    )])
    .unwrap();
    let f = tcp_flow(1, "10.77.0.10", 40001, "198.51.100.53", 443);
    let g = tcp_flow(2, "10.77.0.11", 40002, "198.51.100.54", 443);
    w.apply(vec![batch(vec![
        change(&f, t + 10, false),
        change(&g, t + 10, false),
    ])])
    .unwrap();
    let shown = |ip: &str| -> Option<String> {
        w.conn
            .query_row(
                "SELECT encrypted_dns FROM devices WHERE ip = ?1",
                [ip],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(
        shown("10.77.0.10").as_deref(),
        Some("DNS-over-HTTPS via dns.nextdns.io")
    );
    assert_eq!(shown("10.77.0.11"), None);
    drop(dir);
}

#[test]
fn device_notes_are_set_cleared_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let f = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
    w.apply(vec![batch(vec![change(&f, 1_700_000_000_000, false)])])
        .unwrap();
    let id = count(&w.conn, "SELECT id FROM devices");
    let run = |w: &mut Writer, notes: String| {
        let (tx, mut rx) = oneshot::channel();
        let cmd = Command::SetDeviceNotes {
            device_id: id,
            notes,
        };
        w.apply(vec![Event::Command(cmd, tx)]).unwrap();
        rx.try_recv().unwrap()
    };
    assert_eq!(
        run(&mut w, "  in the hall\nblue case ".into()),
        Ok(CommandReply::Done)
    );
    let notes: Option<String> = w
        .conn
        .query_row("SELECT notes FROM devices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(notes.as_deref(), Some("in the hall\nblue case"));
    assert!(run(&mut w, "x".repeat(MAX_NOTES_CHARS + 1)).is_err());
    assert_eq!(run(&mut w, String::new()), Ok(CommandReply::Done));
    assert_eq!(count(&w.conn, "SELECT notes IS NULL FROM devices"), 1);
    drop(dir);
}

fn sighting(ip: &str, mac: u8, hostname: Option<&str>, at: i64) -> Event {
    use crate::event::{Sighting, SightingSource};
    Event::Identity(vec![Sighting {
        ip: ip.parse().unwrap(),
        mac: [0x3c, 0x22, 0xfb, 0, 0, mac],
        hostname: hostname.map(str::to_owned),
        source: SightingSource::Dhcp,
        at_ms: at,
    }])
}

#[test]
fn answers_and_inbound_packets_make_no_device_and_devices_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        db_path: dir.path().join("t.db"),
        retention: crate::config::Retention {
            max_devices: 10,
            ..Default::default()
        },
        ..Config::default()
    };
    let mut w = Writer::new(
        schema::open_rw(&config.db_path).unwrap(),
        network(),
        &config,
    )
    .unwrap();
    let t0 = 1_700_000_000_000;
    let devices = |w: &Writer| count(&w.conn, "SELECT count(*) FROM devices");
    // An answer to an address nobody has seen is stored without a device.
    w.apply(vec![answer(
        "fd77::99",
        "shop.example.test",
        "203.0.113.84",
        300,
        t0,
    )])
    .unwrap();
    assert_eq!(devices(&w), 0);
    // An inbound flow to an unknown LAN address: no device either.
    let mut inbound = tcp_flow(1, "198.51.100.7", 53, "fd77::98", 2222);
    inbound.reply.dst = inbound.orig.src;
    w.apply(vec![batch(vec![change(&inbound, t0 + 10, false)])])
        .unwrap();
    assert_eq!(devices(&w), 0);
    assert_eq!(
        count(
            &w.conn,
            "SELECT count(*) FROM flows WHERE device_id IS NULL"
        ),
        1
    );
    // The address starts a flow of its own: now it is a device, and claims the
    // queries it made a moment before.
    let out = tcp_flow(2, "fd77::99", 40000, "2001:db8:77::84", 443);
    w.apply(vec![batch(vec![change(&out, t0 + 20, false)])])
        .unwrap();
    assert_eq!(devices(&w), 1);
    assert_eq!(
        count(
            &w.conn,
            "SELECT count(*) FROM dns_queries WHERE device_id IS NOT NULL"
        ),
        1
    );
    // A sighting (neighbour table, lease) makes a device too; past the cap neither
    // path does.
    for i in 0..20u8 {
        let ip = format!("10.77.0.{}", 100 + i);
        w.apply(vec![sighting(&ip, i, None, t0 + 30)]).unwrap();
        let f = tcp_flow(
            100 + u32::from(i),
            &format!("fd77::{}", 200 + i),
            40000,
            "2001:db8:77::84",
            443,
        );
        w.apply(vec![batch(vec![change(&f, t0 + 40, false)])])
            .unwrap();
    }
    assert_eq!(devices(&w), 10);
}

#[test]
fn idle_address_only_devices_are_pruned_in_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let t0 = 1_700_000_000_000;
    let flows: Vec<FlowChange> = (1..=50u16)
        .map(|i| {
            let src = format!("fd77::{i:x}");
            let f = tcp_flow(u32::from(i), &src, 40000, "2001:db8:77::84", 443);
            change(&f, t0, true)
        })
        .collect();
    w.apply(vec![batch(flows)]).unwrap();
    w.apply(vec![sighting("10.77.0.5", 1, Some("laptop"), t0 + 1)])
        .unwrap();
    w.conn
        .execute("UPDATE devices SET name = 'tv' WHERE ip = 'fd77::2'", [])
        .unwrap();
    // Retention took every flow but one device's.
    w.conn
        .execute(
            "DELETE FROM flows WHERE device_id <> (SELECT id FROM devices WHERE ip = 'fd77::3')",
            [],
        )
        .unwrap();
    let tx = w.conn.transaction().unwrap();
    let pruned = crate::store::devices::prune_idle(&tx, 1000).unwrap();
    tx.commit().unwrap();
    assert_eq!(pruned, 48);
    let left: Vec<String> = w
        .conn
        .prepare("SELECT ip FROM devices ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // The named one, the one with a flow, and the one with a MAC (also the newest).
    assert_eq!(left, ["fd77::2", "fd77::3", "10.77.0.5"]);
    assert_eq!(count(&w.conn, "SELECT count(*) FROM device_addrs"), 3);
    // The pruned devices' rollups went with them (the MAC's device had no traffic).
    assert_eq!(
        count(
            &w.conn,
            "SELECT count(DISTINCT device_id) FROM device_minutes"
        ),
        2
    );
}

#[test]
fn devices_are_keyed_by_mac_and_address_only_history_merges_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;
    // Two addresses, no MAC known yet: two address-only devices with traffic.
    let mut a = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
    a.counters.orig_bytes = 100;
    let mut b = tcp_flow(2, "10.77.0.11", 40001, "198.51.100.80", 80);
    b.counters.orig_bytes = 50;
    w.apply(vec![batch(vec![
        change(&a, t0 + 1000, false),
        change(&b, t0 + 1000, false),
    ])])
    .unwrap();
    w.conn
        .execute(
            "UPDATE devices SET name = 'kitchen' WHERE ip = '10.77.0.11'",
            [],
        )
        .unwrap();
    assert_eq!(count(&w.conn, "SELECT count(*) FROM devices"), 2);

    // The lease names .10's MAC: that device takes it (no new device).
    let tick = w
        .apply(vec![sighting("10.77.0.10", 1, Some("laptop"), t0 + 2000)])
        .unwrap();
    assert!(tick.devices_changed);
    assert_eq!(count(&w.conn, "SELECT count(*) FROM devices"), 2);
    let laptop = count(
        &w.conn,
        "SELECT id FROM devices WHERE mac = '3c:22:fb:00:00:01'",
    );
    assert_eq!(
        count(
            &w.conn,
            &format!("SELECT hostname = 'laptop' FROM devices WHERE id = {laptop}")
        ),
        1
    );
    // Detection rows of .11's device: a hit, an incident, a device-scoped rule.
    let kitchen = count(&w.conn, "SELECT id FROM devices WHERE ip = '10.77.0.11'");
    w.conn
            .execute_batch(&format!(
                "INSERT INTO hits (ts, last_ts, device_id, score, codes, reasons, fingerprint)
                   VALUES (1, 1, {kitchen}, 60, 'NEW_DST', '[]', 'h');
                 INSERT INTO incidents (fingerprint, device_id, codes, title, first_seen, last_seen, max_score)
                   VALUES ('i', {kitchen}, 'NEW_DST', 't', 1, 1, 60);
                 INSERT INTO rules (action, device_id, port_lo, port_hi, created_at)
                   VALUES ('allow', {kitchen}, 6881, 6889, 1);"
            ))
            .unwrap();
    // Its address changes to .11 (same MAC): .11's address-only device merges in —
    // its flow, rollups, totals, the owner's name and its detection rows — and is gone.
    w.apply(vec![sighting("10.77.0.11", 1, None, t0 + 3000)])
        .unwrap();
    let c = &w.conn;
    assert_eq!(count(c, "SELECT count(*) FROM devices"), 1);
    for table in ["hits", "incidents", "rules"] {
        assert_eq!(
            count(c, &format!("SELECT device_id FROM {table}")),
            laptop,
            "{table} follow the merge"
        );
    }
    assert_eq!(
        count(
            c,
            &format!("SELECT count(*) FROM flows WHERE device_id = {laptop}")
        ),
        2
    );
    assert_eq!(
        count(
            c,
            &format!("SELECT bytes_up FROM device_minutes WHERE device_id = {laptop}")
        ),
        150
    );
    assert_eq!(count(c, "SELECT bytes_up FROM devices"), 150);
    assert_eq!(count(c, "SELECT name = 'kitchen' FROM devices"), 1);
    assert_eq!(
        count(
            c,
            &format!("SELECT count(*) FROM device_addrs WHERE device_id = {laptop}")
        ),
        2
    );
    // Later counters of the merged device's live flow land on the survivor.
    b.counters.orig_bytes = 80;
    w.apply(vec![batch(vec![change(&b, t0 + 4000, false)])])
        .unwrap();
    assert_eq!(
        count(
            &w.conn,
            &format!("SELECT bytes_up FROM device_minutes WHERE device_id = {laptop}")
        ),
        180
    );
    // .11 is handed to another MAC: the address moves, its past flows stay.
    w.apply(vec![sighting("10.77.0.11", 2, Some("phone"), t0 + 5000)])
        .unwrap();
    let c = &w.conn;
    let phone = count(c, "SELECT id FROM devices WHERE mac = '3c:22:fb:00:00:02'");
    assert_ne!(phone, laptop);
    assert_eq!(
        count(
            c,
            "SELECT device_id FROM device_addrs WHERE ip = '10.77.0.11'"
        ),
        phone
    );
    assert_eq!(
        count(
            c,
            &format!("SELECT count(*) FROM flows WHERE device_id = {laptop}")
        ),
        2
    );
    let mut n = tcp_flow(3, "10.77.0.11", 40002, "198.51.100.80", 80);
    n.counters.orig_bytes = 7;
    w.apply(vec![batch(vec![change(&n, t0 + 6000, false)])])
        .unwrap();
    assert_eq!(
        count(
            &w.conn,
            &format!("SELECT count(*) FROM flows WHERE device_id = {phone}")
        ),
        1
    );
    // Sightings outside the LAN (the WAN gateway) are not devices.
    w.apply(vec![sighting("203.0.113.80", 9, None, t0 + 7000)])
        .unwrap();
    assert_eq!(count(&w.conn, "SELECT count(*) FROM devices"), 2);
    drop(dir);
}

// --- failed commits ----------------------------------------------------------------

/// Caps the database at its current size: the next page SQLite allocates fails with
/// `SQLITE_FULL`, as on a full disk (`PRAGMA max_page_count`).
fn fill_disk(w: &Writer) {
    let pages = count(&w.conn, "PRAGMA page_count");
    count(&w.conn, &format!("PRAGMA max_page_count = {pages}"));
}

fn free_disk(w: &Writer) {
    count(&w.conn, "PRAGMA max_page_count = 1000000000");
}

#[test]
fn a_full_disk_holds_the_batch_and_a_later_retry_stores_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let t0 = crate::time::now_ms();
    let mut long = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 443);
    long.counters.reply_bytes = 1000;
    w.apply(vec![batch(vec![change(&long, t0, false)])])
        .unwrap();

    fill_disk(&w);
    // Enough new rows to need new pages: the long flow's update, a flow that ended,
    // and 400 new ones.
    long.counters.reply_bytes = 5000;
    let ended = tcp_flow(2, "10.77.0.10", 40001, "198.51.100.81", 80);
    let mut changes = vec![
        change(&long, t0 + 100, false),
        change(&ended, t0 + 100, true),
    ];
    for i in 0..400 {
        let f = tcp_flow(100 + i, "10.77.0.10", 41000 + i as u16, "198.51.100.82", 80);
        changes.push(change(&f, t0 + 100, false));
    }
    let (tx, mut reply) = oneshot::channel();
    let rename = Command::RenameDevice {
        device_id: 1,
        name: "laptop".into(),
    };
    assert!(
        w.apply(vec![batch(changes), Event::Command(rename, tx)])
            .is_none()
    );
    // The command is answered with the error, the data is held, and it shows.
    assert!(reply.try_recv().unwrap().is_err());
    assert_eq!(w.held.as_ref().map(|h| h.changes), Some(402));
    let failure = w.storage.failure().expect("the failure is visible");
    assert_eq!(failure.held_changes, 402);
    assert!(failure.error.contains("full"), "{failure:?}");
    assert_eq!(count(&w.conn, "SELECT count(*) FROM flows"), 1);
    assert_eq!(
        w.tables.flows.live[&long.ident()].counters.reply_bytes,
        1000
    );

    // Still full: the retry fails, the batch stays held, the pause grows.
    let first_retry = w.held.as_ref().unwrap().retry_at;
    assert!(w.retry_held().is_none());
    assert!(w.held.as_ref().unwrap().retry_at > first_retry);
    assert_eq!(w.failures, 2);

    // Room again: one retry stores everything once, with the right deltas.
    free_disk(&w);
    let tick = w.retry_held().expect("the retry commits");
    assert_eq!((tick.flows_new, tick.flows_ended), (401, 1));
    assert!(w.held.is_none() && w.storage.failure().is_none());
    let c = &w.conn;
    assert_eq!(count(c, "SELECT count(*) FROM flows"), 402);
    assert_eq!(
        count(c, "SELECT count(*) FROM flows WHERE ended_at IS NOT NULL"),
        1
    );
    assert_eq!(
        count(c, "SELECT bytes_down FROM flows WHERE ct_id = 1"),
        5000
    );
    assert_eq!(count(c, "SELECT sum(bytes_down) FROM device_minutes"), 5000);
    assert_eq!(count(c, "SELECT flows FROM devices"), 402);
    drop(dir);
}

/// The channel is bounded by the flow changes it holds, not only by messages: past
/// MAX_QUEUED_FLOW_CHANGES a flow message comes back (the collector coalesces it),
/// other events still go, and what the writer takes makes room again.
#[test]
fn a_held_front_is_split_in_order_with_the_dump_marker_last() {
    let flows = |from: u32, n: u32| {
        let changes = (from..from + n)
            .map(|i| {
                change(
                    &tcp_flow(i, "10.77.0.10", i as u16, "198.51.100.80", 443),
                    1,
                    false,
                )
            })
            .collect();
        batch(changes)
    };
    let mut events = vec![flows(1, 10), flows(11, 10)];
    let rest = split_front(&mut events, 15);
    let sizes = |e: &[Event]| e.iter().map(changes_in).collect::<Vec<_>>();
    assert_eq!((sizes(&events), sizes(&rest)), (vec![10, 5], vec![5]));
    let mut one = vec![flows(1, 8)];
    let rest = split_front(&mut one, 3);
    assert_eq!((sizes(&one), sizes(&rest)), (vec![3], vec![5]));
    assert!(split_front(&mut one, 3).is_empty());
}

/// A disk full of netmon's own rows: the held batch gets room from the storage
/// budget before its next attempt, with nothing freed from outside.
#[test]
fn a_held_batch_gets_room_from_the_budget_on_a_disk_full_of_old_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut config = Config {
        db_path: path.clone(),
        ..Config::default()
    };
    config.retention.max_db_mb = 4;
    config.retention.max_flows_per_device = 1_000_000;
    let mut w = Writer::new(schema::open_rw(&path).unwrap(), network(), &config).unwrap();
    let t0 = crate::time::now_ms() - 3_600_000;
    // ≈ 3.5 MiB of ended flows: past the budget's high mark.
    for b in 0..6u32 {
        let changes = (0..2_000u32)
            .map(|i| {
                let n = b * 2_000 + i;
                let f = tcp_flow(
                    n + 1,
                    "10.77.0.10",
                    (n % 60_000) as u16 + 1,
                    "198.51.100.80",
                    443,
                );
                change(&f, t0 + i64::from(n), true)
            })
            .collect();
        w.apply(vec![batch(changes)]).expect("commit");
    }
    let before = count(&w.conn, "SELECT count(*) FROM flows");
    fill_disk(&w);
    let changes = (0..400u32)
        .map(|i| {
            let f = tcp_flow(
                100_000 + i,
                "10.77.0.10",
                2_000 + i as u16,
                "198.51.100.81",
                80,
            );
            change(&f, t0 + 3_000_000, false)
        })
        .collect();
    assert!(w.apply(vec![batch(changes)]).is_none());
    assert!(w.held.is_some() && w.storage.failure().is_some());

    // The file may not grow (`max_page_count`): only pruning makes room.
    w.make_room();
    let tick = w.retry_held().expect("the retry after making room commits");
    assert_eq!(tick.flows_new, 400);
    assert!(w.held.is_none() && w.storage.failure().is_none());
    let after = count(&w.conn, "SELECT count(*) FROM flows");
    assert!(after < before, "nothing pruned: {before} → {after} flows");
    assert_eq!(
        count(&w.conn, "SELECT count(*) FROM flows WHERE ct_id >= 100000"),
        400
    );
    drop(dir);
}

#[test]
fn queued_flow_changes_are_bounded() {
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let handle = WriterHandle::new(tx, Arc::default());
    let f = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
    let full = || batch(vec![change(&f, 1, false); MAX_QUEUED_FLOW_CHANGES / 2]);
    assert!(handle.try_send(full()).is_ok());
    assert!(handle.try_send(full()).is_ok());
    assert!(handle.try_send(batch(vec![change(&f, 1, false)])).is_err());
    assert!(
        handle.try_send(Event::Drops(Vec::new())).is_ok(),
        "not a flow message"
    );
    let queued = Queued {
        messages: handle.depth.clone(),
        flow_changes: handle.queued_flows.clone(),
    };
    let taken: Vec<Event> = vec![rx.recv().unwrap()];
    queued.taken(&taken, false);
    assert_eq!(handle.depth(), 2);
    assert!(handle.try_send(batch(vec![change(&f, 1, false)])).is_ok());
    // A message larger than the bound still goes when nothing waits.
    let (tx, _rx) = std::sync::mpsc::sync_channel(4);
    let handle = WriterHandle::new(tx, Arc::default());
    let huge = batch(vec![change(&f, 1, false); MAX_QUEUED_FLOW_CHANGES + 1]);
    assert!(handle.try_send(huge).is_ok());
}

#[test]
fn a_batch_failing_for_another_reason_is_dropped_not_held() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    w.conn
        .execute_batch("DROP TABLE remote_host_ports")
        .unwrap();
    let f = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
    assert!(
        w.apply(vec![batch(vec![change(&f, 1_700_000_000_000, false)])])
            .is_none()
    );
    assert!(w.held.is_none(), "a bad batch must never stall the writer");
    assert!(w.storage.failure().is_none());
    assert!(w.tables.flows.live.is_empty(), "state follows the rollback");
    drop(dir);
}

#[test]
fn commands_are_refused_at_once_while_writes_fail() {
    let (tx, _rx) = std::sync::mpsc::sync_channel(1);
    let handle = WriterHandle::new(tx, Arc::default());
    let full =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
    handle.storage.failing(&full, 7);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rename = Command::RenameDevice {
        device_id: 1,
        name: "x".into(),
    };
    let answer = rt.block_on(handle.command(rename)).unwrap_err();
    assert!(matches!(answer, CommandError::Storage(_)), "{answer:?}");
    assert!(
        answer.to_string().contains("not accepting writes"),
        "{answer}"
    );
    assert_eq!(handle.write_failure().map(|f| f.held_changes), Some(7));
    handle.storage.working();
    assert!(handle.write_failure().is_none());
}

/// A port scan through the writer: one device-level hit and one incident, repeats
/// fold into them; a suppress rule with `reevaluate` acknowledges the open incident;
/// ack, mute and clear work on the tables.
#[test]
fn a_scan_is_one_incident_and_rules_and_commands_apply() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(&dir.path().join("t.db"));
    let now = crate::time::now_ms();
    let scan = |w: &mut Writer, from: u16| {
        let changes = (from..from + 40)
            .map(|i| {
                let dst = format!("203.0.113.{}", 100 + i % 25);
                let f = tcp_flow(u32::from(i) + 1, "10.77.0.10", 30000 + i, &dst, 1000 + i);
                change(&f, now, true)
            })
            .collect();
        w.apply(vec![batch(changes)]).unwrap();
    };
    let command = |w: &mut Writer, cmd: Command| {
        let (tx, mut rx) = oneshot::channel();
        w.apply(vec![Event::Command(cmd, tx)]).unwrap();
        rx.try_recv().unwrap()
    };
    scan(&mut w, 0);
    let (fp, codes): (String, String) = w
        .conn
        .query_row("SELECT fingerprint, codes FROM hits", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (fp.as_str(), codes.as_str()),
        ("1|device|PORT_SCAN_LIKE", "PORT_SCAN_LIKE")
    );
    scan(&mut w, 40);
    assert_eq!(count(&w.conn, "SELECT count(*) FROM incidents"), 1);
    assert_eq!(count(&w.conn, "SELECT count FROM incidents"), 2);
    assert_eq!(count(&w.conn, "SELECT count FROM hits"), 2);
    // The learning device's scan flows alone (RARE_PORT + DIRECT_IP) are no hits.
    assert_eq!(count(&w.conn, "SELECT count(*) FROM hits"), 1);

    let rule = crate::detect::rules::RuleSpec {
        action: crate::detect::rules::Action::Suppress,
        code: Some(crate::detect::Code::PortScanLike),
        device_id: Some(1),
        ..Default::default()
    };
    let reply = command(
        &mut w,
        Command::SaveRule {
            id: None,
            rule: Box::new(rule),
            reevaluate: true,
        },
    );
    assert_eq!(reply, Ok(CommandReply::Id(1)));
    let notes: String = w
        .conn
        .query_row(
            "SELECT notes FROM incidents WHERE acked_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(notes.contains("rule #1"), "{notes}");
    assert_eq!(
        count(&w.conn, "SELECT count(*) FROM hits WHERE acked_at IS NULL"),
        0
    );
    scan(&mut w, 80);
    assert_eq!(
        count(&w.conn, "SELECT count FROM hits"),
        2,
        "suppressed: no repeat"
    );
    assert_eq!(count(&w.conn, "SELECT matched FROM rules"), 1);

    let reply = command(
        &mut w,
        Command::MuteIncident {
            incident_id: 1,
            until_ms: now + 3_600_000,
        },
    );
    assert_eq!(reply, Ok(CommandReply::Done));
    assert_eq!(
        count(&w.conn, "SELECT muted_until FROM incidents"),
        now + 3_600_000
    );
    let reply = command(&mut w, Command::AckIncident { incident_id: 9 });
    assert!(
        matches!(reply, Err(CommandError::NotFound { .. })),
        "{reply:?}"
    );
    let reply = command(&mut w, Command::ClearAcknowledged);
    assert_eq!(reply, Ok(CommandReply::Done));
    assert_eq!(count(&w.conn, "SELECT count(*) FROM incidents"), 0);
    assert_eq!(count(&w.conn, "SELECT count(*) FROM hits"), 0);
    let reply = command(&mut w, Command::DeleteRule { rule_id: 1 });
    assert_eq!(reply, Ok(CommandReply::Done));
    scan(&mut w, 120);
    assert_eq!(
        count(&w.conn, "SELECT count(*) FROM incidents"),
        1,
        "rule gone"
    );
    drop(dir);
}
