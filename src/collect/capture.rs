//! Whether each capture source delivers what netmon needs: the DNS packet tap, the
//! dnsmasq log, the firewall drop log (NFLOG) and conntrack's events and byte counters.
//!
//! A broken source must never stop netmon — every other source still works — but it
//! must be loud: `/healthz`, the overview's Collector tile, the health page, `/router`
//! and `netmon_capture_ok{source}` say which source is broken, what is wrong and what
//! the owner can do. Sources break at start (a table that does not load, a group another
//! program holds) or while netmon runs (a log file deleted, a sysctl switched off); the
//! code that notices calls [`CaptureStatus::broken`], and [`CaptureStatus::ok`] once it
//! works again.
//!
//! [`CaptureStatus`] is a cheap `Clone` handle: the collectors write, the web state
//! reads. A `std::sync::Mutex`, not a tokio one: it is held for a copy, never across an
//! await, and the writers are plain threads.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One capture source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// DNS answers from packets (`collect::dns_tap`).
    DnsTap,
    /// DNS answers from dnsmasq's query log (`collect::dnsmasq`).
    DnsmasqLog,
    /// Firewall drops from the NFLOG group (`collect::nflog`).
    Nflog,
    /// Flows from conntrack, with their events and byte counters (`collect::conntrack`).
    Conntrack,
}

impl Source {
    /// Every source, in the order the pages list them.
    pub const ALL: [Source; 4] = [
        Source::Conntrack,
        Source::DnsTap,
        Source::DnsmasqLog,
        Source::Nflog,
    ];

    /// The name in `/healthz` (`part`), in `/metrics` (`source`) and on the tile.
    pub fn name(self) -> &'static str {
        match self {
            Source::DnsTap => "dns_tap",
            Source::DnsmasqLog => "dnsmasq_log",
            Source::Nflog => "nflog",
            Source::Conntrack => "conntrack",
        }
    }

    /// A few words for the overview's Collector tile.
    pub fn label(self) -> &'static str {
        match self {
            Source::DnsTap => "DNS tap",
            Source::DnsmasqLog => "dnsmasq log",
            Source::Nflog => "NFLOG",
            Source::Conntrack => "conntrack",
        }
    }

    /// What the owner calls it, at the start of a sentence.
    pub fn title(self) -> &'static str {
        match self {
            Source::DnsTap => "The DNS packet tap",
            Source::DnsmasqLog => "The dnsmasq log",
            Source::Nflog => "The firewall drop log (NFLOG)",
            Source::Conntrack => "Connection tracking",
        }
    }

    /// What the owner loses while it is broken.
    pub fn loss(self) -> &'static str {
        match self {
            Source::DnsTap => "flows get no names from DNS answers",
            Source::DnsmasqLog => "flows get no names from dnsmasq's log",
            Source::Nflog => "connection attempts the firewall refuses are not counted",
            Source::Conntrack => "flows lack traffic volumes or are seen late",
        }
    }

    fn index(self) -> usize {
        match self {
            Source::Conntrack => 0,
            Source::DnsTap => 1,
            Source::DnsmasqLog => 2,
            Source::Nflog => 3,
        }
    }
}

/// What is wrong with a broken source, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The error, with its causes.
    pub error: String,
    /// The owner's next step, in plain words.
    pub fix: String,
}

/// A source's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Not configured: nothing to deliver.
    Off,
    /// Delivering.
    Ok,
    /// Configured, but delivers nothing (or only part of what it should).
    Broken(Failure),
}

/// A source's state and since when it holds (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub source: Source,
    #[serde(flatten)]
    pub state: State,
    pub since_ms: i64,
}

impl SourceStatus {
    pub fn failure(&self) -> Option<&Failure> {
        match &self.state {
            State::Broken(f) => Some(f),
            _ => None,
        }
    }

    /// `netmon_capture_ok{source}`: 1 while the source delivers or is off (nothing is
    /// missing), 0 while it is broken.
    pub fn gauge(&self) -> f64 {
        f64::from(u8::from(self.failure().is_none()))
    }
}

/// Every source's state, shared between the collectors (writers) and the web state.
#[derive(Debug, Clone)]
pub struct CaptureStatus {
    sources: Arc<Mutex<[SourceStatus; 4]>>,
}

impl Default for CaptureStatus {
    /// Every source off, since now.
    fn default() -> CaptureStatus {
        let now = crate::time::now_ms();
        CaptureStatus {
            sources: Arc::new(Mutex::new(Source::ALL.map(|source| SourceStatus {
                source,
                state: State::Off,
                since_ms: now,
            }))),
        }
    }
}

impl CaptureStatus {
    /// `source` is not configured.
    pub fn off(&self, source: Source) {
        self.set(source, State::Off);
    }

    /// `source` delivers (again).
    pub fn ok(&self, source: Source) {
        self.set(source, State::Ok);
    }

