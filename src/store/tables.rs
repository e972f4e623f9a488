//! Which table family each event goes to, inside the writer's transaction.
//!
//! [`Tables`] holds every family's in-memory state. The writer loop
//! ([`crate::store::writer`]) opens the transaction and calls [`Tables::apply`], then
//! [`Tables::committed`] or [`Tables::rolled_back`]; this file decides nothing about
//! storage errors, retries or ticks.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use rusqlite::{Connection, Transaction};

use crate::config::Config;
use crate::event::{Command, CommandResult, DnsObservation, Event, Sighting};
use crate::flow::Network;
use crate::store::detect::upkeep::Detection;
use crate::store::devices::{DeviceIds, Merge};
use crate::store::dns::{DnsState, apply_dns, write_dns_rollups};
use crate::store::flows::write::{FlowContext, Flows};
use crate::store::hosts::RemoteHosts;
use crate::store::rollups::{Rollups, TickAcc};
use crate::store::table::Table;

/// Every table family's in-memory state.
pub struct Tables {
    network: Arc<RwLock<Network>>,
    pub flows: Flows,
    /// LAN address → device id, and the bound on how many devices there may be.
    pub devices: DeviceIds,
    pub hosts: RemoteHosts,
    rollups: Rollups,
    /// DNS attribution state (names, flows waiting for a late answer).
    pub dns: DnsState,
    /// Detection (`None` with `[detect] enabled = false`).
    pub detect: Option<Detection>,
}

/// What a transaction wrote, for the commit to publish.
pub struct Written {
    pub acc: TickAcc,
    /// One answer per command, in order.
    pub replies: Vec<CommandResult>,
    /// Devices merged by sightings: in-memory state that names them follows on commit.
    pub merges: Vec<Merge>,
}

impl Tables {
    /// Loads every family's state from what is committed.
    pub fn load(
        conn: &mut Connection,
        network: Arc<RwLock<Network>>,
        config: &Config,
    ) -> anyhow::Result<Tables> {
        let flows = Flows::start(conn).context("loading live flows from the database")?;
        let mut devices = DeviceIds::new(config.retention.max_devices);
        devices
            .load(conn)
            .context("loading live flows from the database")?;
        let detect = if config.detect.enabled {
            Some(
                Detection::start(conn, config)
                    .context("loading detection state from the database")?,
            )
        } else {
            None
        };
        let mut dns = DnsState::new(&config.dns);
        dns.load_answered(conn)
            .context("loading answered addresses from the database")?;
        Ok(Tables {
            network,
            flows,
            devices,
            hosts: RemoteHosts::default(),
            rollups: Rollups::default(),
            dns,
            detect,
        })
    }

    /// Every family whose state a transaction may change, for the [`Table`] calls.
    fn each(&mut self) -> impl Iterator<Item = &mut dyn Table> {
        let detect = self.detect.as_mut().map(|d| d as &mut dyn Table);
        [
            &mut self.flows as &mut dyn Table,
            &mut self.devices,
            &mut self.hosts,
            &mut self.rollups,
            &mut self.dns,
        ]
        .into_iter()
        .chain(detect)
    }

    pub fn begin(&mut self) {
        self.each().for_each(|t| t.begin());
    }

    /// The transaction rolled back: every family reloads what it must from `conn`.
    pub fn rolled_back(&mut self, conn: &Connection) {
        for table in self.each() {
            if let Err(e) = table.rolled_back(conn) {
                log::error!("reloading writer state after a failed commit: {e}");
            }
        }
    }

    /// The transaction committed: merged devices are renamed in memory, then every
    /// family tidies up.
    pub fn committed(&mut self, merges: &[Merge], now: i64) {
        for m in merges {
            self.remap_device(m.from, m.into);
        }
        self.each().for_each(|t| t.committed(now));
    }

    /// Device `from` was merged into `into` (committed): the in-memory state that names
    /// devices follows. (`self.devices` was kept true during the transaction; after a
    /// rollback it is reloaded.)
    fn remap_device(&mut self, from: i64, into: i64) {
        self.flows.remap_device(from, into);
        self.rollups.remap_device(from, into);
        self.dns.remap_device(from, into);
        if let Some(d) = &mut self.detect {
            d.engine.remap_device(from, into);
        }
    }

