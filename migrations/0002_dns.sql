-- Schema version 2: DNS queries and answers, and the domain behind each flow.
-- Names are interned in dns_names: a flow, a query and an answer carry an integer.

CREATE TABLE dns_names (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE            -- canonical text (crate::dns): lowercase, escaped
);

-- One query a client made and what it got.
CREATE TABLE dns_queries (
    id        INTEGER PRIMARY KEY,
    ts        INTEGER NOT NULL,           -- unix ms of the answer (or unanswered query)
    client    TEXT NOT NULL,              -- the asking address
    device_id INTEGER,                    -- its device, for LAN clients
    qname_id  INTEGER NOT NULL,           -- the name asked for
    qtype     INTEGER NOT NULL,
    rcode     INTEGER,                    -- NULL: no answer seen
    answers   INTEGER NOT NULL DEFAULT 0, -- address records in the answer
    cname_id  INTEGER,                    -- end of the CNAME chain, when there is one
    source    TEXT NOT NULL               -- packet | log
);
CREATE INDEX dns_queries_ts ON dns_queries (ts);
CREATE INDEX dns_queries_device ON dns_queries (device_id, ts);
CREATE INDEX dns_queries_name ON dns_queries (qname_id, ts);

-- Answer address → the name a client asked for. Attribution asks "the most recent
-- answer giving this address to this client before t" (dns_answers_client) and, failing
-- that, "to any client" (dns_answers_ip).
CREATE TABLE dns_answers (
    ip        TEXT NOT NULL,
    client    TEXT NOT NULL,
    ts        INTEGER NOT NULL,           -- unix ms
    ttl       INTEGER,                    -- seconds; NULL when the source does not say
    qname_id  INTEGER NOT NULL,           -- the name the client asked for
    cname_id  INTEGER,                    -- canonical name (end of the CNAME chain)
    query_id  INTEGER NOT NULL
);
CREATE INDEX dns_answers_client ON dns_answers (ip, client, ts);
CREATE INDEX dns_answers_ip ON dns_answers (ip, ts);
CREATE INDEX dns_answers_ts ON dns_answers (ts);

-- The domain of a flow: the name its own client resolved to its destination.
-- dns_match: 1 exact (same client and address, within TTL + slack), 2 stale (same
-- client and address, answer expired), 3 other client (only another client resolved
-- the address), NULL none.
ALTER TABLE flows ADD COLUMN qname_id INTEGER;
ALTER TABLE flows ADD COLUMN cname_id INTEGER;
ALTER TABLE flows ADD COLUMN dns_match INTEGER;
CREATE INDEX flows_qname ON flows (qname_id) WHERE qname_id IS NOT NULL;

-- Which names a remote host was reached as.
CREATE TABLE remote_host_domains (
    remote_host_id INTEGER NOT NULL,
    qname_id       INTEGER NOT NULL,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    flows          INTEGER NOT NULL DEFAULT 0,
    last_device_id INTEGER,
    PRIMARY KEY (remote_host_id, qname_id)
) WITHOUT ROWID;
CREATE INDEX remote_host_domains_name ON remote_host_domains (qname_id);

CREATE TABLE dns_device_minutes (
    device_id INTEGER NOT NULL,
    minute    INTEGER NOT NULL,           -- unix ms of the minute's start
    queries   INTEGER NOT NULL DEFAULT 0,
    nxdomain  INTEGER NOT NULL DEFAULT 0,
    names     INTEGER NOT NULL DEFAULT 0, -- distinct names asked that minute
    PRIMARY KEY (device_id, minute)
) WITHOUT ROWID;
