-- The history store (store::history): what an owner expects after a reboot, on
-- persistent storage, mirrored from the RAM database once per persistence interval.
--
-- Laid out for few page writes, not for reading (pages read the RAM copy): rollups are
-- keyed time first, so an interval's rows are appended together instead of landing in
-- one page per host; no secondary indexes; the columns that change with every packet
-- (last seen to the millisecond, per-host totals, counts) are kept to the day or
-- rebuilt from the rollups when the history is loaded.
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    mac TEXT,
    ip TEXT NOT NULL,
    name TEXT,
    hostname TEXT,
    vendor TEXT,
    notes TEXT,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    encrypted_dns TEXT,
    encrypted_dns_at INTEGER
);
CREATE TABLE device_addrs (
    ip TEXT PRIMARY KEY,
    device_id INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE device_baselines (
    device_id INTEGER PRIMARY KEY,
    computed_at INTEGER NOT NULL,
    history_from INTEGER NOT NULL,
    minutes INTEGER NOT NULL,
    egress_p95 INTEGER NOT NULL,
    fanout_p95 INTEGER NOT NULL,
    ports_p95 INTEGER NOT NULL,
    dns_p95 INTEGER NOT NULL,
    nxdomain_p95 INTEGER NOT NULL,
    upload_ratio_p95 REAL NOT NULL,
    egress_by_hour TEXT NOT NULL
);
CREATE TABLE device_hours (
    hour INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    packets_up INTEGER NOT NULL,
    packets_down INTEGER NOT NULL,
    flows_new INTEGER NOT NULL,
    PRIMARY KEY (hour, device_id)
) WITHOUT ROWID;
CREATE TABLE device_days (
    day INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    packets_up INTEGER NOT NULL,
    packets_down INTEGER NOT NULL,
    flows_new INTEGER NOT NULL,
    PRIMARY KEY (day, device_id)
) WITHOUT ROWID;
CREATE TABLE dns_names (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE remote_hosts (
    id INTEGER PRIMARY KEY,
    ip TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    rdns TEXT,
    asn INTEGER,
    org TEXT,
    notes TEXT
);
CREATE TABLE remote_host_domains (
    remote_host_id INTEGER NOT NULL,
    qname_id INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (remote_host_id, qname_id)
) WITHOUT ROWID;
CREATE TABLE remote_host_ports (
    remote_host_id INTEGER NOT NULL,
    proto INTEGER NOT NULL,
    port INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (remote_host_id, proto, port)
) WITHOUT ROWID;
CREATE TABLE remote_host_hours (
    hour INTEGER NOT NULL,
    remote_host_id INTEGER NOT NULL,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    packets_up INTEGER NOT NULL,
    packets_down INTEGER NOT NULL,
    flows_new INTEGER NOT NULL,
    PRIMARY KEY (hour, remote_host_id)
) WITHOUT ROWID;
CREATE TABLE remote_host_days (
    day INTEGER NOT NULL,
    remote_host_id INTEGER NOT NULL,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    packets_up INTEGER NOT NULL,
    packets_down INTEGER NOT NULL,
    flows_new INTEGER NOT NULL,
    PRIMARY KEY (day, remote_host_id)
) WITHOUT ROWID;
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    remote_ip TEXT,
    proto INTEGER,
    dport INTEGER,
    codes TEXT NOT NULL,
    title TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL,
    max_score INTEGER NOT NULL,
    acked_at INTEGER,
    muted_until INTEGER,
    notes TEXT NOT NULL
);
CREATE TABLE rules (
    id INTEGER PRIMARY KEY,
    action TEXT NOT NULL,
    code TEXT,
    device_id INTEGER,
    remote TEXT,
    asn INTEGER,
    org TEXT,
    domain TEXT,
    proto INTEGER,
    port_lo INTEGER,
    port_hi INTEGER,
    expires_at INTEGER,
    notes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    matched INTEGER NOT NULL,
    last_matched INTEGER
);
CREATE TABLE saved_searches (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    pinned INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
