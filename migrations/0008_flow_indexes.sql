-- Schema version 8: index-backed orderings and filters of the flows page (issue 6).
-- Each was chosen from EXPLAIN QUERY PLAN on the 1-million-flow bench database
-- (benches/pages.rs); without them the "all flows" views sorted a million rows.
--
-- Cost on the writer: last_seen and the byte total change on every counter update of a
-- live flow, so these two indexes are rewritten with it (as flows_active already is for
-- last_seen). A tick updates only the flows that changed, a few thousand at most.

-- "All" and "ended" views, newest activity first (the default sort), and `from=`.
-- direction, ended_at, first_seen and the byte counters ride along so the default
-- filters (show=, direction=), a time window (from=/to=), its byte sort and a deep
-- OFFSET are answered from the index alone, not by a row lookup per skipped flow. They
-- cost no extra writes: each changes only together with last_seen.
CREATE INDEX flows_last_seen ON flows (last_seen, direction, ended_at, first_seen, bytes_up, bytes_down);
-- Sorted by bytes, and `min_bytes=`; covering for show= and direction= as above.
CREATE INDEX flows_bytes ON flows (bytes_up + bytes_down, direction, ended_at);
-- A device's flows newest activity first (device page, `device=` on the flows page):
-- walks one device's rows in order instead of sorting all of them. Covering for the
-- common filters with it (show, direction, port), so the capped count of a device with
-- 25 000 flows reads index pages, not 10 000 scattered rows (120 ms → 1 ms).
CREATE INDEX flows_device_last_seen ON flows (device_id, last_seen, direction, ended_at, dst_port, src_port);
-- The hits a flow caused: its score column and the `min_score=`/`code=` filters.
CREATE INDEX hits_flow ON hits (flow_id, score) WHERE flow_id IS NOT NULL;
