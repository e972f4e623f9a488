//! The investigation sections of the device and host pages: a device's top
//! destinations, ports and incidents; a remote host's devices. Read by
//! [`crate::store::peers`] (bounded scans of the latest flows), rendered here.

use maud::{Markup, html};

use super::anomalies::{codes, score_badge};
use super::format::{self, time};
use crate::flow::proto_name;
use crate::store::detect::read::IncidentRow;
use crate::store::peers::{MAX_FLOWS_SCANNED, PeerDevice, PeerHost, PeerPort, Peers};

/// The window the sections cover.
pub const WINDOW_MS: i64 = 24 * 60 * 60_000;

/// What the device page adds: destinations, ports, incidents.
#[derive(Debug, Clone)]
pub struct DevicePeers {
    pub hosts: Peers<PeerHost>,
    pub ports: Peers<PeerPort>,
    pub incidents: Vec<IncidentRow>,
}

fn scope<T>(peers: &Peers<T>) -> Markup {
    html! {
        p.muted {
            "Last 24 h"
            @if peers.capped() {
                ", from the latest " (format::count(MAX_FLOWS_SCANNED)) " flows"
            }
            "."
        }
    }
}

/// A device's top destinations and ports side by side, then its incidents.
///
/// (Long: a maud template: the page's markup reads top to bottom in one piece.)
pub fn device_sections(device_id: i64, p: &DevicePeers, now: i64) -> Markup {
    html! {
        section.cols {
            div {
                h2 { "Top destinations" }
                @if p.hosts.rows.is_empty() {
                    p.muted { "No flows in the last 24 h." }
                } @else {
                    (scope(&p.hosts))
                    table.data.narrow.peers {
                        thead { tr {
                            th { "Host" } th.num { "Flows" } th.num { "Sent" } th.num { "Received" } th.opt { "Last" }
                        } }
                        tbody {
                            @for h in &p.hosts.rows {
                                tr {
                                    td {
                                        @if let Some(domain) = &h.domain {
                                            a.name href={ "/hosts/" (h.remote_host_id) } { (domain) }
                                            " " span.muted.mono { (h.ip) }
                                        } @else {
                                            a.mono href={ "/hosts/" (h.remote_host_id) } { (h.ip) }
                                            @if let Some(name) = h.rdns.as_deref().or(h.org.as_deref()) {
                                                " " span.muted.name { (name) }
                                            }
                                        }
                                    }
                                    td.num.mono { (format::count(h.flows)) }
                                    td.num.mono.up { (format::bytes(h.bytes_up)) }
                                    td.num.mono.down { (format::bytes(h.bytes_down)) }
                                    td.mono.opt { (time(h.last_seen)) }
                                }
                            }
                        }
                    }
                }
            }
            div {
                h2 { "Ports" }
                @if p.ports.rows.is_empty() {
                    p.muted { "No flows in the last 24 h." }
                } @else {
                    (scope(&p.ports))
                    table.data.narrow.peers {
                        thead { tr { th { "Port" } th.num { "Flows" } th.num { "Hosts" } th.num { "Bytes" } } }
                        tbody {
                            @for port in &p.ports.rows {
                                tr {
                                    td.mono {
                                        a href={ "/flows?device=" (device_id) "&show=all&direction=all&proto=" (port.proto)
                                                 @if let Some(n) = port.port { "&port=" (n) } } {
                                            @match port.port {
                                                Some(n) => { (n) "/" (proto_name(port.proto)) }
                                                None => { (proto_name(port.proto)) }
                                            }
                                        }
                                    }
                                    td.num.mono { (format::count(port.flows)) }
                                    td.num.mono { (format::count(port.hosts)) }
                                    td.num.mono { (format::bytes(port.bytes)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Incidents" }
        @if p.incidents.is_empty() {
            p.muted { "None." }
        } @else {
            table.data.incidents {
                thead { tr { th { "Last seen" } th { "Incident" } th { "Codes" } th.num { "Score" } th.num { "Count" } th { "State" } } }
                tbody {
                    @for i in &p.incidents {
                        tr {
                            td.mono { (time(i.last_seen)) }
                            td { a href={ "/incidents/" (i.id) } { (i.title) } }
                            td { (codes(&i.codes)) }
                            td.num { (score_badge(i.max_score)) }
                            td.num.mono { (format::count(i.count)) }
                            td {
                                @if i.acked_at.is_some() { "acknowledged" }
                                @else if i.muted(now) { "muted" }
                                @else { strong { "open" } }
                            }
                        }
                    }
                }
            }
            p { a href={ "/incidents?device=" (device_id) "&state=all&window=30d" } { "All incidents of this device" } }
        }
    }
}

/// The devices that talked to a remote host.
pub fn host_devices(peers: &Peers<PeerDevice>) -> Markup {
    html! {
        h2 { "Devices" }
        @if peers.rows.is_empty() {
            p.muted { "No device talked to it in the last 24 h." }
        } @else {
            (scope(peers))
            table.data.narrow.peers {
                thead { tr { th { "Device" } th.num { "Flows" } th.num { "Sent" } th.num { "Received" } th.opt { "Last" } } }
                tbody {
                    @for d in &peers.rows {
                        tr {
                            td { a href={ "/devices/" (d.device_id) } { (d.label) } }
                            td.num.mono { (format::count(d.flows)) }
                            td.num.mono.up { (format::bytes(d.bytes_up)) }
                            td.num.mono.down { (format::bytes(d.bytes_down)) }
                            td.mono.opt { (time(d.last_seen)) }
                        }
                    }
                }
            }
        }
    }
}
