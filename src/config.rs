//! The one configuration file (`/etc/netmon/netmon.toml`).
//!
//! Every key has a default, so an empty file is a valid config. Unknown keys and bad
//! values are errors that name the key, the value and the accepted form. The sample
//! with every key commented is `packaging/netmon.toml`; `netmon check-config` prints the
//! effective config.
//!
//! (Long: every key's default, validation and error text in one place, ≈ 1 350 lines of
//! code; the rest are tests.)

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const DEFAULT_PATH: &str = "/etc/netmon/netmon.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}` = {value}: {expected}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        value: String,
        expected: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// LAN bridge/interfaces. Their addresses give the default `lan_subnets` and `listen`.
    pub lan_interfaces: Vec<String>,
    /// LAN subnets (CIDR). Empty: derived from the addresses of `lan_interfaces`.
    pub lan_subnets: Vec<IpNet>,
    /// WAN interfaces (for interface counters and, later, drop logging).
    pub wan_interfaces: Vec<String>,
    /// Web UI addresses. Empty: every address of `lan_interfaces`, port 8080.
    pub listen: Vec<SocketAddr>,
    /// Port used when `listen` is derived from the LAN addresses.
    pub port: u16,
    /// The SQLite database file. Its directory is created if missing.
    pub db_path: PathBuf,
    /// The history store on persistent storage (`store::history`): `auto` (on when
    /// `db_path` is on tmpfs/ramfs), `on` or `off`.
    pub persist: Persist,
    /// The history database (persistent storage: flash, or a disk).
    pub persist_path: PathBuf,
    /// Seconds between syncs of the history (each writes what changed since the last).
    pub persist_interval_s: u64,
    /// The history database's budget (MiB): over it, its oldest rows are pruned.
    pub persist_max_mb: u32,
    /// Writer tick: the longest a change waits before it is committed (ms).
    pub tick_ms: u64,
    /// Most events the writer applies in one transaction before it commits early.
    pub max_batch: usize,
    /// Conntrack table dump interval (s): refreshes counters of flows without events.
    pub dump_interval_s: u64,
    /// Netlink receive buffer (bytes). Bursts of DESTROY events need a large one.
    pub netlink_rcvbuf_bytes: usize,
    /// Capacity of the collector → writer channel (messages, each a whole batch).
    pub channel_capacity: usize,
    /// Most flows the tracker keeps in memory; new flows past it are counted and dropped.
    pub max_tracked_flows: usize,
    /// Set `net.netfilter.nf_conntrack_acct`/`_timestamp` to 1 at start.
    pub enable_conntrack_sysctls: bool,
    /// The unprivileged account netmon switches to at start, keeping only
    /// `CAP_NET_ADMIN` (and `CAP_NET_BIND_SERVICE` for a port below 1024); see
    /// [`crate::privs`]. Empty: stay root. An account that does not exist: stay root,
    /// with a warning at every start.
    pub user: String,
    pub retention: Retention,
    pub dns: Dns,
    pub firewall: Firewall,
    pub system: System,
    pub enrich: Enrich,
    pub devices: Devices,
    pub export: Export,
    pub web: Web,
    pub notify: Notify,
    pub detect: Detect,
}

/// See [`Config::persist`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persist {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Ended flows older than this are deleted (days).
    pub flows_days: u32,
    /// Per-minute rollups are kept this long (days).
    pub minute_rollups_days: u32,
    /// Per-hour rollups are kept this long (days).
    pub hour_rollups_days: u32,
    /// Total database budget (MiB): the file plus its write-ahead log. Checked every
    /// couple of seconds; past it raw rows (flows, DNS queries) of the device holding
    /// the most go first, rollups stay (`store::budget`).
    pub max_db_mb: u64,
    /// How often the age limits are applied (s). The budget and the caps below are
    /// checked every couple of seconds regardless.
    pub interval_s: u64,
    /// Most flow rows one device keeps; past it its own oldest go (ended first). Its
    /// traffic still adds up in the rollups.
    pub max_flows_per_device: u64,
    /// Most DNS query rows (with their answers) one device keeps; past it its own
    /// oldest go. Per-minute DNS counts still add up.
    pub max_dns_queries_per_device: u64,
    /// Most DNS query rows one registrable domain ("example.co.uk") keeps across all
    /// devices; past it the domain's own oldest go.
    pub max_dns_queries_per_domain: u64,
    /// Most devices netmon tracks. A device comes into being when a LAN address is seen
    /// in the neighbour table or a DHCP lease, or starts a flow; past this many, new
    /// addresses are not made devices (counted in `netmon_devices_refused_total`), so a
    /// host forging source addresses cannot grow the table without end.
    pub max_devices: u64,
}

/// Where domain names come from and how flows are matched to them (`[dns]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Read DNS answers the router sends to LAN clients from packets (NFQUEUE). Needs
    /// netmon's nftables table (`firewall.manage = true`, or the shipped fw4 include).
    pub packet_capture: bool,
    /// NFQUEUE number of the DNS answer queue.
    pub queue_num: u16,
    /// Also queue the first data packet a LAN client sends on each new TLS connection
    /// (TCP 443 and 853) and name flows no DNS answer named by the server name in its
    /// ClientHello. Needs `packet_capture`.
    pub tls_names: bool,
    /// DNS-over-HTTPS resolvers (names or addresses) a device's use of shows on its
    /// page, besides the shipped list of public ones (`store::resolvers::KNOWN`).
    pub encrypted_resolvers: Vec<String>,
    /// dnsmasq's query log to follow (its `log-facility` file, or a syslog file it is
    /// relayed to). Empty: off. Used for attribution when `packet_capture` is off.
    pub log_file: PathBuf,
    /// TTL assumed for answers read from the log (dnsmasq does not log TTLs), seconds.
    pub log_assumed_ttl_s: u32,
    /// A flow is matched to an answer the same client got for its destination if the
    /// flow starts within the answer's TTL plus this many seconds.
    pub attribution_slack_s: u32,
    /// DNS queries and answers are kept this many days.
    pub retention_days: u32,
}

/// netmon's own nftables table (`table inet netmon`) (`[firewall]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Firewall {
    /// Create the table at start (replacing an older copy) and delete it at exit. Off
    /// when the router's firewall loads the same rules itself (OpenWrt fw4 include).
    pub manage: bool,
    /// NFLOG group the WAN connection-attempt rules log to (`collect::nflog`). Must not
    /// be shared with another logger (ulogd), which would take the messages instead.
    pub drop_log_group: u16,
    /// New inbound WAN connection attempts logged per second at most (burst: ten
    /// times as many). 0: drop logging off. Attempts past the limit are not counted.
    pub drop_log_rate: u32,
}

