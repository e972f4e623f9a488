-- Schema version 12: DNS rows of integers and blobs.
--
-- A query's client is its address's bytes (crate::store::addr) and its source a number:
-- 0 packet, 1 log (crate::event::DnsSource). An answer row repeated its query's time
-- and names under four indexes; it now holds the query it answers, the address, the
-- client again (attribution seeks a client's answers for an address without joining
-- every other client's) and the TTL, clustered by query (retention and the storage
-- budget remove a query's answers together). Two indexes: (ip, client, query) finds a
-- client's latest answer for an address, (ip, query) anyone's; a flow's start bounds
-- the query id through dns_queries_ts, as the answer's time bounded it before.

CREATE TABLE dns_queries_compact (
    id        INTEGER PRIMARY KEY,
    ts        INTEGER NOT NULL,           -- unix ms of the answer (or unanswered query)
    client    BLOB NOT NULL,              -- the asking address
    device_id INTEGER,                    -- its device, for LAN clients
    qname_id  INTEGER NOT NULL,           -- the name asked for
    qtype     INTEGER NOT NULL,
    rcode     INTEGER,                    -- NULL: no answer seen
    answers   INTEGER NOT NULL DEFAULT 0, -- address records in the answer
    cname_id  INTEGER,                    -- end of the CNAME chain, when there is one
    source    INTEGER NOT NULL,
    domain_id INTEGER                     -- registrable domain of qname
);
INSERT INTO dns_queries_compact (id, ts, client, device_id, qname_id, qtype, rcode, answers,
        cname_id, source, domain_id)
SELECT id, ts, netmon_ip_blob(client), device_id, qname_id, qtype, rcode, answers, cname_id,
    CASE source WHEN 'log' THEN 1 ELSE 0 END, domain_id
FROM dns_queries;
DROP TABLE dns_queries;
ALTER TABLE dns_queries_compact RENAME TO dns_queries;
CREATE INDEX dns_queries_ts ON dns_queries (ts);
CREATE INDEX dns_queries_device ON dns_queries (device_id, ts);
CREATE INDEX dns_queries_name ON dns_queries (qname_id, ts);
CREATE INDEX dns_queries_domain ON dns_queries (domain_id, ts) WHERE domain_id IS NOT NULL;
CREATE INDEX dns_queries_cname ON dns_queries (cname_id) WHERE cname_id IS NOT NULL;

CREATE TABLE dns_answers_compact (
    query_id  INTEGER NOT NULL,
    ip        BLOB NOT NULL,
    client    BLOB NOT NULL,              -- the query's client
    ttl       INTEGER,                    -- seconds; NULL when the source does not say
    PRIMARY KEY (query_id, ip)
) WITHOUT ROWID;
INSERT OR IGNORE INTO dns_answers_compact (query_id, ip, client, ttl)
SELECT a.query_id, netmon_ip_blob(a.ip), netmon_ip_blob(a.client), a.ttl FROM dns_answers a
WHERE EXISTS (SELECT 1 FROM dns_queries q WHERE q.id = a.query_id);
DROP TABLE dns_answers;
ALTER TABLE dns_answers_compact RENAME TO dns_answers;
CREATE INDEX dns_answers_client ON dns_answers (ip, client, query_id);
CREATE INDEX dns_answers_ip ON dns_answers (ip, query_id);
