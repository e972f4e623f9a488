//! Remote hosts: one row per internet address netmon saw a flow with, created on first
//! sight by the writer. Their traffic is in the rollups (`store::rollups`), their names
//! and AS in `store::enrich`.

pub mod read;

use std::collections::HashMap;
use std::net::IpAddr;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::event::Tick;
use crate::store::table::Table;

/// Remote-host ids kept in memory; past this the cache is cleared and refilled from the
/// `remote_hosts.ip` index, so memory stays bounded on a router talking to the world.
const REMOTE_HOST_CACHE_CAP: usize = 16_384;

/// Remote address → remote host id: a cache of `remote_hosts.ip`, bounded by
/// [`REMOTE_HOST_CACHE_CAP`].
#[derive(Default)]
pub struct RemoteHosts {
    by_ip: HashMap<IpAddr, i64>,
}

impl Table for RemoteHosts {
    /// Ids created by the rolled-back transaction do not exist: start again from the
    /// index.
    fn rolled_back(&mut self, _conn: &Connection) -> rusqlite::Result<()> {
        self.forget();
        Ok(())
    }

    fn committed(&mut self, _now: i64) {
        if self.by_ip.len() > REMOTE_HOST_CACHE_CAP {
            self.by_ip.clear();
        }
    }
}

impl RemoteHosts {
    /// The remote host row for an internet address, created on first sight.
    pub fn for_ip(
        &mut self,
        tx: &Transaction,
        ip: IpAddr,
        at: i64,
        tick: &mut Tick,
    ) -> rusqlite::Result<i64> {
        if let Some(id) = self.by_ip.get(&ip) {
            return Ok(*id);
        }
        let text = ip.to_string();
        let existing: Option<i64> = tx
            .prepare_cached("SELECT id FROM remote_hosts WHERE ip = ?1")?
            .query_row([&text], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                tx.prepare_cached(
                    "INSERT INTO remote_hosts (ip, first_seen, last_seen) VALUES (?1, ?2, ?2)",
                )?
                .execute(params![text, at])?;
                tick.remote_hosts_changed = true;
                tx.last_insert_rowid()
            }
        };
        self.by_ip.insert(ip, id);
        Ok(id)
    }

    /// Forgets every cached id: rows were deleted behind the cache.
    pub fn forget(&mut self) {
        self.by_ip.clear();
    }

    /// Gives back what the cache grew to in a flood ([`crate::memory::shrink_map`]).
    pub fn shrink_if_sparse(&mut self) -> bool {
        crate::memory::shrink_map(&mut self.by_ip)
    }
}
