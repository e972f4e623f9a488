//! Enrichment of remote hosts: reverse DNS ([`rdns`]) and AS number/organisation
//! ([`asn`]), off the writer's path.
//!
//! One task on the web runtime wakes every [`PASS_INTERVAL`], asks a read connection for
//! hosts whose rDNS is unknown or expired or whose AS was not looked up in the current
//! ASN database ([`crate::store::enrich::hosts_due`]), resolves them (PTR queries in
//! parallel up to `rdns_concurrency`; ASN lookups in memory) and sends the results to
//! the writer as one [`Event::Enrichment`]. The writer only runs a few UPDATEs by
//! primary key; it never waits on the network. If the writer's channel is full the
//! results are dropped: the hosts stay due and the resolver's cache answers next pass
//! without a new query.

pub mod asn;
pub mod oui;
pub mod rdns;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::event::{Event, HostEnrichment, WriterHandle};
use crate::store::pool::ReadPool;
use asn::AsnDb;
use rdns::PtrResolver;

/// How often the task looks for hosts to enrich: new hosts get their name within this.
pub const PASS_INTERVAL: Duration = Duration::from_secs(3);
/// Hosts handled per pass; the rest wait for the next. Bounds one event's size.
pub const PASS_LIMIT: usize = 256;

/// The enrichment sources in force.
pub struct Enricher {
    resolver: Option<PtrResolver>,
    asn: Option<AsnDb>,
    /// Hosts whose AS was looked up before this (the database file's mtime, unix ms) are
    /// looked up again: an updated table re-labels every host once.
    asn_since_ms: i64,
}

impl Enricher {
    /// Loads the ASN table (an unreadable configured file is an error at start, like any
    /// other bad config) and picks the resolver. `None` when everything is off.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Enricher>> {
        let e = &config.enrich;
        metrics::describe_counter!(
            "netmon_rdns_queries_total",
            "PTR queries sent (each attempt, retries included; cache hits send none)"
        );
        metrics::describe_counter!(
            "netmon_rdns_failures_total",
            "PTR lookups without a usable reply after the retry (retried later)"
        );
        let resolver = if e.rdns {
            let server = resolver_addr(&e.resolver)?;
            log::info!("reverse DNS of remote hosts via {server}");
            Some(PtrResolver::new(
                server,
                e.rdns_concurrency,
                e.rdns_negative_ttl_s,
            ))
        } else {
            None
        };
        let (asn, asn_since_ms) = if e.asn_db.as_os_str().is_empty() {
            (None, 0)
        } else {
            let started = std::time::Instant::now();
            let db = AsnDb::load(&e.asn_db)?;
            log::info!(
                "ASN database {}: {} ranges, {} KiB in memory + {} KiB mapped, loaded in {} ms{}",
                e.asn_db.display(),
                db.len(),
                db.heap_bytes() / 1024,
                db.mapped_bytes() / 1024,
                started.elapsed().as_millis(),
                if db.malformed_lines > 0 {
                    format!(" ({} unreadable lines skipped)", db.malformed_lines)
                } else {
                    String::new()
                }
            );
            (Some(db), mtime_ms(&e.asn_db))
        };
        if resolver.is_none() && asn.is_none() {
            return Ok(None);
        }
        Ok(Some(Enricher {
            resolver,
            asn,
            asn_since_ms,
        }))
    }

    /// Runs passes until the task is aborted (at shutdown).
    pub async fn run(self, reads: ReadPool, writer: WriterHandle) {
        let this = Arc::new(self);
        let mut interval = tokio::time::interval(PASS_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = this.clone().pass(&reads, &writer).await {
                log::warn!("enrichment pass: {e:#}");
            }
        }
    }

    async fn pass(self: Arc<Self>, reads: &ReadPool, writer: &WriterHandle) -> anyhow::Result<()> {
        let now = crate::time::now_ms();
        let (rdns_on, asn_since) = (
            self.resolver.is_some(),
            self.asn.as_ref().map(|_| self.asn_since_ms),
        );
        let due = reads
            .run(move |conn| {
                crate::store::enrich::hosts_due(conn, now, rdns_on, asn_since, PASS_LIMIT)
            })
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for host in due {
            let this = self.clone();
            // The resolver's semaphore bounds the queries in flight; these tasks only wait.
            tasks.spawn(async move { this.enrich(host).await });
        }
        let mut results = Vec::with_capacity(tasks.len());
        while let Some(done) = tasks.join_next().await {
            results.push(done.context("enrichment task")?);
        }
        results.sort_by_key(|r| r.host_id);
        let n = results.len();
        if writer.try_send(Event::Enrichment(results)).is_err() {
            log::debug!("writer busy: {n} enrichment results dropped, retried next pass");
        }
        Ok(())
    }

    async fn enrich(&self, host: crate::store::enrich::DueHost) -> HostEnrichment {
        let rdns = match (&self.resolver, host.rdns_due) {
            (Some(r), true) => Some(r.lookup(host.ip).await),
            _ => None,
        };
        let asn = match (&self.asn, host.asn_due) {
            (Some(db), true) => Some(db.lookup(host.ip)),
            _ => None,
        };
        HostEnrichment {
            host_id: host.id,
            rdns,
            asn,
            at_ms: crate::time::now_ms(),
        }
    }
}

/// `resolver` from the config, else the first nameserver of /etc/resolv.conf, else
/// 127.0.0.1 (a router's own dnsmasq); port 53 unless given.
pub fn resolver_addr(configured: &str) -> anyhow::Result<SocketAddr> {
    if configured.is_empty() {
        let ip = std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|t| rdns::first_nameserver(&t))
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        return Ok(SocketAddr::new(ip, 53));
    }
    parse_resolver(configured).with_context(|| {
        format!(
            "enrich.resolver = {configured:?}: expected an IP address, optionally with a port \
             (\"192.168.1.1\", \"192.168.1.1:53\", \"[fd00::1]:53\")"
        )
    })
}

/// `"ip"` or `"ip:port"` / `"[ip6]:port"`.
pub fn parse_resolver(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

fn mtime_ms(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_forms() {
        assert_eq!(parse_resolver("10.77.0.1"), "10.77.0.1:53".parse().ok());
        assert_eq!(
            parse_resolver("10.77.0.1:5353"),
            "10.77.0.1:5353".parse().ok()
        );
        assert_eq!(parse_resolver("[fd00::1]:53"), "[fd00::1]:53".parse().ok());
        assert_eq!(parse_resolver("fd00::1"), "[fd00::1]:53".parse().ok());
        assert_eq!(parse_resolver("dns.lan"), None);
        assert!(resolver_addr("").is_ok());
        assert!(resolver_addr("dns.lan").is_err());
    }
}
