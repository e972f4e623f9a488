//! Device identity: devices keyed by MAC from the
//! router's DHCP leases and neighbour table.
//!
//! 1. The router's dnsmasq serves DHCP to two LAN clients (busybox udhcpc, MACs with
//!    real OUIs: Apple 3c:22:fb, Raspberry Pi b8:27:eb). netmon shows each by MAC with
//!    its DHCP hostname and vendor; one client's address then changes (release, new
//!    lease) and its flows before and after belong to the same device.
//! 2. An IPv6 client using two addresses (as with privacy addresses) is one device.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LAPTOP_MAC: &str = "3c:22:fb:12:34:56";
const PI_MAC: &str = "b8:27:eb:aa:bb:cc";

/// `lab.sh dhcp`: the address the client got (without the prefix length).
fn dhcp(lab: &Lab, client: u32, host: &str, mac: &str, want: Option<&str>) -> String {
    let client = client.to_string();
    let mut args = vec!["dhcp", &lab.name, &client, host, mac];
    if let Some(w) = want {
        args.push(w);
    }
    let out = lab.lab_sh(&args);
    out.trim().split('/').next().unwrap_or_default().to_owned()
}

fn device_with_mac(lab: &Lab, mac: &str) -> Option<Value> {
    let v = lab.api("/api/devices");
    v["devices"]
        .as_array()?
        .iter()
        .find(|d| d["mac"] == mac)
        .cloned()
}

/// The device id of the flow from `src:sport`, once netmon has stored it.
fn flow_device(lab: &Lab, src: &str, sport: u16) -> Option<i64> {
    lab.all_flows()
        .iter()
        .find(|f| f["src_ip"] == src && int(f, "src_port") == Some(i64::from(sport)))
        .and_then(|f| int(f, "device_id"))
}