    /// `source` is broken: `error` says what is wrong, `fix` what the owner can do.
    pub fn broken(&self, source: Source, error: impl Into<String>, fix: impl Into<String>) {
        self.fail(
            source,
            Failure {
                error: error.into(),
                fix: fix.into(),
            },
        );
    }

    /// `source` works again after `failure` — unless a different failure was reported
    /// meanwhile, which stays.
    pub fn recovered(&self, source: Source, failure: &Failure) {
        self.set_if(
            source,
            State::Ok,
            |current| matches!(current, State::Broken(f) if f == failure),
        );
    }

    /// `source` is broken, as `failure` says.
    pub fn fail(&self, source: Source, failure: Failure) {
        self.set(source, State::Broken(failure));
    }

    /// Records `state`; logs a change between off, ok and broken, and keeps `since_ms`
    /// while the kind stays the same (a repeated check does not restart the clock, a
    /// changed error text is taken as is).
    fn set(&self, source: Source, state: State) {
        self.set_if(source, state, |_| true);
    }

    /// [`CaptureStatus::set`] if `applies` to the current state, under the same lock.
    fn set_if(&self, source: Source, state: State, applies: impl FnOnce(&State) -> bool) {
        let mut all = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let current = &mut all[source.index()];
        if current.state == state || !applies(&current.state) {
            return;
        }
        let same_kind = std::mem::discriminant(&current.state) == std::mem::discriminant(&state);
        match (&current.state, &state) {
            (_, State::Broken(f)) if !same_kind => log::error!(
                "{} is broken, so {}: {}; fix: {}",
                source.title(),
                source.loss(),
                f.error,
                f.fix
            ),
            (State::Broken(_), State::Ok) => log::info!("{} works again", source.title()),
            _ => {}
        }
        current.state = state;
        if !same_kind {
            current.since_ms = crate::time::now_ms();
        }
    }

    /// One source's state.
    pub fn get(&self, source: Source) -> SourceStatus {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())[source.index()].clone()
    }

    /// Every source's state, in [`Source::ALL`] order.
    pub fn all(&self) -> Vec<SourceStatus> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .to_vec()
    }

    /// Whether DNS answers reach netmon from either source (the tap or dnsmasq's log):
    /// without them no flow can be matched to a lookup.
    pub fn dns_answers_seen(&self) -> bool {
        [Source::DnsTap, Source::DnsmasqLog]
            .into_iter()
            .any(|s| self.get(s).state == State::Ok)
    }

    /// The broken sources, in [`Source::ALL`] order.
    pub fn broken_sources(&self) -> Vec<SourceStatus> {
        let mut all = self.all();
        all.retain(|s| s.failure().is_some());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_answers_are_seen_while_the_tap_or_the_log_works() {
        let status = CaptureStatus::default();
        assert!(!status.dns_answers_seen(), "both off");
        status.ok(Source::DnsmasqLog);
        assert!(status.dns_answers_seen());
        status.broken(Source::DnsmasqLog, "gone", "restore it");
        status.ok(Source::Nflog);
        assert!(!status.dns_answers_seen(), "drops say nothing of names");
        status.ok(Source::DnsTap);
        assert!(status.dns_answers_seen());
    }

    #[test]
    fn a_repeated_failure_keeps_its_since_and_recovery_restarts_it() {
        let status = CaptureStatus::default();
        assert_eq!(status.get(Source::Nflog).state, State::Off);
        status.broken(Source::Nflog, "group taken", "free it");
        let first = status.get(Source::Nflog);
        assert_eq!(first.gauge(), 0.0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        status.broken(Source::Nflog, "group taken, still", "free it");
        let again = status.get(Source::Nflog);
        assert_eq!(again.since_ms, first.since_ms);
        assert_eq!(
            again.failure().map(|f| f.error.as_str()),
            Some("group taken, still")
        );
        status.ok(Source::Nflog);
        let ok = status.get(Source::Nflog);
        assert!(ok.since_ms > first.since_ms, "{ok:?}");
        assert_eq!(ok.gauge(), 1.0);
        status.broken(Source::Nflog, "group taken", "free it");
        let taken = status.get(Source::Nflog).failure().cloned().unwrap();
        status.broken(Source::Nflog, "table missing", "load it");
        status.recovered(Source::Nflog, &taken);
        assert_eq!(
            status
                .get(Source::Nflog)
                .failure()
                .map(|f| f.error.as_str()),
            Some("table missing")
        );
        status.ok(Source::Nflog);
        let names: Vec<_> = status.broken_sources().iter().map(|s| s.source).collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_broken_source_serializes_flat() {
        let status = CaptureStatus::default();
        status.broken(Source::DnsmasqLog, "cannot open /tmp/x", "start dnsmasq");
        let json = serde_json::to_value(status.get(Source::DnsmasqLog)).unwrap();
        assert_eq!(json["source"], "dnsmasq_log");
        assert_eq!(json["state"], "broken");
        assert_eq!(json["error"], "cannot open /tmp/x");
        assert_eq!(json["fix"], "start dnsmasq");
        assert!(json["since_ms"].as_i64().is_some());
    }
}
