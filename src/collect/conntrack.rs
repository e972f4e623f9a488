//! The conntrack collector: every flow the router tracks, from ctnetlink events plus
//! periodic table dumps, coalesced into one [`FlowBatch`] per tick (DESIGN §1, principle 3).
//!
//! ```text
//!  kernel ── NEW/UPDATE/DESTROY events ─► event socket ─┐
//!  kernel ◄─ IPCTNL_MSG_CT_GET (dump) ─── dump socket ──┤ poll(2), one thread
//!  kernel ── dump entries, NLMSG_DONE ──► dump socket ──┘
//!                                                       ▼
//!                                  Tracker (ident → latest state, dirty list)
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

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
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
    self, CtEntry, CtKind, Decoded, NFNLGRP_CONNTRACK_DESTROY, NFNLGRP_CONNTRACK_NEW,
    NFNLGRP_CONNTRACK_UPDATE, NLMSG_ERROR, NLMSG_HDRLEN, NlMessages,
};
use crate::config::Config;
use crate::event::{DumpComplete, Event, FlowBatch, FlowChange};
use crate::event::{MAX_CHANGES_PER_BATCH, WriterHandle};
use crate::export::ipfix::FlowTap;
use crate::flow::CtFlow;

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
    ) -> Result<ConntrackCollector, CollectError> {
        let (events, rcvbuf) = open_event_socket(config.netlink_rcvbuf_bytes)?;
        let dump = open_dump_socket()?;
        let mut reader = Reader::new(events, dump, writer, config);
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

    /// [`ConntrackCollector::join`], returning what the thread counted (for tests).
    #[cfg(test)]
    fn join_stats(self) -> Stats {
        self.thread.join().expect("collector thread")
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
            && let Err(e) = crate::sys::write_sysctl(name, "1")
        {
            warn!("conntrack: cannot set {name}=1 ({e}): {lost}");
            continue;
        }
        match crate::sys::read_sysctl(name) {
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
}

impl Reader {
    fn new(events: NlSocket, dump: NlSocket, writer: WriterHandle, config: &Config) -> Reader {
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
                    let now_ms = crate::sys::now_ms();
                    for msg in NlMessages::new(&self.event_buf[..n]) {
                        match msg.and_then(|m| ctnetlink::decode(&m)) {
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
        let now_ms = crate::sys::now_ms();
        for msg in NlMessages::new(datagram) {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    self.dump_parse_error(e);
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
        self.tracker.begin_dump(crate::sys::now_ms());
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
                let ended = self.tracker.end_dump(crate::sys::now_ms());
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

// ---------------------------------------------------------------------------------------
// The flow tracker
// ---------------------------------------------------------------------------------------

/// `CtFlow::ident()` is already a 64-bit FNV hash, so the table hashes it with one
/// multiply instead of SipHash. Flooding is not a concern: the ident covers the kernel's
/// conntrack id, which a remote sender cannot choose (`nf_ct_get_id`, a keyed siphash).
#[derive(Default, Clone, Copy)]
struct IdentHasher(u64);

impl Hasher for IdentHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdentBuild = BuildHasherDefault<IdentHasher>;

/// One flow as the tracker knows it.
#[derive(Debug, Clone)]
struct Tracked {
    flow: CtFlow,
    /// When this state was observed (unix ms); for an ended flow its end time.
    observed_ms: i64,
    ended: bool,
    /// Changed since the last batch that reached the writer (and listed in `dirty`).
    dirty: bool,
    /// The dump generation current when the entry was first tracked.
    created_gen: u32,
    /// The last dump generation that listed the entry.
    seen_gen: u32,
    /// Closed (TIME_WAIT/CLOSE) by an event, waiting for a dump that began after the
    /// close (generation > `.1`) to bring its counters; not flushed before `.0` (unix ms)
    /// unless that dump came. See [`CLOSE_HOLD_MS`].
    hold: Option<(i64, u32)>,
}

/// The in-memory flow table: latest state per conntrack entry, and which entries the
/// writer has not been told about yet.
///
/// Dump generations: `generation` increases when a dump begins. When it completes, a live
/// entry tracked before it began (`created_gen < generation`) that it did not list
/// (`seen_gen != generation`) has ended without us seeing its DESTROY (lost in an overrun,
/// or the flow was older than netmon and never announced).
struct Tracker {
    flows: HashMap<i64, Tracked, IdentBuild>,
    /// Idents with `dirty` set, each once, in the order they changed.
    dirty: Vec<i64>,
    /// Ends of lifetimes whose identity a new lifetime took before the end was sent;
    /// they go out first in the next batch.
    displaced: Vec<FlowChange>,
    cap: usize,
    generation: u32,
    /// A TCP connection reached TIME_WAIT/CLOSE since the last dump began: its final
    /// counters are only in a dump (see [`CLOSE_DUMP_MIN_GAP`]).
    closes_pending: bool,
    dump: Option<DumpPass>,
    /// DESTROYs received while a dump runs: the dump may still list those entries from
    /// a part of the table it read before they went, and must not bring them back.
    destroyed_in_dump: HashSet<i64, IdentBuild>,
    /// A refreshing dump completed; its marker goes on the batch after its entries.
    pending_dump_complete: Option<i64>,
    /// Until the writer has one `DumpComplete`, dumps refresh every entry they list; see
    /// [`Tracker::begin_dump`].
    dump_complete_delivered: bool,
    stats: Stats,
    /// The IPFIX exporter's tap: sees exactly the batches the writer accepted.
    export: Option<FlowTap>,
}

struct DumpPass {
    started_ms: i64,
    refresh: bool,
}

impl Tracker {
    fn new(cap: usize) -> Tracker {
        Tracker {
            flows: HashMap::with_capacity_and_hasher(cap.min(16_384), IdentBuild::default()),
            dirty: Vec::new(),
            displaced: Vec::new(),
            cap,
            generation: 0,
            closes_pending: false,
            dump: None,
            destroyed_in_dump: HashSet::default(),
            pending_dump_complete: None,
            dump_complete_delivered: false,
            stats: Stats::default(),
            export: None,
        }
    }

    fn mark_dirty(dirty: &mut Vec<i64>, ident: i64, t: &mut Tracked) {
        if !t.dirty {
            t.dirty = true;
            dirty.push(ident);
        }
    }

    /// A NEW, UPDATE or DESTROY event.
    fn apply_event(&mut self, entry: CtEntry, now_ms: i64) {
        match entry.kind {
            CtKind::New => self.stats.events_new += 1,
            CtKind::Update => self.stats.events_update += 1,
            CtKind::Destroy => self.stats.events_destroy += 1,
        }
        if entry.kind == CtKind::Destroy {
            self.destroy(entry, now_ms);
        } else {
            self.upsert(entry, now_ms, false);
        }
    }

    /// One entry of the running dump.
    fn apply_dump(&mut self, entry: CtEntry, now_ms: i64) {
        if entry.kind == CtKind::Destroy {
            // Not sent in dumps; if it ever is, it still means the entry is gone.
            self.destroy(entry, now_ms);
        } else {
            self.upsert(entry, now_ms, true);
        }
    }

    /// DESTROY: the entry is gone; its final counters and (back-dated) stop time are in
    /// the message when accounting and timestamps are on. An unknown flow (older than
    /// netmon and not dumped yet, or dropped at the cap) is still reported as ended.
    fn destroy(&mut self, entry: CtEntry, now_ms: i64) {
        let ident = entry.flow.ident();
        let observed_ms = entry.flow.kernel_stop_ms.unwrap_or(now_ms);
        if self.dump.is_some() && self.destroyed_in_dump.len() < self.cap {
            self.destroyed_in_dump.insert(ident);
        }
        if let Some(t) = self.flows.get_mut(&ident) {
            if t.ended {
                // The end of a second lifetime with this identity (its NEW was lost).
                Self::displace(&mut self.displaced, &mut self.stats, self.cap, t);
                t.flow = entry.flow;
            } else {
                t.flow = entry.merged_with(&t.flow);
            }
            t.ended = true;
            t.hold = None;
            t.observed_ms = observed_ms;
            Self::mark_dirty(&mut self.dirty, ident, t);
        } else if self.flows.len() < self.cap.saturating_mul(2) {
            // Ended entries leave at the next successful send, so they may briefly take
            // the table past the cap; twice the cap bounds even a writer that stalls.
            self.insert(ident, entry.flow, observed_ms, false, true);
        } else {
            self.stats.drops += 1;
        }
    }

    /// Queues the (unsent) end of `t`'s lifetime before `t` is reused for the next one.
    fn displace(displaced: &mut Vec<FlowChange>, stats: &mut Stats, cap: usize, t: &Tracked) {
        if displaced.len() < cap {
            displaced.push(FlowChange {
                flow: t.flow.clone(),
                observed_ms: t.observed_ms,
                ended: true,
            });
        } else {
            stats.drops += 1;
        }
    }

    /// NEW, UPDATE or a dump entry: absent fields keep their previous value.
    fn upsert(&mut self, entry: CtEntry, now_ms: i64, from_dump: bool) {
        let ident = entry.flow.ident();
        let generation = self.generation;
        let refresh = from_dump && self.dump.as_ref().is_some_and(|d| d.refresh);
        if let Some(t) = self.flows.get_mut(&ident) {
            if t.ended {
                if from_dump {
                    // A dump part read before the DESTROY we already have.
                    return;
                }
                // An event for an entry whose end is not sent yet: a new lifetime with the
                // same identity. The kernel's id hashes the entry's address and tuple
                // (`nf_ct_get_id`), and the slab reuses a freed entry at once, so a
                // fixed-port UDP flow (NTP, a DNS forwarder) can end and restart within one
                // tick. Keep the old end, to be sent ahead of the new lifetime.
                Self::displace(&mut self.displaced, &mut self.stats, self.cap, t);
                t.flow = entry.flow;
                t.observed_ms = now_ms;
                t.ended = false;
                t.created_gen = generation;
                t.seen_gen = 0;
                t.hold = None;
                Self::mark_dirty(&mut self.dirty, ident, t);
                return;
            }
            let merged = entry.merged_with(&t.flow);
            // A held close keeps its close time: the counters the dump brings are what
            // moved before the connection closed.
            let keep_time = t.hold.is_some();
            if from_dump {
                t.seen_gen = generation;
                if t.hold
                    .is_some_and(|(_, gen_at_close)| generation != gen_at_close)
                {
                    t.hold = None;
                }
            } else if merged.is_closed() && !t.flow.is_closed() {
                self.closes_pending = true;
                t.hold = Some((now_ms + CLOSE_HOLD_MS, generation));
            }
            if merged != t.flow || refresh {
                t.flow = merged;
                if !keep_time {
                    t.observed_ms = now_ms;
                }
                Self::mark_dirty(&mut self.dirty, ident, t);
            }
            return;
        }
        if from_dump && self.destroyed_in_dump.contains(&ident) {
            return;
        }
        if self.flows.len() >= self.cap {
            self.stats.drops += 1;
            return;
        }
        self.insert(ident, entry.flow, now_ms, from_dump, false);
    }

    fn insert(&mut self, ident: i64, flow: CtFlow, observed_ms: i64, from_dump: bool, ended: bool) {
        self.flows.insert(
            ident,
            Tracked {
                flow,
                observed_ms,
                ended,
                dirty: true,
                created_gen: self.generation,
                seen_gen: if from_dump { self.generation } else { 0 },
                hold: None,
            },
        );
        self.dirty.push(ident);
    }

    /// A dump request was sent.
    ///
    /// While no `DumpComplete` has reached the writer (i.e. the start-up dump, or a retry
    /// of it), the dump *refreshes*: every entry it lists is sent even if unchanged, so
    /// the batch carrying `dump_complete` truthfully says "every live flow was in this or
    /// an earlier batch since the dump began" (`event::FlowBatch`), and the writer can end
    /// stored flows that vanished while netmon was down. Later dumps (periodic, resync)
    /// send only what changed and reconcile against this table instead: re-sending every
    /// idle flow each `dump_interval_s` would cost the writer a row update per flow for
    /// nothing.
    fn begin_dump(&mut self, started_ms: i64) {
        self.generation = self.generation.wrapping_add(1);
        self.destroyed_in_dump.clear();
        self.dump = Some(DumpPass {
            started_ms,
            refresh: !self.dump_complete_delivered && self.pending_dump_complete.is_none(),
        });
    }

    /// The dump completed: reconcile. Returns how many flows it found ended.
    fn end_dump(&mut self, now_ms: i64) -> u64 {
        let Some(pass) = self.dump.take() else {
            return 0;
        };
        let generation = self.generation;
        let mut ended = 0;
        for (ident, t) in self.flows.iter_mut() {
            if !t.ended && t.created_gen != generation && t.seen_gen != generation {
                t.ended = true;
                t.observed_ms = now_ms;
                Self::mark_dirty(&mut self.dirty, *ident, t);
                ended += 1;
            }
        }
        self.stats.reconciled_ends += ended;
        self.destroyed_in_dump.clear();
        if pass.refresh {
            self.pending_dump_complete = Some(pass.started_ms);
        }
        ended
    }

    /// The dump failed or was incomplete: it proves nothing about absent entries.
    fn abort_dump(&mut self) {
        self.dump = None;
        self.destroyed_in_dump.clear();
    }

    /// Sends everything dirty (in messages of at most [`MAX_CHANGES_PER_BATCH`]). Returns
    /// true when all of it, and any pending dump marker, reached the channel. What did not
    /// fit stays dirty and is coalesced into the next tick's batch.
    fn flush(&mut self, writer: &WriterHandle) -> bool {
        if self.dirty.is_empty()
            && self.displaced.is_empty()
            && self.pending_dump_complete.is_none()
        {
            return true;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        // Just-closed flows waiting for their counters stay dirty for a later tick.
        let now_ms = crate::sys::now_ms();
        let mut held = Vec::new();
        dirty.retain(|ident| {
            let waiting = self
                .flows
                .get(ident)
                .and_then(|t| t.hold)
                .is_some_and(|(until, _)| now_ms < until);
            if waiting {
                held.push(*ident);
            }
            !waiting
        });
        if dirty.is_empty() && self.displaced.is_empty() && self.pending_dump_complete.is_none() {
            self.dirty = held;
            return true;
        }
        let mut start = 0;
        loop {
            let end = (start + MAX_CHANGES_PER_BATCH).min(dirty.len());
            let chunk = &dirty[start..end];
            let last = end == dirty.len();
            // Displaced ends precede everything, in the first message.
            let mut changed = std::mem::take(&mut self.displaced);
            let displaced = changed.len();
            // Exactly what the message carries: in a flood several full messages are in
            // flight at once, and a vector grown by doubling would be up to half slack.
            changed.reserve_exact(chunk.len());
            changed.extend(
                chunk
                    .iter()
                    .filter_map(|ident| self.flows.get(ident))
                    .map(|t| FlowChange {
                        flow: t.flow.clone(),
                        observed_ms: t.observed_ms,
                        ended: t.ended,
                    }),
            );
            let dump_complete = if last {
                self.pending_dump_complete
                    .map(|started_ms| DumpComplete { started_ms })
            } else {
                None
            };
            let batch = FlowBatch {
                changed,
                dump_complete,
            };
            // Cloned only when exporting; offered only once the writer took the batch.
            let offered = self.export.as_ref().map(|_| batch.changed.clone());
            if let Err(event) = writer.try_send(Event::Flows(batch)) {
                self.stats.channel_full += 1;
                if displaced > 0
                    && let Event::Flows(mut batch) = event
                {
                    batch.changed.truncate(displaced);
                    self.displaced = batch.changed;
                }
                dirty.drain(..start);
                dirty.extend(held);
                self.dirty = dirty;
                return false;
            }
            if let (Some(tap), Some(changes)) = (&self.export, offered) {
                tap.offer(changes);
            }
            for ident in chunk {
                if let Some(t) = self.flows.get_mut(ident) {
                    t.dirty = false;
                    if t.ended {
                        self.flows.remove(ident);
                    }
                }
            }
            if last {
                if dump_complete.is_some() {
                    self.pending_dump_complete = None;
                    self.dump_complete_delivered = true;
                }
                dirty.clear();
                dirty.extend(held);
                self.dirty = dirty;
                self.shrink_if_sparse();
                return true;
            }
            start = end;
        }
    }

    /// Gives back the table's buckets once a flood is over ([`crate::sys::shrink_map`]):
    /// a flood takes the table to twice `max_tracked_flows` (the ended flows of a burst
    /// wait here for the writer), ≈ 63 MiB of buckets at the default cap.
    fn shrink_if_sparse(&mut self) {
        let flows = crate::sys::shrink_map(&mut self.flows);
        crate::sys::shrink_set(&mut self.destroyed_in_dump);
        if self.dirty.capacity() > 4 * self.dirty.len().max(1024) {
            self.dirty.shrink_to(self.dirty.len());
        }
        if self.displaced.is_empty() {
            self.displaced.shrink_to_fit();
        }
        if flows {
            crate::sys::release_free_heap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Throw-away network namespaces for tests that need the real kernel. Everything is
    /// torn down in `Drop`, so a failing assertion still cleans up.
    pub(crate) mod lab {
        use std::io;
        use std::process::{Child, Command, Stdio};
        use std::sync::atomic::{AtomicU32, Ordering};

        pub fn is_root() -> bool {
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() == 0 }
        }

        pub fn run(args: &[&str]) -> io::Result<()> {
            output(args).map(drop)
        }

        /// Runs a command to completion and returns its stdout.
        pub fn output(args: &[&str]) -> io::Result<String> {
            let out = Command::new(args[0])
                .args(&args[1..])
                .stdin(Stdio::null())
                .output()?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(io::Error::other(format!(
                    "{args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }

        /// A named namespace (`ip netns add`) with `lo` up, deleted on drop.
        pub struct Netns {
            pub name: String,
        }

        impl Netns {
            /// `tag` keeps names apart between tests of one run; the pid between runs.
            pub fn new(tag: &str) -> io::Result<Netns> {
                static N: AtomicU32 = AtomicU32::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let name = format!("nmct-{}-{tag}{n}", std::process::id());
                run(&["ip", "netns", "add", &name])?;
                let ns = Netns { name };
                ns.ip("link set lo up")?;
                Ok(ns)
            }

            /// `ip -n NAME <args>`; `args` is split on whitespace.
            pub fn ip(&self, args: &str) -> io::Result<()> {
                let mut v = vec!["ip", "-n", &self.name];
                v.extend(args.split_whitespace());
                run(&v)
            }

            /// Runs `sh -c script` inside the namespace to completion.
            pub fn sh(&self, script: &str) -> io::Result<()> {
                run(&["ip", "netns", "exec", &self.name, "sh", "-c", script])
            }

            /// Starts `sh -c script` inside the namespace in its own process group,
            /// killed on drop.
            pub fn spawn(&self, script: &str) -> io::Result<Bg> {
                use std::os::unix::process::CommandExt;
                let child = Command::new("ip")
                    .args(["netns", "exec", &self.name, "sh", "-c", script])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .spawn()?;
                Ok(Bg(child))
            }

            /// Waits until no IPv6 address is tentative (link-local DAD), else the first
            /// packets of a test are lost to neighbour discovery.
            pub fn wait_ipv6_ready(&self) -> io::Result<()> {
                for _ in 0..50 {
                    let out = output(&["ip", "-n", &self.name, "-6", "addr", "show", "tentative"])?;
                    if out.trim().is_empty() {
                        return Ok(());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(io::Error::other(format!(
                    "{}: IPv6 addresses stay tentative",
                    self.name
                )))
            }

            pub fn sysctl(&self, name: &str, value: &str) -> io::Result<()> {
                self.sh(&format!("sysctl -q -w {name}={value}"))
            }

            /// Moves the calling thread into the namespace: sockets it opens, and
            /// `/proc/sys/net` as it sees it, are the namespace's.
            pub fn enter_current_thread(&self) -> io::Result<()> {
                use std::os::fd::AsRawFd;
                let f = std::fs::File::open(format!("/run/netns/{}", self.name))?;
                // SAFETY: f is an open namespace fd; setns only affects this thread.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }

            /// Conntrack only tracks in a namespace once some rule needs it
            /// (`nf_ct_netns_get`): load a ruleset that uses `ct`.
            pub fn nft(&self, ruleset: &str) -> io::Result<()> {
                let path = std::env::temp_dir().join(format!("{}.nft", self.name));
                std::fs::write(&path, ruleset)?;
                let r = run(&[
                    "ip",
                    "netns",
                    "exec",
                    &self.name,
                    "nft",
                    "-f",
                    &path.to_string_lossy(),
                ]);
                let _ = std::fs::remove_file(&path);
                r
            }

            /// Short conntrack timeouts (seconds), so ended flows expire within a test.
            pub fn short_ct_timeouts(&self, secs: u32) -> io::Result<()> {
                for name in [
                    "tcp_timeout_time_wait",
                    "tcp_timeout_close",
                    "tcp_timeout_close_wait",
                    "tcp_timeout_fin_wait",
                    "tcp_timeout_last_ack",
                    "udp_timeout",
                    "udp_timeout_stream",
                    "icmp_timeout",
                    "icmpv6_timeout",
                ] {
                    self.sysctl(
                        &format!("net.netfilter.nf_conntrack_{name}"),
                        &secs.to_string(),
                    )?;
                }
                Ok(())
            }
        }

        impl Drop for Netns {
            fn drop(&mut self) {
                let _ = run(&["ip", "netns", "del", &self.name]);
            }
        }

        /// A background process group, killed and reaped on drop.
        pub struct Bg(pub Child);

        impl Drop for Bg {
            fn drop(&mut self) {
                if let Ok(pid) = i32::try_from(self.0.id()) {
                    // SAFETY: signals our own child's process group.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                }
                let _ = self.0.wait();
            }
        }

        /// The capture lab: `lan` client → `rtr` (forwarding, IPv4 masquerade, a ct mark
        /// rule, a ct zone rule, accounting and timestamps on) → `wan` servers.
        ///
        /// ```text
        ///  lan 10.99.1.2 fd99:1::2 [lan0]──[rlan0] 10.99.1.1 fd99:1::1           rtr
        ///  wan 192.0.2.2 2001:db8:99::2 [wan0]──[rwan0] 192.0.2.1 2001:db8:99::1 rtr
        /// ```
        pub struct RouterLab {
            // Field order is drop order: processes first, then namespaces.
            pub servers: Vec<Bg>,
            pub lan: Netns,
            pub rtr: Netns,
            pub wan: Netns,
        }

        pub const LAB_NFT: &str = r#"
table inet netmon_lab {
    chain zone_pre {
        type filter hook prerouting priority raw; policy accept;
        udp dport 7777 ct zone set 7
    }
    chain mark_forward {
        type filter hook forward priority filter; policy accept;
        udp dport 5353 ct mark set 42
    }
    chain nat_post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "rwan0" meta nfproto ipv4 masquerade
    }
}
"#;

        impl RouterLab {
            pub fn new(tag: &str) -> io::Result<RouterLab> {
                let lab = RouterLab {
                    servers: Vec::new(),
                    lan: Netns::new(&format!("{tag}l"))?,
                    rtr: Netns::new(&format!("{tag}r"))?,
                    wan: Netns::new(&format!("{tag}w"))?,
                };
                let (l, r, w) = (&lab.lan, &lab.rtr, &lab.wan);
                l.ip(&format!(
                    "link add lan0 type veth peer name rlan0 netns {}",
                    r.name
                ))?;
                w.ip(&format!(
                    "link add wan0 type veth peer name rwan0 netns {}",
                    r.name
                ))?;
                l.ip("addr add 10.99.1.2/24 dev lan0")?;
                l.ip("addr add fd99:1::2/64 dev lan0 nodad")?;
                r.ip("addr add 10.99.1.1/24 dev rlan0")?;
                r.ip("addr add fd99:1::1/64 dev rlan0 nodad")?;
                r.ip("addr add 192.0.2.1/24 dev rwan0")?;
                r.ip("addr add 2001:db8:99::1/64 dev rwan0 nodad")?;
                w.ip("addr add 192.0.2.2/24 dev wan0")?;
                w.ip("addr add 2001:db8:99::2/64 dev wan0 nodad")?;
                l.ip("link set lan0 up")?;
                r.ip("link set rlan0 up")?;
                r.ip("link set rwan0 up")?;
                w.ip("link set wan0 up")?;
                l.ip("route add default via 10.99.1.1")?;
                l.ip("-6 route add default via fd99:1::1")?;
                w.ip("-6 route add fd99:1::/64 via 2001:db8:99::1")?;
                r.sysctl("net.ipv4.ip_forward", "1")?;
                r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
                r.sysctl("net.netfilter.nf_conntrack_acct", "1")?;
                r.sysctl("net.netfilter.nf_conntrack_timestamp", "1")?;
                // Long enough that every flow is still listed by the dump taken right after
                // the traffic, short enough that all have ended a few seconds later.
                r.short_ct_timeouts(8)?;
                r.nft(LAB_NFT)?;
                for ns in [l, r, w] {
                    ns.wait_ipv6_ready()?;
                }
                Ok(lab)
            }

            /// Echo servers in `wan`: TCP 8080 (v4), TCP 8086 (v6), UDP 5353 (v4), and a
            /// sink on UDP 7777.
            pub fn start_servers(&mut self) -> io::Result<()> {
                for script in [
                    "exec socat TCP4-LISTEN:8080,reuseaddr,fork EXEC:cat",
                    "exec socat TCP6-LISTEN:8086,reuseaddr,fork EXEC:cat",
                    "exec socat UDP4-RECVFROM:5353,reuseaddr,fork EXEC:cat",
                    "exec socat -u UDP4-RECV:7777,reuseaddr OPEN:/dev/null",
                ] {
                    self.servers.push(self.wan.spawn(script)?);
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
                Ok(())
            }
        }
    }

    /// Records every datagram both collector sockets receive, inside a namespace.
    struct Recorder {
        cmd: std::sync::mpsc::Sender<RecCmd>,
        thread: JoinHandle<io::Result<Recorded>>,
    }

    enum RecCmd {
        /// Request a dump; answer when its `NLMSG_DONE` arrived.
        Dump(std::sync::mpsc::Sender<()>),
        Stop,
    }

    #[derive(Default)]
    struct Recorded {
        events: Vec<Vec<u8>>,
        /// One list of datagrams per dump.
        dumps: Vec<Vec<Vec<u8>>>,
    }

    impl Recorder {
        fn start(ns: &lab::Netns) -> io::Result<Recorder> {
            let (cmd, rx) = std::sync::mpsc::channel();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let name = ns.name.clone();
            let thread = std::thread::spawn(move || {
                let ns = lab::Netns { name };
                let entered = ns.enter_current_thread();
                std::mem::forget(ns); // owned by the caller; must not be deleted here
                let opened = entered.and_then(|()| {
                    let (ev, _) = open_event_socket(8 << 20).map_err(io::Error::other)?;
                    let dump = open_dump_socket().map_err(io::Error::other)?;
                    Ok((ev, dump))
                });
                let (ev, dump) = match opened {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::other(e.to_string())));
                        return Err(e);
                    }
                };
                Self::record(&ev, &dump, &rx)
            });
            ready_rx
                .recv()
                .map_err(|_| io::Error::other("recorder thread died"))??;
            Ok(Recorder { cmd, thread })
        }

        fn record(
            ev: &NlSocket,
            dump: &NlSocket,
            rx: &std::sync::mpsc::Receiver<RecCmd>,
        ) -> io::Result<Recorded> {
            let mut out = Recorded::default();
            let mut buf = vec![0u8; RECV_BUF_BYTES];
            let mut waiting: Option<std::sync::mpsc::Sender<()>> = None;
            let mut seq = 100;
            loop {
                match rx.try_recv() {
                    Ok(RecCmd::Stop) => return Ok(out),
                    Ok(RecCmd::Dump(done)) => {
                        seq += 1;
                        let req = ctnetlink::dump_request(seq).map_err(io::Error::other)?;
                        dump.send(&req, Msg::empty())?;
                        out.dumps.push(Vec::new());
                        waiting = Some(done);
                    }
                    Err(_) => {}
                }
                poll_readable(ev.as_raw_fd(), Duration::from_millis(20));
                loop {
                    match ev.recv(&mut buf[..], Msg::empty()) {
                        Ok((n, _)) => out.events.push(buf[..n].to_vec()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                loop {
                    match dump.recv(&mut buf[..], Msg::empty()) {
                        Ok((n, _)) => {
                            let d = buf[..n].to_vec();
                            let done = NlMessages::new(&d)
                                .any(|m| m.is_ok_and(|m| m.ty == ctnetlink::NLMSG_DONE));
                            if let Some(cur) = out.dumps.last_mut() {
                                cur.push(d);
                            }
                            if done && let Some(w) = waiting.take() {
                                let _ = w.send(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
        }

        fn dump(&self) {
            let (tx, rx) = std::sync::mpsc::channel();
            if self.cmd.send(RecCmd::Dump(tx)).is_ok() {
                let _ = rx.recv_timeout(Duration::from_secs(5));
            }
        }

        fn stop(self) -> io::Result<Recorded> {
            let _ = self.cmd.send(RecCmd::Stop);
            self.thread
                .join()
                .map_err(|_| io::Error::other("recorder panicked"))?
        }
    }

    fn parse_all(datagrams: &[Vec<u8>]) -> Vec<CtEntry> {
        datagrams
            .iter()
            .flat_map(|d| NlMessages::new(d).collect::<Vec<_>>())
            .filter_map(|m| match m.and_then(|m| ctnetlink::decode(&m)) {
                Ok(Decoded::Entry(e)) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn hex_lines(datagrams: &[Vec<u8>]) -> String {
        let mut s = String::new();
        for d in datagrams {
            for b in d {
                s.push_str(&format!("{b:02x}"));
            }
            s.push('\n');
        }
        s
    }

    /// Regenerates `src/collect/fixtures/{events,dump}.hex` from real kernel traffic.
    /// Run as root: `cargo test --lib collect::conntrack::tests::capture_fixtures -- --ignored`.
    #[test]
    #[ignore = "rewrites the fixtures; run by hand as root (see fixtures/README.md)"]
    fn capture_fixtures() {
        assert!(lab::is_root(), "capturing needs root (network namespaces)");
        let mut lab = lab::RouterLab::new("cap").expect("lab setup");
        lab.start_servers().expect("servers");
        let rec = Recorder::start(&lab.rtr).expect("recorder");
        let l = &lab.lan;
        // A connection that stays established across the dump.
        let long = l
            .spawn("(printf 'hi\\n'; sleep 30) | socat - TCP4:192.0.2.2:8080")
            .expect("long tcp");
        l.sh("ping -c 2 -i 0.2 -W 1 192.0.2.2 >/dev/null")
            .expect("ping");
        l.sh("ping -6 -c 2 -i 0.2 -W 1 2001:db8:99::2 >/dev/null")
            .expect("ping -6");
        l.sh("printf 'hello\\n' | socat -T 1 - UDP4:192.0.2.2:5353 >/dev/null")
            .expect("udp");
        l.sh("printf 'zone\\n' | socat -u - UDP4:192.0.2.2:7777")
            .expect("udp zone");
        l.sh("printf 'hello\\n' | socat -t 1 - TCP4:192.0.2.2:8080 >/dev/null")
            .expect("tcp");
        l.sh("printf 'hello6\\n' | socat -t 1 - 'TCP6:[2001:db8:99::2]:8086' >/dev/null")
            .expect("tcp6");
        rec.dump();
        drop(long);
        // Expired entries leave at the next GC pass or when a dump walks over them.
        for _ in 0..25 {
            std::thread::sleep(Duration::from_secs(1));
            rec.dump();
        }
        let recorded = rec.stop().expect("recording");
        let entries = parse_all(&recorded.events);
        let destroys = entries.iter().filter(|e| e.kind == CtKind::Destroy).count();
        assert!(destroys >= 7, "only {destroys} DESTROY events captured");
        let dumped = parse_all(&recorded.dumps[0]).len();
        assert!(dumped >= 7, "the dump listed only {dumped} flows");

        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/collect/fixtures");
        std::fs::create_dir_all(dir).expect("fixtures dir");
        std::fs::write(format!("{dir}/events.hex"), hex_lines(&recorded.events))
            .expect("write events");
        std::fs::write(format!("{dir}/dump.hex"), hex_lines(&recorded.dumps[0]))
            .expect("write dump");
    }

    // ---- the tracker, against a fake writer ------------------------------------------------

    use crate::flow::{Counters, PROTO_TCP, Tuple};
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc::{Receiver, sync_channel};

    fn flow(ct_id: u32, sport: u16) -> CtFlow {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 80));
        let nat = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        CtFlow {
            ct_id,
            family: 4,
            proto: PROTO_TCP,
            orig: Tuple {
                src: a,
                dst: b,
                sport: Some(sport),
                dport: Some(443),
                icmp: None,
            },
            reply: Tuple {
                src: b,
                dst: nat,
                sport: Some(443),
                dport: Some(sport),
                icmp: None,
            },
            status: 0x8,
            tcp_state: Some(1),
            mark: 0,
            zone: 0,
            counters: Counters::default(),
            kernel_start_ms: None,
            kernel_stop_ms: None,
        }
    }

    fn ev(kind: CtKind, flow: CtFlow) -> CtEntry {
        let counters = kind == CtKind::Destroy;
        CtEntry {
            kind,
            flow,
            has_status: true,
            has_counters_orig: counters,
            has_counters_reply: counters,
        }
    }

    /// A dump entry: counters, start time, no stop.
    fn dumped(mut flow: CtFlow, bytes: u64) -> CtEntry {
        flow.counters = Counters {
            orig_bytes: bytes,
            orig_packets: 1,
            reply_bytes: bytes,
            reply_packets: 1,
        };
        flow.kernel_start_ms = Some(1_000);
        CtEntry {
            kind: CtKind::Update,
            flow,
            has_status: true,
            has_counters_orig: true,
            has_counters_reply: true,
        }
    }

    fn writer(capacity: usize) -> (WriterHandle, Receiver<Event>) {
        let (tx, rx) = sync_channel(capacity);
        (WriterHandle::new(tx, Arc::new(AtomicUsize::new(0))), rx)
    }

    fn batches(rx: &Receiver<Event>) -> Vec<FlowBatch> {
        rx.try_iter()
            .map(|e| match e {
                Event::Flows(b) => b,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn changes(rx: &Receiver<Event>) -> Vec<FlowChange> {
        batches(rx).into_iter().flat_map(|b| b.changed).collect()
    }

    #[test]
    fn events_coalesce_into_one_change_per_flow() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let mut f = flow(1, 1000);
        t.apply_event(ev(CtKind::New, f.clone()), 10);
        for state in [2, 3] {
            f.tcp_state = Some(state);
            t.apply_event(ev(CtKind::Update, f.clone()), 20);
        }
        t.apply_event(ev(CtKind::New, flow(2, 2000)), 30);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].flow.tcp_state, Some(3));
        assert_eq!((c[0].observed_ms, c[0].ended), (20, false));
        // Nothing changed: nothing sent. An UPDATE that changes nothing: nothing sent.
        assert!(t.flush(&w));
        t.apply_event(ev(CtKind::Update, f.clone()), 40);
        assert!(t.flush(&w));
        assert!(batches(&rx).is_empty());
        assert_eq!((t.stats.events_new, t.stats.events_update), (2, 3));
    }

    #[test]
    fn a_closed_flow_waits_for_the_dump_that_brings_its_counters() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let f = flow(1, 1000);
        t.apply_event(ev(CtKind::New, f.clone()), 10);
        assert!(t.flush(&w));
        assert_eq!(changes(&rx).len(), 1);
        let mut closed = f.clone();
        closed.tcp_state = Some(7); // TIME_WAIT, from an UPDATE without counters
        let closed_at = crate::sys::now_ms();
        t.apply_event(ev(CtKind::Update, closed.clone()), closed_at);
        assert!(t.closes_pending);
        assert!(t.flush(&w));
        assert!(rx.try_recv().is_err(), "held until its counters arrive");
        t.begin_dump(20);
        t.apply_dump(dumped(closed, 5_000_000), 21);
        t.end_dump(22);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].flow.tcp_state, Some(7));
        assert_eq!(c[0].flow.counters.orig_bytes, 5_000_000);
        assert_eq!(
            c[0].observed_ms, closed_at,
            "the close time, not the dump's"
        );
    }

    #[test]
    fn update_without_counters_keeps_counters() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let f = flow(1, 1000);
        t.apply_event(ev(CtKind::New, f.clone()), 10);
        t.begin_dump(15);
        t.apply_dump(dumped(f.clone(), 500), 16);
        t.end_dump(17);
        let mut later = f.clone();
        later.tcp_state = Some(4);
        t.apply_event(ev(CtKind::Update, later), 20);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].flow.tcp_state, Some(4));
        assert_eq!(c[0].flow.counters.orig_bytes, 500);
        assert_eq!(c[0].flow.kernel_start_ms, Some(1_000));
    }

    #[test]
    fn destroy_carries_final_counters_and_kernel_stop_time() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        t.apply_event(ev(CtKind::New, flow(1, 1000)), 10);
        assert!(t.flush(&w));
        let mut end = flow(1, 1000);
        end.counters.orig_bytes = 9_999;
        end.kernel_stop_ms = Some(12);
        t.apply_event(ev(CtKind::Destroy, end), 50);
        assert!(t.flush(&w));
        let c = changes(&rx);
        let last = c.last().expect("changes");
        assert!(last.ended);
        assert_eq!(
            (last.observed_ms, last.flow.counters.orig_bytes),
            (12, 9_999)
        );
        assert!(
            t.flows.is_empty(),
            "ended flows leave after a successful send"
        );
    }

    #[test]
    fn destroy_of_unknown_flow_is_sent_as_ended() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        t.apply_event(ev(CtKind::Destroy, flow(7, 7000)), 99);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 1);
        assert!(c[0].ended);
        assert_eq!((c[0].flow.ct_id, c[0].observed_ms), (7, 99));
        assert!(t.flows.is_empty());
    }

    #[test]
    fn cap_drops_new_flows_and_counts_but_still_reports_their_end() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(2);
        for i in 0..3 {
            t.apply_event(ev(CtKind::New, flow(i, 1000 + i as u16)), 10);
        }
        assert_eq!((t.flows.len(), t.stats.drops), (2, 1));
        t.apply_event(ev(CtKind::Update, flow(2, 1002)), 11);
        assert_eq!(t.stats.drops, 2);
        t.apply_event(ev(CtKind::Destroy, flow(2, 1002)), 12);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 3);
        assert!(c.iter().any(|c| c.flow.ct_id == 2 && c.ended));
        assert_eq!(t.flows.len(), 2);
    }

    #[test]
    fn dump_reconciles_flows_it_no_longer_lists() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let (a, b, c) = (flow(1, 1000), flow(2, 2000), flow(3, 3000));
        t.apply_event(ev(CtKind::New, a.clone()), 10);
        t.apply_event(ev(CtKind::New, b.clone()), 10);
        assert!(t.flush(&w));
        changes(&rx);
        t.begin_dump(100);
        t.apply_dump(dumped(a.clone(), 10), 101);
        t.apply_event(ev(CtKind::New, c.clone()), 102); // born during the dump
        assert_eq!(t.end_dump(103), 1);
        assert_eq!(t.stats.reconciled_ends, 1);
        assert!(t.flush(&w));
        let got = batches(&rx);
        assert_eq!(got.len(), 1);
        let ended: Vec<u32> = got[0]
            .changed
            .iter()
            .filter(|c| c.ended)
            .map(|c| c.flow.ct_id)
            .collect();
        assert_eq!(ended, vec![2]);
        assert_eq!(
            got[0]
                .changed
                .iter()
                .find(|c| c.ended)
                .map(|c| c.observed_ms),
            Some(103)
        );
        // The first complete dump is marked for the writer.
        assert_eq!(got[0].dump_complete.map(|d| d.started_ms), Some(100));
        assert_eq!(t.flows.len(), 2);
    }

    #[test]
    fn only_the_first_dump_refreshes_unchanged_flows() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let a = flow(1, 1000);
        for (round, started) in [(0, 100), (1, 200)] {
            t.begin_dump(started);
            t.apply_dump(dumped(a.clone(), 10), started + 1);
            t.end_dump(started + 2);
            assert!(t.flush(&w));
            let got = batches(&rx);
            if round == 0 {
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].changed.len(), 1);
                assert!(got[0].dump_complete.is_some());
            } else {
                assert!(got.is_empty(), "an unchanged flow is not re-sent: {got:?}");
            }
        }
        // A flow the first dump listed unchanged since an event is still sent with it.
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        t.apply_event(ev(CtKind::New, a.clone()), 10);
        assert!(t.flush(&w));
        changes(&rx);
        t.begin_dump(50);
        let mut same = ev(CtKind::Update, a.clone());
        same.kind = CtKind::Update;
        t.apply_dump(same, 51);
        t.end_dump(52);
        assert!(t.flush(&w));
        let got = batches(&rx);
        assert_eq!(got[0].changed.len(), 1);
        assert_eq!(got[0].changed[0].observed_ms, 51);
    }

    #[test]
    fn a_stale_dump_entry_does_not_revive_a_destroyed_flow() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let a = flow(1, 1000);
        t.apply_event(ev(CtKind::New, a.clone()), 10);
        t.begin_dump(20);
        t.apply_event(ev(CtKind::Destroy, a.clone()), 21);
        t.apply_dump(dumped(a.clone(), 5), 22); // read before the DESTROY, arrives after
        assert!(t.flush(&w));
        t.apply_dump(dumped(a.clone(), 5), 23); // and again after the end was sent
        t.end_dump(24);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 1);
        assert!(c[0].ended);
        assert!(t.flows.is_empty());
    }

    #[test]
    fn a_failed_dump_ends_nothing() {
        let mut t = Tracker::new(1024);
        t.apply_event(ev(CtKind::New, flow(1, 1000)), 10);
        t.begin_dump(20);
        t.abort_dump();
        assert_eq!(t.end_dump(30), 0);
        assert!(t.flows.values().all(|f| !f.ended));
        assert!(t.pending_dump_complete.is_none());
    }

    #[test]
    fn a_full_channel_keeps_changes_and_coalesces_them() {
        let (w, rx) = writer(1);
        let mut t = Tracker::new(1024);
        w.try_send(Event::Flows(FlowBatch::default()))
            .expect("room for one");
        let mut f = flow(1, 1000);
        t.apply_event(ev(CtKind::New, f.clone()), 10);
        assert!(!t.flush(&w));
        assert_eq!(t.stats.channel_full, 1);
        f.tcp_state = Some(3);
        t.apply_event(ev(CtKind::Update, f.clone()), 20);
        t.apply_event(ev(CtKind::Destroy, flow(9, 9000)), 21);
        assert!(!t.flush(&w));
        assert_eq!(t.stats.channel_full, 2);
        assert_eq!(batches(&rx).len(), 1, "the filler");
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].flow.tcp_state, Some(3));
        assert!(c[1].ended);
        assert_eq!(t.flows.len(), 1);
    }

    #[test]
    fn large_batches_are_split_and_the_dump_marker_goes_last() {
        let n = MAX_CHANGES_PER_BATCH * 2 + 5;
        let (w, rx) = writer(2);
        let mut t = Tracker::new(n * 2);
        t.begin_dump(1);
        for i in 0..n as u32 {
            t.apply_dump(dumped(flow(i, (i % 60_000) as u16), 1), 2);
        }
        t.end_dump(3);
        // Room for two of three messages: the third stays, with the marker.
        assert!(!t.flush(&w));
        let first = batches(&rx);
        assert_eq!(first.len(), 2);
        assert!(
            first
                .iter()
                .all(|b| b.changed.len() == MAX_CHANGES_PER_BATCH)
        );
        assert!(first.iter().all(|b| b.dump_complete.is_none()));
        assert_eq!(t.dirty.len(), 5);
        w.all_taken();
        assert!(t.flush(&w));
        let rest = batches(&rx);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].changed.len(), 5);
        assert_eq!(rest[0].dump_complete.map(|d| d.started_ms), Some(1));
    }

    #[test]
    fn a_dump_marker_is_sent_even_with_nothing_changed() {
        let (w, rx) = writer(2);
        let mut t = Tracker::new(1024);
        t.begin_dump(5);
        t.end_dump(6);
        assert!(t.flush(&w));
        let b = batches(&rx);
        assert_eq!(b.len(), 1);
        assert!(b[0].changed.is_empty());
        assert_eq!(b[0].dump_complete.map(|d| d.started_ms), Some(5));
    }

    #[test]
    fn a_reused_identity_keeps_both_lifetimes_in_order() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let mut old = flow(1, 123);
        t.apply_event(ev(CtKind::New, old.clone()), 10);
        assert!(t.flush(&w));
        changes(&rx);
        old.counters.orig_bytes = 76;
        old.kernel_stop_ms = Some(20);
        t.apply_event(ev(CtKind::Destroy, old), 21);
        // Same id and tuple again before the end went out (slab reuse, fixed ports).
        t.apply_event(ev(CtKind::New, flow(1, 123)), 22);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 2);
        assert!(c[0].ended && c[0].flow.counters.orig_bytes == 76);
        assert!(!c[1].ended && c[1].flow.counters.orig_bytes == 0);
        assert_eq!(c[1].observed_ms, 22);
        assert_eq!(t.flows.len(), 1);
        // A full channel keeps the displaced end too.
        let (w, rx) = writer(1);
        w.try_send(Event::Flows(FlowBatch::default()))
            .expect("room for one");
        t.apply_event(ev(CtKind::Destroy, flow(1, 123)), 30);
        t.apply_event(ev(CtKind::New, flow(1, 123)), 31);
        assert!(!t.flush(&w));
        assert_eq!(t.displaced.len(), 1);
        batches(&rx);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!((c.len(), c[0].ended, c[1].ended), (2, true, false));
    }

    /// Shutdown hands over what is dirty even if the writer needs a moment for room.
    #[test]
    fn shutdown_flushes_and_retries_a_full_channel() {
        let (w, rx) = writer(1);
        w.try_send(Event::Flows(FlowBatch::default()))
            .expect("room for one");
        // Unbound sockets: creating one needs no privilege, and run() only polls them.
        let sock = || NlSocket::new(NlFamily::Netfilter).expect("netlink socket");
        let mut reader = Reader::new(sock(), sock(), w, &Config::default());
        reader
            .tracker
            .apply_event(ev(CtKind::New, flow(1, 1000)), 10);
        let drainer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let filler = rx.recv().is_ok();
            let batch = rx.recv_timeout(Duration::from_secs(2));
            (filler, batch)
        });
        let shutdown = AtomicBool::new(true);
        let stats = reader.run(&shutdown);
        let (filler, batch) = drainer.join().expect("drainer");
        assert!(filler);
        assert!(stats.channel_full >= 1);
        match batch {
            Ok(Event::Flows(b)) => assert_eq!(b.changed.len(), 1),
            other => panic!("no final batch: {other:?}"),
        }
    }

    // ---- the real kernel ---------------------------------------------------------------------

    /// Opens the collector inside a fresh namespace, makes a TCP connection there and
    /// expects to see it as a new flow, then as ended.
    #[test]
    fn live_collector_sees_new_and_destroy_in_a_netns() {
        use std::io::{Read, Write};
        if !lab::is_root() {
            eprintln!("skipped live_collector_sees_new_and_destroy_in_a_netns: needs root");
            return;
        }
        let ns = lab::Netns::new("live").expect("netns");
        ns.short_ct_timeouts(1).expect("timeouts");
        // Conntrack only runs in a namespace where some rule needs it.
        ns.nft("table inet netmon_t {\n chain out {\n type filter hook output priority 0;\n ct state new counter\n }\n}\n")
            .expect("nft");
        let config = Config {
            tick_ms: 100,
            dump_interval_s: 1,
            netlink_rcvbuf_bytes: 1 << 20,
            ..Config::default()
        };
        let (w, rx) = writer(1024);
        let shutdown = Arc::new(AtomicBool::new(false));
        let stop = shutdown.clone();
        let name = ns.name.clone();
        let (collector, port) = std::thread::spawn(move || {
            let inside = lab::Netns { name };
            let entered = inside.enter_current_thread();
            std::mem::forget(inside);
            entered.expect("setns");
            let collector = ConntrackCollector::start(&config, w, None, stop).expect("start");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
            let port = listener.local_addr().expect("addr").port();
            let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let (mut server, _) = listener.accept().expect("accept");
            client.write_all(b"ping").expect("write");
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).expect("read");
            server.write_all(b"pong").expect("write");
            client.read_exact(&mut buf).expect("read");
            (collector, port)
        })
        .join()
        .expect("namespace thread");

        let (mut saw_new, mut saw_end, mut saw_dump_complete) = (None, None, false);
        let deadline = Instant::now() + Duration::from_secs(30);
        while saw_end.is_none() && Instant::now() < deadline {
            let Ok(Event::Flows(batch)) = rx.recv_timeout(Duration::from_millis(500)) else {
                continue;
            };
            saw_dump_complete |= batch.dump_complete.is_some();
            for c in batch.changed {
                if c.flow.proto == PROTO_TCP && c.flow.orig.dport == Some(port) {
                    // The first report of the flow: live, or already ended when its
                    // close was held back until the DESTROY came (CLOSE_HOLD_MS).
                    saw_new.get_or_insert(c.clone());
                    if c.ended {
                        saw_end = Some(c);
                    }
                }
            }
        }
        shutdown.store(true, Ordering::Relaxed);
        collector.join();
        let acct = lab::output(&[
            "ip",
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-n",
            "net.netfilter.nf_conntrack_acct",
        ]);

        let new = saw_new.expect("NEW seen");
        assert_eq!(new.flow.orig.src, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let end = saw_end.expect("DESTROY seen");
        assert_eq!(end.flow.ct_id, new.flow.ct_id);
        assert!(saw_dump_complete, "start-up dump completed");
        assert_eq!(
            acct.expect("sysctl").trim(),
            "1",
            "start() enabled accounting in the namespace"
        );
        assert!(
            end.flow.counters.orig_packets >= 3,
            "{:?}",
            end.flow.counters
        );
        assert!(end.flow.kernel_stop_ms.is_some());
    }

    /// Parse + track throughput: NEW, UPDATE and DESTROY for 200 000 distinct flows made
    /// from a captured TCP NEW message. Run with `cargo test --release --lib
    /// collect::conntrack::tests::track_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run by hand with --release --nocapture"]
    fn track_throughput() {
        let events = ctnetlink::tests::unhex(include_str!("fixtures/events.hex"));
        let entry_of = |d: &Vec<u8>| {
            NlMessages::new(d).find_map(|m| match m.and_then(|m| ctnetlink::decode(&m)) {
                Ok(Decoded::Entry(e)) => Some(e),
                _ => None,
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
            let mut at = NLMSG_HDRLEN + ctnetlink::NFGENMSG_LEN;
            for a in ctnetlink::Attrs::new(&d[at..]) {
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
                if let Ok(Decoded::Entry(e)) = m.and_then(|m| ctnetlink::decode(&m)) {
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

    /// A real burst: one-packet UDP flows as fast as one thread can send them, inside a
    /// namespace, with the collector reading. Prints what arrived and what it cost. Run
    /// with `cargo test --release --lib collect::conntrack::tests::live_burst --
    /// --ignored --nocapture` (as root). `NETMON_BURST_RCVBUF` sets the receive buffer.
    #[test]
    #[ignore = "load test; run by hand as root with --release --nocapture"]
    fn live_burst() {
        assert!(lab::is_root(), "needs root");
        let ns = lab::Netns::new("burst").expect("netns");
        ns.short_ct_timeouts(1).expect("timeouts");
        ns.nft("table inet netmon_t {\n chain out {\n type filter hook output priority 0;\n ct state new counter\n }\n}\n")
            .expect("nft");
        let rcvbuf = std::env::var("NETMON_BURST_RCVBUF")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8 << 20);
        let config = Config {
            netlink_rcvbuf_bytes: rcvbuf,
            max_tracked_flows: 1 << 20,
            ..Config::default()
        };
        let (w, rx) = writer(4096);
        let shutdown = Arc::new(AtomicBool::new(false));
        let stop = shutdown.clone();
        let name = ns.name.clone();
        let seconds = 4;
        let (collector, sent, cpu) = std::thread::spawn(move || {
            let inside = lab::Netns { name };
            let entered = inside.enter_current_thread();
            std::mem::forget(inside);
            entered.expect("setns");
            let collector = ConntrackCollector::start(&config, w, None, stop).expect("start");
            let sink = std::net::UdpSocket::bind("0.0.0.0:9999").expect("sink");
            let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
            let cpu0 = thread_cpu("netmon-ct");
            let start = Instant::now();
            let mut sent = 0u32;
            // Each destination 127.a.b.c is a new flow; the sink's buffer overflows,
            // which drops packets only after conntrack confirmed them.
            while start.elapsed() < Duration::from_secs(seconds) {
                for _ in 0..1000 {
                    sent += 1;
                    let ip = Ipv4Addr::from(0x7f00_0000 | (sent & 0x00ff_ffff));
                    let _ = tx.send_to(b"x", (ip, 9999));
                }
            }
            drop(sink);
            (collector, sent, cpu0)
        })
        .join()
        .expect("namespace thread");
        // Let the flows expire and their DESTROYs arrive (GC, then the periodic dump).
        let mut ended = 0u64;
        let mut new = 0u64;
        let mut ends: HashMap<i64, u32> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline && ended < u64::from(sent) {
            if let Ok(Event::Flows(b)) = rx.recv_timeout(Duration::from_millis(200)) {
                for c in b.changed {
                    if c.ended {
                        ended += 1;
                        *ends.entry(c.flow.ident()).or_default() += 1;
                    } else {
                        new += 1;
                    }
                }
            }
        }
        let cpu = thread_cpu("netmon-ct") - cpu;
        shutdown.store(true, Ordering::Relaxed);
        let stats = collector.join_stats();
        let twice = ends.values().filter(|n| **n > 1).count();
        println!(
            "burst: sent {sent} one-packet flows in {seconds} s ({:.0}/s); collector: {stats:?}; \
             writer got {new} live + {ended} ended changes ({} distinct ended, {twice} ended \
             more than once); collector thread CPU {cpu:.2} s",
            f64::from(sent) / seconds as f64,
            ends.len()
        );
        assert_eq!(twice, 0, "a flow must end once");
    }

    /// CPU seconds (user + system) used so far by this process's thread named `name`.
    fn thread_cpu(name: &str) -> f64 {
        let ticks = 100.0; // USER_HZ
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return 0.0;
        };
        for task in dir.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let num = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            return (num(11) + num(12)) / ticks;
        }
        0.0
    }
}
