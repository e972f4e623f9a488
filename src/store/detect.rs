//! Detection in the writer: the SQL of `crate::detect` — loading its memory at start,
//! storing hits and incidents ([`record`]), rules, the incident commands from the UI,
//! baselines, and pruning. Everything here runs on the writer's connection, inside the
//! tick's transaction unless said otherwise. The pages read these tables through
//! `store::detect::read`.
//!
//! (Over 800 lines: one table family's writes, whose commands and loads share its
//! private row helpers; the detection upkeep between ticks is `upkeep`.)

pub mod read;
pub mod upkeep;

use std::collections::HashMap;
use std::net::IpAddr;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::detect::baseline::{self, Baseline, Inputs, MinuteRow};
use crate::detect::incident::{self, Policy};
use crate::detect::rules::{Action, Rule, RuleSpec, Target};
use crate::detect::score::{Candidate, Detector, HostInfo};
use crate::detect::{Code, NewIncident};
use crate::event::{CommandError, CommandReply, CommandResult};
use crate::store::addr::stored_ip;
use crate::store::devices::device_label_sql;
use crate::time::DAY_MS;

/// Longest incident notes accepted (characters), as for devices.
pub const MAX_INCIDENT_NOTES_CHARS: usize = 1000;
/// Remote hosts whose enrichment is loaded at start (the most recently seen).
const HOSTS_LOADED: i64 = 100_000;

/// Every rule, for the detector's memory.
pub fn load_rules(conn: &Connection) -> rusqlite::Result<Vec<Rule>> {
    let mut stmt = conn.prepare(
        "SELECT id, action, code, device_id, remote, asn, org, domain, proto, port_lo, port_hi,
                expires_at, notes
         FROM rules ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Rule {
            id: r.get(0)?,
            spec: rule_spec(r)?,
        })
    })?;
    rows.collect()
}

/// The rule in a `rules` row whose columns start `id, action, code, device_id, remote,
/// asn, org, domain, proto, port_lo, port_hi, expires_at, notes` (the detector's memory
/// and the rules pages read the same layout).
pub fn rule_spec(r: &rusqlite::Row) -> rusqlite::Result<RuleSpec> {
    let action: String = r.get(1)?;
    let code: Option<String> = r.get(2)?;
    let remote: Option<String> = r.get(4)?;
    let lo: Option<u16> = r.get(9)?;
    let hi: Option<u16> = r.get(10)?;
    Ok(RuleSpec {
        action: if action == "suppress" {
            Action::Suppress
        } else {
            Action::Allow
        },
        code: code.as_deref().and_then(Code::parse),
        device_id: r.get(3)?,
        remote: remote.as_deref().and_then(parse_net),
        asn: r.get(5)?,
        org: r.get(6)?,
        domain: r.get(7)?,
        proto: r.get(8)?,
        ports: lo.map(|lo| (lo, hi.unwrap_or(lo))),
        expires_at: r.get(11)?,
        notes: r.get(12)?,
    })
}

