//! The conntrack collector: every flow the router tracks, from ctnetlink events plus
//! periodic table dumps, coalesced into one [`crate::event::FlowBatch`] per tick (DESIGN §1,
//! principle 3). Over 800 lines: half of it is tests against a real kernel namespace.
//!
//! ```text
//!  kernel ── NEW/UPDATE/DESTROY events ─► event socket ─┐
//!  kernel ◄─ IPCTNL_MSG_CT_GET (dump) ─── dump socket ──┤ poll(2), one thread
//!  kernel ── dump entries, NLMSG_DONE ──► dump socket ──┘
//!                                                       ▼
//!                   Tracker (conntrack/tracker.rs: ident → latest state, dirty list)
//!                                                       │ every tick_ms
//!                                                       ▼
//!                         writer.try_send(Event::Flows(batch))  — never blocks
//! ```
//!
//! Why it is shaped like this:
//! - **Loss comes from bursts.** The kernel drops events when the socket's receive buffer
//!   is full and reports it once as `ENOBUFS` (we deliberately leave
//!   `NETLINK_NO_ENOBUFS` off). So the buffer is large (`SO_RCVBUFFORCE`), the reading
//!   thread never waits on anything but its two sockets (and a 1 ms pause that batches
//!   reads when the socket runs dry), and an overrun triggers a full dump that finds what
//!   the lost events would have said ("resync"). `NETLINK_BROADCAST_ERROR` (reliable
//!   DESTROY delivery) is not used: it keeps dying entries in the kernel table until we
//!   read them, so a stalled netmon could fill the table and stop the router forwarding.
//! - **Events lack counters.** NEW/UPDATE events carry no `CTA_COUNTERS_*`; only DESTROY
//!   (final counters) and dumps do (`ctnetlink_conntrack_event` in
//!   `net/netfilter/nf_conntrack_netlink.c`). Periodic dumps make long flows show up as a
//!   rate instead of one spike at their end.
//! - **The writer must never be waited on.** Changes collect in the tracker; a full channel
//!   just means the next tick's batch is bigger. Only the flow table is bounded
//!   (`max_tracked_flows`), and what does not fit is counted, not silently lost.
//!
//! One thread reads both sockets (non-blocking) in one `poll` loop; the sockets are neli's
//! [`NlSocket`], which exposes its fd, and [`super::ctnetlink`] parses the bytes in place.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use super::ctnetlink::{
    self, Decoded, NFNLGRP_CONNTRACK_DESTROY, NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE,
    ParseError,
};
use super::netlink::{NLMSG_ERROR, NLMSG_HDRLEN, NlMessages};
use crate::collect::capture::{CaptureStatus, Source};
use crate::config::Config;
use crate::event::{MAX_CHANGES_PER_BATCH, WriterHandle};
use crate::export::ipfix::FlowTap;
use tracker::Tracker;

mod tracker;

/// Receive buffer size, one per socket (allocated once). A dump reply datagram is at most
/// 32 KiB (`netlink_dump` caps its skb there, even with a larger `recvmsg` buffer); an
/// event is a few hundred bytes.
const RECV_BUF_BYTES: usize = 64 << 10;
/// Datagrams read from one socket before looking at the clock again, so a flood of events
/// cannot postpone the tick. Events go first: they are what the kernel drops.
const EVENT_BUDGET: usize = 4096;
const DUMP_BUDGET: usize = 64;
/// Pause after the event socket ran dry, so events are read in batches (see `Reader::run`).
/// At the kernel's peak (~1 000 000 DESTROYs/s in a GC burst, ≈ 1 KiB of skb each) that
/// is ≈ 1 MiB queued, so it is only used with at least [`NAP_MIN_RCVBUF`].
const NAP: Duration = Duration::from_millis(1);
const NAP_MIN_RCVBUF: usize = 4 << 20;
/// Longest poll sleep, so the shutdown flag (a plain atomic, no fd) is seen promptly.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
/// An overrun means the kernel is busier than we are; a resync dump adds work. Leave this
/// much time between the end of one dump and a resync dump.
const RESYNC_MIN_GAP: Duration = Duration::from_secs(2);

/// Least time between two dumps triggered by TCP connections closing. The kernel's
/// UPDATE events carry no counters (`ctnetlink_conntrack_event` adds
/// `CTA_COUNTERS_*` only to DESTROY), and a closed connection's DESTROY comes only when
/// TIME_WAIT expires (120 s); a dump soon after the close gives the user its final
/// byte counts within a second or two. Under a flood of short connections this caps
/// the cost at one dump per second (~2.5 µs per table entry).
const CLOSE_DUMP_MIN_GAP: Duration = Duration::from_secs(1);

