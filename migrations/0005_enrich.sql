-- Version 5: enrichment of remote hosts (src/enrich/). The enrichment task picks hosts
-- whose reverse DNS is unknown or expired, or whose AS has not been looked up in the
-- current ASN database, and the writer stores what it found.
--
-- remote_hosts.rdns: the PTR name, '' when the address has none (shown as "none"),
-- NULL while unknown. rdns_expires_at: when to ask again (unix ms) — the PTR's TTL, the
-- negative TTL of a "no PTR" answer, or a short retry after a failed lookup.
-- asn_checked_at: when asn/org were last looked up (unix ms); hosts checked before the
-- ASN database file was last modified are looked up again.
ALTER TABLE remote_hosts ADD COLUMN rdns_expires_at INTEGER;
ALTER TABLE remote_hosts ADD COLUMN asn_checked_at INTEGER;
CREATE INDEX remote_hosts_rdns_due ON remote_hosts(rdns_expires_at);
CREATE INDEX remote_hosts_asn_checked ON remote_hosts(asn_checked_at);