/// Feeding engines built for many routers (`[export]`, DESIGN §6): the Prometheus
/// endpoint's labels and bounds, and the IPFIX flow exporter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Export {
    /// Value of the `router` label on every metric, so one Prometheus can scrape many
    /// routers and still tell them apart. Empty: the router's hostname.
    pub router_label: String,
    /// Devices with their own series in `netmon_device_*_total`; traffic of devices past
    /// the cap goes to `device="other"`, so a network full of short-lived guests cannot
    /// blow up Prometheus' series count.
    pub max_device_series: usize,
    /// IPFIX collector, "address:port" (an IP address: netmon never resolves names
    /// through libc). Empty: the exporter is off.
    pub ipfix_collector: String,
    /// Observation Domain ID in every IPFIX message header; give each router its own.
    pub ipfix_observation_domain: u32,
    /// A flow still running is exported in slices of at most this many seconds (the
    /// active timeout), so long downloads show up as a rate at the collector.
    pub ipfix_active_timeout_s: u64,
    /// Templates are re-sent this often (seconds), so a collector that restarted can
    /// decode data again; over UDP nothing else tells it the templates.
    pub ipfix_template_refresh_s: u64,
    /// Largest IPFIX message (UDP payload, bytes); keep it under the path MTU.
    pub ipfix_max_message_bytes: usize,
    /// How a connection's two directions travel: two records (every collector) or one
    /// RFC 5103 biflow record (collectors that read reverse elements, e.g. nfdump).
    pub ipfix_flow_model: FlowModel,
}

/// See [`Export::ipfix_flow_model`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowModel {
    Uniflow,
    Biflow,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lan_interfaces: vec!["br-lan".into()],
            lan_subnets: Vec::new(),
            wan_interfaces: vec!["wan".into()],
            listen: Vec::new(),
            port: 8080,
            db_path: PathBuf::from("/tmp/netmon/netmon.db"),
            persist: Persist::Auto,
            persist_path: PathBuf::from("/etc/netmon/netmon.db"),
            persist_interval_s: 600,
            persist_max_mb: 4,
            tick_ms: 1000,
            max_batch: 50_000,
            dump_interval_s: 10,
            netlink_rcvbuf_bytes: 8 << 20,
            channel_capacity: 64,
            max_tracked_flows: 65_536,
            enable_conntrack_sysctls: true,
            user: "netmon".into(),
            retention: Retention::default(),
            dns: Dns::default(),
            firewall: Firewall::default(),
            system: System::default(),
            enrich: Enrich::default(),
            devices: Devices::default(),
            export: Export::default(),
            web: Web::default(),
            notify: Notify::default(),
            detect: Detect::default(),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            flows_days: 7,
            minute_rollups_days: 7,
            hour_rollups_days: 90,
            // A 128 MB router keeps the database in /tmp, which is RAM shared with
            // everything else (see packaging/netmon.toml for the arithmetic).
            max_db_mb: 32,
            interval_s: 300,
            max_flows_per_device: 50_000,
            max_dns_queries_per_device: 20_000,
            max_dns_queries_per_domain: 10_000,
            max_devices: 1_024,
        }
    }
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            packet_capture: true,
            queue_num: 5353,
            tls_names: true,
            encrypted_resolvers: Vec::new(),
            log_file: PathBuf::new(),
            log_assumed_ttl_s: 300,
            attribution_slack_s: 60,
            retention_days: 30,
        }
    }
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall {
            manage: true,
            drop_log_group: 5354,
            drop_log_rate: 100,
        }
    }
}

/// Router health sampling (`[system]`, `collect::system`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct System {
    /// Seconds between two readings of CPU, memory, interfaces, conntrack fill and
    /// temperatures. Rates are averages over this interval; each reading is a handful
    /// of small `/proc` reads, so 5 s costs nothing measurable on a router.
    pub sample_interval_s: u64,
}

impl Default for System {
    fn default() -> Self {
        System {
            sample_interval_s: 5,
        }
    }
}

/// Enrichment of remote hosts (`[enrich]`, `src/enrich/`): reverse DNS and AS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enrich {
    /// Look up the PTR name of every remote host.
    pub rdns: bool,
    /// DNS server for PTR queries: an IP address, optionally with a port. Empty: the
    /// first `nameserver` of /etc/resolv.conf, else 127.0.0.1.
    pub resolver: String,
    /// PTR queries in flight at most.
    pub rdns_concurrency: usize,
    /// An address without PTR is not asked again for at least this long (seconds); a
    /// longer negative TTL from the zone's SOA wins.
    pub rdns_negative_ttl_s: u32,
    /// IP-range → ASN database (.csv, .tsv or .mmdb: ip-location-db CSV, iptoasn TSV or
    /// a MaxMind DB such as GeoLite2-ASN; `netmon-asn-update` fetches one). Empty: no AS
    /// numbers.
    pub asn_db: PathBuf,
}

impl Default for Enrich {
    fn default() -> Self {
        Enrich {
            rdns: true,
            resolver: String::new(),
            rdns_concurrency: 8,
            rdns_negative_ttl_s: 3600,
            asn_db: PathBuf::new(),
        }
    }
}

/// Device identity (`[devices]`, `collect::identity`): the MAC behind each LAN address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Devices {
    /// Read the kernel's neighbour table (ARP / NDP): every LAN address the router
    /// talks to, with its MAC.
    pub neighbours: bool,
    /// DHCP lease files to read for MACs and hostnames: dnsmasq's (IPv4 and IPv6) and
    /// odhcpd's state file. Missing files are fine; they are read when they appear.
    pub lease_files: Vec<PathBuf>,
}

impl Default for Devices {
    fn default() -> Self {
        Devices {
            neighbours: true,
            lease_files: vec![
                PathBuf::from("/tmp/dhcp.leases"),
                PathBuf::from("/var/lib/misc/dnsmasq.leases"),
                PathBuf::from("/tmp/hosts/odhcpd"),
            ],
        }
    }
}

impl Default for Export {
    fn default() -> Self {
        Export {
            router_label: String::new(),
            max_device_series: 64,
            ipfix_collector: String::new(),
            ipfix_observation_domain: 1,
            ipfix_active_timeout_s: 60,
            ipfix_template_refresh_s: 60,
            ipfix_max_message_bytes: 1400,
            ipfix_flow_model: FlowModel::Uniflow,
        }
    }
}