/// How long a just-closed TCP flow is held back from the writer while the close dump
/// fetches its final counters, so the writer never records "ended, 0 bytes" for a
/// transfer that moved megabytes. Past it the flow is sent with what is known.
const CLOSE_HOLD_MS: i64 = 3_000;
/// After a failed dump, retry this soon (or at the dump interval, if shorter).
const DUMP_RETRY: Duration = Duration::from_secs(5);
/// How long shutdown keeps retrying a full channel before giving up.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// Waiting for the start-up dump's first reply, to report a permission error at start.
const FIRST_REPLY_WAIT: Duration = Duration::from_secs(2);

const SYSCTL_ACCT: &str = "net.netfilter.nf_conntrack_acct";
/// 0: the kernel sends no conntrack events; 1: it does; 2 (since Linux 6.0, the default):
/// it does once a program listens.
const SYSCTL_EVENTS: &str = "net.netfilter.nf_conntrack_events";
/// How often [`SYSCTL_EVENTS`] and [`SYSCTL_ACCT`] are read again: a script, `sysctl -p`
/// or another package can switch them off while netmon runs. Two small file reads.
const SYSCTL_CHECK: Duration = Duration::from_secs(10);
const SYSCTL_TIMESTAMP: &str = "net.netfilter.nf_conntrack_timestamp";

/// Start-up failures. Anything after start-up is logged and counted, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(
        "cannot {op}: {source}. netmon needs CAP_NET_ADMIN to read conntrack: run it as root \
         or grant the capability (e.g. `setcap cap_net_admin+ep /usr/bin/netmon`, or \
         AmbientCapabilities=CAP_NET_ADMIN in its systemd unit)"
    )]
    Permission { op: &'static str, source: io::Error },
    #[error("cannot {op}: {source}")]
    Io { op: &'static str, source: io::Error },
    #[error(
        "cannot {op}: the kernel answered {source}. Is conntrack netlink available \
         (kernel module nf_conntrack_netlink; on OpenWrt the package kmod-nf-conntrack-netlink)?"
    )]
    Kernel { op: &'static str, source: io::Error },
}

impl CollectError {
    fn io(op: &'static str, source: io::Error) -> CollectError {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => CollectError::Permission { op, source },
            _ => CollectError::Io { op, source },
        }
    }
}

/// The running collector: one thread that owns both netlink sockets and the tracker.
pub struct ConntrackCollector {
    thread: JoinHandle<Stats>,
}

impl ConntrackCollector {
    /// Opens the sockets (errors here are start-up errors), enables sysctls, subscribes,
    /// starts the thread.
    ///
    /// The event socket subscribes *before* the start-up dump is requested, so every flow
    /// is either in the dump or announced by an event (usually both). A refused dump
    /// (no `CAP_NET_ADMIN`, ctnetlink missing) is reported here, not later in the thread.
    /// `export`, when IPFIX export is on, is offered every batch the writer accepted.
    pub fn start(
        config: &Config,
        writer: WriterHandle,
        export: Option<FlowTap>,
        shutdown: Arc<AtomicBool>,
        capture: CaptureStatus,
    ) -> Result<ConntrackCollector, CollectError> {
        let (events, rcvbuf) = open_event_socket(config.netlink_rcvbuf_bytes)?;
        let dump = open_dump_socket()?;
        let mut reader = Reader::new(events, dump, writer, config, capture);
        reader.nap = if rcvbuf >= NAP_MIN_RCVBUF {
            NAP
        } else {
            Duration::ZERO
        };
        reader.tracker.export = export;
        reader.start_dump(false).map_err(|source| {
            CollectError::io(
                "send the conntrack dump request (IPCTNL_MSG_CT_GET)",
                source,
            )
        })?;
        check_first_dump_reply(&reader.dump)?;
        // After the first request: it loads nf_conntrack_netlink (and nf_conntrack) if
        // they were not loaded yet, and the sysctls only exist once they are.
        enable_sysctls(config);
        check_sysctls(&reader.capture);
        let thread = std::thread::Builder::new()
            // Thread names are cut at 15 bytes (`top -H`, /proc/*/task/*/comm).
            .name("netmon-ct".into())
            .spawn(move || reader.run(&shutdown))
            .map_err(|source| CollectError::Io {
                op: "start the conntrack thread",
                source,
            })?;
        Ok(ConntrackCollector { thread })
    }

