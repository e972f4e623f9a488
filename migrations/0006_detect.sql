-- Detection (issue 5): per-device baselines, scored hits, incidents, allow/suppress rules.
-- Times are unix ms (UTC). Codes are the names in crate::detect::Code (e.g. "NEW_DST").

-- One row per device, rewritten by the hourly baseline job from minute/hour rollups.
CREATE TABLE device_baselines (
    device_id       INTEGER PRIMARY KEY,
    computed_at     INTEGER NOT NULL,
    history_from    INTEGER NOT NULL,        -- the device's oldest rollup minute; < 24 h ago = learning
    minutes         INTEGER NOT NULL,        -- active minutes the percentiles were taken over
    egress_p95      INTEGER NOT NULL DEFAULT 0,  -- bytes up per minute
    fanout_p95      INTEGER NOT NULL DEFAULT 0,  -- new remote hosts per 10 minutes
    ports_p95       INTEGER NOT NULL DEFAULT 0,  -- unique destination ports per 10 minutes
    dns_p95         INTEGER NOT NULL DEFAULT 0,  -- DNS queries per minute
    nxdomain_p95    INTEGER NOT NULL DEFAULT 0,  -- NXDOMAIN answers per minute
    upload_ratio_p95 REAL NOT NULL DEFAULT 0,    -- bytes up / bytes down per destination
    egress_by_hour  TEXT NOT NULL DEFAULT '[]'   -- JSON: 24 p95 egress/min by UTC hour of day
) WITHOUT ROWID;

-- A scored event at or above detect.hit_threshold. Repeats of the same fingerprint within
-- detect.dedup_s fold into the newest hit (count, last_ts) instead of new rows.
CREATE TABLE hits (
    id             INTEGER PRIMARY KEY,
    ts             INTEGER NOT NULL,         -- first occurrence
    last_ts        INTEGER NOT NULL,         -- latest folded repeat
    count          INTEGER NOT NULL DEFAULT 1,
    device_id      INTEGER NOT NULL,
    flow_id        INTEGER,                  -- the flow that caused it; NULL for device-level hits
    remote_host_id INTEGER,
    remote_ip      TEXT,
    proto          INTEGER,
    dport          INTEGER,
    domain         TEXT,                     -- the flow's domain when known
    score          INTEGER NOT NULL,         -- 0..=100
    codes          TEXT NOT NULL,            -- sorted, comma-separated
    reasons        TEXT NOT NULL,            -- JSON [{"code","weight","evidence"}]
    fingerprint    TEXT NOT NULL,
    alertable      INTEGER NOT NULL DEFAULT 0,
    incident_id    INTEGER,
    acked_at       INTEGER
);
CREATE INDEX hits_ts ON hits(ts);
CREATE INDEX hits_device_ts ON hits(device_id, ts);
CREATE INDEX hits_fingerprint ON hits(fingerprint, last_ts);
CREATE INDEX hits_incident ON hits(incident_id);

-- Alertable hits grouped by incident fingerprint within detect.incident_window_s.
CREATE TABLE incidents (
    id           INTEGER PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    device_id    INTEGER NOT NULL,
    remote_ip    TEXT,
    proto        INTEGER,
    dport        INTEGER,
    codes        TEXT NOT NULL,              -- sorted union of its hits' codes
    title        TEXT NOT NULL,              -- one line: what and to where
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    count        INTEGER NOT NULL DEFAULT 1, -- hits (incl. folded repeats)
    max_score    INTEGER NOT NULL,
    acked_at     INTEGER,                    -- acknowledged (cascades to its hits)
    muted_until  INTEGER,                    -- no notifications and hidden from the badge until then
    notes        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX incidents_last_seen ON incidents(last_seen);
CREATE INDEX incidents_fingerprint ON incidents(fingerprint, last_seen);
CREATE INDEX incidents_open ON incidents(acked_at, last_seen);

-- Allow and suppress rules. A rule matches a scored flow when every non-NULL match column
-- matches (AND); NULL = any. `allow` drops the flow from scoring (no hit); `suppress`
-- removes `code` from its reasons (every code when NULL).
CREATE TABLE rules (
    id          INTEGER PRIMARY KEY,
    action      TEXT NOT NULL CHECK (action IN ('allow', 'suppress')),
    code        TEXT,                        -- suppress only
    device_id   INTEGER,                     -- NULL = every device
    remote      TEXT,                        -- IP or CIDR (v4 or v6)
    asn         INTEGER,
    org         TEXT,                        -- case-insensitive substring of the ASN org
    domain      TEXT,                        -- suffix, on label boundaries ("example.com")
    proto       INTEGER,                     -- 6 tcp, 17 udp, 1/58 icmp …
    port_lo     INTEGER,                     -- destination port range (inclusive)
    port_hi     INTEGER,
    expires_at  INTEGER,                     -- NULL = never
    notes       TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    matched     INTEGER NOT NULL DEFAULT 0,  -- times it applied
    last_matched INTEGER
);
