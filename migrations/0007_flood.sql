-- Schema version 7: flood-proof storage (src/store/budget.rs).

-- The registrable domain of each query ("example.co.uk" for "a.b.example.co.uk"), as a
-- dns_names id, so a per-domain cap counts and prunes a domain's queries through one
-- index. Rows stored before this version have NULL and are counted by no domain.
ALTER TABLE dns_queries ADD COLUMN domain_id INTEGER;
CREATE INDEX dns_queries_domain ON dns_queries (domain_id, ts) WHERE domain_id IS NOT NULL;

-- Pruning a query removes its answers with it.
CREATE INDEX dns_answers_query ON dns_answers (query_id);

-- The dns_names collector asks "does anything still name this id?" once per reference;
-- these two references had no index. Partial: most rows have no CNAME.
CREATE INDEX dns_queries_cname ON dns_queries (cname_id) WHERE cname_id IS NOT NULL;
CREATE INDEX flows_cname ON flows (cname_id) WHERE cname_id IS NOT NULL;