/// An address or CIDR as stored in `rules.remote`.
fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Fills the detector's memory from what is stored: each device's destinations, ports,
/// ASNs and domains from its outbound flows (as far back as flows are kept), and the
/// remote hosts' enrichment.
///
/// One pass over `flows`, grouped in memory: the table is the largest thing netmon
/// stores, a `GROUP BY` per kind of memory would read it three times, and the writer
/// takes no batch until this is done. Each key keeps its latest time.
///
/// (Long: one pass over `flows` filling every kind of memory.)
pub fn load_memory(conn: &Connection, det: &mut Detector) -> rusqlite::Result<()> {
    type Contact = (i64, IpAddr, u8, Option<u16>);
    let mut contacts: HashMap<Contact, i64> = HashMap::new();
    let mut via_host: HashMap<(i64, i64), i64> = HashMap::new();
    let mut via_name: HashMap<(i64, i64), i64> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT device_id, dst_ip, proto, dst_port, remote_host_id, qname_id, first_seen
         FROM flows WHERE direction = 0 AND device_id IS NOT NULL",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let device: i64 = r.get(0)?;
        let at: i64 = r.get(6)?;
        let latest = |e: &mut i64| *e = (*e).max(at);
        if let Some(ip) = stored_ip(r.get_ref(1)?) {
            contacts
                .entry((device, ip, r.get(2)?, r.get(3)?))
                .and_modify(latest)
                .or_insert(at);
        }
        if let Some(host) = r.get::<_, Option<i64>>(4)? {
            via_host
                .entry((device, host))
                .and_modify(latest)
                .or_insert(at);
        }
        if let Some(name) = r.get::<_, Option<i64>>(5)? {
            via_name
                .entry((device, name))
                .and_modify(latest)
                .or_insert(at);
        }
    }
    drop(rows);
    for ((device, ip, proto, port), at) in contacts {
        let state = det.device(device, at);
        state.dsts.touch(ip, at, || ());
        if let Some(port) = port {
            state.ports.touch((proto, port), at, || ());
        }
    }
    // A device's ASNs: the latest flow to any host of each.
    let mut asn_of = conn.prepare("SELECT asn FROM remote_hosts WHERE id = ?1")?;
    let mut by_asn: HashMap<(i64, u32), i64> = HashMap::new();
    for ((device, host), at) in via_host {
        let asn: Option<u32> = asn_of.query_row([host], |r| r.get(0)).optional()?.flatten();
        if let Some(asn) = asn {
            let e = by_asn.entry((device, asn)).or_insert(at);
            *e = (*e).max(at);
        }
    }
    for ((device, asn), at) in by_asn {
        det.device(device, at).asns.touch(asn, at, || ());
    }
    let mut name_of = conn.prepare("SELECT name FROM dns_names WHERE id = ?1")?;
    let mut domains: HashMap<i64, Option<String>> = HashMap::new();
    for ((device, name_id), at) in via_name {
        let domain = match domains.get(&name_id) {
            Some(d) => d.clone(),
            None => {
                let d = name_of
                    .query_row([name_id], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(|n| crate::detect::score::registrable_domain(&n));
                domains.insert(name_id, d.clone());
                d
            }
        };
        if let Some(domain) = domain {
            det.device(device, at).domains.touch(domain, at, || ());
        }
    }
    let mut stmt = conn.prepare(
        "SELECT id, rdns, asn, org FROM remote_hosts
         WHERE rdns IS NOT NULL OR asn IS NOT NULL ORDER BY last_seen DESC LIMIT ?1",
    )?;
    let mut rows = stmt.query([HOSTS_LOADED])?;
    while let Some(r) = rows.next()? {
        let rdns: Option<String> = r.get(1)?;
        det.set_host(
            r.get(0)?,
            HostInfo {
                has_rdns: rdns.map(|n| n != crate::store::enrich::RDNS_NONE),
                asn: r.get(2)?,
                org: r.get(3)?,
            },
        );
    }
    Ok(())
}

/// What enrichment found, for the detector (rDNS known or not, ASN).
pub fn note_enrichment(det: &mut Detector, results: &[crate::event::HostEnrichment]) {
    use crate::enrich::rdns::PtrAnswer;
    for r in results {
        let host = det.host_mut(r.host_id);
        if let Some(ptr) = &r.rdns {
            match ptr.answer {
                PtrAnswer::Name(_) => host.has_rdns = Some(true),
                PtrAnswer::NoPtr => host.has_rdns = Some(false),
                PtrAnswer::Failed => {}
            }
        }
        if let Some(found) = &r.asn {
            host.asn = found.as_ref().map(|m| m.asn);
            host.org = found
                .as_ref()
                .map(|m| m.org.clone())
                .filter(|o| !o.is_empty());
        }
    }
}

/// The name behind a flow's `qname_id`: from the detector's cache, else one lookup.
pub fn flow_name(
    tx: &Transaction,
    det: &mut Detector,
    qname_id: i64,
) -> rusqlite::Result<Option<String>> {
    if let Some(name) = det.cached_name(qname_id) {
        return Ok(Some(name.to_owned()));
    }
    let name: Option<String> = tx
        .prepare_cached("SELECT name FROM dns_names WHERE id = ?1")?
        .query_row([qname_id], |r| r.get(0))
        .optional()?;
    if let Some(name) = &name {
        det.cache_name(qname_id, name.clone());
    }
    Ok(name)
}

