//! Matching a query's log lines to its answer lines (by serial with `log-queries=extra`,
//! by name and address family without), into one [`DnsObservation`] per answered query.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::event::{AnswerData, DnsAnswer, DnsObservation, DnsSource, MAX_ANSWERS};

use super::line::{AnswerLine, AnswerSource, Entry, Value};

/// How long after an answer's last line the answer counts as complete. dnsmasq writes
/// all lines of one answer in one pass of its event loop (one `write` each), so they
/// arrive microseconds apart; this only covers a read that fell between two of them.
/// Usually the next line (another query or serial) completes an answer sooner.
const ANSWER_IDLE: Duration = Duration::from_millis(500);
/// A query with no answer line after this long is sent unanswered (rcode `None`).
/// dnsmasq drops a forwarded query after 10 s (`TIMEOUT` in its `config.h`).
const UNANSWERED_AFTER: Duration = Duration::from_secs(12);
/// Queries waiting for their answer. A flood of unanswered queries evicts the oldest
/// (counted as drops) instead of growing memory.
const MAX_PENDING: usize = 4096;

/// Which queries an answer fits, from its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    Any,
    Type(u16),
    /// A record that is neither A nor AAAA (plain `NODATA`, TXT text).
    NotAddr,
}

impl Hint {
    fn of(value: Value) -> Hint {
        match value {
            Value::Addr(IpAddr::V4(_)) => Hint::Type(1),
            Value::Addr(IpAddr::V6(_)) => Hint::Type(28),
            Value::NoData(Some(t)) | Value::Record(Some(t)) => Hint::Type(t),
            Value::NoData(None) | Value::Record(None) => Hint::NotAddr,
            Value::Cname | Value::Rcode(_) => Hint::Any,
        }
    }

    fn fits(self, qtype: u16) -> bool {
        match self {
            Hint::Any => true,
            Hint::Type(t) => qtype == t || qtype == 255,
            Hint::NotAddr => qtype != 1 && qtype != 28,
        }
    }
}

/// A query seen, waiting for its answer.
#[derive(Debug)]
struct Pending {
    serial: Option<u32>,
    client: IpAddr,
    qname: String,
    qtype: u16,
    ts_ms: i64,
    seen: Instant,
    /// A `forwarded` line belongs to it (so it will get its own `reply` lines).
    forwarded: bool,
}

/// The lines of one answer, collected until the answer is complete.
#[derive(Debug)]
struct Group {
    serial: Option<u32>,
    source: AnswerSource,
    /// The first line's owner (the name asked for, or the PTR address) and its reverse name.
    name: String,
    reverse_name: Option<String>,
    ts_ms: i64,
    rcode: Option<u16>,
    answers: Vec<DnsAnswer>,
    /// The owner of a `<CNAME>` line, waiting for the next line to name the target.
    cname_from: Option<String>,
    last_name: String,
    last_hint: Hint,
    hint: Hint,
    last_line: Instant,
    /// The pending query whose line came just before this answer (for `error` lines).
    after: Option<u64>,
}

impl Group {
    fn continues_with(&self, line: &AnswerLine) -> bool {
        match (self.serial, line.serial) {
            (Some(a), Some(b)) => a == b,
            (None, None) => {
                line.source == self.source
                    && (self.cname_from.is_some()
                        || (line.name == self.last_name
                            && Hint::of(line.value) == self.last_hint
                            && matches!(line.value, Value::Addr(_) | Value::Record(_))))
            }
            _ => false,
        }
    }

    /// Adds a line; false when the answer is already at [`MAX_ANSWERS`].
    fn add(&mut self, line: &AnswerLine, now: Instant) -> bool {
        let mut kept = true;
        let mut push = |answers: &mut Vec<DnsAnswer>, answer: DnsAnswer| {
            if answers.len() < MAX_ANSWERS {
                answers.push(answer);
            } else {
                kept = false;
            }
        };
        if let Some(from) = self.cname_from.take() {
            let answer = DnsAnswer {
                name: from,
                ttl: None,
                data: AnswerData::Cname(line.name.clone()),
            };
            push(&mut self.answers, answer);
        }
        match line.value {
            Value::Addr(ip) => {
                let answer = DnsAnswer {
                    name: line.name.clone(),
                    ttl: None,
                    data: AnswerData::Addr(ip),
                };
                push(&mut self.answers, answer);
                self.rcode.get_or_insert(0);
            }
            Value::Cname => {
                self.cname_from = Some(line.name.clone());
                self.rcode.get_or_insert(0);
            }
            Value::Rcode(r) => self.rcode = Some(r),
            Value::NoData(_) | Value::Record(_) => {
                self.rcode.get_or_insert(0);
            }
        }
        let hint = Hint::of(line.value);
        if hint != Hint::Any {
            self.hint = hint;
        }
        self.last_hint = hint;
        self.last_name = line.name.clone();
        self.last_line = now;
        kept
    }
}

