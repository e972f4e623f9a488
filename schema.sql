-- netmon schema, version 1. Embedded with include_str! and applied by src/store/schema.rs;
-- PRAGMA user_version records the version. Migrations are forward-only.
--
-- Conventions: times are unix milliseconds UTC (INTEGER); minute/hour buckets are the
-- bucket's start in unix ms. IP addresses are text in their canonical form here; from
-- version 11 (flows) and 12 (DNS) the busiest tables hold them as 4 or 16 bytes.
-- Counters: "up" = sent by the LAN side (device) / by the flow's initiator ("orig"),
-- "down" = received.

-- LAN devices. Keyed by MAC when known (later: neighbour table / DHCP), else by address.
CREATE TABLE devices (
    id          INTEGER PRIMARY KEY,
    mac         TEXT UNIQUE,
    ip          TEXT NOT NULL,            -- the address seen most recently
    name        TEXT,                     -- the owner's name for it
    hostname    TEXT,                     -- DHCP hostname
    vendor      TEXT,
    notes       TEXT,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    bytes_up    INTEGER NOT NULL DEFAULT 0,
    bytes_down  INTEGER NOT NULL DEFAULT 0,
    flows       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_last_seen ON devices(last_seen);

-- Every address a device has used; an address belongs to one device at a time.
CREATE TABLE device_addrs (
    ip          TEXT PRIMARY KEY,
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX device_addrs_device ON device_addrs(device_id);

-- Internet peers of outbound and inbound flows (never LAN, router or private addresses).
CREATE TABLE remote_hosts (
    id          INTEGER PRIMARY KEY,
    ip          TEXT NOT NULL UNIQUE,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    rdns        TEXT,
    asn         INTEGER,
    org         TEXT,
    notes       TEXT,
    bytes_up    INTEGER NOT NULL DEFAULT 0,
    bytes_down  INTEGER NOT NULL DEFAULT 0,
    flows       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX remote_hosts_first_seen ON remote_hosts(first_seen);
CREATE INDEX remote_hosts_last_seen ON remote_hosts(last_seen);

-- Which ports of a remote host were contacted (per protocol), and how often.
CREATE TABLE remote_host_ports (
    remote_host_id INTEGER NOT NULL REFERENCES remote_hosts(id),
    proto       INTEGER NOT NULL,
    port        INTEGER NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    flows       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (remote_host_id, proto, port)
) WITHOUT ROWID;

-- One row per conntrack entry lifetime.
CREATE TABLE flows (
    id          INTEGER PRIMARY KEY,
    ident       INTEGER NOT NULL,         -- CtFlow::ident(): ct id + zone + proto + orig tuple
    ct_id       INTEGER NOT NULL,
    family      INTEGER NOT NULL,         -- 4 or 6
    proto       INTEGER NOT NULL,         -- IANA number
    direction   TEXT NOT NULL,            -- outbound | inbound | router-local | lan | other
    src_ip      TEXT NOT NULL,            -- original tuple (as the initiator sent it)
    src_port    INTEGER,                  -- NULL for protocols without ports
    dst_ip      TEXT NOT NULL,
    dst_port    INTEGER,
    reply_src_ip   TEXT NOT NULL,         -- reply tuple (NAT visible: differs from orig)
    reply_src_port INTEGER,
    reply_dst_ip   TEXT NOT NULL,
    reply_dst_port INTEGER,
    icmp_type   INTEGER,
    icmp_code   INTEGER,
    icmp_id     INTEGER,
    state       TEXT,                     -- TCP state name
    status      INTEGER NOT NULL,         -- IPS_* bits
    mark        INTEGER NOT NULL DEFAULT 0,
    zone        INTEGER NOT NULL DEFAULT 0,
    bytes_up    INTEGER NOT NULL DEFAULT 0,   -- orig direction, cumulative
    packets_up  INTEGER NOT NULL DEFAULT 0,
    bytes_down  INTEGER NOT NULL DEFAULT 0,   -- reply direction, cumulative
    packets_down INTEGER NOT NULL DEFAULT 0,
    first_seen  INTEGER NOT NULL,         -- kernel start timestamp when known, else first sight
    last_seen   INTEGER NOT NULL,         -- last time counters or state changed
    ended_at    INTEGER,                  -- NULL while the entry is live
    kernel_start INTEGER,
    kernel_stop  INTEGER,
    device_id   INTEGER REFERENCES devices(id),
    remote_host_id INTEGER REFERENCES remote_hosts(id)
);
-- At most one live row per conntrack entry, even across crashes.
CREATE UNIQUE INDEX flows_live ON flows(ident) WHERE ended_at IS NULL;
-- Indexes are on columns that never change after insert (first_seen, device, host),
-- so the per-tick counter updates of live flows touch no index at all.
CREATE INDEX flows_first_seen ON flows(first_seen);
-- The dashboard's default view (live flows, newest activity first). Only live rows are
-- in it, so keeping it current on counter updates stays cheap.
CREATE INDEX flows_active ON flows(last_seen) WHERE ended_at IS NULL;
CREATE INDEX flows_ended ON flows(ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX flows_device ON flows(device_id, first_seen);
CREATE INDEX flows_remote ON flows(remote_host_id, first_seen);

-- Per device per UTC minute: byte/packet deltas observed in that minute, flows started,
-- and true unions of remote hosts / destination ports contacted in that minute.
CREATE TABLE device_minutes (
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    minute      INTEGER NOT NULL,
    bytes_up    INTEGER NOT NULL DEFAULT 0,
    bytes_down  INTEGER NOT NULL DEFAULT 0,
    packets_up  INTEGER NOT NULL DEFAULT 0,
    packets_down INTEGER NOT NULL DEFAULT 0,
    flows_new   INTEGER NOT NULL DEFAULT 0,
    unique_dsts INTEGER NOT NULL DEFAULT 0,
    unique_ports INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, minute)
) WITHOUT ROWID;
CREATE INDEX device_minutes_minute ON device_minutes(minute);

CREATE TABLE remote_host_minutes (
    remote_host_id INTEGER NOT NULL REFERENCES remote_hosts(id),
    minute      INTEGER NOT NULL,
    bytes_up    INTEGER NOT NULL DEFAULT 0,
    bytes_down  INTEGER NOT NULL DEFAULT 0,
    packets_up  INTEGER NOT NULL DEFAULT 0,
    packets_down INTEGER NOT NULL DEFAULT 0,
    flows_new   INTEGER NOT NULL DEFAULT 0,
    unique_devices INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (remote_host_id, minute)
) WITHOUT ROWID;
CREATE INDEX remote_host_minutes_minute ON remote_host_minutes(minute);

-- Hourly rollups back the long windows (24 h, 7 d, 30 d); same deltas, coarser bucket.
CREATE TABLE device_hours (
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    hour        INTEGER NOT NULL,
    bytes_up    INTEGER NOT NULL DEFAULT 0,
    bytes_down  INTEGER NOT NULL DEFAULT 0,
    packets_up  INTEGER NOT NULL DEFAULT 0,
    packets_down INTEGER NOT NULL DEFAULT 0,
    flows_new   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, hour)
) WITHOUT ROWID;
CREATE INDEX device_hours_hour ON device_hours(hour);

CREATE TABLE remote_host_hours (
    remote_host_id INTEGER NOT NULL REFERENCES remote_hosts(id),
    hour        INTEGER NOT NULL,
    bytes_up    INTEGER NOT NULL DEFAULT 0,
    bytes_down  INTEGER NOT NULL DEFAULT 0,
    packets_up  INTEGER NOT NULL DEFAULT 0,
    packets_down INTEGER NOT NULL DEFAULT 0,
    flows_new   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (remote_host_id, hour)
) WITHOUT ROWID;
CREATE INDEX remote_host_hours_hour ON remote_host_hours(hour);

-- Small key/value facts the process keeps across restarts.
CREATE TABLE meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
) WITHOUT ROWID;
