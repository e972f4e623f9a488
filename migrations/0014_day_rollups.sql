-- Schema version 14: day rollups, the history that is kept longest.
--
-- A day's row is the sum of that UTC day's hour rows, written once the day is over
-- (store::history rolls them before each sync to persistent storage). Hour rows go
-- first when the history store is over its budget; a year of a device's days is a few
-- kilobytes.
CREATE TABLE device_days (
    device_id INTEGER NOT NULL,
    day INTEGER NOT NULL,            -- unix ms of the UTC day's start
    bytes_up INTEGER NOT NULL DEFAULT 0,
    bytes_down INTEGER NOT NULL DEFAULT 0,
    packets_up INTEGER NOT NULL DEFAULT 0,
    packets_down INTEGER NOT NULL DEFAULT 0,
    flows_new INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, day)
) WITHOUT ROWID;
CREATE INDEX device_days_day ON device_days (day);

CREATE TABLE remote_host_days (
    remote_host_id INTEGER NOT NULL,
    day INTEGER NOT NULL,
    bytes_up INTEGER NOT NULL DEFAULT 0,
    bytes_down INTEGER NOT NULL DEFAULT 0,
    packets_up INTEGER NOT NULL DEFAULT 0,
    packets_down INTEGER NOT NULL DEFAULT 0,
    flows_new INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (remote_host_id, day)
) WITHOUT ROWID;
CREATE INDEX remote_host_days_day ON remote_host_days (day);
