//! Detection's part of the writer: the engine scoring every new outbound flow from
//! memory during the tick ([`crate::detect::score`]), the hits and incidents it records
//! in the same transaction, and its maintenance — baselines hourly, pruning of old hits
//! and incidents — run between ticks like retention.

use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction};

use crate::collect::capture::CaptureStatus;
use crate::config::Config;
use crate::detect::NewIncident;
use crate::detect::incident::Policy;
use crate::detect::notify::Notifier;
use crate::detect::rules::Rules;
use crate::detect::score::Detector;
use crate::store::table::Table;

/// Hits and incidents are pruned this often (a cheap indexed DELETE).
const DETECT_PRUNE_EVERY: Duration = Duration::from_secs(600);

pub struct Detection {
    pub engine: Detector,
    policy: Policy,
    /// Gets each incident a committed tick opened; `offer` never blocks. `None` in unit
    /// tests, which start no notifier thread.
    pub notifier: Option<Notifier>,
    /// Whether DNS answers reach netmon, read each tick (`None`: they are assumed to).
    pub capture: Option<CaptureStatus>,
    /// Incidents the current transaction opened: offered to the notifier once it
    /// commits, forgotten if it rolls back.
    opened: Vec<NewIncident>,
    baseline_every: Duration,
    baseline_days: u32,
    retention_days: u32,
    next_baseline: Instant,
    next_prune: Instant,
}

impl Table for Detection {
    /// Rule commands of the transaction changed the engine's rules and its scoring
    /// added to per-device state: the table has the truth.
    fn rolled_back(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.opened.clear();
        self.engine.rolled_back();
        self.engine.rules = Rules::new(super::load_rules(conn)?);
        Ok(())
    }

    fn committed(&mut self, _now: i64) {
        let opened = std::mem::take(&mut self.opened);
        if let Some(notifier) = &self.notifier {
            for incident in opened {
                notifier.offer(incident);
            }
        }
    }
}

impl Detection {
    /// Loads the rules and the devices' memory and computes the first baselines.
    pub fn start(conn: &mut Connection, config: &Config) -> rusqlite::Result<Detection> {
        let c = &config.detect;
        let rules = super::load_rules(conn)?;
        let mut engine = Detector::new(c, Rules::new(rules));
        super::load_memory(conn, &mut engine)?;
        let now = crate::time::now_ms();
        engine.set_baselines(super::recompute_baselines(conn, c.baseline_days, now)?);
        let baseline_every = Duration::from_secs(c.baseline_interval_s);
        Ok(Detection {
            engine,
            policy: Policy::from_config(c),
            notifier: None,
            capture: None,
            opened: Vec::new(),
            baseline_every,
            baseline_days: c.baseline_days,
            retention_days: c.retention_days,
            next_baseline: Instant::now() + baseline_every,
            next_prune: Instant::now(),
        })
    }

    /// The end of a transaction's events: the engine's candidates become hits and
    /// incidents, and rule use counts are written.
    pub fn end_tick(&mut self, tx: &Transaction, now: i64) -> rusqlite::Result<()> {
        let candidates = self.engine.end_tick(now);
        // For the next tick's flows: an address nobody looked up only means something
        // while lookups are seen.
        self.engine.dns_answers_seen = self
            .capture
            .as_ref()
            .is_none_or(CaptureStatus::dns_answers_seen);
        self.opened = super::record(tx, &self.policy, candidates)?;
        super::write_rule_uses(tx, self.engine.take_rule_uses())
    }

    /// Baselines and pruning when due (their own transactions, between ticks).
    pub fn maintain(&mut self, conn: &mut Connection) {
        let now = crate::time::now_ms();
        if Instant::now() >= self.next_baseline {
            self.next_baseline = Instant::now() + self.baseline_every;
            let started = Instant::now();
            match super::recompute_baselines(conn, self.baseline_days, now) {
                Ok(b) => {
                    log::info!(
                        "detection baselines of {} devices recomputed in {:?}",
                        b.len(),
                        started.elapsed()
                    );
                    self.engine.set_baselines(b);
                }
                Err(e) => log::error!("recomputing detection baselines failed: {e}"),
            }
        }
        if Instant::now() >= self.next_prune {
            self.next_prune = Instant::now() + DETECT_PRUNE_EVERY;
            match super::prune(conn, self.retention_days, now) {
                Ok(0) => {}
                Ok(n) => log::info!("pruned {n} old hits and incidents"),
                Err(e) => log::error!("pruning hits and incidents failed: {e}"),
            }
        }
    }
}
