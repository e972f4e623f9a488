-- Schema version 13: devices that resolve names around the router (store::resolvers).
--
-- A device that talks to port 853 (DNS-over-TLS or -QUIC), to a known DNS-over-HTTPS
-- resolver, or to an outside resolver on port 53 asks questions the router's own
-- resolver never sees: its flows are named by TLS server names, or not at all. The
-- device keeps the latest such resolver and when it last used it.
ALTER TABLE devices ADD COLUMN encrypted_dns TEXT;     -- e.g. 'DNS-over-HTTPS via dns.google'
ALTER TABLE devices ADD COLUMN encrypted_dns_at INTEGER;
