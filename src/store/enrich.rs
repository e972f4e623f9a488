//! Storage side of enrichment (`src/enrich/`): which remote hosts are due (read pool)
//! and storing what was found (the writer, [`Event::Enrichment`]).
//!
//! `remote_hosts.rdns` is the PTR name, `''` for "no PTR" (pages show "none"), NULL while
//! unknown; `rdns_expires_at` says when to ask again, so an answer — positive, negative
//! or failed — is not asked again before its TTL even across restarts.
//!
//! [`Event::Enrichment`]: crate::event::Event::Enrichment

use std::net::IpAddr;

use rusqlite::{Connection, Transaction, params};

use crate::enrich::rdns::PtrAnswer;
use crate::event::HostEnrichment;

/// What `remote_hosts.rdns` holds for an address without PTR.
pub const RDNS_NONE: &str = "";

/// A remote host the enrichment task should look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueHost {
    pub id: i64,
    pub ip: IpAddr,
    pub rdns_due: bool,
    pub asn_due: bool,
}

/// Hosts whose rDNS is unknown or expired at `now_ms` (when `rdns`), or whose AS was
/// not looked up since `asn_since_ms` (when given); at most `limit` of each, sorted by
/// id. Each query is two searches on its own index (SQLite's OR optimisation), so a
/// pass that finds nothing due reads nothing; an ORDER BY (say, by activity) would
/// make SQLite walk the whole table every pass instead.
pub fn hosts_due(
    conn: &Connection,
    now_ms: i64,
    rdns: bool,
    asn_since_ms: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<DueHost>> {
    let mut due: Vec<DueHost> = Vec::new();
    let limit = limit as i64;
    if rdns {
        let mut stmt = conn.prepare_cached(
            "SELECT id, ip FROM remote_hosts \
             WHERE rdns_expires_at IS NULL OR rdns_expires_at <= ?1 LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ms, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (id, ip) = row?;
            if let Ok(ip) = ip.parse() {
                due.push(DueHost {
                    id,
                    ip,
                    rdns_due: true,
                    asn_due: false,
                });
            }
        }
    }
    if let Some(since) = asn_since_ms {
        let mut stmt = conn.prepare_cached(
            "SELECT id, ip FROM remote_hosts \
             WHERE asn_checked_at IS NULL OR asn_checked_at < ?1 LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (id, ip) = row?;
            if let Some(host) = due.iter_mut().find(|h| h.id == id) {
                host.asn_due = true;
            } else if let Ok(ip) = ip.parse() {
                due.push(DueHost {
                    id,
                    ip,
                    rdns_due: false,
                    asn_due: true,
                });
            }
        }
    }
    due.sort_by_key(|h| h.id);
    Ok(due)
}

/// Stores one pass's results. A failed lookup keeps the name already known (a
/// transient timeout must not erase it) and only moves the next attempt.
pub fn apply_enrichment(tx: &Transaction, results: &[HostEnrichment]) -> rusqlite::Result<()> {
    for r in results {
        if let Some(ptr) = &r.rdns {
            match &ptr.answer {
                PtrAnswer::Name(name) => tx
                    .prepare_cached(
                        "UPDATE remote_hosts SET rdns = ?2, rdns_expires_at = ?3 WHERE id = ?1",
                    )?
                    .execute(params![r.host_id, name, ptr.expires_at_ms])?,
                PtrAnswer::NoPtr => tx
                    .prepare_cached(
                        "UPDATE remote_hosts SET rdns = ?2, rdns_expires_at = ?3 WHERE id = ?1",
                    )?
                    .execute(params![r.host_id, RDNS_NONE, ptr.expires_at_ms])?,
                PtrAnswer::Failed => tx
                    .prepare_cached("UPDATE remote_hosts SET rdns_expires_at = ?2 WHERE id = ?1")?
                    .execute(params![r.host_id, ptr.expires_at_ms])?,
            };
        }
        if let Some(found) = &r.asn {
            let (asn, org) = match found {
                Some(m) => (Some(m.asn), (!m.org.is_empty()).then_some(m.org.as_str())),
                None => (None, None),
            };
            tx.prepare_cached(
                "UPDATE remote_hosts SET asn = ?2, org = ?3, asn_checked_at = ?4 WHERE id = ?1",
            )?
            .execute(params![r.host_id, asn, org, r.at_ms])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::asn::AsnMatch;
    use crate::enrich::rdns::PtrResult;
    use crate::store::schema::open_rw;

    #[test]
    fn due_hosts_and_stored_results() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_rw(&dir.path().join("e.db")).unwrap();
        conn.execute_batch(
            "INSERT INTO remote_hosts (id, ip, first_seen, last_seen) VALUES
               (1, '203.0.113.84', 1, 10), (2, '203.0.113.88', 1, 20), (3, '2001:db8::9', 1, 5);",
        )
        .unwrap();
        let due = hosts_due(&conn, 1000, true, Some(500), 10).unwrap();
        assert_eq!(due.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(due.iter().all(|h| h.rdns_due && h.asn_due));

        let results = vec![
            HostEnrichment {
                host_id: 1,
                rdns: Some(PtrResult {
                    answer: PtrAnswer::Name("shop.example.test".into()),
                    expires_at_ms: 5000,
                }),
                asn: Some(Some(AsnMatch {
                    asn: 64500,
                    org: "Lab".into(),
                })),
                at_ms: 1000,
            },
            HostEnrichment {
                host_id: 2,
                rdns: Some(PtrResult {
                    answer: PtrAnswer::NoPtr,
                    expires_at_ms: 2000,
                }),
                asn: Some(None),
                at_ms: 1000,
            },
            HostEnrichment {
                host_id: 3,
                rdns: Some(PtrResult {
                    answer: PtrAnswer::Failed,
                    expires_at_ms: 1500,
                }),
                asn: None,
                at_ms: 1000,
            },
        ];
        let tx = conn.transaction().unwrap();
        apply_enrichment(&tx, &results).unwrap();
        tx.commit().unwrap();
        let row = |id: i64| -> (Option<String>, Option<i64>, Option<String>) {
            conn.query_row(
                "SELECT rdns, asn, org FROM remote_hosts WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        assert_eq!(
            row(1),
            (
                Some("shop.example.test".into()),
                Some(64500),
                Some("Lab".into())
            )
        );
        assert_eq!(row(2), (Some(String::new()), None, None));
        assert_eq!(row(3), (None, None, None));
        // Nothing is due again before its expiry; host 3 (failed) retries first, and
        // its ASN is still due (it was never looked up).
        let ids = |now, since| -> Vec<(i64, bool, bool)> {
            hosts_due(&conn, now, true, since, 10)
                .unwrap()
                .iter()
                .map(|h| (h.id, h.rdns_due, h.asn_due))
                .collect()
        };
        assert_eq!(ids(1400, Some(500)), vec![(3, false, true)]);
        assert_eq!(ids(1500, None), vec![(3, true, false)]);
        assert_eq!(ids(2000, None), vec![(2, true, false), (3, true, false)]);
        // A newer ASN database makes every host due again.
        assert_eq!(ids(1400, Some(1001)).len(), 3);
        dir.close().unwrap();
    }
}