    /// Waits for the thread after `shutdown` was set; the thread has flushed its last batch.
    pub fn join(self) {
        if self.thread.join().is_err() {
            error!("conntrack: the collector thread panicked");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Start-up: sysctls and sockets
// ---------------------------------------------------------------------------------------

/// Accounting and timestamps are per network namespace and apply to entries created
/// *after* they are switched on (the extensions are attached at creation).
fn enable_sysctls(config: &Config) {
    for (name, lost) in [
        (
            SYSCTL_ACCT,
            "flows will have no byte or packet counters (no traffic volumes, no rates)",
        ),
        (
            SYSCTL_TIMESTAMP,
            "flows will have no kernel start/stop timestamps (times are when netmon saw them, \
             which can be tens of seconds late for ended flows)",
        ),
    ] {
        if config.enable_conntrack_sysctls
            && let Err(e) = crate::sysctl::write_sysctl(name, "1")
        {
            warn!("conntrack: cannot set {name}=1 ({e}): {lost}");
            continue;
        }
        match crate::sysctl::read_sysctl(name) {
            Ok(v) if v == "1" => {
                if config.enable_conntrack_sysctls {
                    info!("conntrack: {name}=1 (applies to connections created from now on)");
                }
            }
            Ok(v) => warn!(
                "conntrack: {name} is {v} and enable_conntrack_sysctls is off: {lost}. \
                 Set `sysctl -w {name}=1` or enable_conntrack_sysctls = true"
            ),
            Err(e) => warn!("conntrack: cannot read {name} ({e}): {lost}"),
        }
    }
}

/// A sysctl conntrack collection needs on, and what the owner loses while it is off.
struct NeededSysctl {
    name: &'static str,
    is_on: fn(&str) -> bool,
    lost: &'static str,
}

/// Events are on at 1 or 2 (2: once a program listens); accounting only at 1.
const NEEDED_SYSCTLS: [NeededSysctl; 2] = [
    NeededSysctl {
        name: SYSCTL_EVENTS,
        is_on: |v| v != "0",
        lost: "the kernel announces no connections, so short ones are missed and the others \
               appear only at the next table dump",
    },
    NeededSysctl {
        name: SYSCTL_ACCT,
        is_on: |v| v == "1",
        lost: "connections have no byte or packet counters, so traffic volumes are missing",
    },
];

/// Marks conntrack broken in `capture` while the kernel sends no events or keeps no byte
/// counters, ok otherwise. Both are per network namespace: these are netmon's own.
fn check_sysctls(capture: &CaptureStatus) {
    let mut errors = Vec::new();
    let mut fixes = Vec::new();
    for NeededSysctl { name, is_on, lost } in &NEEDED_SYSCTLS {
        match crate::sysctl::read_sysctl(name) {
            Ok(v) if is_on(&v) => continue,
            Ok(v) => errors.push(format!("{name} is {v}: {lost}")),
            Err(e) => errors.push(format!("cannot read {name} ({e}): {lost}")),
        }
        fixes.push(format!("sysctl -w {name}=1"));
    }
    if errors.is_empty() {
        capture.ok(Source::Conntrack);
        return;
    }
    let mut fix = format!(
        "run `{}` on the router and keep it in /etc/sysctl.conf so it survives a reboot; \
         connections opened before keep what they lacked",
        fixes.join("` and `")
    );
    if fixes.iter().any(|f| f.contains(SYSCTL_ACCT)) {
        fix.push_str(&format!(
            " (with enable_conntrack_sysctls = true netmon sets {SYSCTL_ACCT} itself when it \
             starts)"
        ));
    }
    capture.broken(Source::Conntrack, errors.join("; "), fix);
}

/// The multicast socket: `NFNLGRP_CONNTRACK_NEW`, `_UPDATE`, `_DESTROY`.
fn open_event_socket(rcvbuf: usize) -> Result<(NlSocket, usize), CollectError> {
    let sock = NlSocket::new(NlFamily::Netfilter)
        .map_err(|e| CollectError::io("open a NETLINK_NETFILTER socket for conntrack events", e))?;
    let effective = set_receive_buffer(&sock, rcvbuf);
    sock.bind(None, Groups::empty())
        .map_err(|e| CollectError::io("bind the conntrack event socket", e))?;
    sock.add_mcast_membership(Groups::new_groups(&[
        NFNLGRP_CONNTRACK_NEW,
        NFNLGRP_CONNTRACK_UPDATE,
        NFNLGRP_CONNTRACK_DESTROY,
    ]))
    .map_err(|e| {
        CollectError::io(
            "subscribe to conntrack events (NFNLGRP_CONNTRACK_NEW/UPDATE/DESTROY)",
            e,
        )
    })?;
    sock.nonblock()
        .map_err(|e| CollectError::io("make the conntrack event socket non-blocking", e))?;
    Ok((sock, effective))
}

/// The request/response socket for dumps. Dumps are flow-controlled by the kernel (it
/// fills the next part when we read), so the default buffer is enough.
fn open_dump_socket() -> Result<NlSocket, CollectError> {
    let sock = NlSocket::new(NlFamily::Netfilter)
        .map_err(|e| CollectError::io("open a NETLINK_NETFILTER socket for conntrack dumps", e))?;
    sock.bind(None, Groups::empty())
        .map_err(|e| CollectError::io("bind the conntrack dump socket", e))?;
    sock.nonblock()
        .map_err(|e| CollectError::io("make the conntrack dump socket non-blocking", e))?;
    Ok(sock)
}

/// `SO_RCVBUFFORCE` ignores `net.core.rmem_max` but needs `CAP_NET_ADMIN`; `SO_RCVBUF`
/// is capped by `rmem_max`. The kernel doubles the value for bookkeeping and reports the
/// doubled size (socket(7)), so the effective size is compared against twice the request.
/// Returns that doubled size: how many bytes of skb (truesize, ≈ 1 KiB per event) the
/// kernel will queue before it drops events.
fn set_receive_buffer(sock: &NlSocket, bytes: usize) -> usize {
    let fd = sock.as_raw_fd();
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |opt| {
        // SAFETY: fd is a socket we own; the option value is a c_int of the given size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&want as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 {
        let e = io::Error::last_os_error();
        debug!("conntrack: SO_RCVBUFFORCE failed ({e}), falling back to SO_RCVBUF");
        if set(libc::SO_RCVBUF) != 0 {
            warn!(
                "conntrack: cannot set the event socket's receive buffer: {}",
                io::Error::last_os_error()
            );
        }
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: fd is a socket we own; got/len are a valid c_int and its size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    let effective = if rc == 0 {
        usize::try_from(got).unwrap_or(0)
    } else {
        0
    };
    if effective < bytes.saturating_mul(2) {
        warn!(
            "conntrack: event receive buffer is {} KiB, less than netlink_rcvbuf_bytes = {} KiB: \
             bursts of events (e.g. mass expiry) may overrun it. Raise net.core.rmem_max or give \
             netmon CAP_NET_ADMIN (SO_RCVBUFFORCE)",
            effective / 2 / 1024,
            bytes / 1024
        );
    } else {
        info!(
            "conntrack: event receive buffer {} KiB",
            effective / 2 / 1024
        );
    }
    effective
}

/// Reports a refused start-up dump as a start-up error. The reply is only peeked
/// (`MSG_PEEK`), so the thread still reads the dump itself.
fn check_first_dump_reply(sock: &NlSocket) -> Result<(), CollectError> {
    const OP: &str = "request a conntrack table dump (IPCTNL_MSG_CT_GET)";
    if !poll_readable(sock.as_raw_fd(), FIRST_REPLY_WAIT) {
        return Ok(());
    }
    let mut head = [0u8; 64];
    let n = match sock.recv(&mut head[..], Msg::PEEK) {
        Ok((n, _)) => n.min(head.len()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
        Err(e) => return Err(CollectError::io(OP, e)),
    };
    let Some(first) = head.get(..n) else {
        return Ok(());
    };
    let ty = first.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let code = first
        .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (ty, code) {
        (Some(NLMSG_ERROR), Some(code)) if code < 0 => {
            let source = io::Error::from_raw_os_error(-code);
            Err(match -code {
                libc::EPERM | libc::EACCES => CollectError::Permission { op: OP, source },
                _ => CollectError::Kernel { op: OP, source },
            })
        }
        _ => Ok(()),
    }
}

fn poll_readable(fd: libc::c_int, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// What the collector counts. Plain integers on the hot path; copied into the metrics
/// recorder once per tick with `Counter::absolute`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stats {
    events_new: u64,
    events_update: u64,
    events_destroy: u64,
    dumps: u64,
    resync_dumps: u64,
    dump_failures: u64,
    overruns: u64,
    reconciled_ends: u64,
    parse_errors: u64,
    drops: u64,
    channel_full: u64,
}

/// Handles into the recorder `main` installed, taken once (a lookup by name per event
/// would cost more than parsing the event).
struct Metrics {
    events_new: metrics::Counter,
    events_update: metrics::Counter,
    events_destroy: metrics::Counter,
    dumps: metrics::Counter,
    resync_dumps: metrics::Counter,
    dump_failures: metrics::Counter,
    overruns: metrics::Counter,
    reconciled_ends: metrics::Counter,
    parse_errors: metrics::Counter,
    drops: metrics::Counter,
    channel_full: metrics::Counter,
    tracked: metrics::Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        use metrics::{counter, gauge};
        Metrics {
            events_new: counter!("netmon_conntrack_events_total", "type" => "new"),
            events_update: counter!("netmon_conntrack_events_total", "type" => "update"),
            events_destroy: counter!("netmon_conntrack_events_total", "type" => "destroy"),
            dumps: counter!("netmon_conntrack_dumps_total"),
            resync_dumps: counter!("netmon_conntrack_resync_dumps_total"),
            dump_failures: counter!("netmon_conntrack_dump_failures_total"),
            overruns: counter!("netmon_conntrack_overruns_total"),
            reconciled_ends: counter!("netmon_conntrack_reconciled_ends_total"),
            parse_errors: counter!("netmon_conntrack_parse_errors_total"),
            drops: counter!("netmon_collector_drops_total", "stream" => "conntrack"),
            channel_full: counter!("netmon_collector_channel_full_total", "stream" => "conntrack"),
            tracked: gauge!("netmon_conntrack_tracked_flows"),
        }
    }

    fn publish(&self, s: &Stats, tracked: usize) {
        self.events_new.absolute(s.events_new);
        self.events_update.absolute(s.events_update);
        self.events_destroy.absolute(s.events_destroy);
        self.dumps.absolute(s.dumps);
        self.resync_dumps.absolute(s.resync_dumps);
        self.dump_failures.absolute(s.dump_failures);
        self.overruns.absolute(s.overruns);
        self.reconciled_ends.absolute(s.reconciled_ends);
        self.parse_errors.absolute(s.parse_errors);
        self.drops.absolute(s.drops);
        self.channel_full.absolute(s.channel_full);
        self.tracked.set(tracked as f64);
    }
}

/// Logs a recurring problem at most once per interval, with how often it happened.
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn new() -> Throttle {
        Throttle {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(times suppressed since the last report)` when it is time to log again.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < Self::INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The reading thread
// ---------------------------------------------------------------------------------------

/// The dump in flight on the dump socket (at most one: the kernel answers `EBUSY` to a
/// second request while one runs on the same socket).
struct RunningDump {
    seq: u32,
    resync: bool,
    /// A part of it could not be read: it is incomplete, so it must not end flows.
    tainted: bool,
}

/// Owns the sockets, the receive buffer and the tracker; runs on its own thread.
struct Reader {
    events: NlSocket,
    dump: NlSocket,
    event_buf: Vec<u8>,
    /// Separate, because reading a dump's end drains the event socket mid-datagram.
    dump_buf: Vec<u8>,
    tracker: Tracker,
    writer: WriterHandle,
    metrics: Metrics,
    tick: Duration,
    dump_interval: Duration,
    next_tick: Instant,
    next_dump: Instant,
    running: Option<RunningDump>,
    /// Events were lost (overrun): dump as soon as none runs and [`RESYNC_MIN_GAP`] has
    /// passed since the last one ended. An overrun during a dump needs another dump: the
    /// running one may already have passed the buckets of the flows whose events were lost.
    resync_pending: bool,
    last_dump_end: Option<Instant>,
    seq: u32,
    /// [`NAP`], or zero when the receive buffer is too small to absorb it.
    nap: Duration,
    overrun_log: Throttle,
    parse_log: Throttle,
    dump_log: Throttle,
    /// Where the sysctl check ([`check_sysctls`]) reports, every [`SYSCTL_CHECK`].
    capture: CaptureStatus,
    next_sysctl_check: Instant,
}

impl Reader {
    fn new(
        events: NlSocket,
        dump: NlSocket,
        writer: WriterHandle,
        config: &Config,
        capture: CaptureStatus,
    ) -> Reader {
        let now = Instant::now();
        let tick = Duration::from_millis(config.tick_ms);
        let dump_interval = Duration::from_secs(config.dump_interval_s);
        Reader {
            events,
            dump,
            event_buf: vec![0; RECV_BUF_BYTES],
            dump_buf: vec![0; RECV_BUF_BYTES],
            tracker: Tracker::new(config.max_tracked_flows),
            writer,
            metrics: Metrics::new(),
            tick,
            dump_interval,
            next_tick: now + tick,
            next_dump: now + dump_interval,
            running: None,
            resync_pending: false,
            last_dump_end: None,
            seq: 0,
            nap: Duration::ZERO,
            overrun_log: Throttle::new(),
            parse_log: Throttle::new(),
            dump_log: Throttle::new(),
            capture,
            next_sysctl_check: now + SYSCTL_CHECK,
        }
    }

    fn run(mut self, shutdown: &AtomicBool) -> Stats {
        let fds = [self.events.as_raw_fd(), self.dump.as_raw_fd()];
        while !shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut until = self.next_tick;
            if self.running.is_none() {
                until = until.min(self.next_dump);
            }
            let wait = until.saturating_duration_since(now).min(MAX_POLL_WAIT);
            let mut pfds = fds.map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(0);
            // SAFETY: two valid pollfds owned by this frame.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("conntrack: poll failed: {e}");
                    std::thread::sleep(MAX_POLL_WAIT);
                }
                continue;
            }
            // POLLERR on the event socket is how an overrun shows up; recv reports it.
            let mut batch_up = false;
            if pfds[0].revents != 0 {
                batch_up = self.read_events();
            }
            if pfds[1].revents != 0 {
                self.read_dump();
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.flush();
                self.next_tick += self.tick;
                if self.next_tick <= now {
                    self.next_tick = now + self.tick;
                }
            }
            if self.running.is_none()
                && (now >= self.next_dump || self.resync_due(now) || self.close_dump_due(now))
            {
                let resync = self.resync_pending;
                if let Err(e) = self.start_dump(resync) {
                    warn!("conntrack: cannot request a table dump: {e}");
                    self.next_dump = now + DUMP_RETRY.min(self.dump_interval);
                }
            }
            if now >= self.next_sysctl_check {
                check_sysctls(&self.capture);
                self.next_sysctl_check = now + SYSCTL_CHECK;
            }
            if batch_up && self.nap > Duration::ZERO {
                // The socket ran dry after a few events: let the next ones queue up for a
                // moment, so a moderate rate costs one wake-up per millisecond instead of
                // ~3 syscalls and a context switch per event. Bounded by `nap`, which is
                // sized so the buffer absorbs even a burst at the kernel's peak rate.
                std::thread::sleep(self.nap);
            }
        }
        self.finish()
    }

    fn close_dump_due(&self, now: Instant) -> bool {
        self.tracker.closes_pending
            && self
                .last_dump_end
                .is_none_or(|t| now.duration_since(t) >= CLOSE_DUMP_MIN_GAP)
    }

    fn resync_due(&self, now: Instant) -> bool {
        self.resync_pending
            && self
                .last_dump_end
                .is_none_or(|t| now.duration_since(t) >= RESYNC_MIN_GAP)
    }

    /// Drains the event socket (up to [`EVENT_BUDGET`] datagrams). Returns true when the
    /// socket is empty (or failed), false when the budget ran out first.
    fn read_events(&mut self) -> bool {
        for _ in 0..EVENT_BUDGET {
            // MSG_TRUNC: the length returned is the datagram's, even if it did not fit.
            match self.events.recv(&mut self.event_buf[..], Msg::TRUNC) {
                Ok((n, _)) if n > self.event_buf.len() => {
                    self.tracker.stats.parse_errors += 1;
                    warn!("conntrack: dropped a {n}-byte event datagram larger than the buffer");
                    self.request_resync();
                }
                Ok((n, _)) => {
                    let now_ms = crate::time::now_ms();
                    for msg in NlMessages::new(&self.event_buf[..n]) {
                        match msg
                            .map_err(ParseError::from)
                            .and_then(|m| ctnetlink::decode(&m))
                        {
                            Ok(Decoded::Entry(entry)) => self.tracker.apply_event(entry, now_ms),
                            Ok(_) => {}
                            Err(e) => {
                                self.tracker.stats.parse_errors += 1;
                                if let Some(more) = self.parse_log.ready() {
                                    warn!(
                                        "conntrack: unreadable event ({e}; {more} more since last report)"
                                    );
                                }
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.tracker.stats.overruns += 1;
                    if let Some(more) = self.overrun_log.ready() {
                        warn!(
                            "conntrack: event overrun, the kernel dropped events (receive buffer \
                             full; {more} more overruns since last report). Resyncing with a \
                             table dump; consider a larger netlink_rcvbuf_bytes"
                        );
                    }
                    self.request_resync();
                }
                Err(e) => {
                    error!("conntrack: reading events failed: {e}");
                    return true;
                }
            }
        }
        false
    }

    /// Drains the dump socket (up to [`DUMP_BUDGET`] datagrams).
    fn read_dump(&mut self) {
        for _ in 0..DUMP_BUDGET {
            match self.dump.recv(&mut self.dump_buf[..], Msg::TRUNC) {
                Ok((n, _)) if n > self.dump_buf.len() => {
                    self.tracker.stats.parse_errors += 1;
                    warn!("conntrack: dropped a {n}-byte dump datagram larger than the buffer");
                    if let Some(d) = self.running.as_mut() {
                        d.tainted = true;
                    }
                }
                Ok((n, _)) => {
                    // Moved out (not copied) so the handlers below may borrow `self`.
                    let buf = std::mem::take(&mut self.dump_buf);
                    self.handle_dump_datagram(&buf[..n]);
                    self.dump_buf = buf;
                    // A dump kills the expired entries it walks over (ctnetlink_dump_table),
                    // which sends their DESTROYs in a burst: keep the event socket served.
                    self.read_events();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("conntrack: reading the table dump failed: {e}");
                    if let Some(d) = self.running.as_mut() {
                        d.tainted = true;
                    }
                    return;
                }
            }
        }
    }

    fn handle_dump_datagram(&mut self, datagram: &[u8]) {
        let now_ms = crate::time::now_ms();
        for msg in NlMessages::new(datagram) {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    self.dump_parse_error(e.into());
                    break;
                }
            };
            // Replies to an abandoned request are drained and ignored.
            let Some(seq) = self.running.as_ref().map(|d| d.seq) else {
                continue;
            };
            if msg.seq != seq {
                continue;
            }
            match ctnetlink::decode(&msg) {
                Ok(Decoded::Entry(entry)) => self.tracker.apply_dump(entry, now_ms),
                Ok(Decoded::Done) => {
                    // DESTROYs of entries the dump did not list because they went while it
                    // ran were queued on the event socket before NLMSG_DONE was built. Read
                    // them first, or reconcile would end those flows a second time.
                    while !self.read_events() {}
                    self.end_dump(None);
                }
                Ok(Decoded::Error(errno)) => self.end_dump(Some(errno)),
                Ok(_) => {}
                Err(e) => self.dump_parse_error(e),
            }
        }
    }

    fn dump_parse_error(&mut self, e: ctnetlink::ParseError) {
        self.tracker.stats.parse_errors += 1;
        if let Some(d) = self.running.as_mut() {
            d.tainted = true;
        }
        if let Some(more) = self.parse_log.ready() {
            warn!("conntrack: unreadable dump entry ({e}; {more} more since last report)");
        }
    }

    fn request_resync(&mut self) {
        self.resync_pending = true;
    }

    /// Sends a dump request and tells the tracker a dump began.
    fn start_dump(&mut self, resync: bool) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let request = ctnetlink::dump_request(self.seq).map_err(io::Error::other)?;
        self.dump.send(&request, Msg::empty())?;
        self.tracker.begin_dump(crate::time::now_ms());
        self.tracker.closes_pending = false;
        self.running = Some(RunningDump {
            seq: self.seq,
            resync,
            tainted: false,
        });
        self.resync_pending = false;
        self.tracker.stats.dumps += 1;
        if resync {
            self.tracker.stats.resync_dumps += 1;
        }
        debug!("conntrack: dump {} requested (resync: {resync})", self.seq);
        Ok(())
    }

    /// `NLMSG_DONE` (`error == None`) or `NLMSG_ERROR` ended the running dump.
    fn end_dump(&mut self, error: Option<i32>) {
        let Some(dump) = self.running.take() else {
            return;
        };
        let now = Instant::now();
        self.last_dump_end = Some(now);
        match error {
            None if !dump.tainted => {
                let ended = self.tracker.end_dump(crate::time::now_ms());
                debug!(
                    "conntrack: dump {} complete, {ended} flows ended unseen",
                    dump.seq
                );
                self.next_dump = now + self.dump_interval;
            }
            _ => {
                self.tracker.abort_dump();
                self.tracker.stats.dump_failures += 1;
                if let Some(more) = self.dump_log.ready() {
                    let why = match error {
                        Some(errno) => io::Error::from_raw_os_error(errno).to_string(),
                        None => "parts of it could not be read".to_owned(),
                    };
                    warn!(
                        "conntrack: table dump failed ({why}; {more} more failures since last \
                         report); retrying"
                    );
                }
                if dump.resync {
                    self.resync_pending = true;
                }
                self.next_dump = now + DUMP_RETRY.min(self.dump_interval);
            }
        }
    }

    fn flush(&mut self) {
        self.tracker.flush(&self.writer);
        self.metrics
            .publish(&self.tracker.stats, self.tracker.flows.len());
    }

    /// Shutdown: hand over everything dirty, retrying a full channel for a moment.
    fn finish(mut self) -> Stats {
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        loop {
            if self.tracker.flush(&self.writer) {
                break;
            }
            if Instant::now() >= deadline {
                warn!(
                    "conntrack: shutting down with {} flow changes the writer had no room for",
                    self.tracker.dirty.len()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.metrics
            .publish(&self.tracker.stats, self.tracker.flows.len());
        let s = &self.tracker.stats;
        info!(
            "conntrack: collector stopped; events new/update/destroy {}/{}/{}, dumps {} \
             ({} resync, {} failed), overruns {}, reconciled ends {}, parse errors {}, \
             drops {}, channel full {}",
            s.events_new,
            s.events_update,
            s.events_destroy,
            s.dumps,
            s.resync_dumps,
            s.dump_failures,
            s.overruns,
            s.reconciled_ends,
            s.parse_errors,
            s.drops,
            s.channel_full
        );
        self.tracker.stats
    }
}

#[cfg(test)]
mod tests {
    use super::ctnetlink::CtKind;
    use super::tracker::Tracked;
    use super::tracker::tests::writer;
    use super::*;
    use crate::flow::PROTO_TCP;

    /// Parse + track throughput: NEW, UPDATE and DESTROY for 200 000 distinct flows made
    /// from a captured TCP NEW message. Run with `cargo test --release --lib
    /// collect::conntrack::tests::track_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run by hand with --release --nocapture"]
    fn track_throughput() {
        let events = ctnetlink::tests::unhex(include_str!("fixtures/events.hex"));
        let entry_of = |d: &Vec<u8>| {
            NlMessages::new(d).find_map(|m| {
                match m
                    .map_err(ParseError::from)
                    .and_then(|m| ctnetlink::decode(&m))
                {
                    Ok(Decoded::Entry(e)) => Some(e),
                    _ => None,
                }
            })
        };
        // NEW, one UPDATE and DESTROY of the same TCP flow.
        let destroy = events
            .iter()
            .find(|d| {
                entry_of(d).is_some_and(|e| e.kind == CtKind::Destroy && e.flow.proto == PROTO_TCP)
            })
            .expect("a TCP DESTROY");
        let ident = entry_of(destroy).map(|e| e.flow.ident());
        let of_kind = |kind| {
            events
                .iter()
                .find(|d| {
                    entry_of(d).is_some_and(|e| e.kind == kind && Some(e.flow.ident()) == ident)
                })
                .cloned()
                .expect("fixture has the message")
        };
        let templates = [
            of_kind(CtKind::New),
            of_kind(CtKind::Update),
            destroy.clone(),
        ];
        // Distinct flows: rewrite CTA_ID (its be32 payload) in each copy.
        let id_at = |d: &[u8]| {
            let mut at = NLMSG_HDRLEN + crate::collect::netlink::NFGENMSG_LEN;
            for a in crate::collect::netlink::Attrs::new(&d[at..]) {
                let (ty, p) = a.expect("attr");
                if ty == 12 {
                    return at + 4;
                }
                at += (4 + p.len() + 3) & !3;
            }
            panic!("no CTA_ID");
        };
        const FLOWS: u32 = 200_000;
        let mut msgs = Vec::with_capacity(FLOWS as usize * 3);
        for t in &templates {
            let at = id_at(t);
            for i in 0..FLOWS {
                let mut d = t.clone();
                d[at..at + 4].copy_from_slice(&i.to_be_bytes());
                msgs.push(d);
            }
        }
        let (w, rx) = writer(1024);
        let mut tracker = Tracker::new(FLOWS as usize + 1);
        let start = Instant::now();
        let mut n = 0u64;
        for (i, d) in msgs.iter().enumerate() {
            for m in NlMessages::new(d) {
                if let Ok(Decoded::Entry(e)) = m
                    .map_err(ParseError::from)
                    .and_then(|m| ctnetlink::decode(&m))
                {
                    tracker.apply_event(e, 1);
                    n += 1;
                }
            }
            if i % 50_000 == 0 {
                tracker.flush(&w);
                rx.try_iter().for_each(drop);
            }
        }
        tracker.flush(&w);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(tracker.stats.parse_errors, 0);
        assert!(tracker.flows.is_empty());
        println!(
            "parse+track: {n} events in {secs:.3} s = {:.0} events/s; size_of::<Tracked>() = {} bytes",
            n as f64 / secs,
            std::mem::size_of::<Tracked>()
        );
    }
}