fn devices_holding(lab: &Lab, ip: &str) -> Vec<i64> {
    let db = lab.db();
    db.busy_timeout(Duration::from_secs(5)).ok();
    let mut stmt = db
        .prepare("SELECT device_id FROM device_addrs WHERE ip = ?1")
        .unwrap();
    stmt.query_map([ip], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn dhcp_clients_are_devices_by_mac_across_an_address_change() {
    let lab = Lab::up_with("devdhcp", 2);
    let leases = lab.dir.join("dnsmasq.leases");
    let netmon = lab.start_netmon(&format!(
        "[devices]\nlease_files = [\"{}\"]",
        leases.display()
    ));
    let ip1 = dhcp(&lab, 1, "laptop", LAPTOP_MAC, None);
    let ip2 = dhcp(&lab, 2, "raspberrypi", PI_MAC, None);
    assert_ne!(ip1, ip2);
    lab.download("lan", 47901, "http://203.0.113.84/small.bin");
    lab.download("lan2", 47902, "http://203.0.113.84/small.bin");

    // The laptop releases its lease and comes back with another address.
    lab.lab_sh(&["dhcp-release", &lab.name, "1"]);
    let want = if ip1 == "10.77.0.150" {
        "10.77.0.151"
    } else {
        "10.77.0.150"
    };
    let ip1b = dhcp(&lab, 1, "laptop", LAPTOP_MAC, Some(want));
    assert_eq!(ip1b, want, "dnsmasq did not grant the requested address");
    lab.download("lan", 47903, "http://203.0.113.84/small.bin");

    let ids = wait_for(Duration::from_secs(20), || {
        let before = flow_device(&lab, &ip1, 47901)?;
        let after = flow_device(&lab, &ip1b, 47903)?;
        let pi = flow_device(&lab, &ip2, 47902)?;
        (before == after).then_some((before, pi))
    });
    let Some((laptop, pi)) = ids else {
        panic!(
            "the laptop's flows before ({ip1}) and after ({ip1b}) its address change are \
             not on one device: {:?} / {:?}\ndevices: {}\nnetmon log:\n{}",
            flow_device(&lab, &ip1, 47901),
            flow_device(&lab, &ip1b, 47903),
            pretty(&lab.api("/api/devices")),
            netmon.log_tail(40)
        );
    };
    assert_ne!(laptop, pi);

    let d = device_with_mac(&lab, LAPTOP_MAC).expect("laptop device by MAC");
    assert_eq!(int(&d, "id"), Some(laptop));
    assert_eq!(d["hostname"], "laptop");
    assert!(text(&d, "vendor").contains("Apple"), "vendor: {d}");
    let addrs: Vec<&str> = d["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        addrs.contains(&ip1.as_str()) && addrs.contains(&ip1b.as_str()),
        "laptop addresses {addrs:?}"
    );
    assert_eq!(d["ip"], ip1b.as_str(), "the current address is the newest");
    let p = device_with_mac(&lab, PI_MAC).expect("raspberry pi device by MAC");
    assert_eq!(int(&p, "id"), Some(pi));
    assert_eq!(p["hostname"], "raspberrypi");
    assert!(text(&p, "vendor").contains("Raspberry"), "vendor: {p}");

    // No address-only device is left for either of the laptop's addresses.
    assert_eq!(devices_holding(&lab, &ip1), vec![laptop]);
    assert_eq!(devices_holding(&lab, &ip1b), vec![laptop]);
    assert_eq!(
        lab.db_i64(&format!(
            "SELECT count(*) FROM devices WHERE mac IS NULL AND ip IN ('{ip1}', '{ip1b}', '{ip2}')"
        )),
        0
    );

    let page = lab.http_get(&format!("/devices/{laptop}"));
    for want in [LAPTOP_MAC, "laptop", "Apple", ip1.as_str(), ip1b.as_str()] {
        assert!(
            page.contains(want),
            "device page lacks {want}:\n{}",
            truncate(&page, 4000)
        );
    }
    let list = lab.http_get("/devices");
    assert!(list.contains("raspberrypi") && list.contains(PI_MAC));
}

#[test]
fn ipv6_client_with_two_addresses_is_one_device() {
    let lab = Lab::up("devv6");
    let mac = "3c:22:fb:00:06:66";
    let second = "fd77::a1b2:c3d4:e5f6:7";
    lab.sh(
        "lan",
        &format!("ip link set eth0 address {mac} && ip addr add {second}/64 dev eth0 nodad"),
    );
    let netmon = lab.start_netmon("[devices]\nlease_files = []");
    // Both addresses are in one prefix: name the source, or the kernel picks one.
    for (src, port) in [(CLIENT6, "47911"), (second, "47912")] {
        lab.exec_ok(
            "lan",
            &[
                "curl",
                "-sS",
                "--fail",
                "-g",
                "--interface",
                src,
                "--local-port",
                port,
                "-o",
                "/dev/null",
                "http://[2001:db8:77::84]/small.bin",
            ],
        );
    }
    lab.download("lan", 47913, "http://203.0.113.84/small.bin");

    let ids = wait_for(Duration::from_secs(20), || {
        let a = flow_device(&lab, CLIENT6, 47911)?;
        let b = flow_device(&lab, second, 47912)?;
        let c = flow_device(&lab, CLIENT4, 47913)?;
        (a == b && b == c).then_some(a)
    });
    let Some(id) = ids else {
        panic!(
            "flows from {CLIENT6}, {second} and {CLIENT4} are not on one device: \
             {:?} {:?} {:?}\ndevices: {}\nnetmon log:\n{}",
            flow_device(&lab, CLIENT6, 47911),
            flow_device(&lab, second, 47912),
            flow_device(&lab, CLIENT4, 47913),
            pretty(&lab.api("/api/devices")),
            netmon.log_tail(40)
        );
    };
    let d = device_with_mac(&lab, mac).expect("device by MAC");
    assert_eq!(int(&d, "id"), Some(id));
    let devices = lab.api("/api/devices");
    assert_eq!(
        devices["devices"].as_array().unwrap().len(),
        1,
        "one client, one device: {}",
        pretty(&devices)
    );
    for ip in [CLIENT6, second, CLIENT4] {
        assert_eq!(devices_holding(&lab, ip), vec![id], "{ip}");
    }
}