/// Stores a tick's candidates: hits at or above the threshold (folded into a recent
/// hit with the same fingerprint), alertable ones grouped into incidents (see
/// `detect::incident`). Returns the incidents this opened, for the notifier once the
/// transaction has committed.
///
/// (Long: storing a hit and folding it into its incident must read as one transaction
/// step.)
pub fn record(
    tx: &Transaction,
    policy: &Policy,
    candidates: Vec<Candidate>,
) -> rusqlite::Result<Vec<NewIncident>> {
    let mut opened = Vec::new();
    for c in candidates {
        let score = incident::score(&c.reasons);
        if score < policy.hit_threshold {
            continue;
        }
        let codes = incident::codes(&c.reasons);
        let codes_text = incident::codes_text(&codes);
        let fingerprint = incident::hit_fingerprint(&c, &codes);
        let alertable = policy.alertable(score, &codes);
        let reasons_json = serde_json::to_string(&c.reasons).unwrap_or_else(|_| "[]".into());
        metrics::counter!("netmon_detect_hits_total").increment(1);
        let recent: Option<(i64, Option<i64>)> = tx
            .prepare_cached(
                "SELECT id, incident_id FROM hits WHERE fingerprint = ?1 AND ts >= ?2
                 ORDER BY ts DESC LIMIT 1",
            )?
            .query_row(params![fingerprint, c.at - policy.dedup_ms], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((hit_id, incident_id)) = recent {
            tx.prepare_cached(
                "UPDATE hits SET count = count + 1, last_ts = max(last_ts, ?2),
                     score = max(score, ?3), reasons = ?4
                 WHERE id = ?1",
            )?
            .execute(params![hit_id, c.at, score, reasons_json])?;
            if let Some(incident_id) = incident_id {
                fold_into_incident(tx, incident_id, &c, score, &codes, policy)?;
            }
            continue;
        }
        tx.prepare_cached(
            "INSERT INTO hits (ts, last_ts, count, device_id, flow_id, remote_host_id, remote_ip,
                 proto, dport, domain, score, codes, reasons, fingerprint, alertable)
             VALUES (?1, ?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            c.at,
            c.device_id,
            c.flow_id,
            c.remote_host_id,
            c.remote_ip.map(|ip| ip.to_string()),
            c.proto,
            c.dport,
            c.domain,
            score,
            codes_text,
            reasons_json,
            fingerprint,
            alertable
        ])?;
        let hit_id = tx.last_insert_rowid();
        if !alertable {
            continue;
        }
        let ifp = incident::incident_fingerprint(c.device_id, &codes);
        let open: Option<(i64, Option<i64>)> = tx
            .prepare_cached(
                "SELECT id, acked_at FROM incidents WHERE fingerprint = ?1 AND last_seen >= ?2
                 ORDER BY last_seen DESC LIMIT 1",
            )?
            .query_row(params![ifp, c.at - policy.window_ms], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let (incident_id, acked_at) = match open {
            Some((id, acked_at)) => {
                fold_into_incident(tx, id, &c, score, &codes, policy)?;
                (id, acked_at)
            }
            None => {
                let title = incident::title(&c, policy);
                tx.prepare_cached(
                    "INSERT INTO incidents (fingerprint, device_id, remote_ip, proto, dport, codes,
                         title, first_seen, last_seen, count, max_score)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 1, ?9)",
                )?
                .execute(params![
                    ifp,
                    c.device_id,
                    c.remote_ip.map(|ip| ip.to_string()),
                    c.proto,
                    c.dport,
                    codes_text,
                    title,
                    c.at,
                    score
                ])?;
                let id = tx.last_insert_rowid();
                metrics::counter!("netmon_detect_incidents_total").increment(1);
                opened.push(NewIncident {
                    id,
                    first_seen: c.at,
                    device_id: c.device_id,
                    device: device_label(tx, c.device_id)?,
                    title,
                    score,
                    codes: codes.clone(),
                    reasons: c.reasons.clone(),
                });
                (id, None)
            }
        };
        tx.prepare_cached("UPDATE hits SET incident_id = ?2, acked_at = ?3 WHERE id = ?1")?
            .execute(params![hit_id, incident_id, acked_at])?;
    }
    Ok(opened)
}