/// Who may use the web UI (`[web]`, `src/web/auth.rs`, README "Security").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Web {
    /// `password`: log in with the password whose hash is `password_hash`. `none`: no
    /// login at all — refused unless every `listen` address is loopback, where only
    /// the router itself (or an SSH tunnel) can reach the UI.
    pub auth: WebAuth,
    /// Argon2id hash of the UI password (a PHC string, `$argon2id$v=19$…`), written by
    /// `netmon passwd`. Empty with `auth = "password"`: the UI shows only how to set one.
    pub password_hash: String,
    /// A login lasts at most this many hours, however active.
    pub session_hours: u32,
    /// A login ends after this many minutes without a request.
    pub session_idle_minutes: u32,
    /// PEM or DER certificate chain for HTTPS (e.g. OpenWrt's `/etc/uhttpd.crt`).
    /// Empty (with `tls_key`): plain HTTP.
    pub tls_cert: PathBuf,
    /// The certificate's private key (e.g. `/etc/uhttpd.key`).
    pub tls_key: PathBuf,
    /// Bearer token `/metrics` requires (`Authorization: Bearer …`), from any address.
    /// Empty: `/metrics` answers only clients on loopback (the router itself, an SSH
    /// tunnel), since it lists every device, its owner's name and its traffic. A
    /// reverse proxy on the router makes every client look local: set a token then.
    pub metrics_token: String,
}

/// See [`Web::auth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebAuth {
    Password,
    None,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            auth: WebAuth::Password,
            password_hash: String::new(),
            session_hours: 24,
            session_idle_minutes: 120,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            metrics_token: String::new(),
        }
    }
}

/// Messages about new incidents (`[notify]`, `src/detect/notify.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notify {
    /// Receiver of a POST per new incident: `https://` or `http://`, with a host name
    /// (resolved by netmon through the router's resolver) or an IP address. Empty: no
    /// webhook.
    pub webhook_url: String,
    /// PEM file of the CA certificates an `https://` webhook's certificate must chain
    /// to. Empty: the system's bundle (`/etc/ssl/certs/ca-certificates.crt`, from
    /// OpenWrt's `ca-bundle` or Debian's `ca-certificates`).
    pub ca_file: String,
    /// Body of the POST: `json`, `ntfy` or `gotify`.
    pub format: NotifyFormat,
    /// Minutes per webhook digest (one message summing up the period's new incidents).
    /// 0: one message per incident.
    pub digest_minutes: u32,
    /// One log line (syslog on OpenWrt) per new incident.
    pub syslog: bool,
    /// Incidents scoring below this (0–100) are not announced anywhere.
    pub min_score: u32,
}

/// See [`Notify::format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    /// The incident as JSON plus a human `message`.
    Json,
    /// ntfy: the text as the body, `Title`/`Priority`/`Tags` headers.
    Ntfy,
    /// Gotify: `{title, message, priority}`.
    Gotify,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            webhook_url: String::new(),
            ca_file: String::new(),
            format: NotifyFormat::Json,
            digest_minutes: 0,
            syslog: true,
            min_score: 0,
        }
    }
}

/// Detection (`[detect]`, `src/detect/`): weights, thresholds and windows. Every code,
/// its trigger and its evidence are described in `src/detect/score.rs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detect {
    /// Score flows and devices at all. On by default: detection that has to be switched
    /// on is detection nobody has.
    pub enabled: bool,
    /// Scores (0–100) at or above this are stored as hits.
    pub hit_threshold: u32,
    /// Hits at or above this that carry one of `required_codes` open incidents.
    pub alert_threshold: u32,
    /// A hit alerts only with one of these codes (empty: any code).
    pub required_codes: Vec<crate::detect::Code>,
    /// A hit whose codes are all in this list never alerts (e.g. a host without rDNS).
    pub never_alone_codes: Vec<crate::detect::Code>,
    /// Repeats of a hit (same fingerprint) within this many seconds fold into it.
    pub dedup_s: u64,
    /// A hit joins its device's open incident of the same kind if that incident saw a
    /// hit within this many seconds (rolling); otherwise it opens a new incident.
    pub incident_window_s: u64,
    /// Hits and incidents older than this many days are deleted.
    pub retention_days: u32,
    /// Destination ports that never count as RARE_PORT.
    pub common_ports: Vec<u16>,
    /// IP protocol numbers that never count as UNEXPECTED_PROTO (1 ICMP, 6 TCP, 17 UDP,
    /// 58 ICMPv6).
    pub common_protos: Vec<u8>,
    /// A destination the device has not contacted for this many days is DORMANT_DST.
    /// Memory of destinations comes from the stored flows, so this only works up to
    /// `retention.flows_days`; older contacts count as new (NEW_DST).
    pub dormant_days: u32,
    /// A device with less history than this (hours) is still learning: no novelty codes
    /// (everything is new) and no codes that compare with its baseline.
    pub learning_hours: u32,
    /// Days of minute rollups each baseline is computed from (hourly, in the writer).
    pub baseline_days: u32,
    /// Seconds between two baseline computations.
    pub baseline_interval_s: u64,
    /// A volume code fires above this many times the device's 95th percentile.
    pub volume_factor: f64,
    /// HIGH_EGRESS never fires below this upload per minute (bytes).
    pub egress_floor_bytes: u64,
    /// HIGH_FANOUT never fires at or below this many new hosts per `scan_window_s`.
    pub fanout_floor: u32,
    /// Sliding window (seconds) of PORT_SCAN_LIKE and HIGH_FANOUT.
    pub scan_window_s: u64,
    /// PORT_SCAN_LIKE: at least this many distinct destination ports …
    pub scan_min_ports: u32,
    /// … across at least this many remote addresses …
    pub scan_min_hosts: u32,
    /// … with no single port carrying more than this share (0–1) of the connections.
    pub scan_max_port_share: f64,
    /// BEACON: intervals between connection starts to one destination looked at.
    pub beacon_intervals: u32,
    /// BEACON: largest coefficient of variation (std dev / mean) of those intervals.
    pub beacon_max_cv: f64,
    /// BEACON: shortest mean interval (seconds); faster repeats are a burst, not a beacon.
    pub beacon_min_interval_s: f64,
    /// UPLOAD_HEAVY: a flow must have sent at least this many bytes …
    pub upload_min_bytes: u64,
    /// … and at least this many times what it received (or `volume_factor` times the
    /// device's usual ratio, when that is higher).
    pub upload_ratio_floor: f64,
    /// NXDOMAIN_BURST never fires below this many NXDOMAIN answers per minute.
    pub nxdomain_floor: u32,
    /// Devices whose detection state is kept in memory; the least recently active go
    /// first (their state is rebuilt from the database when they return).
    pub max_devices: usize,
    /// Destinations, domains and ports remembered per device (each); the oldest go first.
    pub max_destinations: usize,
    pub weights: DetectWeights,
}

/// The weight (0–100) each code adds to a score (`[detect.weights]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectWeights {
    pub new_dst: u32,
    pub dormant_dst: u32,
    pub new_asn: u32,
    pub rare_port: u32,
    pub unexpected_proto: u32,
    pub no_rdns: u32,
    pub high_egress: u32,
    pub high_fanout: u32,
    pub port_scan_like: u32,
    pub new_domain: u32,
    pub direct_ip: u32,
    pub beacon: u32,
    pub upload_heavy: u32,
    pub nxdomain_burst: u32,
}