/// What the assembler counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AssemblerStats {
    pub observations: u64,
    /// Answers that matched no pending query (asked before netmon read the log, or a
    /// line lost to rotation).
    pub unmatched: u64,
    /// Pending queries evicted by a flood ([`MAX_PENDING`]) and records past [`MAX_ANSWERS`].
    pub dropped: u64,
}

/// Turns query-log entries into observations: one per query, with its answer.
///
/// An answer is complete when a line that does not continue it arrives (another serial,
/// another query), or [`ANSWER_IDLE`] after its last line ([`Assembler::tick`]). A query
/// without an answer is emitted unanswered after [`UNANSWERED_AFTER`].
#[derive(Default)]
pub struct Assembler {
    next_seq: u64,
    /// By arrival (so the first is the oldest).
    pending: BTreeMap<u64, Pending>,
    by_serial: HashMap<u32, u64>,
    by_name: HashMap<String, Vec<u64>>,
    open: Option<Group>,
    /// The pending query the previous line belonged to (query or forwarded line).
    last_touched: Option<u64>,
    /// The last answer emitted, for `reply query is duplicate`.
    last_answer: Option<DnsObservation>,
    /// Observations completed, oldest first, for the caller to take.
    pub ready: Vec<DnsObservation>,
    pub stats: AssemblerStats,
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// One entry, in log order; `ts_ms` is its line's time, `now` when it was read.
    ///
    /// (Long: one state machine over dnsmasq's line kinds, each case a few lines.)
    pub fn push(&mut self, ts_ms: i64, entry: Entry, now: Instant) {
        match entry {
            Entry::Query {
                serial,
                client,
                name,
                qtype,
            } => {
                self.close_open();
                if let Some(s) = serial
                    && let Some(&old) = self.by_serial.get(&s)
                {
                    // The serial restarted (dnsmasq restarted): the old query is done.
                    self.emit_unanswered(old);
                }
                if self.pending.len() >= MAX_PENDING
                    && let Some((&oldest, _)) = self.pending.first_key_value()
                {
                    self.take(oldest);
                    self.stats.dropped += 1;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                if let Some(s) = serial {
                    self.by_serial.insert(s, seq);
                }
                self.by_name.entry(name.clone()).or_default().push(seq);
                self.pending.insert(
                    seq,
                    Pending {
                        serial,
                        client,
                        qname: name,
                        qtype,
                        ts_ms,
                        seen: now,
                        forwarded: false,
                    },
                );
                self.last_touched = Some(seq);
            }
            Entry::Forwarded { serial, name } => {
                // A partial answer from the cache (a CNAME whose target expired) is
                // replaced by what upstream says.
                let cancels = self
                    .open
                    .as_ref()
                    .is_some_and(|g| match (g.serial, serial) {
                        (Some(a), Some(b)) => a == b,
                        (None, None) => g.name == name,
                        _ => false,
                    });
                if cancels {
                    self.open = None;
                } else {
                    self.close_open();
                }
                let seq = match serial {
                    Some(s) => self.by_serial.get(&s).copied(),
                    None => self.by_name.get(&name).and_then(|v| v.last().copied()),
                };
                if let Some(p) = seq.and_then(|s| self.pending.get_mut(&s)) {
                    p.forwarded = true;
                }
                self.last_touched = seq;
            }
            Entry::Answer(line) => {
                if let Some(g) = self.open.as_mut()
                    && g.continues_with(&line)
                {
                    if !g.add(&line, now) {
                        self.stats.dropped += 1;
                    }
                    return;
                }
                self.close_open();
                let mut group = Group {
                    serial: line.serial,
                    source: line.source,
                    name: line.name.clone(),
                    reverse_name: line.reverse_name.clone(),
                    ts_ms,
                    rcode: None,
                    answers: Vec::new(),
                    cname_from: None,
                    last_name: String::new(),
                    last_hint: Hint::Any,
                    hint: Hint::Any,
                    last_line: now,
                    after: self.last_touched.take(),
                };
                group.add(&line, now);
                self.open = Some(group);
            }
            Entry::Duplicate { serial } => {
                self.close_open();
                let Some(&seq) = self.by_serial.get(&serial) else {
                    return; // already given the answer when it was logged
                };
                let fits = match (self.last_answer.as_ref(), self.pending.get(&seq)) {
                    (Some(a), Some(p)) => a.qname == p.qname && a.qtype == p.qtype,
                    _ => false,
                };
                if fits
                    && let Some(p) = self.take(seq)
                    && let Some(answer) = self.last_answer.clone()
                {
                    self.emit(DnsObservation {
                        client: p.client,
                        ..answer
                    });
                }
            }
        }
    }

    /// Completes what waited long enough: an idle answer, unanswered queries.
    pub fn tick(&mut self, now: Instant) {
        if self
            .open
            .as_ref()
            .is_some_and(|g| now.duration_since(g.last_line) >= ANSWER_IDLE)
        {
            self.close_open();
        }
        while let Some((&seq, p)) = self.pending.first_key_value() {
            if now.duration_since(p.seen) < UNANSWERED_AFTER {
                break;
            }
            self.emit_unanswered(seq);
        }
    }

    /// When [`Assembler::tick`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let open = self.open.as_ref().map(|g| g.last_line + ANSWER_IDLE);
        let pending = self
            .pending
            .first_key_value()
            .map(|(_, p)| p.seen + UNANSWERED_AFTER);
        open.into_iter().chain(pending).min()
    }

