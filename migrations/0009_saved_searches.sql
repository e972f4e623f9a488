-- Schema version 9: saved searches (src/store/saved.rs, the /searches page).
--
-- A saved search is a name for a URL of one of netmon's list pages (a flow filter, a
-- DNS log filter, a set of anomalies): the URL *is* the search, so it keeps working
-- as pages gain filters. Pinned ones are listed first and on the overview.
CREATE TABLE saved_searches (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    -- A local path and query, e.g. '/flows?domain=example.com&show=all'; checked by
    -- store::saved::check_url before it is stored.
    url         TEXT    NOT NULL,
    pinned      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
