//! The flow path end to end, one test per property, proven in the router lab (`tests/lab/`).
//!
//! Each test builds its own lab (namespaces lan / rtr / wan, NAT and conntrack in rtr),
//! runs netmon inside rtr as on a router, drives real traffic from the LAN client and
//! compares what netmon stored and serves with the lab's own truth: what the client
//! sent and received, the router's nft counters, and `conntrack -L`.
//!
//! Needs root and the packages `.ci/run` installs. Run one with e.g.
//! `cargo test --test lab_spine item3 -- --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long after a connection closes netmon must show it ended.
const ENDED_WITHIN: Duration = Duration::from_secs(3);

/// IP-level header bytes conntrack counts per TCP packet: IPv4 20 / IPv6 40, TCP 20 +
/// 12 of timestamp option (Linux default).
fn tcp_packet_overhead(v6: bool) -> u64 {
    if v6 { 40 + 32 } else { 20 + 32 }
}

/// Header allowance for one direction of a TCP connection that carried `down` bytes one
/// way and `up` bytes the other (application payload).
///
/// Conntrack counts IP-level bytes: payload plus IP and TCP headers of every packet it
/// saw. With GRO on the veth links many segments can arrive as one packet (the 5 MiB
/// download was counted as ~150 packets, not ~3 600), so the header share is usually far
/// smaller; the allowance is the worst case without GRO: one packet per MSS-sized
/// segment of data in *either* direction (each needs at most one ACK back), plus 12
/// control packets (SYN, SYN-ACK, FIN×2, final ACKs, window updates), each with the
/// full header. MSS on a 1500-byte MTU with timestamps: 1448 (v4), 1428 (v6).
fn tcp_header_allowance(down: u64, up: u64, v6: bool) -> u64 {
    let mss: u64 = if v6 { 1428 } else { 1448 };
    (down.div_ceil(mss) + up.div_ceil(mss) + 12) * (tcp_packet_overhead(v6) + 8)
}

/// Asserts a byte counter against application payload ("±2 % plus header allowance")
/// and, when given, against the router's nft counter for exactly this flow (±0.5 % +
/// 3 small packets: a final ACK may be counted after netmon's last look).
fn assert_bytes(
    what: &str,
    got: i64,
    payload: u64,
    allowance: u64,
    truth: Option<u64>,
    flow: &Value,
) {
    let got = got.max(0) as u64;
    let lo = payload * 98 / 100;
    let hi = payload * 102 / 100 + allowance;
    assert!(
        (lo..=hi).contains(&got),
        "{what}: netmon says {got} bytes; the client moved {payload} bytes of payload, so \
         conntrack's IP-level count must be within [{lo}, {hi}] (±2 % + {allowance} header \
         allowance). Flow: {}",
        pretty(flow)
    );
    if let Some(truth) = truth {
        let slack = truth / 200 + 3 * 100;
        assert!(
            got.abs_diff(truth) <= slack,
            "{what}: netmon says {got} bytes, the router's nft counter for this flow says \
             {truth} (allowed difference {slack}). Flow: {}",
            pretty(flow)
        );
    }
}

