-- Schema version 3: router health minute rollups (collect::system, store::system).
-- One row per minute for the router, one per interface and minute. A sample is folded
-- into the minute it was taken in; rollups keep what a chart of hours needs: means for
-- what is smooth (CPU), peaks for what warns (memory used, conntrack entries, heat).

CREATE TABLE system_minutes (
    minute          INTEGER PRIMARY KEY,  -- unix ms, start of the UTC minute
    samples         INTEGER NOT NULL,     -- samples folded into this row
    cpu_samples     INTEGER NOT NULL DEFAULT 0, -- of those, with a CPU reading
    cpu_pct         REAL,                 -- mean busy share of all CPUs, 0-100
    cpu_pct_max     REAL,                 -- highest sample
    load1           REAL,                 -- last 1-minute load average
    mem_total_bytes INTEGER,              -- MemTotal
    mem_used_bytes  INTEGER,              -- peak of MemTotal - MemAvailable
    ct_count        INTEGER,              -- peak nf_conntrack_count
    ct_max          INTEGER,              -- nf_conntrack_max (last)
    temp_max_c      REAL                  -- hottest sensor's peak, NULL without sensors
);

-- Bytes and packets an interface moved in the minute (sums of counter deltas; an
-- interval with a counter reset adds nothing).
CREATE TABLE interface_minutes (
    interface   TEXT NOT NULL,
    minute      INTEGER NOT NULL,         -- unix ms, start of the UTC minute
    role        TEXT NOT NULL,            -- wan | lan | other
    rx_bytes    INTEGER NOT NULL DEFAULT 0,
    tx_bytes    INTEGER NOT NULL DEFAULT 0,
    rx_packets  INTEGER NOT NULL DEFAULT 0,
    tx_packets  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (interface, minute)
) WITHOUT ROWID;
CREATE INDEX interface_minutes_minute ON interface_minutes (minute);