/// One more hit (or repeat) for an incident: count, last seen, score, codes; and, for a
/// hit on the incident's own destination, the title, so that it says what the latest
/// evidence says (the numbers of a scan or a beacon move as it goes on).
fn fold_into_incident(
    tx: &Transaction,
    id: i64,
    c: &Candidate,
    score: u32,
    codes: &[Code],
    policy: &Policy,
) -> rusqlite::Result<()> {
    let current: String = tx
        .prepare_cached("SELECT codes FROM incidents WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?;
    let mut all: Vec<Code> = current.split(',').filter_map(Code::parse).collect();
    all.extend_from_slice(codes);
    all.sort();
    all.dedup();
    tx.prepare_cached(
        "UPDATE incidents SET count = count + 1, last_seen = max(last_seen, ?2),
             max_score = max(max_score, ?3), codes = ?4,
             title = CASE WHEN remote_ip IS ?5 THEN ?6 ELSE title END
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        c.at,
        score,
        incident::codes_text(&all),
        c.remote_ip.map(|ip| ip.to_string()),
        incident::title(c, policy)
    ])?;
    Ok(())
}

/// What to call a device in a message, as the pages do.
fn device_label(tx: &Transaction, id: i64) -> rusqlite::Result<String> {
    Ok(tx
        .prepare_cached(concat!(
            "SELECT ",
            device_label_sql!(),
            " FROM devices d WHERE d.id = ?1"
        ))?
        .query_row([id], |r| r.get::<_, String>(0))
        .optional()?
        .unwrap_or_else(|| "a removed device".to_owned()))
}

/// Adds a tick's rule uses to `rules.matched` / `last_matched`.
pub fn write_rule_uses(
    tx: &Transaction,
    uses: crate::idmap::IdMap<i64, (u64, i64)>,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE rules SET matched = matched + ?2,
             last_matched = max(coalesce(last_matched, 0), ?3)
         WHERE id = ?1",
    )?;
    for (id, (n, at)) in uses {
        stmt.execute(params![id, n as i64, at])?;
    }
    Ok(())
}

/// The incident commands of the UI (`Command::AckIncident` … `DeleteRule`); rule
/// changes are mirrored in the detector's memory. Errors are for the user.
///
/// (Long: one match arm per incident/rule command.)
pub fn apply_command(
    tx: &Transaction,
    command: crate::event::Command,
    det: Option<&mut Detector>,
    now: i64,
) -> CommandResult {
    use crate::event::Command;
    let incident = |id: i64| CommandError::NotFound {
        what: "incident",
        id,
    };
    match command {
        Command::AckIncident { incident_id } => {
            let n = ack(tx, Some(incident_id), now)?;
            if n == 0 && !exists(tx, incident_id)? {
                return Err(incident(incident_id));
            }
            Ok(CommandReply::Done)
        }
        Command::AckAllIncidents => {
            ack(tx, None, now)?;
            Ok(CommandReply::Done)
        }
        Command::ClearAcknowledged => {
            tx.execute(
                "DELETE FROM hits WHERE incident_id IN
                     (SELECT id FROM incidents WHERE acked_at IS NOT NULL)",
                [],
            )?;
            tx.execute("DELETE FROM incidents WHERE acked_at IS NOT NULL", [])?;
            Ok(CommandReply::Done)
        }
        Command::MuteIncident {
            incident_id,
            until_ms,
        } => {
            if until_ms < 0 {
                return Err(CommandError::Invalid(
                    "a mute ends at a time, or 0 to unmute".into(),
                ));
            }
            let until = (until_ms > 0).then_some(until_ms);
            let n = tx.execute(
                "UPDATE incidents SET muted_until = ?2 WHERE id = ?1",
                params![incident_id, until],
            )?;
            if n == 0 {
                return Err(incident(incident_id));
            }
            Ok(CommandReply::Done)
        }
        Command::SetIncidentNotes { incident_id, notes } => {
            let notes = notes.trim();
            if notes.chars().count() > MAX_INCIDENT_NOTES_CHARS {
                return Err(CommandError::Invalid(format!(
                    "incident notes have at most {MAX_INCIDENT_NOTES_CHARS} characters"
                )));
            }
            let n = tx.execute(
                "UPDATE incidents SET notes = ?2 WHERE id = ?1",
                params![incident_id, notes],
            )?;
            if n == 0 {
                return Err(incident(incident_id));
            }
            Ok(CommandReply::Done)
        }
        Command::SaveRule {
            id,
            rule,
            reevaluate,
        } => {
            rule.validate()
                .map_err(|e| CommandError::Invalid(e.to_string()))?;
            let rule_id = save_rule(tx, id, &rule, now)?;
            let Some(rule_id) = rule_id else {
                return Err(CommandError::NotFound {
                    what: "rule",
                    id: id.unwrap_or_default(),
                });
            };
            if let Some(det) = det {
                det.rules.upsert(Rule {
                    id: rule_id,
                    spec: (*rule).clone(),
                });
                if reevaluate {
                    reevaluate_open(tx, det, rule_id, now)?;
                }
            }
            Ok(CommandReply::Id(rule_id))
        }
        Command::DeleteRule { rule_id } => {
            let n = tx.execute("DELETE FROM rules WHERE id = ?1", [rule_id])?;
            if n == 0 {
                return Err(CommandError::NotFound {
                    what: "rule",
                    id: rule_id,
                });
            }
            if let Some(det) = det {
                det.rules.remove(rule_id);
            }
            Ok(CommandReply::Done)
        }
        other => Err(CommandError::Invalid(format!(
            "not a detection command: {other:?}"
        ))),
    }
}