impl DetectWeights {
    pub fn of(&self, code: crate::detect::Code) -> u32 {
        use crate::detect::Code;
        match code {
            Code::NewDst => self.new_dst,
            Code::DormantDst => self.dormant_dst,
            Code::NewAsn => self.new_asn,
            Code::RarePort => self.rare_port,
            Code::UnexpectedProto => self.unexpected_proto,
            Code::NoRdns => self.no_rdns,
            Code::HighEgress => self.high_egress,
            Code::HighFanout => self.high_fanout,
            Code::PortScanLike => self.port_scan_like,
            Code::NewDomain => self.new_domain,
            Code::DirectIp => self.direct_ip,
            Code::Beacon => self.beacon,
            Code::UploadHeavy => self.upload_heavy,
            Code::NxdomainBurst => self.nxdomain_burst,
        }
    }
}

impl Default for Detect {
    fn default() -> Self {
        use crate::detect::Code;
        Detect {
            enabled: true,
            hit_threshold: 50,
            alert_threshold: 60,
            required_codes: vec![
                Code::RarePort,
                Code::UnexpectedProto,
                Code::HighEgress,
                Code::HighFanout,
                Code::PortScanLike,
                Code::Beacon,
                Code::UploadHeavy,
                Code::NxdomainBurst,
            ],
            never_alone_codes: vec![Code::NoRdns],
            dedup_s: 600,
            incident_window_s: 600,
            retention_days: 90,
            common_ports: vec![53, 80, 123, 443, 853],
            common_protos: vec![1, 6, 17, 58],
            dormant_days: 5,
            learning_hours: 24,
            baseline_days: 3,
            baseline_interval_s: 3600,
            volume_factor: 3.0,
            egress_floor_bytes: 10_000_000,
            fanout_floor: 30,
            scan_window_s: 600,
            scan_min_ports: 20,
            scan_min_hosts: 20,
            scan_max_port_share: 0.8,
            beacon_intervals: 12,
            beacon_max_cv: 0.1,
            beacon_min_interval_s: 2.0,
            upload_min_bytes: 10_000_000,
            upload_ratio_floor: 10.0,
            nxdomain_floor: 20,
            max_devices: 1024,
            max_destinations: 4096,
            weights: DetectWeights::default(),
        }
    }
}

impl Default for DetectWeights {
    fn default() -> Self {
        DetectWeights {
            new_dst: 30,
            dormant_dst: 15,
            new_asn: 20,
            rare_port: 25,
            unexpected_proto: 20,
            no_rdns: 10,
            high_egress: 60,
            high_fanout: 60,
            port_scan_like: 70,
            new_domain: 15,
            direct_ip: 10,
            beacon: 60,
            upload_heavy: 40,
            nxdomain_burst: 60,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(&e, text),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// (Long: one check per key, in the order of the sample config.)
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, expected: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            expected: expected.to_owned(),
        };
        if self.firewall.drop_log_rate > 100_000 {
            return Err(invalid(
                "firewall.drop_log_rate",
                self.firewall.drop_log_rate.to_string(),
                "a number of attempts per second from 0 (off) to 100000",
            ));
        }
        if !(50..=60_000).contains(&self.tick_ms) {
            return Err(invalid(
                "tick_ms",
                self.tick_ms.to_string(),
                "a number of milliseconds from 50 to 60000",
            ));
        }
        if self.max_batch == 0 {
            return Err(invalid(
                "max_batch",
                "0".into(),
                "a positive number of events",
            ));
        }
        if !(1..=86_400).contains(&self.dump_interval_s) {
            return Err(invalid(
                "dump_interval_s",
                self.dump_interval_s.to_string(),
                "a number of seconds from 1 to 86400",
            ));
        }
        if !(64 << 10..=1 << 30).contains(&self.netlink_rcvbuf_bytes) {
            return Err(invalid(
                "netlink_rcvbuf_bytes",
                self.netlink_rcvbuf_bytes.to_string(),
                "a size in bytes from 65536 to 1073741824",
            ));
        }
        if !(1..=1_000_000).contains(&self.channel_capacity) {
            return Err(invalid(
                "channel_capacity",
                self.channel_capacity.to_string(),
                "a number of messages from 1 to 1000000",
            ));
        }
        if self.max_tracked_flows < 1024 {
            return Err(invalid(
                "max_tracked_flows",
                self.max_tracked_flows.to_string(),
                "at least 1024 flows",
            ));
        }
        if self.port == 0 {
            return Err(invalid("port", "0".into(), "a TCP port from 1 to 65535"));
        }
        if !crate::privs::is_account_name(&self.user) {
            return Err(invalid(
                "user",
                format!("{:?}", self.user),
                "an account name from /etc/passwd (letters, digits, `_`, `-`, `.`, at most \
                 32 characters), like \"netmon\", or \"\" to stay root",
            ));
        }
        if let Some(a) = self.listen.iter().find(|a| a.port() == 0) {
            return Err(invalid(
                "listen",
                format!("\"{a}\""),
                "an address with a port from 1 to 65535, like \"192.168.1.1:8080\"",
            ));
        }
        if self.db_path.as_os_str().is_empty() {
            return Err(invalid(
                "db_path",
                "\"\"".into(),
                "a file path, like \"/tmp/netmon/netmon.db\"",
            ));
        }
        if !(1..=7 * 86_400).contains(&self.persist_interval_s) {
            return Err(invalid(
                "persist_interval_s",
                self.persist_interval_s.to_string(),
                "a number of seconds from 1 to 604800",
            ));
        }
        if !(1..=4096).contains(&self.persist_max_mb) {
            return Err(invalid(
                "persist_max_mb",
                self.persist_max_mb.to_string(),
                "a number of MiB from 1 to 4096",
            ));
        }
        if self.persist != Persist::Off && self.persist_path == self.db_path {
            return Err(invalid(
                "persist_path",
                format!("\"{}\"", self.persist_path.display()),
                "a path other than db_path (or persist = \"off\")",
            ));
        }
        let r = &self.retention;
        for (key, days) in [
            ("retention.flows_days", r.flows_days),
            ("retention.minute_rollups_days", r.minute_rollups_days),
            ("retention.hour_rollups_days", r.hour_rollups_days),
        ] {
            if !(1..=3650).contains(&days) {
                return Err(invalid(
                    key,
                    days.to_string(),
                    "a number of days from 1 to 3650",
                ));
            }
        }
        if !(4..=1 << 20).contains(&r.max_db_mb) {
            return Err(invalid(
                "retention.max_db_mb",
                r.max_db_mb.to_string(),
                "a size in MiB from 4 to 1048576",
            ));
        }
        if !(10..=1_000_000).contains(&r.max_devices) {
            return Err(invalid(
                "retention.max_devices",
                r.max_devices.to_string(),
                "a number of devices from 10 to 1000000",
            ));
        }
        for (key, cap) in [
            ("retention.max_flows_per_device", r.max_flows_per_device),
            (
                "retention.max_dns_queries_per_device",
                r.max_dns_queries_per_device,
            ),
            (
                "retention.max_dns_queries_per_domain",
                r.max_dns_queries_per_domain,
            ),
        ] {
            if !(100..=100_000_000).contains(&cap) {
                return Err(invalid(
                    key,
                    cap.to_string(),
                    "a number of rows from 100 to 100000000",
                ));
            }
        }
        if !(10..=86_400).contains(&r.interval_s) {
            return Err(invalid(
                "retention.interval_s",
                r.interval_s.to_string(),
                "a number of seconds from 10 to 86400",
            ));
        }
        let d = &self.dns;
        if !(1..=3650).contains(&d.retention_days) {
            return Err(invalid(
                "dns.retention_days",
                d.retention_days.to_string(),
                "a number of days from 1 to 3650",
            ));
        }
        if !(1..=86_400).contains(&d.log_assumed_ttl_s) {
            return Err(invalid(
                "dns.log_assumed_ttl_s",
                d.log_assumed_ttl_s.to_string(),
                "a number of seconds from 1 to 86400",
            ));
        }
        if d.attribution_slack_s > 86_400 {
            return Err(invalid(
                "dns.attribution_slack_s",
                d.attribution_slack_s.to_string(),
                "a number of seconds from 0 to 86400",
            ));
        }
        if !(1..=3600).contains(&self.system.sample_interval_s) {
            return Err(invalid(
                "system.sample_interval_s",
                self.system.sample_interval_s.to_string(),
                "a number of seconds from 1 to 3600",
            ));
        }
        self.validate_export(path)?;
        self.validate_enrich(path)?;
        self.validate_web(path)?;
        self.validate_notify(path)?;
        self.validate_detect(path)?;
        Ok(())
    }

