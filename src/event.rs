//! The one message type every producer sends to the writer (DESIGN §1, principle 1).
//!
//! Collectors send coalesced batches; the web sends user commands with a oneshot for
//! the reply. The channel is bounded (`channel_capacity`): collectors use `try_send`
//! and keep coalescing when it is full, so they never wait on the writer.

use tokio::sync::oneshot;

use crate::collect::system::SystemSample;
use crate::dns::DnsObservation;
use crate::flow::CtFlow;

/// Everything that may change the database.
#[derive(Debug)]
pub enum Event {
    /// What the conntrack tracker saw change since its previous batch.
    Flows(FlowBatch),
    /// DNS answers LAN clients received (packets or the dnsmasq log), oldest first.
    Dns(Vec<DnsObservation>),
    /// One router health reading (`collect::system`), folded into the minute rollups.
    /// Boxed: it is several times larger than the other variants.
    System(Box<SystemSample>),
    /// Reverse DNS and AS of remote hosts, resolved off the writer's path (`enrich`).
    Enrichment(Vec<crate::enrich::HostEnrichment>),
    /// Refused WAN connection attempts per minute (`collect::nflog`), added to
    /// `drop_minutes`.
    Drops(Vec<DropCount>),
    /// LAN addresses seen with their MAC (`collect::identity`: neighbour table, DHCP
    /// leases); the writer keys devices by MAC (`store::devices`).
    Identity(Vec<crate::collect::identity::Sighting>),
    /// A user action from the web UI; the writer answers on `reply` after commit.
    Command(Command, oneshot::Sender<Result<CommandReply, String>>),
}

/// One tick's worth of conntrack changes, already coalesced per flow.
#[derive(Debug, Default)]
pub struct FlowBatch {
    /// Flows whose counters or state changed, or that are new, with their *cumulative*
    /// counters. The writer computes deltas against what it has committed, so a
    /// restarted collector (which has forgotten what it sent) never double counts.
    pub changed: Vec<FlowChange>,
    /// Set after a complete table dump: every live entry was in `changed` of this or an
    /// earlier batch since the dump began, so stored live flows absent from that dump
    /// ended while nobody watched (netmon down, or an overrun lost their DESTROY).
    pub dump_complete: Option<DumpComplete>,
}

/// One flow's latest known state.
#[derive(Debug, Clone)]
pub struct FlowChange {
    pub flow: CtFlow,
    /// When netmon observed this state (unix ms). For an ended flow with a kernel stop
    /// timestamp, that timestamp.
    pub observed_ms: i64,
    /// The entry is gone (DESTROY seen, or absent from a dump).
    pub ended: bool,
}

/// Marks the end of a full dump; see [`FlowBatch::dump_complete`].
#[derive(Debug, Clone, Copy)]
pub struct DumpComplete {
    /// When the dump request was sent (unix ms). A stored live flow last seen before this
    /// and not refreshed by the dump is gone.
    pub started_ms: i64,
}

/// Refused inbound connection attempts of one source to one port in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCount {
    /// Start of the minute (unix ms).
    pub minute_ms: i64,
    pub src: std::net::IpAddr,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    pub dst_port: u16,
    /// The interface the attempt arrived on.
    pub iface: String,
    pub attempts: u64,
}

/// User actions that change the database (more arrive with later features).
#[derive(Debug)]
pub enum Command {
    /// Give a device a name of the owner's choosing (empty clears it).
    RenameDevice {
        device_id: i64,
        name: String,
    },
    /// Replace the owner's notes on a device (empty clears them).
    SetDeviceNotes {
        device_id: i64,
        notes: String,
    },
    /// Acknowledge an incident and its hits.
    AckIncident {
        incident_id: i64,
    },
    /// Acknowledge every open incident (and their hits).
    AckAllIncidents,
    /// Delete every acknowledged incident and its hits.
    ClearAcknowledged,
    /// Silence an incident (no notifications, no badge) until `until_ms`; 0 unmutes.
    MuteIncident {
        incident_id: i64,
        until_ms: i64,
    },
    /// Replace the owner's notes on an incident.
    SetIncidentNotes {
        incident_id: i64,
        notes: String,
    },
    /// Create (`id: None`) or replace an allow/suppress rule; answered with its id.
    /// `reevaluate` re-checks open incidents against the rule set afterwards.
    SaveRule {
        id: Option<i64>,
        /// Boxed: a rule is many times the size of every other command.
        rule: Box<crate::detect::rules::RuleSpec>,
        reevaluate: bool,
    },
    DeleteRule {
        rule_id: i64,
    },
    /// Save a search (a page URL) under a name; answered with its id. Checked by
    /// [`crate::store::saved::check_name`] and [`crate::store::saved::check_url`].
    CreateSearch {
        name: String,
        url: String,
    },
    RenameSearch {
        search_id: i64,
        name: String,
    },
    /// Pin (list first, show on the overview) or unpin a saved search.
    PinSearch {
        search_id: i64,
        pinned: bool,
    },
    DeleteSearch {
        search_id: i64,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum CommandReply {
    Done,
    /// The row a command created or changed (e.g. a rule's id).
    Id(i64),
}
