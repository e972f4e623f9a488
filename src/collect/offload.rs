//! Flow offloading detection: OpenWrt's software/hardware flow offloading
//! moves established connections into an nftables *flowtable*, and from then on their
//! packets bypass the forward path — conntrack's byte counters stop growing unless the
//! flowtable was declared with `counter` (`NFT_FLOWTABLE_COUNTER`, kernel ≥ 5.7), so
//! netmon (like nlbwmon) would undercount every long download.
//!
//! Every [`CHECK_EVERY`] the router's flowtables are listed with `nft list flowtables`
//! and each one's `counter` and `flags offload` noted. The text listing, not
//! `nft -j`: nftables' JSON output of a flowtable (`flowtable_print_json` in
//! `src/json.c`, 0.9.x to 1.1.x) carries family, name, table, handle, hook, prio and
//! devices but no flags, so JSON cannot tell a counting flowtable from a silent one.
//! The text form prints `counter` and `flags offload` on lines of their own
//! (`flowtable_print_declaration` in `src/rule.c`).
//!
//! The result is kept in memory for `/router` ([`OffloadChecker::latest`]) and exported
//! as the gauge `netmon_flowtables_uncounted` (flowtables lacking `counter`; 0 is
//! healthy).
//! The fix: current firewall4 (`ruleset.uc`) declares `counter` on its flowtable `ft`;
//! an older fw4 or a hand-written flowtable needs `counter` added to its declaration.
//!
//! Fixtures (`fixtures/offload/`): this machine's kernel has no `nf_flow_table`, so
//! `nft` refuses to create a flowtable here and none could be captured live; each
//! fixture's first lines say where its text comes from.

use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

/// Flowtables change only when the firewall is reloaded; a few minutes' delay in
/// noticing costs nothing, and `nft` is not free on a small router.
pub const CHECK_EVERY: Duration = Duration::from_secs(300);
/// Flowtables reported at most (a router has one or two).
const MAX_FLOWTABLES: usize = 16;

/// One flowtable as `nft list flowtables` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flowtable {
    pub family: String,
    pub table: String,
    pub name: String,
    pub devices: Vec<String>,
    /// `counter`: offloaded flows still update conntrack's counters.
    pub counter: bool,
    /// `flags offload`: hardware offload (the NIC/switch forwards the flow).
    pub hw_offload: bool,
}

/// The latest check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffloadStatus {
    /// When it ran (unix ms).
    pub checked_ms: i64,
    pub flowtables: Vec<Flowtable>,
    /// Why the check failed (no `nft`, no permission); `flowtables` is then empty.
    pub error: Option<String>,
}

impl OffloadStatus {
    /// Flowtables whose offloaded flows stop conntrack's counters.
    pub fn without_counter(&self) -> impl Iterator<Item = &Flowtable> {
        self.flowtables.iter().filter(|f| !f.counter)
    }
}

/// Where the latest check is seen: the checker owns the sending side, the web state
/// holds a receiver. `None` before the first check.
pub type LatestOffload = watch::Receiver<Option<Arc<OffloadStatus>>>;

/// Parses `nft list flowtables` (or `nft list ruleset`) text: `table <family> <name> {`
/// opens a table, `flowtable <name> {` a flowtable, whose body lines are `hook …`,
/// `devices = { a, b }`, `counter`, `flags offload` (terminated by `;` when written by
/// hand, by a newline when listed).
///
/// (Long: one pass over `nft -j` output whose nesting it follows level by level.)
pub fn parse_flowtables(text: &str) -> Vec<Flowtable> {
    let mut out = Vec::new();
    let (mut family, mut table) = (String::new(), String::new());
    let mut current: Option<Flowtable> = None;
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(ft) = current.as_mut() {
            for stmt in line.split(';').map(str::trim) {
                if stmt == "counter" {
                    ft.counter = true;
                } else if let Some(flags) = stmt.strip_prefix("flags ") {
                    ft.hw_offload |= flags.split([',', ' ']).any(|f| f.trim() == "offload");
                } else if let Some(devs) = stmt.strip_prefix("devices = ") {
                    ft.devices = devs
                        .trim_matches(|c| c == '{' || c == '}' || c == ' ')
                        .split(',')
                        .map(|d| d.trim().trim_matches('"').to_owned())
                        .filter(|d| !d.is_empty())
                        .collect();
                } else if stmt == "}" && out.len() < MAX_FLOWTABLES {
                    out.extend(current.take());
                    break;
                }
            }
            continue;
        }
        match words.as_slice() {
            ["table", fam, name, "{"] => (family, table) = ((*fam).into(), (*name).into()),
            ["table", name, "{"] => (family, table) = ("ip".into(), (*name).into()),
            ["flowtable", name, "{", ..] => {
                current = Some(Flowtable {
                    family: family.clone(),
                    table: table.clone(),
                    name: (*name).into(),
                    devices: Vec::new(),
                    counter: false,
                    hw_offload: false,
                });
            }
            _ => {}
        }
    }
    out
}

