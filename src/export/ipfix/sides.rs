//! Where each end of a flow is, for its IPFIX records: the router's interface towards it
//! (`ingressInterface`/`egressInterface`) and, for a LAN device, its MAC.
//!
//! Conntrack records no interfaces, so they are derived from the configuration the
//! way the router routes: an address in a LAN interface's subnet is behind that
//! interface, an address of the router itself is the router (index 0), anything else
//! is reached through the first WAN interface. MACs come from the device collector's
//! sightings (neighbour table, DHCP leases), for LAN addresses only: a remote host's
//! "MAC" would be the upstream gateway's.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::record::Side;
use crate::config::Config;
use crate::event::MacTable;
use crate::flow::unmap;
use crate::netif;

/// Interfaces and addresses are read again this often (DHCP on the WAN, an interface
/// re-created by netifd gets a new index).
const REFRESH: Duration = Duration::from_secs(30);

/// The router's interfaces as flow records name them.
pub struct Sides {
    lan_interfaces: Vec<String>,
    wan_interfaces: Vec<String>,
    /// Configured LAN subnets (empty: those of the LAN interfaces).
    lan_subnets: Vec<IpNet>,
    /// Each LAN interface's subnets with its index.
    lan: Vec<(IpNet, u32)>,
    /// The first LAN interface that exists: for a configured subnet on none of them.
    lan_default: u32,
    wan: u32,
    router: Vec<IpAddr>,
    macs: Arc<MacTable>,
    read_at: Option<Instant>,
}

impl Sides {
    pub fn new(config: &Config, macs: Arc<MacTable>) -> Sides {
        let mut sides = Sides {
            lan_interfaces: config.lan_interfaces.clone(),
            wan_interfaces: config.wan_interfaces.clone(),
            lan_subnets: config.lan_subnets.clone(),
            lan: Vec::new(),
            lan_default: 0,
            wan: 0,
            router: Vec::new(),
            macs,
            read_at: None,
        };
        sides.refresh();
        sides
    }

    /// Re-reads interfaces when [`REFRESH`] has passed.
    pub fn refresh(&mut self) {
        if self.read_at.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.read_at = Some(Instant::now());
        let addrs = match netif::interface_addrs() {
            Ok(a) => a,
            Err(e) => {
                log::warn!("IPFIX: reading interface addresses: {e}");
                return;
            }
        };
        let index = |names: &[String]| names.iter().find_map(|n| netif::interface_index(n));
        self.lan = addrs
            .iter()
            .filter(|a| self.lan_interfaces.contains(&a.interface))
            .filter_map(|a| Some((a.net.trunc(), netif::interface_index(&a.interface)?)))
            .collect();
        self.lan_default = index(&self.lan_interfaces).unwrap_or(0);
        self.wan = index(&self.wan_interfaces).unwrap_or(0);
        self.router = addrs.iter().map(|a| a.net.addr()).collect();
    }

    /// Where `ip` is.
    pub fn of(&self, ip: IpAddr) -> Side {
        let ip = unmap(ip);
        if self.router.contains(&ip) {
            return Side::default();
        }
        let lan = self
            .lan
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|&(_, index)| index)
            .or_else(|| {
                self.lan_subnets
                    .iter()
                    .any(|n| n.contains(&ip))
                    .then_some(self.lan_default)
            });
        match lan {
            Some(ifindex) => Side {
                ifindex,
                mac: self.macs.get(ip),
            },
            None => Side {
                ifindex: self.wan,
                mac: None,
            },
        }
    }
}