    /// At shutdown: the open answer completes, every pending query goes unanswered (its
    /// answer, if it comes, is logged after the offset netmon resumes from).
    pub fn finish(&mut self) {
        self.close_open();
        while let Some((&seq, _)) = self.pending.first_key_value() {
            self.emit_unanswered(seq);
        }
    }

    /// Removes a pending query from every index.
    fn take(&mut self, seq: u64) -> Option<Pending> {
        let p = self.pending.remove(&seq)?;
        if let Some(s) = p.serial
            && self.by_serial.get(&s) == Some(&seq)
        {
            self.by_serial.remove(&s);
        }
        if let Some(v) = self.by_name.get_mut(&p.qname) {
            v.retain(|&s| s != seq);
            if v.is_empty() {
                self.by_name.remove(&p.qname);
            }
        }
        if self.last_touched == Some(seq) {
            self.last_touched = None;
        }
        Some(p)
    }

    fn emit(&mut self, obs: DnsObservation) {
        self.stats.observations += 1;
        self.ready.push(obs);
    }

    fn emit_unanswered(&mut self, seq: u64) {
        if let Some(p) = self.take(seq) {
            self.emit(DnsObservation {
                ts_ms: p.ts_ms,
                client: p.client,
                qname: p.qname,
                qtype: p.qtype,
                rcode: None,
                answers: Vec::new(),
                source: DnsSource::Log,
            });
        }
    }

    /// The pending query an answer without a serial belongs to: the most recent one of
    /// its name whose type fits the records; for an `error` line, the query whose line
    /// came just before.
    fn select(&self, g: &Group) -> Option<u64> {
        let names = std::iter::once(&g.name).chain(g.reverse_name.as_ref());
        let candidates: Vec<u64> = names
            .filter_map(|n| self.by_name.get(n))
            .flatten()
            .copied()
            .collect();
        if candidates.is_empty() {
            return if g.name == "error" && g.rcode.is_some_and(|r| r != 0) {
                g.after.filter(|s| self.pending.contains_key(s))
            } else {
                None
            };
        }
        let fits = |s: &&u64| self.pending.get(s).is_some_and(|p| g.hint.fits(p.qtype));
        candidates
            .iter()
            .filter(fits)
            .max()
            .or_else(|| candidates.iter().max())
            .copied()
    }