    /// `[detect]`: thresholds are scores (0–100), windows and sizes have bounds a router
    /// can afford, ratios are ratios.
    ///
    /// (Long: one check per `[detect]` key.)
    fn validate_detect(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, expected: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            expected: expected.to_owned(),
        };
        let d = &self.detect;
        for (key, v) in [
            ("detect.hit_threshold", d.hit_threshold),
            ("detect.alert_threshold", d.alert_threshold),
        ] {
            if v > 100 {
                return Err(invalid(key, v.to_string(), "a score from 0 to 100"));
            }
        }
        for code in crate::detect::Code::ALL {
            let w = d.weights.of(code);
            if w > 100 {
                return Err(invalid(
                    "detect.weights",
                    format!("{} = {w}", code.as_str().to_ascii_lowercase()),
                    "a weight from 0 to 100",
                ));
            }
        }
        let range = |key: &'static str, v: u64, (lo, hi): (u64, u64), unit: &str| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    v.to_string(),
                    &format!("a number of {unit} from {lo} to {hi}"),
                ))
            }
        };
        const WEEK_S: u64 = 7 * 86_400;
        range("detect.dedup_s", d.dedup_s, (1, WEEK_S), "seconds")?;
        range(
            "detect.incident_window_s",
            d.incident_window_s,
            (1, WEEK_S),
            "seconds",
        )?;
        range(
            "detect.retention_days",
            d.retention_days.into(),
            (1, 3650),
            "days",
        )?;
        range(
            "detect.dormant_days",
            d.dormant_days.into(),
            (1, 3650),
            "days",
        )?;
        range(
            "detect.learning_hours",
            d.learning_hours.into(),
            (0, 24 * 90),
            "hours",
        )?;
        range(
            "detect.baseline_days",
            d.baseline_days.into(),
            (1, 90),
            "days",
        )?;
        range(
            "detect.baseline_interval_s",
            d.baseline_interval_s,
            (60, WEEK_S),
            "seconds",
        )?;
        range(
            "detect.scan_window_s",
            d.scan_window_s,
            (10, 86_400),
            "seconds",
        )?;
        range(
            "detect.scan_min_ports",
            d.scan_min_ports.into(),
            (2, 65_535),
            "ports",
        )?;
        range(
            "detect.scan_min_hosts",
            d.scan_min_hosts.into(),
            (1, 100_000),
            "addresses",
        )?;
        range(
            "detect.beacon_intervals",
            d.beacon_intervals.into(),
            (3, 256),
            "intervals",
        )?;
        range(
            "detect.max_devices",
            d.max_devices as u64,
            (1, 100_000),
            "devices",
        )?;
        if !(16..=1_000_000).contains(&d.max_destinations) {
            return Err(invalid(
                "detect.max_destinations",
                d.max_destinations.to_string(),
                "a number of entries per device from 16 to 1000000",
            ));
        }
        let ratios = [
            (
                "detect.scan_max_port_share",
                d.scan_max_port_share,
                0.0,
                1.0,
            ),
            ("detect.beacon_max_cv", d.beacon_max_cv, 0.0, 1.0),
        ];
        for (key, v, lo, hi) in ratios {
            if !(v > lo && v <= hi) {
                return Err(invalid(
                    key,
                    v.to_string(),
                    &format!("a number above {lo} and at most {hi}"),
                ));
            }
        }
        for (key, v) in [
            ("detect.volume_factor", d.volume_factor),
            ("detect.upload_ratio_floor", d.upload_ratio_floor),
        ] {
            if !(v.is_finite() && v >= 1.0) {
                return Err(invalid(
                    key,
                    v.to_string(),
                    "a factor of at least 1.0, like 3.0",
                ));
            }
        }
        if !(d.beacon_min_interval_s.is_finite() && d.beacon_min_interval_s >= 0.0) {
            return Err(invalid(
                "detect.beacon_min_interval_s",
                d.beacon_min_interval_s.to_string(),
                "a number of seconds of at least 0, like 2.0",
            ));
        }
        Ok(())
    }

    /// `[web]`: no open UI on a network address, a usable password hash, TLS files
    /// given in pairs.
    fn validate_web(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, expected: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            expected: expected.to_owned(),
        };
        let w = &self.web;
        if w.auth == WebAuth::None {
            let exposed = if self.listen.is_empty() {
                Some("listen = [] (every LAN address)".to_owned())
            } else {
                self.listen
                    .iter()
                    .find(|a| !a.ip().is_loopback())
                    .map(|a| format!("listen address {a}"))
            };
            if let Some(exposed) = exposed {
                return Err(invalid(
                    "web.auth",
                    format!("\"none\" with {exposed}"),
                    "\"password\" (set it with `netmon passwd`), or \"none\" only when every \
                     `listen` address is loopback, like listen = [\"127.0.0.1:8080\"]",
                ));
            }
        }
        if !w.password_hash.is_empty()
            && let Err(why) = crate::passwd::check_hash(&w.password_hash)
        {
            // Never echoed: a hash is enough for an offline guessing attack, and the
            // usual mistake is pasting the password itself here.
            return Err(invalid(
                "web.password_hash",
                "(set, not shown)".into(),
                &format!("{why}; set it with `netmon passwd`"),
            ));
        }
        if !(1..=24 * 366).contains(&w.session_hours) {
            return Err(invalid(
                "web.session_hours",
                w.session_hours.to_string(),
                "a number of hours from 1 to 8784",
            ));
        }
        if !(1..=24 * 60 * 366).contains(&w.session_idle_minutes) {
            return Err(invalid(
                "web.session_idle_minutes",
                w.session_idle_minutes.to_string(),
                "a number of minutes from 1 to 527040",
            ));
        }
        if w.tls_cert.as_os_str().is_empty() != w.tls_key.as_os_str().is_empty() {
            let (key, value) = if w.tls_key.as_os_str().is_empty() {
                ("web.tls_key", "\"\"".to_owned())
            } else {
                ("web.tls_cert", "\"\"".to_owned())
            };
            return Err(invalid(
                key,
                value,
                "both tls_cert and tls_key (PEM or DER files, e.g. \"/etc/uhttpd.crt\" and \
                 \"/etc/uhttpd.key\"), or neither for plain HTTP",
            ));
        }
        let token = &w.metrics_token;
        if !token.is_empty()
            && (token.len() < 16
                || token.len() > 256
                || !token.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(invalid(
                "web.metrics_token",
                "(not shown)".into(),
                "16 to 256 printable ASCII characters without spaces (e.g. `openssl rand -hex 24`), \
                 or \"\" for /metrics on loopback only",
            ));
        }
        Ok(())
    }

    /// `[export]`: the collector address must parse here, so a typo fails at start
    /// rather than silently exporting nothing.
    fn validate_export(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, expected: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            expected: expected.to_owned(),
        };
        let e = &self.export;
        if e.router_label.chars().count() > 64 || e.router_label.chars().any(char::is_control) {
            return Err(invalid(
                "export.router_label",
                format!("{:?}", e.router_label),
                "at most 64 printable characters (empty: the router's hostname)",
            ));
        }
        if e.max_device_series > 10_000 {
            return Err(invalid(
                "export.max_device_series",
                e.max_device_series.to_string(),
                "a number of devices from 0 to 10000",
            ));
        }
        if !e.ipfix_collector.is_empty() && e.ipfix_collector.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "export.ipfix_collector",
                format!("\"{}\"", e.ipfix_collector),
                "an IP address and UDP port like \"192.168.1.10:4739\" or \"[fd00::10]:4739\" \
                 (no host names), or \"\" for off",
            ));
        }
        if !(1..=3600).contains(&e.ipfix_active_timeout_s) {
            return Err(invalid(
                "export.ipfix_active_timeout_s",
                e.ipfix_active_timeout_s.to_string(),
                "a number of seconds from 1 to 3600",
            ));
        }
        if !(1..=86_400).contains(&e.ipfix_template_refresh_s) {
            return Err(invalid(
                "export.ipfix_template_refresh_s",
                e.ipfix_template_refresh_s.to_string(),
                "a number of seconds from 1 to 86400",
            ));
        }
        if !(512..=65_000).contains(&e.ipfix_max_message_bytes) {
            return Err(invalid(
                "export.ipfix_max_message_bytes",
                e.ipfix_max_message_bytes.to_string(),
                "a size in bytes from 512 to 65000",
            ));
        }
        Ok(())
    }

    /// `[notify]`: a webhook URL netmon cannot reach is an error at start, not a
    /// silence when the first incident opens.
    fn validate_notify(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, expected: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            expected,
        };
        let n = &self.notify;
        crate::detect::notify::parse_webhook_url(&n.webhook_url).map_err(|expected| {
            invalid(
                "notify.webhook_url",
                format!("{:?}", redacted_url(&n.webhook_url)),
                format!("{expected}, or \"\" for no webhook"),
            )
        })?;
        if !n.ca_file.is_empty() && !Path::new(&n.ca_file).is_file() {
            return Err(invalid(
                "notify.ca_file",
                format!("{:?}", n.ca_file),
                "a PEM file of CA certificates that exists, or \"\" for the system's bundle".into(),
            ));
        }
        if n.digest_minutes > 1440 {
            return Err(invalid(
                "notify.digest_minutes",
                n.digest_minutes.to_string(),
                "a number of minutes from 0 (a message per incident) to 1440".into(),
            ));
        }
        if n.min_score > 100 {
            return Err(invalid(
                "notify.min_score",
                n.min_score.to_string(),
                "a score from 0 to 100".into(),
            ));
        }
        Ok(())
    }

    /// `[enrich]`: the resolver must be an address (netmon never resolves names through
    /// libc), so a typo fails at start.
    fn validate_enrich(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, expected: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            expected: expected.to_owned(),
        };
        let e = &self.enrich;
        if !e.resolver.is_empty() && crate::enrich::parse_resolver(&e.resolver).is_none() {
            return Err(invalid(
                "enrich.resolver",
                format!("\"{}\"", e.resolver),
                "an IP address, optionally with a port, like \"192.168.1.1\" or \"[fd00::1]:53\" \
                 (no host names), or \"\" for the first nameserver of /etc/resolv.conf",
            ));
        }
        if !(1..=64).contains(&e.rdns_concurrency) {
            return Err(invalid(
                "enrich.rdns_concurrency",
                e.rdns_concurrency.to_string(),
                "a number of queries from 1 to 64",
            ));
        }
        if !(60..=7 * 86_400).contains(&e.rdns_negative_ttl_s) {
            return Err(invalid(
                "enrich.rdns_negative_ttl_s",
                e.rdns_negative_ttl_s.to_string(),
                "a number of seconds from 60 to 604800",
            ));
        }
        Ok(())
    }

    /// The LAN subnets in force: configured ones, else the networks of the LAN
    /// interfaces' addresses.
    pub fn effective_lan_subnets(&self, interfaces: &[crate::netif::InterfaceAddr]) -> Vec<IpNet> {
        if !self.lan_subnets.is_empty() {
            return self.lan_subnets.iter().map(IpNet::trunc).collect();
        }
        let mut nets: Vec<IpNet> = interfaces
            .iter()
            .filter(|a| self.lan_interfaces.contains(&a.interface))
            .filter(|a| !is_link_local(a.net.addr()))
            .map(|a| a.net.trunc())
            .collect();
        nets.sort();
        nets.dedup();
        nets
    }

    /// The web listen addresses in force: configured ones, else each LAN interface
    /// address on `port` (link-local IPv6 skipped: it needs a scope id).
    pub fn effective_listen(&self, interfaces: &[crate::netif::InterfaceAddr]) -> Vec<SocketAddr> {
        if !self.listen.is_empty() {
            return self.listen.clone();
        }
        interfaces
            .iter()
            .filter(|a| self.lan_interfaces.contains(&a.interface))
            .filter(|a| !is_link_local(a.net.addr()))
            .map(|a| SocketAddr::new(a.net.addr(), self.port))
            .collect()
    }

    /// The configuration with its secrets replaced by "(set, not shown)": the password
    /// hash, the metrics token, and all of a webhook URL but its scheme and host
    /// ([`redacted_url`]). For `check-config` on a terminal and the settings page, which
    /// a support paste or a screenshot may carry further.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for secret in [&mut c.web.password_hash, &mut c.web.metrics_token] {
            if !secret.is_empty() {
                *secret = "(set, not shown)".into();
            }
        }
        c.notify.webhook_url = redacted_url(&c.notify.webhook_url);
        c
    }

    /// The effective config as TOML, for `netmon check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// What a message or page may show of a webhook URL: its scheme and host (with the
