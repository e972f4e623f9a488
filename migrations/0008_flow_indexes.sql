-- Schema version 8: index-backed orderings and filters of the flows page (issue 6).
-- Each was chosen from EXPLAIN QUERY PLAN on the 1-million-flow bench database
-- (benches/pages.rs); without them the "all flows" views sorted a million rows.
--
-- Cost on the writer: last_seen and the byte total change on every counter update of a
-- live flow, so these two indexes are rewritten with it (as flows_active already is for
-- last_seen). A tick updates only the flows that changed, a few thousand at most.

-- "All" and "ended" views, newest activity first (the default sort), and `from=`.
CREATE INDEX flows_last_seen ON flows (last_seen);
-- Sorted by bytes, and `min_bytes=`.
CREATE INDEX flows_bytes ON flows (bytes_up + bytes_down);
-- A device's flows newest activity first (device page, `device=` on the flows page):
-- walks one device's rows in order instead of sorting all of them.
CREATE INDEX flows_device_last_seen ON flows (device_id, last_seen);
-- The hits a flow caused: its score column and the `min_score=`/`code=` filters.
CREATE INDEX hits_flow ON hits (flow_id, score) WHERE flow_id IS NOT NULL;