/// Lists the flowtables with the `nft` binary.
pub fn check() -> OffloadStatus {
    let checked_ms = crate::time::now_ms();
    let result = Command::new("nft")
        .args(["list", "flowtables"])
        .output()
        .map_err(|e| format!("running nft: {e}"))
        .and_then(|o| {
            if o.status.success() {
                Ok(String::from_utf8_lossy(&o.stdout).into_owned())
            } else {
                Err(format!(
                    "nft list flowtables failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        });
    match result {
        Ok(text) => OffloadStatus {
            checked_ms,
            flowtables: parse_flowtables(&text),
            error: None,
        },
        Err(e) => OffloadStatus {
            checked_ms,
            flowtables: Vec::new(),
            error: Some(e),
        },
    }
}

/// The checker thread; [`OffloadChecker::stop`] wakes it at once.
pub struct OffloadChecker {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
    /// The latest check, for the web state ([`OffloadChecker::latest`]).
    latest: LatestOffload,
}

impl OffloadChecker {
    pub fn start() -> anyhow::Result<OffloadChecker> {
        metrics::describe_gauge!(
            "netmon_flowtables_uncounted",
            "nftables flowtables without the `counter` flag: their offloaded flows stop \
             conntrack's byte counters, so netmon undercounts them (0 is healthy)"
        );
        let (stop, rx) = mpsc::channel::<()>();
        let (latest_tx, latest) = watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("offload".into())
            .spawn(move || {
                let mut warned = false;
                loop {
                    let status = check();
                    let silent = status.without_counter().count();
                    if status.error.is_none() {
                        metrics::gauge!("netmon_flowtables_uncounted").set(silent as f64);
                    }
                    if silent > 0 && !warned {
                        log::warn!(
                            "flow offloading: {silent} nftables flowtable(s) without `counter`; \
                             offloaded connections will be undercounted (add `counter` to the \
                             flowtable declaration)"
                        );
                        warned = true;
                    }
                    latest_tx.send_replace(Some(Arc::new(status)));
                    match rx.recv_timeout(CHECK_EVERY) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })?;
        Ok(OffloadChecker {
            stop,
            thread,
            latest,
        })
    }

    /// A receiver of the latest check (see [`LatestOffload`]).
    pub fn latest(&self) -> LatestOffload {
        self.latest.clone()
    }

    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fw4_flowtable_with_counter_and_hardware_offload() {
        let got = parse_flowtables(include_str!("fixtures/offload/fw4-counter-hw.txt"));
        assert_eq!(
            got,
            [Flowtable {
                family: "inet".into(),
                table: "fw4".into(),
                name: "ft".into(),
                devices: vec!["lan1".into(), "lan2".into(), "wan".into()],
                counter: true,
                hw_offload: true,
            }]
        );
    }

    #[test]
    fn flowtable_without_counter_is_reported() {
        let got = parse_flowtables(include_str!("fixtures/offload/no-counter.txt"));
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].table.as_str(), got[0].name.as_str()),
            ("filter", "ft")
        );
        assert_eq!(got[0].devices, ["eth0", "eth1"]);
        assert!(!got[0].counter && !got[0].hw_offload);
        let status = OffloadStatus {
            checked_ms: 0,
            flowtables: got,
            error: None,
        };
        assert_eq!(status.without_counter().count(), 1);
    }

    #[test]
    fn hand_written_declaration_and_no_flowtables() {
        let got = parse_flowtables(
            "table inet x {\n\tflowtable f {\n\t\thook ingress priority 0; devices = { eth0 }; counter; flags offload;\n\t}\n}\n",
        );
        assert!(got[0].counter && got[0].hw_offload, "{got:?}");
        assert!(parse_flowtables("table inet fw4 {\n}\n").is_empty());
        assert!(parse_flowtables("").is_empty());
    }
}