/// port), so a typo there stays visible. Hidden: `user:password@`, and everything after
/// the host — an ntfy topic is the only secret between the world and the router's
/// alerts (anyone who knows it can read and post), Gotify's token is `?token=`, and other
/// services put theirs in the path. Text without a `scheme://` cannot be split safely
/// and is hidden whole.
pub fn redacted_url(url: &str) -> String {
    const HIDDEN: &str = "(not shown)";
    if url.is_empty() {
        return String::new();
    }
    // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
    let Some((scheme, rest)) = url.split_once("://").filter(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    }) else {
        return HIDDEN.into();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let mut out = format!("{scheme}://");
    // RFC 3986 §3.2: userinfo ends at the authority's last '@'.
    let host = match authority.rsplit_once('@') {
        Some((_userinfo, host)) => {
            out.push_str(HIDDEN);
            out.push('@');
            host
        }
        None => authority,
    };
    out.push_str(host);
    if !tail.is_empty() && tail != "/" {
        out.push('/');
        out.push_str(HIDDEN);
    }
    out
}

/// Keys whose values are secrets, or may be: a value on a line naming one of these is
/// not echoed in a TOML error (a mistyped `pasword_hash` still says "hash").
const SECRET_KEY_PARTS: [&str; 5] = ["pass", "hash", "token", "secret", "url"];

