//! `/help`: what the anomalies and incidents pages show, what every reason code means —
//! worded after the trigger table of `src/detect/score.rs`, naming the `[detect]` keys
//! that set each threshold — and how allow and suppress rules and notifications work.

use maud::{Markup, html};

use super::layout::{Nav, page as shell};
use crate::detect::Code;

/// One sentence per code: when it fires, as `detect::score` implements it; `[detect]`
/// keys between backticks.
fn code_meaning(code: Code) -> &'static str {
    match code {
        Code::NewDst => {
            "The device connected to an internet address it has never contacted before (as far as netmon remembers)."
        }
        Code::DormantDst => {
            "The device contacted an address again that it had not contacted for `dormant_days` days (checked before this contact is recorded)."
        }
        Code::NewAsn => {
            "The remote host's autonomous system (network operator) is known and new for this device."
        }
        Code::RarePort => {
            "A destination port outside `common_ports` that this device has never used."
        }
        Code::UnexpectedProto => {
            "An IP protocol outside `common_protos` (TCP, UDP, ICMP and ICMPv6 by default)."
        }
        Code::NoRdns => {
            "The remote host is known to have no reverse DNS name. Never raises an incident on its own."
        }
        Code::HighEgress => {
            "The device uploaded more this minute than max(`egress_floor_bytes`, `volume_factor` × its usual upload at this hour of day)."
        }
        Code::HighFanout => {
            "The device contacted more new hosts within `scan_window_s` than max(`fanout_floor`, `volume_factor` × its usual); each new host counts once."
        }
        Code::PortScanLike => {
            "Within `scan_window_s` the device tried at least max(`scan_min_ports`, `volume_factor` × its usual) destination ports on at least `scan_min_hosts` addresses, with no single port above `scan_max_port_share` of the connections. Fires for learning devices too."
        }
        Code::NewDomain => {
            "The flow's registrable domain (e.g. example.co.uk) is new for this device."
        }
        Code::DirectIp => {
            "A TCP or UDP connection to an address that no DNS answer gave this client, and whose TLS handshake (if any) named no server: the device knew the address without asking DNS."
        }
        Code::Beacon => {
            "The last `beacon_intervals` intervals between connections to this destination were regular (coefficient of variation below `beacon_max_cv`, mean at least `beacon_min_interval_s`): something calls home on a timer."
        }
        Code::UploadHeavy => {
            "A flow sent at least `upload_min_bytes` and at least max(`upload_ratio_floor`, `volume_factor` × the device's usual ratio) times what it received."
        }
        Code::NxdomainBurst => {
            "The device got more NXDOMAIN answers this minute than max(`nxdomain_floor`, `volume_factor` × its usual): typical of generated (DGA) domain names."
        }
    }
}

