//! netmon-loadgen: the lab's traffic generator and its servers.
//!
//! ```text
//! netmon-loadgen serve [--tcp ADDR]… [--udp ADDR]… [--sink ADDR]…
//! netmon-loadgen run --mode udp|tcp|mix|dns --target ADDR --rate N --duration SECS
//!                    [--ports A-B] [--sports A-B] [--count N] [--threads N] [--domain D]
//! ```
//!
//! `serve` runs in the lab's wan namespace: `--tcp` accepts and closes at once (the
//! cheapest server a connection burst can hit), `--udp` echoes datagrams, `--sink` reads
//! and discards until the peer closes (long transfers). `run` runs in a lan namespace and
//! starts `rate` new flows per second for `duration` seconds (or until `count`), then
//! prints one JSON line: how many flows it started, completed and failed.
//!
//! - `udp`: one-packet flows. Each (source port, destination port) pair is used once, so
//!   every datagram is a new conntrack entry: a thread owns a set of bound sockets and
//!   sends to each port of `--ports` from each of them, 64 destinations per `sendmmsg`.
//! - `tcp`: short connections — non-blocking connect, one byte, close with `SO_LINGER`
//!   0 (a RST: no TIME_WAIT holds the client's port) — driven by epoll, several
//!   thousand in flight per thread. Source ports are assigned in order (`--sports`), so
//!   every connect is a new conntrack entry (see `tcp_worker`).
//! - `mix`: half the rate as tcp, half as udp, plus `--long` long-lived transfers into a
//!   sink.
//! - `dns`: queries for random names under `--domain` (`<12 random chars>.flood.lab`) to
//!   the resolver at `--target`, one UDP socket per thread with at most 512 queries in
//!   flight (a client's resolver loop: a slow resolver slows it down rather than
//!   dropping the excess); `completed` counts NOERROR answers, `failed` other rcodes and
//!   queries unanswered after 1 s.
//!   The flood a misbehaving client or a DGA makes.
//!
//! Plain threads, std and libc (plus clap and serde_json, already netmon dependencies): the
//! point is to measure the router, not an async runtime. Rates are
//! paced against a clock; a thread that falls behind catches up as fast as it can, and
//! the achieved rate is reported, never assumed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "netmon-loadgen",
    about = "Traffic generator and servers for netmon's lab"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: accept-and-close TCP, UDP echo, TCP sink. Runs until killed.
    Serve {
        /// Accept connections and close them at once (repeatable; v4 or v6).
        #[arg(long)]
        tcp: Vec<SocketAddr>,
        /// Echo every datagram back to its sender (repeatable).
        #[arg(long)]
        udp: Vec<SocketAddr>,
        /// Accept connections and read until the peer closes (repeatable).
        #[arg(long)]
        sink: Vec<SocketAddr>,
        /// Accepting threads per `--tcp` address.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Start new flows at a rate and report what happened as one JSON line.
    Run(RunArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Mode {
    Udp,
    Tcp,
    Mix,
    Dns,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Destination (the tcp/udp server); its port is used unless `--ports` is given.
    #[arg(long)]
    target: SocketAddr,
    /// New flows per second (all threads together).
    #[arg(long)]
    rate: u64,
    /// Seconds to keep starting flows.
    #[arg(long)]
    duration: f64,
    /// Destination port range A-B. UDP flows use every (source port, port) pair once,
    /// so a wide range gives many distinct flows from few sockets.
    #[arg(long, value_parser = parse_ports)]
    ports: Option<(u16, u16)>,
    /// tcp: client source ports A-B, used in order (default 1024-65535). Two bursts
    /// within ~10 s should use disjoint ranges: a port's previous conntrack entry may
    /// still exist, and the kernel can then reuse that entry instead of creating one.
    #[arg(long, value_parser = parse_ports)]
    sports: Option<(u16, u16)>,
    /// Stop after starting this many flows (default: rate × duration).
    #[arg(long)]
    count: Option<u64>,
    /// Generator threads (mix: at least one for tcp and one for udp).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// UDP payload bytes.
    #[arg(long, default_value_t = 16)]
    payload: usize,
    /// mix: long-lived transfers running alongside.
    #[arg(long, default_value_t = 2)]
    long: usize,
    /// mix: where long transfers go (default: the target's address, port 9001).
    #[arg(long)]
    sink: Option<SocketAddr>,
    /// mix: where the udp half goes (default: the target's address, port 9007).
    #[arg(long)]
    udp_target: Option<SocketAddr>,
    /// mix: bytes per second of each long transfer.
    #[arg(long, default_value_t = 256 * 1024)]
    long_rate: u64,
    /// Give up on a connect after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    connect_timeout_ms: u64,
    /// dns: the domain random names are made under.
    #[arg(long, default_value = "flood.lab")]
    domain: String,
}

/// Why `--ports` / `--sports` is refused (clap prints it after the option).
#[derive(Debug, thiserror::Error)]
enum PortsError {
    #[error("bad port '{port}' in '{text}' (want A-B)")]
    Port { port: String, text: String },
    #[error("bad port range '{0}': want A-B with 1 <= A <= B <= 65535")]
    Range(String),
}

fn parse_ports(s: &str) -> Result<(u16, u16), PortsError> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let port = |p: &str| {
        p.trim().parse::<u16>().map_err(|_| PortsError::Port {
            port: p.to_owned(),
            text: s.to_owned(),
        })
    };
    let (a, b) = (port(a)?, port(b)?);
    if a == 0 || b < a {
        return Err(PortsError::Range(s.to_owned()));
    }
    Ok((a, b))
}

/// Why `serve` or `run` could not start or finish.
#[derive(Debug, thiserror::Error)]
enum LoadgenError {
    /// A socket call failed: what was attempted, and the OS error.
    #[error("{what}: {source}")]
    Os {
        what: String,
        source: std::io::Error,
    },
    #[error("nothing to serve: give --tcp, --udp or --sink")]
    NothingToServe,
    #[error("--rate and --duration must be positive")]
    NotPositive,
    #[error("{0} thread panicked")]
    Panicked(&'static str),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_nofile_limit();
    match cli.command {
        Command::Serve {
            tcp,
            udp,
            sink,
            threads,
        } => match serve(&tcp, &udp, &sink, threads.max(1)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("netmon-loadgen serve: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => match run(&args) {
            Ok(report) => {
                println!("{}", report);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("netmon-loadgen run: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

// ---------------------------------------------------------------------------------------
// Sockets (libc: std has no SO_LINGER, non-blocking connect, backlog or sendmmsg).

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The last OS error, with what was attempted.
fn os_err(what: &str) -> LoadgenError {
    LoadgenError::Os {
        what: what.to_owned(),
        source: std::io::Error::last_os_error(),
    }
}

/// The errno name of an I/O error, or its message when it has no errno.
fn io_error_name(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(errno_name)
        .unwrap_or_else(|| e.to_string())
}

fn errno_name(e: i32) -> String {
    match e {
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::ECONNRESET => "ECONNRESET".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL".into(),
        libc::EADDRINUSE => "EADDRINUSE".into(),
        libc::ENETUNREACH => "ENETUNREACH".into(),
        libc::EHOSTUNREACH => "EHOSTUNREACH".into(),
        libc::EMFILE => "EMFILE".into(),
        libc::ENFILE => "ENFILE".into(),
        libc::ENOBUFS => "ENOBUFS".into(),
        libc::EPERM => "EPERM".into(),
        libc::EAGAIN => "EAGAIN".into(),
        e => format!("errno{e}"),
    }
}

/// A socket address as the kernel wants it.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn family(addr: &SocketAddr) -> libc::c_int {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> bool {
    // SAFETY: `value` points to a live T of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        ) == 0
    }
}

fn set_linger0(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &l);
}

fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it afterwards.
    unsafe { libc::close(fd) };
}

/// A bound socket (listening, for stream sockets). v6 sockets are v6-only so that a v4
/// and a v6 address can both be served on one port.
fn bound_socket(addr: &SocketAddr, ty: libc::c_int) -> Result<RawFd, LoadgenError> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(family(addr), ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket"));
    }
    let one: libc::c_int = 1;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
    if addr.is_ipv6() {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &one);
    }
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss/len describe a valid sockaddr for the socket's family.
    if unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) } != 0 {
        let e = os_err(&format!("bind {addr}"));
        close(fd);
        return Err(e);
    }
    // SAFETY: plain listen(2) on a socket we own.
    if ty == libc::SOCK_STREAM && unsafe { libc::listen(fd, 65535) } != 0 {
        let e = os_err(&format!("listen {addr}"));
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// Bursts open thousands of sockets; the default soft limit (1024) is far too low.
fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut lim: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---------------------------------------------------------------------------------------
// serve

fn serve(
    tcp: &[SocketAddr],
    udp: &[SocketAddr],
    sink: &[SocketAddr],
    threads: usize,
) -> Result<(), LoadgenError> {
    if tcp.is_empty() && udp.is_empty() && sink.is_empty() {
        return Err(LoadgenError::NothingToServe);
    }
    let mut handles = Vec::new();
    for addr in tcp {
        let fd = bound_socket(addr, libc::SOCK_STREAM)?;
        for _ in 0..threads {
            handles.push(std::thread::spawn(move || accept_and_close(fd)));
        }
    }
    for addr in udp {
        let fd = bound_socket(addr, libc::SOCK_DGRAM)?;
        let buf: libc::c_int = 8 << 20;
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &buf);
        // SAFETY: we own fd and hand it to the UdpSocket.
        let sock = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
        handles.push(std::thread::spawn(move || udp_echo(sock)));
    }
    for addr in sink {
        let fd = bound_socket(addr, libc::SOCK_STREAM)?;
        // SAFETY: we own fd and hand it to the TcpListener.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        handles.push(std::thread::spawn(move || sink_accept(listener)));
    }
    eprintln!(
        "netmon-loadgen serve: tcp {:?} udp {:?} sink {:?}",
        tcp, udp, sink
    );
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn accept_and_close(listen_fd: RawFd) {
    loop {
        // SAFETY: accept4 on our listening socket; no peer address wanted.
        let fd = unsafe {
            libc::accept4(
                listen_fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            match errno() {
                libc::EINTR | libc::ECONNABORTED | libc::EAGAIN => continue,
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                _ => {
                    eprintln!("{}", os_err("accept"));
                    return;
                }
            }
        }
        // A plain close (FIN). The client resets its side (SO_LINGER 0), so no TIME_WAIT
        // piles up here, and the last RST conntrack sees comes from the client: the
        // kernel then treats a later SYN from the same client port as a new connection
        // (nf_conntrack_proto_tcp.c, "reopen a closed/aborted connection") instead of
        // resurrecting the old entry, so every connect is a new conntrack entry.
        close(fd);
    }
}

fn udp_echo(sock: std::net::UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let _ = sock.send_to(&buf[..n], peer);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("udp echo: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn sink_accept(listener: std::net::TcpListener) {
    for conn in listener.incoming() {
        match conn {
            Ok(mut s) => {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// run

/// What one generator thread did.
#[derive(Default, Debug)]
struct Stats {
    started: u64,
    completed: u64,
    failed: u64,
    /// Failures by cause (errno name or "timeout").
    errors: BTreeMap<String, u64>,
    /// Bytes written by long transfers.
    bytes: u64,
    /// UDP: a (source port, destination port) pair had to be used twice.
    wrapped: bool,
}

impl Stats {
    fn fail(&mut self, why: impl Into<String>) {
        self.failed += 1;
        *self.errors.entry(why.into()).or_default() += 1;
    }

    fn merge(&mut self, o: Stats) {
        self.started += o.started;
        self.completed += o.completed;
        self.failed += o.failed;
        self.bytes += o.bytes;
        self.wrapped |= o.wrapped;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "started": self.started,
            "completed": self.completed,
            "failed": self.failed,
            "errors": self.errors,
        })
    }
}

/// Client source ports used by tcp threads by default (lab.sh widens
/// ip_local_port_range to match).
const SPORTS_DEFAULT: (u16, u16) = (1024, 65535);

/// One generator thread's share of the work.
#[derive(Clone)]
struct Share {
    /// This thread's number among `threads` of its kind (source ports are split by it).
    index: usize,
    threads: usize,
    /// tcp: source port range.
    sports: (u16, u16),
    target: IpAddr,
    ports: Vec<u16>,
    rate: f64,
    count: u64,
    start: Instant,
    deadline: Instant,
}

impl Share {
    /// Flows that should have been started by `now`.
    fn due(&self, now: Instant) -> u64 {
        let t = now.saturating_duration_since(self.start).as_secs_f64();
        ((t * self.rate) as u64).min(self.count)
    }
}

/// (Long: argument handling and the worker start of one command.)
fn run(args: &RunArgs) -> Result<serde_json::Value, LoadgenError> {
    if args.rate == 0 || args.duration.is_nan() || args.duration <= 0.0 {
        return Err(LoadgenError::NotPositive);
    }
    let ports: Vec<u16> = match args.ports {
        Some((a, b)) => (a..=b).collect(),
        None => vec![args.target.port()],
    };
    let total = args
        .count
        .unwrap_or((args.rate as f64 * args.duration).ceil() as u64);
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + Duration::from_secs_f64(args.duration);
    let connect_timeout = Duration::from_millis(args.connect_timeout_ms);

    // Split rate and count over threads: (kind, share).
    let threads = args.threads.max(1);
    let mut plan: Vec<(Mode, Share)> = Vec::new();
    let split = |n: usize, rate: f64, count: u64, target: IpAddr, ports: &[u16]| -> Vec<Share> {
        (0..n)
            .map(|i| Share {
                index: i,
                threads: n,
                sports: args.sports.unwrap_or(SPORTS_DEFAULT),
                target,
                ports: ports.to_vec(),
                rate: rate / n as f64,
                count: count / n as u64 + u64::from((i as u64) < count % n as u64),
                start,
                deadline,
            })
            .collect()
    };
    match args.mode {
        Mode::Tcp | Mode::Udp | Mode::Dns => {
            for s in split(threads, args.rate as f64, total, args.target.ip(), &ports) {
                plan.push((args.mode, s));
            }
        }
        Mode::Mix => {
            let tcp_threads = (threads / 2).max(1);
            let udp_threads = (threads - tcp_threads).max(1);
            let udp_target = args
                .udp_target
                .unwrap_or(SocketAddr::new(args.target.ip(), 9007));
            let udp_ports: Vec<u16> = match args.ports {
                Some(_) => ports.clone(),
                None => vec![udp_target.port()],
            };
            for s in split(
                tcp_threads,
                args.rate as f64 / 2.0,
                total / 2,
                args.target.ip(),
                &ports,
            ) {
                plan.push((Mode::Tcp, s));
            }
            for s in split(
                udp_threads,
                args.rate as f64 / 2.0,
                total - total / 2,
                udp_target.ip(),
                &udp_ports,
            ) {
                plan.push((Mode::Udp, s));
            }
        }
    }

    let payload = vec![0x6eu8; args.payload.max(1)];
    let mut handles = Vec::new();
    for (kind, share) in plan {
        let payload = payload.clone();
        let domain = args.domain.clone();
        handles.push((
            kind,
            std::thread::spawn(move || match kind {
                Mode::Tcp => tcp_worker(&share, connect_timeout),
                Mode::Dns => dns_worker(&share, &domain),
                _ => udp_worker(&share, &payload),
            }),
        ));
    }
    let mut long_handles = Vec::new();
    if args.mode == Mode::Mix {
        let sink = args.sink.unwrap_or(SocketAddr::new(args.target.ip(), 9001));
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..args.long {
            let stop = stop.clone();
            let rate = args.long_rate;
            long_handles.push(std::thread::spawn(move || {
                long_transfer(sink, rate, deadline, &stop)
            }));
        }
    }

    let mut tcp = Stats::default();
    let mut udp = Stats::default();
    for (kind, h) in handles {
        let s = h.join().map_err(|_| LoadgenError::Panicked("generator"))?;
        match kind {
            Mode::Tcp => tcp.merge(s),
            _ => udp.merge(s),
        }
    }
    let mut long = Stats::default();
    for h in long_handles {
        long.merge(h.join().map_err(|_| LoadgenError::Panicked("transfer"))?);
    }
    let elapsed = start.elapsed().as_secs_f64();

    let mut all = Stats::default();
    let (tcp_json, udp_json, long_json) = (tcp.json(), udp.json(), long.json());
    let long_bytes = long.bytes;
    let wrapped = udp.wrapped;
    all.merge(tcp);
    all.merge(udp);
    all.merge(long);
    let mut report = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "target": args.target.to_string(),
        "rate": args.rate,
        "duration_s": args.duration,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "started": all.started,
        "completed": all.completed,
        "failed": all.failed,
        "started_per_s": (all.started as f64 / args.duration.min(elapsed).max(1e-3)).round(),
        "errors": all.errors,
    });
    if args.mode == Mode::Mix {
        report["tcp"] = tcp_json;
        report["udp"] = udp_json;
        report["long"] = long_json;
        report["long"]["bytes"] = long_bytes.into();
    }
    if wrapped {
        report["warning"] =
            "udp (source port, destination port) pairs were reused: widen --ports".into();
    }
    Ok(report)
}

/// dns mode: random-name queries from one UDP socket, paced; answers are read between
/// sends and for 2 s after the last.
///
/// (Long: one load-generator loop: its timing-sensitive steps stay in one place.)
fn dns_worker(share: &Share, domain: &str) -> Stats {
    use std::os::fd::AsRawFd;
    let mut st = Stats::default();
    let target = SocketAddr::new(share.target, share.ports[0]);
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = match std::net::UdpSocket::bind(bind).and_then(|s| {
        s.connect(target)?;
        s.set_nonblocking(true)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            st.fail(io_error_name(&e));
            return st;
        }
    };
    let big: libc::c_int = 8 << 20;
    setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &big);
    // xorshift64*, seeded per thread and run: names must not repeat across runs either.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ ((share.index as u64 + 1) << 56)
        | 1;
    let mut random = move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    const MAX_INFLIGHT: usize = 512;
    const TIMEOUT: Duration = Duration::from_secs(1);
    let mut packet = Vec::with_capacity(64 + domain.len());
    let mut buf = [0u8; 1500];
    // Send time per query id (the id is the query's number, mod 2^16).
    let mut inflight: Vec<Option<Instant>> = vec![None; 1 << 16];
    let mut n_inflight = 0usize;
    let mut answered = 0u64;
    let mut drain = |st: &mut Stats, inflight: &mut [Option<Instant>], n: &mut usize| {
        while let Ok(len) = sock.recv(&mut buf) {
            // QR set: a response. RCODE 0: NOERROR.
            let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            if len < 12 || buf[2] & 0x80 == 0 || inflight[id].take().is_none() {
                continue;
            }
            *n -= 1;
            if buf[3] & 0x0f == 0 {
                answered += 1;
            } else {
                st.fail(format!("rcode{}", buf[3] & 0x0f));
            }
        }
        answered
    };
    let expire = |st: &mut Stats, inflight: &mut [Option<Instant>], n: &mut usize| {
        let now = Instant::now();
        for slot in inflight.iter_mut() {
            if slot.is_some_and(|t| now.duration_since(t) > TIMEOUT) {
                *slot = None;
                *n -= 1;
                st.fail("unanswered");
            }
        }
    };
    let mut last_expiry = Instant::now();
    loop {
        let now = Instant::now();
        let due = share.due(now);
        if st.started >= share.count || now >= share.deadline {
            break;
        }
        if now.duration_since(last_expiry) > TIMEOUT / 4 {
            expire(&mut st, &mut inflight, &mut n_inflight);
            last_expiry = now;
        }
        if st.started >= due || n_inflight >= MAX_INFLIGHT {
            drain(&mut st, &mut inflight, &mut n_inflight);
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        while st.started < due && n_inflight < MAX_INFLIGHT {
            let id = st.started as u16;
            if inflight[usize::from(id)].is_some() {
                break;
            }
            packet.clear();
            packet.extend_from_slice(&id.to_be_bytes());
            // RD, one question.
            packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
            packet.push(12);
            let r = random();
            for i in 0..12 {
                packet.push(ALPHABET[((r >> (i * 5)) % ALPHABET.len() as u64) as usize]);
            }
            for label in domain.split('.').filter(|l| !l.is_empty()) {
                packet.push(label.len().min(63) as u8);
                packet.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
            }
            // Root, QTYPE A, QCLASS IN.
            packet.extend_from_slice(&[0, 0, 1, 0, 1]);
            match sock.send(&packet) {
                Ok(_) => {
                    st.started += 1;
                    inflight[usize::from(id)] = Some(Instant::now());
                    n_inflight += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    st.started += 1;
                    st.fail(io_error_name(&e));
                }
            }
        }
        drain(&mut st, &mut inflight, &mut n_inflight);
    }
    let waited = Instant::now();
    while n_inflight > 0 && waited.elapsed() <= TIMEOUT {
        drain(&mut st, &mut inflight, &mut n_inflight);
        std::thread::sleep(Duration::from_millis(5));
    }
    st.completed = drain(&mut st, &mut inflight, &mut n_inflight);
    for _ in 0..n_inflight {
        st.fail("unanswered");
    }
    st
}

/// Short TCP connections through one epoll set.
///
/// (Long: one load-generator loop: its timing-sensitive steps stay in one place.)
fn tcp_worker(share: &Share, connect_timeout: Duration) -> Stats {
    const MAX_INFLIGHT: usize = 8192;
    const MAX_PER_ROUND: u64 = 512;
    let mut st = Stats::default();
    // SAFETY: plain epoll_create1.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        st.fail("epoll_create1");
        return st;
    }
    // Start time of each in-flight connect, indexed by fd.
    let mut inflight: Vec<Option<Instant>> = Vec::new();
    let mut n_inflight = 0usize;
    let mut port_i = 0usize;
    // Source ports are chosen here, in order, disjoint between threads: the kernel's own
    // choice walks a per-destination sequence that comes back to a port after ~32 000
    // connects, while that port's previous conntrack entry (CLOSE, 10 s) still exists.
    let (sport_first, sport_last) = (u32::from(share.sports.0), u32::from(share.sports.1));
    let mut sport = sport_first + (share.index as u32) % (sport_last - sport_first + 1);
    // SAFETY: epoll_event is plain data.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { zeroed() }; 1024];
    let mut last_sweep = Instant::now();
    loop {
        let now = Instant::now();
        let starting = now < share.deadline && st.started < share.count;
        if !starting && n_inflight == 0 {
            break;
        }
        if !starting && now > share.deadline + connect_timeout + Duration::from_secs(1) {
            break;
        }
        if starting {
            let due = share.due(now);
            let mut todo = due.saturating_sub(st.started).min(MAX_PER_ROUND);
            todo = todo.min((MAX_INFLIGHT - n_inflight) as u64);
            for _ in 0..todo {
                let port = share.ports[port_i % share.ports.len()];
                port_i += 1;
                let addr = SocketAddr::new(share.target, port);
                st.started += 1;
                // SAFETY: plain socket(2).
                let fd = unsafe {
                    libc::socket(
                        family(&addr),
                        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    )
                };
                if fd < 0 {
                    st.fail(errno_name(errno()));
                    continue;
                }
                set_linger0(fd);
                let one: libc::c_int = 1;
                setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
                let mut bound = false;
                for _ in 0..64 {
                    let p = sport as u16;
                    sport += share.threads as u32;
                    if sport > sport_last {
                        sport = sport_first + (share.index as u32) % (sport_last - sport_first + 1);
                    }
                    let local = if addr.is_ipv4() {
                        SocketAddr::from(([0, 0, 0, 0], p))
                    } else {
                        SocketAddr::from(([0u16; 8], p))
                    };
                    let (ls, llen) = sockaddr(&local);
                    // SAFETY: ls/llen describe a valid sockaddr of the socket's family.
                    if unsafe { libc::bind(fd, &ls as *const _ as *const libc::sockaddr, llen) }
                        == 0
                    {
                        bound = true;
                        break;
                    }
                }
                if !bound {
                    st.fail(errno_name(errno()));
                    close(fd);
                    continue;
                }
                let (ss, len) = sockaddr(&addr);
                // SAFETY: ss/len describe a valid sockaddr of the socket's family.
                let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
                if r == 0 {
                    finish_connect(fd, &mut st, &mut inflight, &mut n_inflight);
                    continue;
                }
                let e = errno();
                if e != libc::EINPROGRESS {
                    st.fail(errno_name(e));
                    close(fd);
                    continue;
                }
                let mut ev = libc::epoll_event {
                    events: (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32,
                    u64: fd as u64,
                };
                // SAFETY: registering our fd with our epoll set.
                if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
                    st.fail(errno_name(errno()));
                    close(fd);
                    continue;
                }
                if inflight.len() <= fd as usize {
                    inflight.resize(fd as usize + 1, None);
                }
                inflight[fd as usize] = Some(now);
                n_inflight += 1;
            }
        }
        // Wait briefly only when nothing is due: pacing resolution is ~1 ms.
        let behind = starting && share.due(Instant::now()) > st.started;
        let timeout = if behind { 0 } else { 1 };
        // SAFETY: events has room for events.len() entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, timeout) };
        for ev in events.iter().take(n.max(0) as usize) {
            let fd = ev.u64 as RawFd;
            finish_connect(fd, &mut st, &mut inflight, &mut n_inflight);
        }
        if last_sweep.elapsed() > Duration::from_millis(100) {
            last_sweep = Instant::now();
            for (fd, slot) in inflight.iter_mut().enumerate() {
                if let Some(t) = *slot
                    && t.elapsed() > connect_timeout
                {
                    *slot = None;
                    n_inflight -= 1;
                    st.fail("timeout");
                    close(fd as RawFd);
                }
            }
        }
    }
    // Whatever is still in flight after the grace period failed.
    for (fd, slot) in inflight.iter_mut().enumerate() {
        if slot.take().is_some() {
            st.fail("timeout");
            close(fd as RawFd);
        }
    }
    close(ep);
    st
}

/// A connect finished (or failed): on success send one byte; close with RST either way.
fn finish_connect(fd: RawFd, st: &mut Stats, inflight: &mut [Option<Instant>], n: &mut usize) {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: reading SO_ERROR into a c_int we own.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    // ECONNRESET: the handshake completed and the server closed before we looked (the
    // flow exists); a refused or unanswered connect reports ECONNREFUSED / ETIMEDOUT.
    if r == 0 && (err == 0 || err == libc::ECONNRESET) {
        // SAFETY: one-byte send on our socket; MSG_NOSIGNAL so a reset peer is no SIGPIPE.
        unsafe {
            libc::send(
                fd,
                b"x".as_ptr() as *const libc::c_void,
                1,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        st.completed += 1;
    } else {
        st.fail(errno_name(if r == 0 { err } else { errno() }));
    }
    if let Some(slot) = inflight.get_mut(fd as usize)
        && slot.take().is_some()
    {
        *n -= 1;
    }
    close(fd);
}

/// One-packet UDP flows: every (socket, destination port) pair once.
///
/// (Long: one load-generator loop: its timing-sensitive steps stay in one place.)
fn udp_worker(share: &Share, payload: &[u8]) -> Stats {
    const BATCH: usize = 64;
    let mut st = Stats::default();
    let ports = &share.ports;
    // Enough sockets that no pair repeats: ceil(count / ports), within fd and port limits.
    let want = share.count.div_ceil(ports.len() as u64).clamp(1, 16_384) as usize;
    let fam = if share.target.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let mut socks: Vec<RawFd> = Vec::with_capacity(want);
    for _ in 0..want {
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(
                fam,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            break;
        }
        // Bind now so the source port is fixed (autobind would pick it at first send).
        let any = if share.target.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let (ss, len) = sockaddr(&any);
        // SAFETY: ss/len describe a valid sockaddr of the socket's family.
        if unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) } != 0 {
            close(fd);
            break;
        }
        socks.push(fd);
    }
    if socks.is_empty() {
        st.fail(errno_name(errno()));
        return st;
    }
    // Destination addresses, one per port.
    let dests: Vec<(libc::sockaddr_storage, libc::socklen_t)> = ports
        .iter()
        .map(|&p| sockaddr(&SocketAddr::new(share.target, p)))
        .collect();
    let blocks = ports.len().div_ceil(BATCH);
    let pairs = socks.len() as u64 * ports.len() as u64;
    // Position: port block, socket within the block, offset within the block.
    let (mut block, mut sock_i, mut off) = (0usize, 0usize, 0usize);
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: mmsghdr is plain data.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
    loop {
        let now = Instant::now();
        if now >= share.deadline || st.started >= share.count {
            break;
        }
        let todo = share.due(now).saturating_sub(st.started);
        if todo == 0 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let block_start = block * BATCH;
        let block_len = BATCH.min(ports.len() - block_start);
        let n = (block_len - off).min(todo as usize);
        for (i, m) in msgs.iter_mut().take(n).enumerate() {
            let d = &dests[block_start + off + i];
            m.msg_hdr.msg_name = &d.0 as *const _ as *mut libc::c_void;
            m.msg_hdr.msg_namelen = d.1;
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_len = 0;
        }
        // SAFETY: msgs[..n] point at live addresses and the payload iovec.
        let sent = unsafe {
            libc::sendmmsg(
                socks[sock_i],
                msgs.as_mut_ptr(),
                n as u32,
                // `int` in glibc, `unsigned` in musl.
                libc::MSG_DONTWAIT as _,
            )
        };
        if sent < 0 {
            let e = errno();
            if e == libc::EAGAIN || e == libc::ENOBUFS || e == libc::EINTR {
                std::thread::yield_now();
                continue;
            }
            // A hard error fails the whole batch; move past it.
            st.started += n as u64;
            for _ in 0..n {
                st.fail(errno_name(e));
            }
            off += n;
        } else {
            st.started += sent as u64;
            st.completed += sent as u64;
            off += sent as usize;
        }
        if off >= block_len {
            off = 0;
            sock_i += 1;
            if sock_i == socks.len() {
                sock_i = 0;
                block += 1;
                if block == blocks {
                    block = 0;
                }
            }
        }
        if st.started > pairs {
            st.wrapped = true;
        }
    }
    for fd in socks {
        close(fd);
    }
    st
}

/// A long-lived TCP transfer at a steady rate into a sink, until the deadline.
fn long_transfer(sink: SocketAddr, rate: u64, deadline: Instant, stop: &AtomicBool) -> Stats {
    let mut st = Stats {
        started: 1,
        ..Stats::default()
    };
    let mut s = match TcpStream::connect_timeout(&sink, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            st.fail(io_error_name(&e));
            return st;
        }
    };
    let chunk = vec![0x6cu8; 16 * 1024];
    let start = Instant::now();
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let allowed = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if st.bytes >= allowed {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let n = chunk.len().min((allowed - st.bytes) as usize);
        match s.write(&chunk[..n]) {
            Ok(w) => st.bytes += w as u64,
            Err(e) => {
                st.fail(io_error_name(&e));
                return st;
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    st.completed = 1;
    st
}