    fn close_open(&mut self) {
        let Some(g) = self.open.take() else { return };
        let seq = match g.serial {
            Some(s) => self.by_serial.get(&s).copied(),
            None => self.select(&g),
        };
        let Some(p) = seq.and_then(|s| self.take(s)) else {
            self.stats.unmatched += 1;
            return;
        };
        let obs = observation(&p, &g);
        if g.source == AnswerSource::Reply {
            // Queries that joined this one's forward got the same answer (see module docs).
            let same: Vec<u64> = self
                .by_name
                .get(&p.qname)
                .into_iter()
                .flatten()
                .copied()
                .filter(|s| {
                    self.pending
                        .get(s)
                        .is_some_and(|q| q.qtype == p.qtype && (q.serial.is_none() || !q.forwarded))
                })
                .collect();
            for s in same {
                if let Some(q) = self.take(s) {
                    self.emit(DnsObservation {
                        client: q.client,
                        ..obs.clone()
                    });
                }
            }
        }
        self.last_answer = Some(obs.clone());
        self.emit(obs);
    }
}

/// The observation of query `p` answered by `g`. Addresses are kept only for the type
/// asked (a TXT record's text can look like an address).
fn observation(p: &Pending, g: &Group) -> DnsObservation {
    let answers = g
        .answers
        .iter()
        .filter(|a| match a.data {
            AnswerData::Addr(IpAddr::V4(_)) => p.qtype == 1 || p.qtype == 255,
            AnswerData::Addr(IpAddr::V6(_)) => p.qtype == 28 || p.qtype == 255,
            AnswerData::Cname(_) => true,
        })
        .cloned()
        .collect();
    DnsObservation {
        ts_ms: g.ts_ms,
        client: p.client,
        qname: p.qname.clone(),
        qtype: p.qtype,
        rcode: Some(g.rcode.unwrap_or(0)),
        answers,
        source: DnsSource::Log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::dnsmasq::clock::Zone;
    use crate::collect::dnsmasq::line::{LineParser, Parsed};
    use crate::collect::dnsmasq::tests::*;

    fn push_lines(asm: &mut Assembler, now: Instant, msgs: &[&str]) {
        let mut p = LineParser::new(Zone::Fixed(0));
        for msg in msgs {
            match p.parse(&line(msg), NOW_S) {
                Parsed::Entry { ts_ms, entry, .. } => asm.push(ts_ms, entry, now),
                other => panic!("{msg}: {other:?}"),
            }
        }
    }

    #[test]
    fn without_serials_the_address_family_picks_the_query() {
        let mut asm = Assembler::new();
        let t0 = Instant::now();
        push_lines(
            &mut asm,
            t0,
            &[
                "query[A] x.test from 10.0.0.2",
                "forwarded x.test to 1.1.1.1",
                "query[AAAA] x.test from 10.0.0.2",
                "forwarded x.test to 1.1.1.1",
                "reply x.test is 2001:db8::1",
                "reply x.test is 2001:db8::2",
                "reply x.test is 192.0.2.1",
            ],
        );
        asm.finish();
        let obs = std::mem::take(&mut asm.ready);
        assert_eq!(obs.len(), 2, "{obs:#?}");
        let v6 = obs.iter().find(|o| o.qtype == 28).expect("AAAA");
        assert_eq!(
            v6.answers,
            [addr("x.test", "2001:db8::1"), addr("x.test", "2001:db8::2")]
        );
        let v4 = obs.iter().find(|o| o.qtype == 1).expect("A");
        assert_eq!(v4.answers, [addr("x.test", "192.0.2.1")]);
    }

    #[test]
    fn answers_complete_on_idle_and_queries_time_out() {
        let mut asm = Assembler::new();
        let t0 = Instant::now();
        push_lines(
            &mut asm,
            t0,
            &["2 10.0.0.3/1 query[A] slow.test from 10.0.0.3"],
        );
        push_lines(
            &mut asm,
            t0,
            &[
                "1 10.0.0.2/1 query[A] x.test from 10.0.0.2",
                "1 10.0.0.2/1 reply x.test is 192.0.2.1",
            ],
        );
        assert!(asm.ready.is_empty(), "more records of x.test may follow");
        asm.tick(t0 + Duration::from_millis(100));
        assert!(asm.ready.is_empty());
        assert_eq!(asm.deadline(), Some(t0 + ANSWER_IDLE));
        asm.tick(t0 + ANSWER_IDLE);
        assert_eq!(asm.ready.len(), 1);
        assert_eq!(asm.ready[0].rcode, Some(0));
        asm.tick(t0 + UNANSWERED_AFTER - Duration::from_millis(1));
        assert_eq!(asm.ready.len(), 1);
        asm.tick(t0 + UNANSWERED_AFTER);
        assert_eq!(asm.ready.len(), 2);
        assert_eq!(
            (asm.ready[1].qname.as_str(), asm.ready[1].rcode),
            ("slow.test", None)
        );
        assert_eq!(asm.deadline(), None);
        // Another query's line completes an answer at once.
        push_lines(
            &mut asm,
            t0,
            &[
                "3 10.0.0.2/1 query[A] y.test from 10.0.0.2",
                "3 10.0.0.2/1 reply y.test is 192.0.2.2",
            ],
        );
        push_lines(
            &mut asm,
            t0,
            &["4 10.0.0.2/1 query[A] z.test from 10.0.0.2"],
        );
        assert_eq!(asm.ready.len(), 3);
    }

    #[test]
    fn state_is_bounded() {
        let mut asm = Assembler::new();
        let t0 = Instant::now();
        let mut p = LineParser::new(Zone::Fixed(0));
        for i in 0..MAX_PENDING + 100 {
            let msg = format!("{i} 10.0.0.2/1 query[A] n{i}.test from 10.0.0.2");
            let Parsed::Entry { ts_ms, entry, .. } = p.parse(&line(&msg), NOW_S) else {
                panic!()
            };
            asm.push(ts_ms, entry, t0);
        }
        assert_eq!(asm.pending.len(), MAX_PENDING);
        assert_eq!(asm.by_serial.len(), MAX_PENDING);
        assert_eq!(asm.by_name.len(), MAX_PENDING);
        assert_eq!(asm.stats.dropped, 100);
        // An answer with too many records keeps the first MAX_ANSWERS.
        let mut asm = Assembler::new();
        push_lines(&mut asm, t0, &["query[A] big.test from 10.0.0.2"]);
        for i in 0..MAX_ANSWERS + 5 {
            push_lines(
                &mut asm,
                t0,
                &[&format!("reply big.test is 10.1.{}.{}", i / 256, i % 256)],
            );
        }
        asm.finish();
        assert_eq!(asm.ready[0].answers.len(), MAX_ANSWERS);
        assert_eq!(asm.stats.dropped, 5);
    }

    #[test]
    fn addresses_only_for_the_type_asked() {
        let mut asm = Assembler::new();
        push_lines(
            &mut asm,
            Instant::now(),
            &[
                "3 10.0.0.2/1 query[TXT] t.test from 10.0.0.2",
                "3 10.0.0.2/1 reply t.test is 192.0.2.66",
            ],
        );
        asm.finish();
        assert_eq!(asm.ready[0].answers, []);
        assert_eq!(asm.ready[0].rcode, Some(0));
    }

    #[test]
    fn hosts_and_dhcp_answers() {
        for (label, text) in [("extra", HOSTS_DHCP_EXTRA), ("plain", HOSTS_DHCP)] {
            let run = assemble(text);
            assert_eq!(run.obs.len(), 9, "{label}");
            assert_eq!(run.stats.unmatched, 0, "{label}");
            let p = "printer.home";
            expect(&run, C1, p, 1, 2, Some(0), &[addr(p, "10.77.0.60")]);
            expect(&run, C1, p, 28, 1, Some(0), &[addr(p, "fd77::60")]);
            expect(&run, C1, "nas.home", 28, 1, Some(5), &[]);
            expect(
                &run,
                C1,
                "laptop.home",
                1,
                1,
                Some(0),
                &[addr("laptop.home", C1)],
            );
            expect(&run, C1, "laptop", 1, 1, Some(0), &[addr("laptop", C1)]);
            expect(
                &run,
                C1,
                "shop.example.test",
                1,
                1,
                Some(0),
                &[addr("shop.example.test", "203.0.113.84")],
            );
            expect(&run, C1, "60.0.77.10.in-addr.arpa", 12, 1, Some(0), &[]);
            expect(&run, C1, "10.0.77.10.in-addr.arpa", 12, 1, Some(0), &[]);
        }
    }
}