/// [`code_meaning`] for a page: the config keys between backticks as `code`.
pub fn meaning(code: Code) -> Markup {
    html! {
        @for (i, part) in code_meaning(code).split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

/// [`code_meaning`] as plain text (a `title` tooltip): without the backticks.
pub fn meaning_text(code: Code) -> String {
    code_meaning(code).replace('`', "")
}

/// Whether a code is judged per flow or per device (device codes have no destination).
fn scope(code: Code) -> &'static str {
    match code {
        Code::HighEgress | Code::HighFanout | Code::PortScanLike | Code::NxdomainBurst => "device",
        _ => "flow",
    }
}

/// `GET /help`.
pub async fn page() -> Markup {
    shell(
        "Help",
        Nav::Help,
        false,
        html! {
            h1 { "How detection works" }
            section.help {
                h2 { "Hits, incidents, alerts" }
                p {
                    "Every new outbound flow, and every device each minute, is checked against what that device usually does. "
                    "Each reason found adds its code's weight (" code { "[detect.weights]" } ") to a score from 0 to 100. "
                    "A score at or above " code { "hit_threshold" } " is stored as a " strong { "hit" } " (the "
                    a href="/anomalies" { "Anomalies" } " page); repeats of the same hit within " code { "dedup_s" }
                    " seconds only raise its count."
                }
                p {
                    "A hit at or above " code { "alert_threshold" } " with one of the " code { "required_codes" }
                    ", and not made only of " code { "never_alone_codes" } ", is " strong { "alertable" } ": it opens an "
                    strong { "incident" } " (the " a href="/incidents" { "Incidents" } " page) or joins the device's open incident of the same kind "
                    "if that saw a hit within " code { "incident_window_s" } " seconds. A new incident is announced in the log and, when set up, to a webhook ("
                    code { "[notify]" } ")."
                }
                p {
                    strong { "Alerts: N" } " in the top bar counts incidents that are neither acknowledged nor muted. "
                    "Acknowledging an incident acknowledges its hits; a recurrence after the window opens a new incident. "
                    "Muting hides it from the badge and silences its notifications for 1 hour, 24 hours or 7 days. "
                    "\"Clear acknowledged\" deletes acknowledged incidents and their hits."
                }
                p {
                    "A device with less than " code { "learning_hours" } " of history is " strong { "learning" } ": "
                    "everything is new to it and it has no usual yet, so NEW_DST, DORMANT_DST, NEW_ASN, NEW_DOMAIN, HIGH_EGRESS, "
                    "HIGH_FANOUT, UPLOAD_HEAVY and NXDOMAIN_BURST stay quiet for it. Its usual (95th percentiles per device, "
                    "by hour of day for upload) is recomputed every " code { "baseline_interval_s" } " seconds from "
                    code { "baseline_days" } " days of history."
                }
                h2 #codes { "Reason codes" }
                table.data.codes-help {
                    thead { tr { th { "Code" } th { "Per" } th { "Fires when" } } }
                    tbody {
                        @for c in Code::ALL {
                            tr id=(c.as_str()) {
                                td.mono { (c.as_str()) }
                                td { (scope(c)) }
                                td { (meaning(c)) }
                            }
                        }
                    }
                }
                p.muted { "Names in code type are keys of the " code { "[detect]" } " section of the config file." }
                h2 #rules { "Allow and suppress rules" }
                p {
                    "A " a href="/rules" { "rule" } " matches a flow when every field it sets matches: a remote address or CIDR prefix, "
                    "an AS number, an AS organisation (case-insensitive part of the name), a domain suffix on label boundaries "
                    "(example.com matches cdn.example.com, not badexample.com), a destination port or port range, an IP protocol; "
                    "for one device or every device; until an optional expiry."
                }
                ul {
                    li { strong { "don't flag" } " (" code { "allow" } " in the API) leaves a matching flow out of scoring entirely: no reasons, and it does not count towards "
                        "the device's windows (a BitTorrent client allowed on its ports never looks like a port scan)." }
                    li { strong { "don't flag code" } " (" code { "suppress" } ") removes one code (or every code) from a matching flow's reasons. Neither touches the firewall: the traffic flows as before." }
                }
                p {
                    "Rules apply to what is scored after they are saved. With \"re-evaluate open incidents\" the open incidents "
                    "are checked against the rules again. The " strong { "don't flag this" } " button on a hit creates a don't-flag rule for "
                    "its domain (or its address when no domain is known) on its device; " strong { "mute for this device" }
                    " creates a suppress rule per code of the hit, for its device and destination."
                }
                h2 #notify { "Notifications" }
                p {
                    "Each new incident at or above " code { "[notify] min_score" } " is written to the log (syslog on OpenWrt) and, "
                    "with " code { "webhook_url" } " set, POSTed as JSON, or in the form ntfy or Gotify expect ("
                    code { "format" } "). A receiver that is down is retried for about five minutes. With "
                    code { "digest_minutes" } " the webhook gets one summary per period instead."
                }
            }
        },
    )
}