    /// Gives back what the in-memory maps grew to in a flood once they are mostly empty
    /// again ([`crate::memory::shrink_map`]); true when a flood was over.
    pub fn shrink_if_sparse(&mut self) -> bool {
        let mut shrunk = self.flows.shrink_if_sparse();
        shrunk |= self.devices.shrink_if_sparse();
        shrunk |= self.hosts.shrink_if_sparse();
        shrunk |= self.dns.shrink_if_sparse();
        if let Some(d) = &mut self.detect {
            shrunk |= d.engine.shrink_if_sparse();
        }
        shrunk
    }

    /// Applies one batch inside `tx`: the data events in arrival order, then the
    /// commands, then what the tick accumulated (hits, rollups) and last the sightings.
    pub fn apply(
        &mut self,
        tx: &Transaction,
        data: &[Event],
        commands: Vec<Command>,
        now: i64,
    ) -> rusqlite::Result<Written> {
        let mut acc = TickAcc::default();
        let mut sightings = Vec::new();
        for event in data {
            match event {
                Event::Flows(batch) => {
                    let net = self.network.read().unwrap_or_else(|p| p.into_inner());
                    let mut ctx = FlowContext {
                        net: &net,
                        now,
                        devices: &mut self.devices,
                        hosts: &mut self.hosts,
                        dns: &mut self.dns,
                        detect: self.detect.as_mut().map(|d| &mut d.engine),
                        acc: &mut acc,
                    };
                    self.flows.apply_batch(tx, batch, &mut ctx)?;
                }
                Event::Dns(observations) => self.apply_dns(tx, observations, &mut acc)?,
                Event::Tls(names) => {
                    let devices = &self.devices.by_ip;
                    crate::store::dns::apply_tls(tx, names, &mut self.dns, &mut acc.dns, |ip| {
                        devices.get(&ip).copied()
                    })?;
                }
                Event::System(sample) => crate::store::system::apply_system(tx, sample)?,
                Event::Enrichment(found) => {
                    crate::store::enrich::apply_enrichment(tx, found)?;
                    if let Some(d) = &mut self.detect {
                        crate::store::detect::note_enrichment(&mut d.engine, found);
                    }
                }
                Event::Drops(counts) => crate::store::drops::apply_drops(tx, counts)?,
                // Applied after the rollups: a merge then moves rows already written,
                // and nothing of this tick still names the merged device.
                Event::Identity(batch) => sightings.extend(batch.iter().cloned()),
                Event::Command(..) => {}
            }
        }
        let replies = commands
            .into_iter()
            .map(|command| {
                let engine = self.detect.as_mut().map(|d| &mut d.engine);
                crate::store::commands::apply_command(tx, command, &mut acc.tick, engine, now)
            })
            .collect();
        if let Some(d) = &mut self.detect {
            d.end_tick(tx, now)?;
        }
        self.rollups.write(tx, &mut acc)?;
        write_dns_rollups(tx, &mut acc.dns, &self.dns)?;
        let merges = self.apply_sightings(tx, &sightings, &mut acc)?;
        Ok(Written {
            acc,
            replies,
            merges,
        })
    }

    fn apply_dns(
        &mut self,
        tx: &Transaction,
        observations: &[DnsObservation],
        acc: &mut TickAcc,
    ) -> rusqlite::Result<()> {
        let net = self.network.read().unwrap_or_else(|p| p.into_inner());
        // An answer proves nothing about its destination (it may be forged, or sent to a
        // spoofed asker): it names a device that exists, never creates one.
        let devices = &mut self.devices;
        apply_dns(tx, observations, &mut self.dns, &mut acc.dns, |ip, _| {
            if net.is_lan(ip) {
                devices.known(tx, ip)
            } else {
                Ok(None)
            }
        })?;
        if let Some(d) = &mut self.detect {
            for obs in observations {
                if let Some(&device) = self.devices.by_ip.get(&obs.client) {
                    d.engine.dns_observed(device, obs.is_nxdomain(), obs.ts_ms);
                }
            }
        }
        Ok(())
    }

    fn apply_sightings(
        &mut self,
        tx: &Transaction,
        sightings: &[Sighting],
        acc: &mut TickAcc,
    ) -> rusqlite::Result<Vec<Merge>> {
        if sightings.is_empty() {
            return Ok(Vec::new());
        }
        let net = self.network.read().unwrap_or_else(|p| p.into_inner());
        let applied = self.devices.apply_sightings(tx, sightings, &net)?;
        acc.tick.devices_changed |= applied.changed;
        Ok(applied.merges)
    }
}
