-- Schema version 10: one index fewer on flows.
--
-- flows_ended (ended_at of every ended flow) cost 17 bytes of every stored flow and
-- an index insert at each flow's end, for two readers that flows_last_seen serves as
-- well: retention (a flow's ended_at is never after its last_seen, so "last seen
-- before the cutoff and ended" finds the same rows, within the two minutes a closed TCP
-- entry lingers) and the writer's start-up look for lingering closed connections.
DROP INDEX IF EXISTS flows_ended;