/// Polls the API until the flow matching the tuple has `ended_at` set; fails at
/// `deadline` with the last state seen.
fn wait_ended(lab: &Lab, deadline: Instant, what: &str, flow: FlowKey) -> Value {
    let mut last: Option<Value> = None;
    loop {
        let flows = lab.all_flows();
        if let Some(f) = flow.find(&flows) {
            if int(f, "ended_at").is_some() {
                return f.clone();
            }
            last = Some(f.clone());
        }
        if Instant::now() >= deadline {
            let seen = match &last {
                Some(f) => format!("it is listed but not ended: {}", pretty(f)),
                None => format!(
                    "it is not listed at all ({} flows listed: {})",
                    flows.len(),
                    truncate(&serde_json::to_string(&flows).unwrap_or_default(), 3000)
                ),
            };
            let ct = lab.conntrack(&["-L"]);
            let ct: Vec<&str> = ct
                .lines()
                .filter(|l| !l.contains("dport=9000 "))
                .take(40)
                .collect();
            let ct = ct.join("\n");
            panic!(
                "{what}: /api/flows?show=all&direction=all does not show {flow} \
                 as ended within {ENDED_WITHIN:?} of the \
                 connection closing; {seen}\nrouter conntrack table now:\n{ct}"
            );
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Common checks of a finished flow: direction, timestamps.
fn assert_ended_outbound(flow: &Value, t0: i64) {
    assert_eq!(
        text(flow, "direction"),
        "outbound",
        "direction: {}",
        pretty(flow)
    );
    let first = int(flow, "first_seen").expect("first_seen");
    let last = int(flow, "last_seen").expect("last_seen");
    let ended = int(flow, "ended_at").expect("ended_at");
    let now = now_ms();
    assert!(
        first >= t0 - 2000,
        "first_seen {first} before the test started ({t0}): {}",
        pretty(flow)
    );
    assert!(
        first <= last && first <= ended,
        "first_seen after last_seen/ended_at: {}",
        pretty(flow)
    );
    assert!(
        ended <= now + 1000,
        "ended_at {ended} in the future (now {now}): {}",
        pretty(flow)
    );
}

/// Waits until every conntrack entry matching `filter` is gone from the router; returns
/// when (the moment the connection "closed" for protocols without a close).
fn wait_conntrack_gone(lab: &Lab, filter: &[&str], limit: Duration) -> Instant {
    let t0 = Instant::now();
    loop {
        // `conntrack -L` is a ctnetlink dump; the kernel evicts expired entries it walks
        // over, so polling also makes the expiry time precise (as netmon's dumps do).
        if lab.conntrack_entries(filter).is_empty() {
            return Instant::now();
        }
        assert!(
            t0.elapsed() < limit,
            "conntrack entries {filter:?} still present after {limit:?}: {:?}",
            lab.conntrack_entries(filter)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Byte/packet sums of a device's minute rollups since `since_ms`.
fn device_minute_sums(lab: &Lab, device_id: i64, since_ms: i64) -> (i64, i64, Vec<Value>) {
    let v = lab.api(&format!(
        "/api/devices/{device_id}/minutes?since={since_ms}"
    ));
    let minutes = v["minutes"].as_array().cloned().unwrap_or_default();
    let up = minutes.iter().filter_map(|m| int(m, "bytes_up")).sum();
    let down = minutes.iter().filter_map(|m| int(m, "bytes_down")).sum();
    (up, down, minutes)
}

// -------------------------------------------------------------------------------------

/// Item 1: a LAN client downloads 5 MB over HTTP, exchanges UDP datagrams, pings, and
/// opens an IPv6 TCP connection. Within 3 s of each closing, /api/flows shows it with the
/// right tuple, outbound, ended, with byte counts matching the transfer; the device and
/// the remote hosts exist; the device's minute rollups sum to its flows.
#[test]
fn item1_client_flows_recorded_with_tuple_direction_and_bytes() {
    let lab = Lab::up("flows");
    // Router-side truth per flow (same IP-level bytes conntrack accounts).
    lab.nft_add_counter("dl4_up", &format!("ip saddr {CLIENT4} tcp dport 80"));
    lab.nft_add_counter("dl4_down", &format!("ip daddr {CLIENT4} tcp sport 80"));
    lab.nft_add_counter("dl6_up", &format!("ip6 saddr {CLIENT6} tcp dport 80"));
    lab.nft_add_counter("dl6_down", &format!("ip6 daddr {CLIENT6} tcp sport 80"));
    let _nm = lab.start_netmon("");
    let t0 = now_ms();

    // --- 5 MiB over HTTP (IPv4, NAT) ---
    let dl = lab.download("lan", 45001, &format!("http://{WAN4}/big.bin"));
    let closed = Instant::now();
    assert_eq!(dl.body, BIG_FILE, "downloaded size");
    let (down4, up4) = (dl.down(), dl.up());
    let dl4 = wait_ended(
        &lab,
        closed + ENDED_WITHIN,
        "HTTP download",
        key("tcp", CLIENT4, Some(45001), WAN4, Some(80)),
    );
    assert_ended_outbound(&dl4, t0);
    assert_eq!(int(&dl4, "family"), Some(4), "{}", pretty(&dl4));
    assert_eq!(
        text(&dl4, "reply_src_ip"),
        WAN4,
        "reply tuple source: {}",
        pretty(&dl4)
    );
    assert_eq!(int(&dl4, "reply_src_port"), Some(80), "{}", pretty(&dl4));
    assert_eq!(
        text(&dl4, "reply_dst_ip"),
        RTR_WAN4,
        "NAT must be visible in the reply tuple: {}",
        pretty(&dl4)
    );
    let allow4 = tcp_header_allowance(down4, up4, false);
    assert_bytes(
        "HTTP download bytes_down",
        int(&dl4, "bytes_down").unwrap_or(-1),
        down4,
        allow4,
        Some(lab.nft_counter("dl4_down").1),
        &dl4,
    );
    assert_bytes(
        "HTTP download bytes_up",
        int(&dl4, "bytes_up").unwrap_or(-1),
        up4,
        allow4,
        Some(lab.nft_counter("dl4_up").1),
        &dl4,
    );

    // --- IPv6 TCP (routed, no NAT) ---
    let dl = lab.download("lan", 45002, &format!("http://[{WAN6}]/small.bin"));
    let closed = Instant::now();
    let (down6, up6) = (dl.down(), dl.up());
    let tcp6 = wait_ended(
        &lab,
        closed + ENDED_WITHIN,
        "IPv6 TCP",
        key("tcp", CLIENT6, Some(45002), WAN6, Some(80)),
    );
    assert_ended_outbound(&tcp6, t0);
    assert_eq!(int(&tcp6, "family"), Some(6), "{}", pretty(&tcp6));
    assert_eq!(text(&tcp6, "reply_src_ip"), WAN6, "{}", pretty(&tcp6));
    assert_eq!(
        text(&tcp6, "reply_dst_ip"),
        CLIENT6,
        "IPv6 is routed, not NATed: {}",
        pretty(&tcp6)
    );
    assert_eq!(
        int(&tcp6, "reply_dst_port"),
        Some(45002),
        "{}",
        pretty(&tcp6)
    );
    let allow6 = tcp_header_allowance(down6, up6, true);
    assert_bytes(
        "IPv6 TCP bytes_down",
        int(&tcp6, "bytes_down").unwrap_or(-1),
        down6,
        allow6,
        Some(lab.nft_counter("dl6_down").1),
        &tcp6,
    );
    assert_bytes(
        "IPv6 TCP bytes_up",
        int(&tcp6, "bytes_up").unwrap_or(-1),
        up6,
        allow6,
        Some(lab.nft_counter("dl6_up").1),
        &tcp6,
    );

    // --- UDP exchange and ping, together ---
    let udp_out = lab.client(
        "lan",
        &[
            "udp", WAN4, "7", "--count", "10", "--size", "1000", "--sport", "45003",
        ],
    );
    let udp: Value = serde_json::from_str(udp_out.trim()).expect("client.py udp JSON");
    assert_eq!(udp["received"], 10, "UDP echoes received: {udp}");
    let ping = lab.exec(
        "lan",
        &["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", WAN4],
    );
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // UDP and ICMP have no close: the connection ends when the router's conntrack entry
    // expires (lab timeouts: 5 s unreplied/ICMP, 10 s UDP stream).
    let udp_gone = wait_conntrack_gone(
        &lab,
        &["-p", "udp", "--orig-port-src", "45003"],
        Duration::from_secs(60),
    );
    let udp_flow = wait_ended(
        &lab,
        udp_gone + ENDED_WITHIN,
        "UDP exchange",
        key("udp", CLIENT4, Some(45003), WAN4, Some(UDP_ECHO_PORT)),
    );
    let icmp_gone = wait_conntrack_gone(
        &lab,
        &["-p", "icmp", "-s", CLIENT4, "-d", WAN4],
        Duration::from_secs(60),
    );
    let icmp = wait_ended(
        &lab,
        icmp_gone + ENDED_WITHIN,
        "ping",
        key("icmp", CLIENT4, None, WAN4, None),
    );

    // UDP: exact IP-level bytes, 1000 payload + 8 UDP + 20 IPv4 per datagram.
    assert_ended_outbound(&udp_flow, t0);
    assert_eq!(
        text(&udp_flow, "reply_src_ip"),
        WAN4,
        "{}",
        pretty(&udp_flow)
    );
    assert_eq!(
        int(&udp_flow, "reply_src_port"),
        Some(7),
        "{}",
        pretty(&udp_flow)
    );
    assert_eq!(
        text(&udp_flow, "reply_dst_ip"),
        RTR_WAN4,
        "{}",
        pretty(&udp_flow)
    );
    assert_eq!(
        int(&udp_flow, "bytes_up"),
        Some(10 * 1028),
        "UDP bytes_up: {}",
        pretty(&udp_flow)
    );
    assert_eq!(
        int(&udp_flow, "bytes_down"),
        Some(10 * 1028),
        "UDP bytes_down: {}",
        pretty(&udp_flow)
    );
    assert_eq!(
        int(&udp_flow, "packets_up"),
        Some(10),
        "{}",
        pretty(&udp_flow)
    );
    assert_eq!(
        int(&udp_flow, "packets_down"),
        Some(10),
        "{}",
        pretty(&udp_flow)
    );

    // ICMP: no ports; type/code of the request; 56 data + 8 ICMP + 20 IPv4 per packet.
    assert_ended_outbound(&icmp, t0);
    assert_eq!(
        int(&icmp, "src_port"),
        None,
        "ICMP has no ports: {}",
        pretty(&icmp)
    );
    assert_eq!(
        int(&icmp, "dst_port"),
        None,
        "ICMP has no ports: {}",
        pretty(&icmp)
    );
    assert_eq!(int(&icmp, "icmp_type"), Some(8), "{}", pretty(&icmp));
    assert_eq!(int(&icmp, "icmp_code"), Some(0), "{}", pretty(&icmp));
    assert_eq!(text(&icmp, "reply_dst_ip"), RTR_WAN4, "{}", pretty(&icmp));
    assert_eq!(
        int(&icmp, "bytes_up"),
        Some(3 * 84),
        "ICMP bytes_up: {}",
        pretty(&icmp)
    );
    assert_eq!(
        int(&icmp, "bytes_down"),
        Some(3 * 84),
        "ICMP bytes_down: {}",
        pretty(&icmp)
    );

    // --- the device and the remote hosts exist and the flows point at them ---
    // Read the flows again: once the neighbour table names the client's MAC, its
    // address-only devices merge into one, so device ids read earlier may
    // be gone.
    let fresh = lab.all_flows();
    let again = |f: &Value| {
        fresh
            .iter()
            .find(|g| g["id"] == f["id"])
            .cloned()
            .unwrap_or_else(|| panic!("flow vanished: {}", pretty(f)))
    };
    let ours = [again(&dl4), again(&tcp6), again(&udp_flow), again(&icmp)];
    let devices = lab.api("/api/devices")["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let hosts = lab.api("/api/hosts")["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for f in &ours {
        let dev_id =
            int(f, "device_id").unwrap_or_else(|| panic!("flow without device_id: {}", pretty(f)));
        let dev = devices
            .iter()
            .find(|d| int(d, "id") == Some(dev_id))
            .unwrap_or_else(|| {
                panic!("device {dev_id} of a flow is not in /api/devices: {devices:?}")
            });
        assert!(
            [CLIENT4, CLIENT6].contains(&text(dev, "ip"))
                || text(dev, "mac") == "02:77:00:00:00:10",
            "device of the client's flow is not the client: {}",
            pretty(dev)
        );
        let host_id = int(f, "remote_host_id")
            .unwrap_or_else(|| panic!("outbound flow without remote_host_id: {}", pretty(f)));
        let host = hosts
            .iter()
            .find(|h| int(h, "id") == Some(host_id))
            .unwrap_or_else(|| panic!("remote host {host_id} not in /api/hosts: {hosts:?}"));
        assert_eq!(
            text(host, "ip"),
            text(f, "dst_ip"),
            "remote host of flow {}",
            pretty(f)
        );
    }
    for h in &hosts {
        let ip = text(h, "ip");
        assert!(
            !ip.starts_with("10.77.")
                && !ip.starts_with("fd77:")
                && ip != RTR_WAN4
                && ip != RTR_WAN6,
            "LAN/router address became a remote host: {}",
            pretty(h)
        );
    }

    // --- minute rollups sum to the flows, per device ---
    let mut device_ids: Vec<i64> = ours.iter().filter_map(|f| int(f, "device_id")).collect();
    device_ids.sort();
    device_ids.dedup();
    for dev in device_ids {
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(5), || {
            let flows: Vec<Value> = lab
                .all_flows()
                .into_iter()
                .filter(|f| int(f, "device_id") == Some(dev))
                .collect();
            let fu: i64 = flows.iter().filter_map(|f| int(f, "bytes_up")).sum();
            let fd: i64 = flows.iter().filter_map(|f| int(f, "bytes_down")).sum();
            let (mu, md, minutes) = device_minute_sums(&lab, dev, t0 - 120_000);
            last = format!(
                "flows sum up/down {fu}/{fd}, minute rollups sum {mu}/{md}\nminutes: {minutes:?}\nflows: {flows:?}"
            );
            fu == mu && fd == md && fd > 0
        });
        assert!(
            ok,
            "device {dev}: minute rollups' bytes must equal its flows' bytes: {last}"
        );
    }
}

/// Item 2: while a throttled 5 MB download runs (≥ 10 s), the flow's counters grow live
/// and the device's minute rollups show bytes in each minute it ran, not one spike at
/// the end.
#[test]
fn item2_long_download_counters_grow_live_and_spread_over_minutes() {
    let lab = Lab::up("grow");
    // Counters of a live flow come from conntrack dumps (ctnetlink sends no event for a
    // counter change), so this test asks for a dump every second.
    let _nm = lab.start_netmon("dump_interval_s = 1");
    lab.shape("3mbit"); // 5 MiB ≈ 14 s

    // Start so that the ~14 s download crosses a UTC minute boundary 4–10 s in.
    let until_boundary = |now: i64| 60_000 - now.rem_euclid(60_000);
    loop {
        let left = until_boundary(now_ms());
        if (4_000..=10_000).contains(&left) {
            break;
        }
        let sleep = if left > 10_000 {
            left - 9_000
        } else {
            left + 51_000
        };
        std::thread::sleep(Duration::from_millis(sleep as u64));
    }
    let t_start = now_ms();
    let mut curl = lab.spawn_download("lan", 45010, &format!("http://{WAN4}/big.bin"));
    // Sample the flow and the device's minutes while the download runs.
    let mut flow_samples: Vec<(i64, i64)> = Vec::new(); // (ms since start, bytes_down) of the live flow
    let mut minute_samples: Vec<i64> = Vec::new(); // device minute bytes_down sum
    let mut dashboard_showed_it = false;
    let mut device_id = None;
    while curl.try_wait().expect("curl wait").is_none() {
        let flows = lab.api_flows(&format!("show=active&direction=outbound&dst={WAN4}"))["flows"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(f) = find_flow(&flows, "tcp", CLIENT4, Some(45010), WAN4, Some(80)) {
            assert_eq!(
                int(f, "ended_at"),
                None,
                "running download shown as ended: {}",
                pretty(f)
            );
            flow_samples.push((now_ms() - t_start, int(f, "bytes_down").unwrap_or(0)));
            if let Some(id) = int(f, "device_id") {
                device_id = Some(id);
                minute_samples.push(device_minute_sums(&lab, id, t_start - 120_000).1);
            }
            if !dashboard_showed_it && lab.http_get("/flows").contains(WAN4) {
                dashboard_showed_it = true;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let t_end = now_ms();
    let out = curl.wait_with_output().expect("curl output");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = t_end - t_start;
    assert!(
        took >= 10_000,
        "the throttled download took only {took} ms (want ≥ 10 s): is tc shaping working?"
    );

    let total = BIG_FILE as i64;
    let growth: Vec<i64> = flow_samples.iter().map(|s| s.1).collect();
    let increases = growth.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        increases >= 3,
        "the live flow's bytes_down should grow while the download runs (≥ 3 increases \
         over {took} ms); samples (ms, bytes_down): {flow_samples:?}"
    );
    let first_positive = flow_samples.iter().find(|s| s.1 > 0);
    assert!(
        first_positive.is_some_and(|s| s.1 < total / 2),
        "counters must show up early, not only near the end: samples {flow_samples:?}"
    );
    assert!(
        dashboard_showed_it,
        "the dashboard (/) never listed the running download's remote address {WAN4}"
    );
    let minute_increases = minute_samples.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        minute_increases >= 2,
        "the device's minute rollup should grow during the download, not only at its end; \
         sums sampled: {minute_samples:?}"
    );

    // After the end: every minute the download overlapped by ≥ 3 s holds a fair share of
    // its bytes (≥ 30 % of what the average rate predicts), and the sum matches the flow.
    let dl = wait_ended(
        &lab,
        Instant::now() + ENDED_WITHIN,
        "throttled download",
        key("tcp", CLIENT4, Some(45010), WAN4, Some(80)),
    );
    let dev = int(&dl, "device_id")
        .or(device_id)
        .expect("device_id of the download");
    let flow_down = int(&dl, "bytes_down").unwrap_or(0);
    let rate = flow_down as f64 / took as f64; // bytes per ms
    let mut report = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        let (_, sum_down, minutes) = device_minute_sums(&lab, dev, t_start - 120_000);
        report = format!(
            "download {t_start}..{t_end} ms, flow bytes_down {flow_down}, minutes {minutes:?}"
        );
        if sum_down != flow_down {
            return false;
        }
        let mut m = t_start - t_start.rem_euclid(60_000);
        while m < t_end {
            let overlap = t_end.min(m + 60_000) - t_start.max(m);
            if overlap >= 3_000 {
                let got = minutes
                    .iter()
                    .find(|x| int(x, "minute") == Some(m))
                    .and_then(|x| int(x, "bytes_down"))
                    .unwrap_or(0);
                if (got as f64) < 0.3 * rate * overlap as f64 {
                    return false;
                }
            }
            m += 60_000;
        }
        true
    });
    assert!(
        ok,
        "the device's minute rollups must split the download over the minutes it ran \
         (each overlapped minute ≥ 30 % of its expected share, sum = the flow's bytes): {report}"
    );
}

/// Item 3: a LAN client's SSH and DNS connections to the router itself are
/// `router-local`, hidden from the default dashboard and API view, and create no remote
/// host.
#[test]
fn item3_router_local_flows_labelled_hidden_and_not_remote_hosts() {
    let lab = Lab::up("rloc");
    let _nm = lab.start_netmon("");
    // DNS to the router's dnsmasq (UDP, from a known port).
    let answer = lab.client("lan", &["dns", RTR_LAN4, "wan.lab", "--sport", "47253"]);
    assert_eq!(answer.trim(), WAN4, "dnsmasq answer for wan.lab");
    // Held connections: SSH to the router (v4 and v6), and one outbound control flow.
    let mut hold = lab.hold_tcp(
        "lan",
        60,
        &[
            format!("{RTR_LAN4}:22:47222"),
            format!("{RTR_LAN6}:22:47226"),
            format!("{WAN4}:{SINK_PORT}:47223"),
        ],
    );

    let mut flows = Vec::new();
    let all_there = wait_until(Duration::from_secs(5), || {
        flows = lab.all_flows();
        find_flow(&flows, "tcp", CLIENT4, Some(47222), RTR_LAN4, Some(22)).is_some()
            && find_flow(&flows, "tcp", CLIENT6, Some(47226), RTR_LAN6, Some(22)).is_some()
            && find_flow(&flows, "udp", CLIENT4, Some(47253), RTR_LAN4, Some(53)).is_some()
            && find_flow(&flows, "tcp", CLIENT4, Some(47223), WAN4, Some(SINK_PORT)).is_some()
    });
    assert!(
        all_there,
        "router-local and control flows not all in show=all&direction=all: {flows:?}"
    );
    for (proto, src, sport, dst, dport) in [
        ("tcp", CLIENT4, 47222, RTR_LAN4, 22),
        ("tcp", CLIENT6, 47226, RTR_LAN6, 22),
        ("udp", CLIENT4, 47253, RTR_LAN4, 53),
    ] {
        let f = find_flow(&flows, proto, src, Some(sport), dst, Some(dport)).expect("listed");
        assert_eq!(text(f, "direction"), "router-local", "{}", pretty(f));
        assert_eq!(
            int(f, "remote_host_id"),
            None,
            "router-local flow has a remote host: {}",
            pretty(f)
        );
    }
    let control =
        find_flow(&flows, "tcp", CLIENT4, Some(47223), WAN4, Some(SINK_PORT)).expect("listed");
    assert_eq!(
        text(control, "direction"),
        "outbound",
        "{}",
        pretty(control)
    );

    // Hidden by default: the API's default view (active; outbound and inbound) and the
    // dashboard show the control flow but none of the router-local ones.
    let default_view = lab.api_flows("")["flows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        find_flow(
            &default_view,
            "tcp",
            CLIENT4,
            Some(47223),
            WAN4,
            Some(SINK_PORT)
        )
        .is_some(),
        "the active outbound control flow is missing from the default /api/flows: {default_view:?}"
    );
    for f in &default_view {
        assert_ne!(
            text(f, "direction"),
            "router-local",
            "default /api/flows lists a router-local flow: {}",
            pretty(f)
        );
    }
    let all_dirs_default_show = lab.api_flows("show=all")["flows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for f in &all_dirs_default_show {
        assert_ne!(
            text(f, "direction"),
            "router-local",
            "/api/flows?show=all lists a router-local flow: {}",
            pretty(f)
        );
    }
    let only_local = lab.api_flows("show=all&direction=router-local")["flows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        find_flow(&only_local, "tcp", CLIENT4, Some(47222), RTR_LAN4, Some(22)).is_some(),
        "direction=router-local does not list the SSH flow: {only_local:?}"
    );
    let page = lab.http_get("/flows");
    assert!(
        page.contains(WAN4),
        "the dashboard does not show the active outbound control flow ({WAN4})"
    );
    for port in ["47222", "47226", "47253"] {
        assert!(
            !page.contains(port),
            "the default dashboard shows a router-local flow (source port {port})"
        );
    }

    // No remote host for the router or any LAN address; the control's host exists.
    let hosts = lab.api("/api/hosts")["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for h in &hosts {
        let ip = text(h, "ip");
        assert!(
            !ip.starts_with("10.77.") && !ip.starts_with("fd77:"),
            "router-local traffic created remote host {}",
            pretty(h)
        );
    }
    assert!(
        hosts.iter().any(|h| text(h, "ip") == WAN4),
        "control flow's remote host missing: {hosts:?}"
    );
    let db_hosts =
        lab.db_i64("SELECT count(*) FROM remote_hosts WHERE ip LIKE '10.77.%' OR ip LIKE 'fd77:%'");
    assert_eq!(db_hosts, 0, "remote_hosts rows for LAN/router addresses");
    drop(hold.stdin.take());
    let _ = hold.wait();
}

/// Item 4: ≥ 20 000 short TCP flows from lan to wan within a few seconds; netmon stores
/// ≥ 99.9 % of them (counted by the client and by the router's nft counter), /metrics
/// reports overruns and resync dumps, and netmon's peak RSS stays under 64 MB.
#[test]
fn item4_burst_of_20k_tcp_flows_is_stored_with_bounded_memory() {
    let lab = Lab::up("burst");
    let nm = lab.start_netmon("");
    let before = lab.nft_counter("new_tcp").0;
    let report = lab.loadgen(
        "lan",
        &[
            "--mode",
            "tcp",
            "--target",
            &format!("{WAN4}:{BURST_PORT}"),
            "--rate",
            "25000",
            "--count",
            "25000",
            "--duration",
            "6",
            "--threads",
            "2",
        ],
    );
    let router_new = lab.nft_counter("new_tcp").0 - before;
    let completed = report["completed"].as_u64().unwrap_or(0);
    let elapsed = report["elapsed_s"].as_f64().unwrap_or(0.0);
    eprintln!("burst: loadgen {report}; router counted {router_new} new TCP connections");
    assert!(
        completed >= 20_000 && elapsed <= 8.0,
        "the lab did not produce ≥ 20 000 TCP flows within a few seconds: {report}"
    );

    let truth = router_new.max(completed) as i64;
    let need = (truth as f64 * 0.999).ceil() as i64;
    let count_sql =
        format!("SELECT count(*) FROM flows WHERE proto = 6 AND dst_port = {BURST_PORT}");
    let mut stored = 0;
    wait_until(Duration::from_secs(30), || {
        stored = lab.db_i64(&count_sql);
        stored >= need
    });
    let distinct = lab.db_i64(&format!(
        "SELECT count(*) FROM (SELECT DISTINCT src_ip, src_port FROM flows WHERE proto = 6 AND dst_port = {BURST_PORT})"
    ));
    let metrics = lab.metrics();
    let overruns = metric(&metrics, "netmon_conntrack_overruns_total");
    let resyncs = metric(&metrics, "netmon_conntrack_resync_dumps_total");
    let new_events = metric(&metrics, r#"netmon_conntrack_events_total{type="new"}"#);
    eprintln!(
        "burst: stored {stored} (distinct {distinct}) of {truth} (client {completed}, router {router_new}); \
         overruns {overruns:?}, resync dumps {resyncs:?}, new events {new_events:?}"
    );
    assert!(
        stored >= need,
        "netmon stored {stored} of the burst's flows; the client completed {completed} and \
         the router counted {router_new} new TCP connections: need ≥ 99.9 % ({need})"
    );
    assert_eq!(
        stored, distinct,
        "duplicate flow rows for the same client port in the burst"
    );
    assert!(
        stored <= router_new as i64,
        "netmon stored {stored} flows but the router saw only {router_new} new connections"
    );
    let overruns = overruns
        .unwrap_or_else(|| panic!("/metrics lacks netmon_conntrack_overruns_total:\n{metrics}"));
    let resyncs = resyncs.unwrap_or_else(|| {
        panic!("/metrics lacks netmon_conntrack_resync_dumps_total:\n{metrics}")
    });
    assert!(
        metric_sum(&metrics, "netmon_conntrack_events_total").is_some(),
        "/metrics lacks netmon_conntrack_events_total{{type=...}}"
    );
    if overruns > 0.0 {
        assert!(
            resyncs >= 1.0,
            "{overruns} netlink overruns but no resync dump reported"
        );
    }

    // The DESTROY wave follows: the entries sit in CLOSE for 10 s, then conntrack's
    // garbage collector (or netmon's next periodic dump, which evicts expired entries)
    // removes them in large batches. None may be lost, and memory must stay bounded
    // through that wave too.
    let waited = Instant::now();
    let mut ended = 0;
    wait_until(Duration::from_secs(60), || {
        ended = lab.db_i64(&format!("{count_sql} AND ended_at IS NOT NULL"));
        ended >= stored
    });
    // Then wait until the kernel has dropped the entries (each gone entry is a DESTROY
    // event for netmon; `conntrack -L` evicts expired entries as it walks the table).
    wait_conntrack_gone(
        &lab,
        &["-p", "tcp", "--orig-port-dst", &BURST_PORT.to_string()],
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(1));
    let rss = nm.peak_rss();
    let metrics = lab.metrics();
    eprintln!(
        "burst: {ended} of {stored} stored flows ended after {:?} more; netmon peak RSS {} KiB; \
         overruns {:?}, resync dumps {:?}, destroy events {:?}",
        waited.elapsed(),
        rss / 1024,
        metric(&metrics, "netmon_conntrack_overruns_total"),
        metric(&metrics, "netmon_conntrack_resync_dumps_total"),
        metric(&metrics, r#"netmon_conntrack_events_total{type="destroy"}"#),
    );
    assert!(
        ended as f64 >= stored as f64 * 0.999,
        "only {ended} of the {stored} burst flows were marked ended within 60 s of their \
         conntrack entries expiring: DESTROY events lost without a resync?"
    );
    assert!(rss > 0, "could not read netmon's VmHWM");
    assert!(
        rss < 64 * 1024 * 1024,
        "netmon's peak RSS {} KiB ≥ 64 MiB",
        rss / 1024
    );
}

/// Item 5, first half: SIGTERM exits within 2 s, and flows that ended before it are
/// committed — with a 5 s tick, only the shutdown's final commit can have stored them.
#[test]
fn item5_sigterm_exits_fast_with_everything_committed() {
    let lab = Lab::up("term");
    let mut nm = lab.start_netmon("tick_ms = 5000");
    let before = lab.nft_counter("new_tcp").0;
    let report = lab.loadgen(
        "lan",
        &[
            "--mode",
            "tcp",
            "--target",
            &format!("{WAN4}:{BURST_PORT}"),
            "--rate",
            "2000",
            "--count",
            "300",
            "--duration",
            "3",
            "--sports",
            "30000-30999",
        ],
    );
    let truth = (lab.nft_counter("new_tcp").0 - before) as i64;
    assert_eq!(report["completed"].as_u64(), Some(300), "loadgen: {report}");
    // End them now: deleting the entries sends DESTROY events, as expiry would.
    lab.conntrack(&[
        "-D",
        "-p",
        "tcp",
        "--orig-port-dst",
        &BURST_PORT.to_string(),
    ]);
    assert!(
        lab.conntrack_entries(&["-p", "tcp", "--orig-port-dst", &BURST_PORT.to_string()])
            .is_empty()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = nm.sigterm();
    eprintln!("sigterm: exit {status:?} after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "netmon took {took:?} to exit after SIGTERM (limit 2 s); status {status:?}"
    );
    let status = status.expect("exited");
    assert!(
        status.success(),
        "netmon's exit status after SIGTERM: {status}\n{}",
        nm.log_tail(40)
    );

    let q = format!("SELECT count(*) FROM flows WHERE proto = 6 AND dst_port = {BURST_PORT}");
    let stored = lab.db_i64(&q);
    let ended = lab.db_i64(&format!("{q} AND ended_at IS NOT NULL"));
    assert_eq!(
        stored, truth,
        "flows committed at shutdown (router counted {truth} new connections)"
    );
    assert_eq!(
        ended, truth,
        "flows that ended before SIGTERM must be committed as ended"
    );
    let integrity: String = lab
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
}

/// Item 5, second half: `kill -9` during traffic, then restart: the database is intact,
/// no flow is stored twice (live rows, or the same ct id + tuple + start), a connection
/// open across the crash is still one live row, and flows keep being recorded.
#[test]
fn item5_kill9_during_traffic_then_restart_keeps_db_intact_without_duplicates() {
    let lab = Lab::up("crash");
    let mut nm = lab.start_netmon("");
    let before = lab.nft_counter("new_tcp").0;
    // A connection that lives across the crash and the restart.
    let mut hold = lab.hold_tcp("lan", 60, &[format!("{WAN4}:{SINK_PORT}:47301")]);
    // Steady mixed traffic for 8 s: short TCP, one-packet UDP, two long transfers.
    let load = lab.spawn(
        "lan",
        &[
            LOADGEN,
            "run",
            "--mode",
            "mix",
            "--target",
            &format!("{WAN4}:{BURST_PORT}"),
            "--rate",
            "2000",
            "--duration",
            "8",
            "--sports",
            "20000-40000",
        ],
    );
    std::thread::sleep(Duration::from_millis(2500));
    nm.sigkill();
    let integrity: String = lab
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check after kill -9");
    assert_eq!(integrity, "ok", "database after kill -9");
    std::thread::sleep(Duration::from_millis(1000));
    let restart_ms = now_ms();
    let mut nm = lab.start_netmon("");
    let out = load.wait_with_output().expect("loadgen");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    eprintln!("kill -9: traffic {report}");

    // After the restart, a new connection is recorded as usual.
    lab.download("lan", 47302, &format!("http://{WAN4}/small.bin"));
    let closed = Instant::now();
    let fresh = wait_ended(
        &lab,
        closed + ENDED_WITHIN,
        "download after restart",
        key("tcp", CLIENT4, Some(47302), WAN4, Some(80)),
    );
    assert!(
        int(&fresh, "first_seen").unwrap_or(0) >= restart_ms - 1000,
        "{}",
        pretty(&fresh)
    );

    // Short TCP flows of the load (all still in conntrack at restart: CLOSE lasts 10 s)
    // are all there, once.
    let router_new = (lab.nft_counter("new_tcp").0 - before) as i64;
    let q = format!("SELECT count(*) FROM flows WHERE proto = 6 AND dst_port = {BURST_PORT}");
    let lg_tcp = report["tcp"]["completed"].as_i64().unwrap_or(0);
    let mut stored = 0;
    wait_until(Duration::from_secs(10), || {
        stored = lab.db_i64(&q);
        stored as f64 >= lg_tcp as f64 * 0.99
    });
    eprintln!(
        "kill -9: stored {stored} short TCP flows; client completed {lg_tcp}; router new TCP (all) {router_new}"
    );
    assert!(
        stored as f64 >= lg_tcp as f64 * 0.99,
        "flows across the crash: stored {stored}, client completed {lg_tcp}"
    );

    // The held connection: exactly one row, still live.
    let held = lab.db_i64(&format!(
        "SELECT count(*) FROM flows WHERE proto = 6 AND src_port = 47301 AND dst_port = {SINK_PORT}"
    ));
    let held_live = lab.db_i64(&format!(
        "SELECT count(*) FROM flows WHERE proto = 6 AND src_port = 47301 AND dst_port = {SINK_PORT} AND ended_at IS NULL"
    ));
    assert_eq!(
        (held, held_live),
        (1, 1),
        "a connection open across kill -9 + restart must stay one live row"
    );

    drop(hold.stdin.take());
    let _ = hold.wait();
    let (status, took) = nm.sigterm();
    assert!(
        status.is_some_and(|s| s.success()),
        "netmon after restart: exit {status:?} in {took:?}"
    );

    let db = lab.db();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
    let dup_live: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT ident FROM flows WHERE ended_at IS NULL GROUP BY ident HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .expect("dup live query");
    assert_eq!(dup_live, 0, "several live rows share an ident");
    let dups: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT 1 FROM flows GROUP BY ct_id, proto, src_ip, src_port, dst_ip, dst_port, \
             icmp_id, first_seen HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .expect("dup query");
    assert_eq!(
        dups, 0,
        "duplicated flow rows (same ct_id + tuple + first_seen)"
    );
}

/// Item 6 (first half): a malformed config — unknown key, bad CIDR, bad port — makes
/// `netmon check-config` exit non-zero with a message naming the key and the value.
#[test]
fn item6_malformed_config_is_rejected_naming_key_and_value() {
    let tmp = tempfile::tempdir().expect("tmp dir");
    let dir = tmp.path();
    let check = |name: &str, text: &str| -> (bool, String) {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write config");
        let out = std::process::Command::new(NETMON)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("run netmon check-config");
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), msg)
    };
    let cases: &[(&str, &str, &[&str])] = &[
        ("unknown_key", "tick_msec = 250\n", &["tick_msec"]),
        (
            "unknown_nested_key",
            "[retention]\nflow_days = 3\n",
            &["flow_days"],
        ),
        (
            "bad_cidr",
            "lan_subnets = [\"10.77.0.0/33\"]\n",
            &["lan_subnets", "10.77.0.0/33"],
        ),
        (
            "bad_cidr_text",
            "lan_subnets = [\"10.77.0/24x\"]\n",
            &["lan_subnets", "10.77.0/24x"],
        ),
        ("bad_port", "port = 70000\n", &["port", "70000"]),
        (
            "bad_listen_port",
            "listen = [\"127.0.0.1:99999\"]\n",
            &["listen", "127.0.0.1:99999"],
        ),
        (
            "zero_listen_port",
            "listen = [\"127.0.0.1:0\"]\n",
            &["listen", "127.0.0.1:0"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, must_name) in cases {
        let (ok, msg) = check(name, text);
        if ok {
            failures.push(format!("{name}: `{}` was accepted:\n{msg}", text.trim()));
            continue;
        }
        for needle in *must_name {
            if !msg.contains(needle) {
                failures.push(format!("{name}: message does not name `{needle}`:\n{msg}"));
            }
        }
    }
    // A valid config passes and the effective config is printed.
    let (ok, msg) = check(
        "valid",
        "tick_ms = 250\nlan_subnets = [\"10.77.0.0/24\", \"fd77::/64\"]\n",
    );
    if !ok || !msg.contains("tick_ms") || !msg.contains("250") {
        failures.push(format!(
            "valid config: exit ok = {ok}, effective config not printed:\n{msg}"
        ));
    }
    assert!(
        failures.is_empty(),
        "check-config:\n{}",
        failures.join("\n\n")
    );
}
