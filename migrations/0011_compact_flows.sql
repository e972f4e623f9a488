-- Schema version 11: a flow row of integers and blobs.
--
-- Addresses were text ("192.168.1.23", 13 bytes; an IPv6 address up to 39) and are now
-- their 4 or 16 network-order bytes, which also sort numerically. direction and the TCP
-- state were words repeated in every row and in three indexes; they are small integers
-- (0 and 1, the common outbound and inbound, take no bytes at all in a SQLite record).
-- The reply tuple is stored only where NAT made it differ from the original one. The
-- family is the address's length; kernel_start always equalled first_seen when set; the
-- kernel's stop time was read only as "has the entry gone", which ident now answers: it
-- is 0 once the conntrack entry is destroyed (nothing needs a dead entry's identity).
--
-- direction: 0 outbound, 1 inbound, 2 router-local, 3 lan, 4 other (crate::flow::Direction).
-- state: the kernel's enum tcp_conntrack number (crate::flow::tcp_state_name).
--
-- netmon_ip_blob() is registered on the writer's connection before migrations run
-- (crate::store::schema::open_rw); an unparsable address (none was ever written) keeps
-- its text.

CREATE TABLE flows_compact (
    id          INTEGER PRIMARY KEY,
    ident       INTEGER NOT NULL,         -- CtFlow::ident() while the entry exists, then 0
    ct_id       INTEGER NOT NULL,
    proto       INTEGER NOT NULL,         -- IANA number
    direction   INTEGER NOT NULL,
    src_ip      BLOB NOT NULL,            -- original tuple (as the initiator sent it)
    src_port    INTEGER,                  -- NULL for protocols without ports
    dst_ip      BLOB NOT NULL,
    dst_port    INTEGER,
    reply_src_ip   BLOB,                  -- reply tuple; NULL where it is dst_ip (no DNAT)
    reply_src_port INTEGER,               -- NULL where it is dst_port
    reply_dst_ip   BLOB,                  -- NULL where it is src_ip (no SNAT)
    reply_dst_port INTEGER,               -- NULL where it is src_port
    icmp_type   INTEGER,
    icmp_code   INTEGER,
    icmp_id     INTEGER,
    state       INTEGER,                  -- TCP only
    status      INTEGER NOT NULL,         -- IPS_* bits
    mark        INTEGER NOT NULL DEFAULT 0,
    zone        INTEGER NOT NULL DEFAULT 0,
    bytes_up    INTEGER NOT NULL DEFAULT 0,   -- orig direction, cumulative
    packets_up  INTEGER NOT NULL DEFAULT 0,
    bytes_down  INTEGER NOT NULL DEFAULT 0,   -- reply direction, cumulative
    packets_down INTEGER NOT NULL DEFAULT 0,
    first_seen  INTEGER NOT NULL,         -- kernel start timestamp when known, else first sight
    last_seen   INTEGER NOT NULL,         -- last time counters or state changed
    ended_at    INTEGER,                  -- NULL while the connection is live
    device_id   INTEGER,
    remote_host_id INTEGER,
    qname_id    INTEGER,
    cname_id    INTEGER,
    dns_match   INTEGER
);

INSERT INTO flows_compact (id, ident, ct_id, proto, direction, src_ip, src_port, dst_ip, dst_port,
        reply_src_ip, reply_src_port, reply_dst_ip, reply_dst_port, icmp_type, icmp_code,
        icmp_id, state, status, mark, zone, bytes_up, packets_up, bytes_down, packets_down,
        first_seen, last_seen, ended_at, device_id, remote_host_id, qname_id, cname_id,
        dns_match)
SELECT id,
    CASE WHEN kernel_stop IS NULL THEN ident ELSE 0 END,
    ct_id, proto,
    CASE direction WHEN 'outbound' THEN 0 WHEN 'inbound' THEN 1 WHEN 'router-local' THEN 2
        WHEN 'lan' THEN 3 ELSE 4 END,
    netmon_ip_blob(src_ip), src_port, netmon_ip_blob(dst_ip), dst_port,
    nullif(netmon_ip_blob(reply_src_ip), netmon_ip_blob(dst_ip)),
    CASE WHEN reply_src_port IS dst_port THEN NULL ELSE reply_src_port END,
    nullif(netmon_ip_blob(reply_dst_ip), netmon_ip_blob(src_ip)),
    CASE WHEN reply_dst_port IS src_port THEN NULL ELSE reply_dst_port END,
    icmp_type, icmp_code, icmp_id,
    CASE state WHEN 'NONE' THEN 0 WHEN 'SYN_SENT' THEN 1 WHEN 'SYN_RECV' THEN 2
        WHEN 'ESTABLISHED' THEN 3 WHEN 'FIN_WAIT' THEN 4 WHEN 'CLOSE_WAIT' THEN 5
        WHEN 'LAST_ACK' THEN 6 WHEN 'TIME_WAIT' THEN 7 WHEN 'CLOSE' THEN 8
        WHEN 'SYN_SENT2' THEN 9 END,
    status, mark, zone, bytes_up, packets_up, bytes_down, packets_down,
    first_seen, last_seen, ended_at, device_id, remote_host_id, qname_id, cname_id, dns_match
FROM flows;

DROP TABLE flows;
ALTER TABLE flows_compact RENAME TO flows;

-- The indexes as before, on the compact columns, less one: flows_device (device_id,
-- first_seen), 19 bytes of every flow, whose readers (a device's latest flows, its
-- oldest for the flood cap, an incident's window) walk flows_device_last_seen instead.
CREATE UNIQUE INDEX flows_live ON flows (ident) WHERE ended_at IS NULL;
CREATE INDEX flows_first_seen ON flows (first_seen);
CREATE INDEX flows_active ON flows (last_seen) WHERE ended_at IS NULL;
CREATE INDEX flows_remote ON flows (remote_host_id, first_seen);
CREATE INDEX flows_qname ON flows (qname_id) WHERE qname_id IS NOT NULL;
CREATE INDEX flows_cname ON flows (cname_id) WHERE cname_id IS NOT NULL;
CREATE INDEX flows_last_seen ON flows (last_seen, direction, ended_at, first_seen, bytes_up, bytes_down);
CREATE INDEX flows_bytes ON flows (bytes_up + bytes_down, direction, ended_at);
CREATE INDEX flows_device_last_seen ON flows (device_id, last_seen, direction, ended_at, dst_port, src_port);
