-- Schema version 4: firewall drops (collect::nflog, store::drops).
-- New inbound connection attempts from the WAN the router refused, counted per minute,
-- source, protocol, destination port and interface. Per minute, at most a fixed number
-- of sources get rows of their own (store::drops::MAX_SOURCES_PER_MINUTE); the rest
-- are added to src = 'other', so a scan from thousands of addresses stays small.
CREATE TABLE drop_minutes (
    minute      INTEGER NOT NULL,         -- unix ms, start of the UTC minute
    src_ip      TEXT NOT NULL,            -- the attempt's source, or 'other'
    proto       INTEGER NOT NULL,         -- 6 tcp, 17 udp
    dst_port    INTEGER NOT NULL,
    iface       TEXT NOT NULL,            -- interface it arrived on
    attempts    INTEGER NOT NULL,
    PRIMARY KEY (minute, src_ip, proto, dst_port, iface)
) WITHOUT ROWID;