/// toml's message shows the offending line. A line of the form `key = value` whose key
/// looks secret ([`SECRET_KEY_PARTS`]), or any line when the error is an unknown key
/// (a typo of a secret key), is shown with its value hidden.
fn redact_toml_snippet(msg: &str) -> String {
    let unknown_key = msg.contains("unknown field");
    let mut out = String::with_capacity(msg.len());
    for line in msg.split_inclusive('\n') {
        // Snippet lines: `12 | text`.
        let snippet = line.split_once(" | ").filter(|(number, _)| {
            let n = number.trim();
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        });
        let Some((number, text)) = snippet else {
            out.push_str(line);
            continue;
        };
        let hide = text.split_once('=').filter(|(key, _)| {
            let key = key.to_ascii_lowercase();
            unknown_key || SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
        });
        match hide {
            Some((key, _value)) => {
                out.push_str(&format!("{number} | {key}= (not shown)"));
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// toml's message already names the line, column and key; add the accepted forms of
/// the values users most often get wrong, and what exactly is wrong with a network
/// (`text` is the config the error's span points into).
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let mut msg = redact_toml_snippet(&e.to_string());
    if msg.contains("invalid IP address syntax") {
        let value = e
            .span()
            .and_then(|span| text.get(span))
            .map(|v| v.trim().trim_matches('"'));
        if let Some(why) = value.and_then(network_mistake) {
            msg.push_str(&format!("\n{why}"));
        }
        msg.push_str("\naccepted form: a CIDR like \"192.168.1.0/24\" or \"fd00::/64\" (for lan_subnets), an address with port like \"192.168.1.1:8080\" or \"[::1]:8080\" (for listen)");
    } else if msg.contains("invalid socket address") {
        msg.push_str("\naccepted form: an address with a port from 1 to 65535, like \"192.168.1.1:8080\" or \"[fd00::1]:8080\"");
    }
    msg
}

/// What is wrong with a network written `address/prefix` that did not parse: the prefix
/// length past the address family's bits, or the address itself. `None` when neither
/// (another form, such as a socket address, was expected).
fn network_mistake(value: &str) -> Option<String> {
    let (addr, len) = value.split_once('/')?;
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return Some(format!("{addr:?} is not an IPv4 or IPv6 address"));
    };
    let (family, max) = if ip.is_ipv4() {
        ("IPv4", 32)
    } else {
        ("IPv6", 128)
    };
    match len.parse::<u32>() {
        Ok(n) if n > max => Some(format!(
            "{value:?}: the prefix length {n} is longer than an {family} address ({max} bits)"
        )),
        Ok(_) => None,
        Err(_) => Some(format!(
            "{value:?}: the prefix length {len:?} is not a number from 0 to {max}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_error_says_which_part_is_wrong() {
        for (subnet, why) in [
            (
                "192.168.1.0/33",
                "prefix length 33 is longer than an IPv4 address (32 bits)",
            ),
            ("fd00::/129", "longer than an IPv6 address (128 bits)"),
            (
                "192.168.1.300/24",
                "\"192.168.1.300\" is not an IPv4 or IPv6 address",
            ),
            ("10.0.0.0/x", "\"x\" is not a number from 0 to 32"),
        ] {
            let e = parse(&format!("lan_subnets = [\"{subnet}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
            assert!(e.contains("accepted form"), "{e}");
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_valid() {
        let c = parse("").unwrap();
        assert_eq!(c.tick_ms, 1000);
        assert_eq!(c.port, 8080);
    }

    #[test]
    fn sample_config_is_valid_and_matches_defaults() {
        let text = include_str!("../packaging/netmon.toml");
        let c = parse(text).unwrap();
        let d = Config::default();
        assert_eq!(
            c.to_toml(),
            d.to_toml(),
            "sample config must document the defaults"
        );
    }

    #[test]
    fn detect_values_are_validated_with_the_key() {
        let e = parse("[detect]\nhit_threshold = 101\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("detect.hit_threshold") && e.contains("0 to 100"),
            "{e}"
        );
        let e = parse("[detect]\nscan_max_port_share = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("detect.scan_max_port_share"), "{e}");
        let e = parse("[detect.weights]\nbeacon = 500\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("beacon = 500"), "{e}");
        let e = parse("[detect]\nrequired_codes = [\"PORTSCAN\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("PORTSCAN"), "{e}");
        let c = parse("[detect]\nenabled = false\n").unwrap();
        assert!(!c.detect.enabled);
    }

    #[test]
    fn unknown_key_names_key() {
        let e = parse("tick_msec = 5\n").unwrap_err().to_string();
        assert!(e.contains("tick_msec"), "{e}");
        let e = parse("[retention]\nflow_days = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flow_days"), "{e}");
    }

    #[test]
    fn bad_cidr_names_key_and_value() {
        let e = parse("lan_subnets = [\"10.0.0.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lan_subnets"), "{e}");
        assert!(e.contains("10.0.0.0/33"), "{e}");
        assert!(e.contains("CIDR"), "{e}");
    }

    #[test]
    fn bad_port_names_key_and_value() {
        let e = parse("port = 70000\n").unwrap_err().to_string();
        assert!(e.contains("port") && e.contains("70000"), "{e}");
        let e = parse("listen = [\"127.0.0.1:99999\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("127.0.0.1:99999"), "{e}");
        let e = parse("listen = [\"127.0.0.1:0\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("127.0.0.1:0"), "{e}");
    }

    #[test]
    fn bad_range_names_key() {
        let e = parse("tick_ms = 5\n").unwrap_err().to_string();
        assert!(
            e.contains("tick_ms") && e.contains('5') && e.contains("50 to 60000"),
            "{e}"
        );
    }

    #[test]
    fn bad_export_values_name_key_and_value() {
        let e = parse("[export]\nipfix_collector = \"collector.lan:4739\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("export.ipfix_collector") && e.contains("collector.lan:4739"),
            "{e}"
        );
        let e = parse("[export]\nipfix_active_timeout_s = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("export.ipfix_active_timeout_s") && e.contains("1 to 3600"));
        let c = parse("[export]\nipfix_collector = \"[fd00::10]:4739\"\n").unwrap();
        assert_eq!(c.export.ipfix_collector, "[fd00::10]:4739");
    }

    #[test]
    fn bad_enrich_values_name_key_and_value() {
        let e = parse("[enrich]\nresolver = \"dns.lan\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("enrich.resolver") && e.contains("dns.lan"),
            "{e}"
        );
        let e = parse("[enrich]\nrdns_concurrency = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("enrich.rdns_concurrency") && e.contains("1 to 64"),
            "{e}"
        );
        let e = parse("[enrich]\nrdns_negative_ttl_s = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("enrich.rdns_negative_ttl_s"), "{e}");
        let c = parse("[enrich]\nresolver = \"10.77.0.1\"\n").unwrap();
        assert_eq!(c.enrich.resolver, "10.77.0.1");
    }

    #[test]
    fn auth_none_only_on_loopback() {
        let e = parse("[web]\nauth = \"none\"\n").unwrap_err().to_string();
        assert!(
            e.contains("web.auth") && e.contains("every LAN address"),
            "{e}"
        );
        let e =
            parse("listen = [\"127.0.0.1:8080\", \"192.168.1.1:8080\"]\n[web]\nauth = \"none\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("192.168.1.1:8080") && e.contains("loopback"),
            "{e}"
        );
        let c = parse("listen = [\"127.0.0.1:8080\", \"[::1]:8080\"]\n[web]\nauth = \"none\"\n")
            .unwrap();
        assert_eq!(c.web.auth, WebAuth::None);
        assert_eq!(parse("").unwrap().web.auth, WebAuth::Password);
    }

    #[test]
    fn bad_web_values_name_key_and_value() {
        let e = parse("[web]\npassword_hash = \"hunter2\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("web.password_hash") && e.contains("netmon passwd"),
            "{e}"
        );
        let e = parse("[web]\ntls_cert = \"/etc/uhttpd.crt\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("web.tls_key"), "{e}");
        let e = parse("[web]\nmetrics_token = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("web.metrics_token") && !e.contains("short"),
            "{e}"
        );
        let e = parse("[web]\nsession_hours = 0\n").unwrap_err().to_string();
        assert!(e.contains("web.session_hours"), "{e}");
        let e = parse("[web]\nauth = \"basic\"\n").unwrap_err().to_string();
        assert!(e.contains("auth") && e.contains("basic"), "{e}");
        let hash = crate::passwd::hash("a long password").unwrap();
        let c = parse(&format!("[web]\npassword_hash = \"{hash}\"\n")).unwrap();
        assert_eq!(c.web.password_hash, hash);
    }

    #[test]
    fn webhook_urls_keep_scheme_and_host_only() {
        for (url, shown) in [
            ("", ""),
            (
                "https://ntfy.sh/my-secret-topic",
                "https://ntfy.sh/(not shown)",
            ),
            (
                "https://gotify.lan:8443/message?token=AbC123",
                "https://gotify.lan:8443/(not shown)",
            ),
            ("http://10.0.0.2?token=t", "http://10.0.0.2/(not shown)"),
            (
                "https://user:pa55@hooks.example/x",
                "https://(not shown)@hooks.example/(not shown)",
            ),
            ("http://[fd00::10]:8080/", "http://[fd00::10]:8080"),
            ("http://10.0.0.2#frag", "http://10.0.0.2/(not shown)"),
            ("ntfy.sh/my-secret-topic", "(not shown)"),
            ("a/b://host/secret", "(not shown)"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
        let c =
            parse("[notify]\nwebhook_url = \"https://ntfy.sh/t0pic-s3cret?auth=aUtH9\"\n").unwrap();
        let out = c.redacted().to_toml();
        assert!(out.contains("https://ntfy.sh/(not shown)"), "{out}");
        assert!(!out.contains("s3cret") && !out.contains("aUtH9"), "{out}");
    }

    #[test]
    fn errors_never_echo_secrets() {
        // A bad hash (here the password itself, the usual mistake).
        let e = parse("[web]\npassword_hash = \"hunter2-plain\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("web.password_hash"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        // A webhook URL netmon cannot use: the host stays, the topic and token go.
        let e = parse("[notify]\nwebhook_url = \"ftp://me:pw@ntfy.sh/topic-s3cret?token=t0ken\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("notify.webhook_url") && e.contains("ntfy.sh"),
            "{e}"
        );
        for secret in ["s3cret", "t0ken", "me:pw"] {
            assert!(!e.contains(secret), "{secret} in {e}");
        }
        // TOML syntax errors show the line, but not a secret's value.
        for text in [
            "[web]\npassword_hash = hunter2-plain\n",
            "[notify]\nwebhook_url = https://ntfy.sh/topic-s3cret\n",
            "[web]\nmetrics_token = 'abc\n",
            "[web]\npasword_hash = \"hunter2-plain\"\n",
            "[web]\npassword_hash = \"a\"\npassword_hash = \"hunter2-plain\"\n",
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("line"), "{e}");
            for secret in ["hunter2", "s3cret", "abc"] {
                assert!(!e.contains(secret), "{secret} in {e}");
            }
        }
        // Other values are still shown.
        let e = parse("port = eighty\n").unwrap_err().to_string();
        assert!(e.contains("port = eighty"), "{e}");
    }
}