fn exists(tx: &Transaction, incident_id: i64) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM incidents WHERE id = ?1")?
        .query_row([incident_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Acknowledges one open incident (or all) and, cascading, its hits.
fn ack(tx: &Transaction, incident_id: Option<i64>, now: i64) -> rusqlite::Result<usize> {
    let n = tx.execute(
        "UPDATE incidents SET acked_at = ?2 WHERE acked_at IS NULL AND (?1 IS NULL OR id = ?1)",
        params![incident_id, now],
    )?;
    tx.execute(
        "UPDATE hits SET acked_at = ?2 WHERE acked_at IS NULL AND incident_id IN
             (SELECT id FROM incidents WHERE acked_at IS NOT NULL AND (?1 IS NULL OR id = ?1))",
        params![incident_id, now],
    )?;
    Ok(n)
}

/// Inserts (`id: None`) or replaces a rule; `None` when `id` names no rule.
fn save_rule(
    tx: &Transaction,
    id: Option<i64>,
    r: &RuleSpec,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let action = match r.action {
        Action::Allow => "allow",
        Action::Suppress => "suppress",
    };
    let remote = r.remote.map(|n| {
        if n.prefix_len() == n.max_prefix_len() {
            n.addr().to_string()
        } else {
            n.to_string()
        }
    });
    let org = r.org.as_deref().map(str::trim);
    let domain = r
        .domain
        .as_deref()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    let (lo, hi) = (r.ports.map(|p| p.0), r.ports.map(|p| p.1));
    let code = r.code.map(Code::as_str);
    let notes = r.notes.trim();
    let last: &dyn rusqlite::ToSql = match &id {
        None => &now,
        Some(id) => id,
    };
    let values: [&dyn rusqlite::ToSql; 13] = [
        &action,
        &code,
        &r.device_id,
        &remote,
        &r.asn,
        &org,
        &domain,
        &r.proto,
        &lo,
        &hi,
        &r.expires_at,
        &notes,
        last,
    ];
    match id {
        None => {
            tx.execute(
                "INSERT INTO rules (action, code, device_id, remote, asn, org, domain, proto,
                     port_lo, port_hi, expires_at, notes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                &values[..],
            )?;
            Ok(Some(tx.last_insert_rowid()))
        }
        Some(id) => {
            let n = tx.execute(
                "UPDATE rules SET action = ?1, code = ?2, device_id = ?3, remote = ?4, asn = ?5,
                     org = ?6, domain = ?7, proto = ?8, port_lo = ?9, port_hi = ?10,
                     expires_at = ?11, notes = ?12
                 WHERE id = ?13",
                &values[..],
            )?;
            Ok((n > 0).then_some(id))
        }
    }
}

/// After a rule change: every open incident whose every hit is now allowed, or left
/// with no alertable code by the suppress rules, is acknowledged with a note naming the
/// rule.
fn reevaluate_open(
    tx: &Transaction,
    det: &Detector,
    rule_id: i64,
    now: i64,
) -> rusqlite::Result<()> {
    let required = det.config().required_codes.clone();
    let mut stmt = tx.prepare(
        "SELECT h.incident_id, h.device_id, h.remote_ip, h.proto, h.dport, h.domain, h.reasons,
                rh.asn, rh.org
         FROM hits h JOIN incidents i ON i.id = h.incident_id
         LEFT JOIN remote_hosts rh ON rh.id = h.remote_host_id
         WHERE i.acked_at IS NULL ORDER BY h.incident_id",
    )?;
    let mut cleared: HashMap<i64, bool> = HashMap::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let incident_id: i64 = r.get(0)?;
        let remote: Option<String> = r.get(2)?;
        let domain: Option<String> = r.get(5)?;
        let reasons: String = r.get(6)?;
        let org: Option<String> = r.get(8)?;
        let target = Target {
            device_id: r.get(1)?,
            remote: remote.as_deref().and_then(|t| t.parse().ok()),
            asn: r.get(7)?,
            org: org.as_deref(),
            domain: domain.as_deref(),
            proto: r.get(3)?,
            port: r.get(4)?,
        };
        let reasons: Vec<ReasonRow> = serde_json::from_str(&reasons).unwrap_or_default();
        let allowed = det.rules.allowing(&target, now).is_some();
        let left = reasons.iter().any(|reason| {
            Code::parse(&reason.code).is_some_and(|code| {
                (required.is_empty() || required.contains(&code))
                    && det.rules.suppressing(&target, code, now).is_none()
            })
        });
        let entry = cleared.entry(incident_id).or_insert(true);
        *entry &= allowed || !left;
    }
    drop(rows);
    drop(stmt);
    let note = format!("Acknowledged by rule #{rule_id}: it now allows or suppresses every hit.");
    for (incident_id, all_cleared) in cleared {
        if all_cleared {
            ack(tx, Some(incident_id), now)?;
            tx.execute(
                "UPDATE incidents SET notes = trim(notes || char(10) || ?2) WHERE id = ?1",
                params![incident_id, note],
            )?;
        }
    }
    Ok(())
}

/// A stored reason, as much as re-evaluation needs.
#[derive(serde::Deserialize)]
struct ReasonRow {
    code: String,
}

/// Recomputes every device's baseline from the last `days` of rollups and stores them
/// (its own transaction: a maintenance job like retention, not part of a tick).
///
/// (Long: one SQL pass per baseline kind, in one transaction.)
pub fn recompute_baselines(
    conn: &mut Connection,
    days: u32,
    now: i64,
) -> rusqlite::Result<Vec<Baseline>> {
    let since = now - i64::from(days) * DAY_MS;
    let mut history: HashMap<i64, i64> = HashMap::new();
    for sql in [
        "SELECT device_id, min(minute) FROM device_minutes GROUP BY device_id",
        "SELECT device_id, min(hour) FROM device_hours GROUP BY device_id",
    ] {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (id, from): (i64, i64) = (r.get(0)?, r.get(1)?);
            let e = history.entry(id).or_insert(from);
            *e = (*e).min(from);
        }
    }
    let mut dns: HashMap<i64, Vec<(u64, u64)>> = HashMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT device_id, queries, nxdomain FROM dns_device_minutes WHERE minute >= ?1",
        )?;
        let mut rows = stmt.query([since])?;
        while let Some(r) = rows.next()? {
            dns.entry(r.get(0)?)
                .or_default()
                .push((r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64));
        }
    }
    let mut hours: HashMap<i64, Vec<(u64, u64)>> = HashMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT device_id, bytes_up, bytes_down FROM device_hours WHERE hour >= ?1")?;
        let mut rows = stmt.query([since])?;
        while let Some(r) = rows.next()? {
            hours
                .entry(r.get(0)?)
                .or_default()
                .push((r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64));
        }
    }
    let mut baselines = Vec::new();
    {
        // Ordered by the primary key: one device's minutes at a time, so memory holds one
        // device's rows, not the whole table.
        let mut stmt = conn.prepare(
            "SELECT device_id, minute, bytes_up, unique_dsts, unique_ports FROM device_minutes
             WHERE minute >= ?1 ORDER BY device_id, minute",
        )?;
        let mut rows = stmt.query([since])?;
        let mut current: Option<Inputs> = None;
        let mut finish = |inputs: Inputs, out: &mut Vec<Baseline>| {
            let mut inputs = inputs;
            inputs.dns = dns.remove(&inputs.device_id).unwrap_or_default();
            inputs.hours = hours.remove(&inputs.device_id).unwrap_or_default();
            out.push(baseline::compute(&inputs, now));
        };
        while let Some(r) = rows.next()? {
            let device: i64 = r.get(0)?;
            if current.as_ref().is_some_and(|c| c.device_id != device)
                && let Some(done) = current.take()
            {
                finish(done, &mut baselines);
            }
            let inputs = current.get_or_insert_with(|| Inputs {
                device_id: device,
                history_from: history.get(&device).copied().unwrap_or(now),
                ..Inputs::default()
            });
            inputs.minutes.push(MinuteRow {
                minute: r.get(1)?,
                bytes_up: r.get::<_, i64>(2)? as u64,
                unique_dsts: r.get::<_, i64>(3)? as u64,
                unique_ports: r.get::<_, i64>(4)? as u64,
            });
        }
        if let Some(done) = current.take() {
            finish(done, &mut baselines);
        }
    }
    // Devices with only older history (hours) still get a baseline: not learning.
    let with_minutes: std::collections::HashSet<i64> =
        baselines.iter().map(|b| b.device_id).collect();
    for (&device, &from) in &history {
        if !with_minutes.contains(&device) {
            baselines.push(baseline::compute(
                &Inputs {
                    device_id: device,
                    history_from: from,
                    hours: hours.remove(&device).unwrap_or_default(),
                    dns: dns.remove(&device).unwrap_or_default(),
                    ..Inputs::default()
                },
                now,
            ));
        }
    }
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO device_baselines (device_id, computed_at, history_from,
                 minutes, egress_p95, fanout_p95, ports_p95, dns_p95, nxdomain_p95,
                 upload_ratio_p95, egress_by_hour)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for b in &baselines {
            stmt.execute(params![
                b.device_id,
                b.computed_at,
                b.history_from,
                b.minutes as i64,
                b.egress_p95 as i64,
                b.fanout_p95 as i64,
                b.ports_p95 as i64,
                b.dns_p95 as i64,
                b.nxdomain_p95 as i64,
                b.upload_ratio_p95,
                serde_json::to_string(&b.egress_by_hour.to_vec()).unwrap_or_else(|_| "[]".into()),
            ])?;
        }
    }
    tx.commit()?;
    Ok(baselines)
}

/// Deletes hits and incidents older than `days` (an incident by its last hit; an
/// incident's hits go with it). Its own transaction, from the writer's maintenance.
pub fn prune(conn: &mut Connection, days: u32, now: i64) -> rusqlite::Result<usize> {
    let cutoff = now - i64::from(days) * DAY_MS;
    let tx = conn.transaction()?;
    let mut n = tx.execute(
        "DELETE FROM hits WHERE last_ts < ?1 OR incident_id IN
             (SELECT id FROM incidents WHERE last_seen < ?1)",
        [cutoff],
    )?;
    n += tx.execute("DELETE FROM incidents WHERE last_seen < ?1", [cutoff])?;
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::Rules;
    use crate::store::testdata::temp_db;

    /// A port scan that goes on is one incident whose title follows its latest evidence,
    /// as the page's Why section does.
    #[test]
    fn an_incident_title_follows_its_latest_evidence() {
        let (_dir, mut conn) = temp_db("detect-title");
        conn.execute_batch(
            "INSERT INTO devices (id, ip, first_seen, last_seen) VALUES (1, '10.0.0.5', 0, 0);",
        )
        .unwrap();
        let policy = Policy::from_config(&crate::config::Detect::default());
        let scan = |at: i64, evidence: &str| Candidate {
            at,
            device_id: 1,
            flow_id: None,
            remote_host_id: None,
            remote_ip: None,
            proto: None,
            dport: None,
            domain: None,
            reasons: vec![crate::detect::Reason {
                code: Code::PortScanLike,
                weight: 90,
                evidence: evidence.to_owned(),
            }],
        };
        let title = |conn: &rusqlite::Connection| -> (i64, String) {
            conn.query_row("SELECT count(*), max(title) FROM incidents", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        for (at, evidence) in [
            (1_000, "22 ports on 23 addresses"),
            (61_000, "25 ports on 27 addresses"),
        ] {
            let tx = conn.transaction().unwrap();
            record(&tx, &policy, vec![scan(at, evidence)]).unwrap();
            tx.commit().unwrap();
        }
        let (incidents, title) = title(&conn);
        assert_eq!(incidents, 1);
        assert!(title.ends_with("25 ports on 27 addresses"), "{title}");
    }

    /// The detector's memory after a restart: each device's destinations, ports, ASNs
    /// and domains with the time of their latest outbound flow; other directions and
    /// flows without a device leave nothing.
    #[test]
    fn load_memory_remembers_each_devices_latest_contacts() {
        let (_dir, conn) = temp_db("detect-memory");
        conn.execute_batch(
            "INSERT INTO devices (id, ip, first_seen, last_seen) VALUES (1, '10.0.0.5', 0, 0), (2, '10.0.0.6', 0, 0);
             INSERT INTO remote_hosts (id, ip, first_seen, last_seen, asn) VALUES
               (1, '198.51.100.1', 0, 0, 64500), (2, '198.51.100.2', 0, 0, 64500), (3, '2001:db8::3', 0, 0, NULL);
             INSERT INTO dns_names (id, name) VALUES (1, 'www.example.co.uk'), (2, 'cdn.example.co.uk'), (3, 'other.test');",
        )
        .unwrap();
        let flow = |id: i64,
                    device: Option<i64>,
                    dir: &str,
                    host: i64,
                    ip: &str,
                    port: Option<u16>,
                    name: Option<i64>,
                    at: i64| {
            conn.execute(
                "INSERT INTO flows (id, ident, ct_id, proto, direction, src_ip, dst_ip, src_port, dst_port,
                   reply_dst_ip, status, first_seen, last_seen, device_id, remote_host_id, qname_id)
                 VALUES (?1, ?1, ?1, 6, ?2, netmon_ip_blob('10.0.0.5'), netmon_ip_blob(?3), 40000, ?4,
                         netmon_ip_blob('192.0.2.1'), 0, ?5, ?5, ?6, ?7, ?8)",
                params![
                    id,
                    crate::flow::Direction::parse(dir).expect("a direction").code(),
                    ip,
                    port,
                    at,
                    device,
                    host,
                    name
                ],
            )
            .unwrap();
        };
        flow(
            1,
            Some(1),
            "outbound",
            1,
            "198.51.100.1",
            Some(443),
            Some(1),
            1_000,
        );
        flow(
            2,
            Some(1),
            "outbound",
            1,
            "198.51.100.1",
            Some(443),
            Some(2),
            5_000,
        );
        flow(
            3,
            Some(1),
            "outbound",
            2,
            "198.51.100.2",
            Some(8443),
            None,
            3_000,
        );
        flow(
            4,
            Some(1),
            "inbound",
            3,
            "2001:db8::3",
            Some(22),
            Some(3),
            9_000,
        );
        flow(
            5,
            Some(2),
            "outbound",
            3,
            "2001:db8::3",
            None,
            Some(3),
            7_000,
        );
        flow(6, None, "outbound", 3, "2001:db8::3", Some(25), None, 8_000);

        let mut det = Detector::new(&crate::config::Detect::default(), Rules::new(Vec::new()));
        load_memory(&conn, &mut det).unwrap();
        let one = det.device(1, 0);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(one.dsts.last(&ip("198.51.100.1")), Some(5_000));
        assert_eq!(one.dsts.last(&ip("198.51.100.2")), Some(3_000));
        assert_eq!(one.dsts.last(&ip("2001:db8::3")), None, "inbound");
        assert_eq!(one.ports.last(&(6, 443)), Some(5_000));
        assert_eq!(one.ports.last(&(6, 8443)), Some(3_000));
        assert_eq!(one.ports.last(&(6, 22)), None, "inbound");
        assert_eq!(one.asns.last(&64500), Some(5_000), "two hosts, one ASN");
        assert_eq!(one.domains.last(&"example.co.uk".to_owned()), Some(5_000));
        assert_eq!(one.domains.last(&"other.test".to_owned()), None, "inbound");
        let two = det.device(2, 0);
        assert_eq!(two.dsts.last(&ip("2001:db8::3")), Some(7_000));
        assert_eq!(two.domains.last(&"other.test".to_owned()), Some(7_000));
        assert!(
            two.ports.is_empty() && two.asns.is_empty(),
            "no port, no ASN"
        );
    }
}
