//! The web server against a hostile LAN host, with a real netmon in the lab router
//! listening on its LAN address (10.77.0.1:8080) and password login (a hash made by
//! `netmon passwd`). Every request comes over TCP from a LAN client namespace.
//!
//! 1. `concurrent_wrong_logins_from_one_address_are_throttled`: 200 wrong passwords
//!    sent at the same moment from one address: at most the free failures are
//!    checked (401), the rest are answered 429 with `Retry-After`; the right password
//!    still works once the lockout has passed.
//! 2. `wrong_logins_give_their_memory_back`: 200 wrong passwords actually checked
//!    (40 source addresses × the 5 free failures each, 8 clients at a time): netmon's
//!    resident memory after them is within 2 MiB of before, and while they run it
//!    never holds more than one verification's 12 MiB over that.
//! 3. `dripping_connections_from_one_address_leave_room_for_others`: 600 connections
//!    from one LAN address, each sending a request line and then one header line every
//!    4 s (a slowloris): `/healthz` and `/login` still answer another LAN address at
//!    once, every dripping connection is closed by the server once the header deadline
//!    has passed, and the dripping address is served again once its connections are
//!    gone.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

const PASSWORD: &str = "lab password 1234";
/// Where netmon listens for the LAN in these tests (and on loopback, for the harness).
const LAN_WEB: &str = "10.77.0.1:8080";
/// `web::throttle::FREE_FAILURES`.
const FREE_FAILURES: usize = 5;
/// `web::conn::HEADER_TIMEOUT`.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn start_netmon_on_lan(lab: &Lab) -> NetmonProc {
    lab.start_netmon(&format!(
        "listen = [\"{WEB}\", \"{LAN_WEB}\"]\n[enrich]\nrdns = false\n{}",
        password_web(PASSWORD)
    ))
}

/// Runs `f` on a thread inside namespace `ns` (sockets it opens stay there; threads it
/// spawns start there too).
fn in_ns<T: Send>(lab: &Lab, ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", lab.ns(ns));
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns on this thread only; the fd is valid.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace")
    })
}

/// A TCP connection to `to` from source address `from` (the calling thread's
/// namespace).
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    // SAFETY: plain socket calls on a descriptor owned here; the sockaddr structs live
    // across the calls and their length is passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let src = sockaddr(SocketAddrV4::new(from, 0));
        if libc::bind(fd, (&raw const src).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let dst = sockaddr(to);
        if libc::connect(fd, (&raw const dst).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn login_request(password: &str) -> String {
    let body = format!("password={}", form_encode(password));
    format!(
        "POST /login HTTP/1.1\r\nHost: {LAN_WEB}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `request` on `s` and reads the whole answer.
fn exchange(mut s: TcpStream, request: &str) -> std::io::Result<HttpResponse> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    HttpResponse::parse(&raw)
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {LAN_WEB}\r\nConnection: close\r\n\r\n")
}

/// `GET path` from the default address of namespace `ns`, answered within `limit`.
fn get_from(lab: &Lab, ns: &str, path: &str, limit: Duration) -> Result<u16, String> {
    in_ns(lab, ns, || {
        let t0 = Instant::now();
        let s = TcpStream::connect_timeout(&LAN_WEB.parse().expect("addr"), limit)
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(limit)).ok();
        let r = exchange(s, &get_request(path)).map_err(|e| format!("{e}"))?;
        if t0.elapsed() > limit {
            return Err(format!("took {:?}", t0.elapsed()));
        }
        Ok(r.status)
    })
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn concurrent_wrong_logins_from_one_address_are_throttled() {
    let lab = Lab::up("lgn");
    let nm = start_netmon_on_lan(&lab);
    let n = 200;
    let answers: Vec<HttpResponse> = in_ns(&lab, "lan", || {
        let barrier = Arc::new(Barrier::new(n));
        let workers: Vec<_> = (0..n)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let s = TcpStream::connect(LAN_WEB);
                    // Every request leaves at the same moment.
                    barrier.wait();
                    let s = s.unwrap_or_else(|e| panic!("connect {i}: {e}"));
                    exchange(s, &login_request("wrong password"))
                        .unwrap_or_else(|e| panic!("login {i}: {e}"))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let count = |status| answers.iter().filter(|r| r.status == status).count();
    let (checked, throttled) = (count(401), count(429));
    eprintln!("{n} concurrent wrong logins: {checked} checked (401), {throttled} throttled (429)");
    assert_eq!(
        checked + throttled,
        n,
        "every answer is 401 or 429: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        (1..=FREE_FAILURES).contains(&checked),
        "at most the {FREE_FAILURES} free failures are checked, {checked} were"
    );
    for r in answers.iter().filter(|r| r.status == 429) {
        let secs: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("429 with a Retry-After in seconds");
        assert!((1..=2).contains(&secs), "Retry-After {secs}");
    }
    // The lockout passes; then the right password logs in from the same address.
    std::thread::sleep(Duration::from_secs(3));
    let r = in_ns(&lab, "lan", || {
        exchange(
            TcpStream::connect(LAN_WEB).expect("connect"),
            &login_request(PASSWORD),
        )
    })
    .expect("login");
    assert_eq!(
        r.status, 303,
        "the right password after the lockout: {}",
        r.body
    );
    assert!(r.header("set-cookie").is_some());
    drop(nm);
}

#[test]
fn wrong_logins_give_their_memory_back() {
    let lab = Lab::up("rss");
    // 40 more addresses for the LAN client: 5 free failures each, 200 checks in all.
    let sources: Vec<Ipv4Addr> = (20..60).map(|i| Ipv4Addr::new(10, 77, 0, i)).collect();
    for a in &sources {
        lab.exec_ok(
            "lan",
            &["ip", "addr", "add", &format!("{a}/24"), "dev", "eth0"],
        );
    }
    let nm = start_netmon_on_lan(&lab);
    let pid = nm.pid;
    // The login page once (the web stack's first use), then let start-up settle.
    assert_eq!(
        get_from(&lab, "lan", "/login", Duration::from_secs(5)),
        Ok(200)
    );
    std::thread::sleep(Duration::from_secs(3));
    let before = rss(pid);

    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let to: SocketAddrV4 = LAN_WEB.parse().expect("addr");
    let t0 = Instant::now();
    let statuses: Vec<u16> = in_ns(&lab, "lan", || {
        let workers: Vec<_> = sources
            .chunks(sources.len() / 8)
            .map(|mine| {
                let mine = mine.to_vec();
                std::thread::spawn(move || {
                    let mut statuses = Vec::new();
                    for from in mine {
                        for _ in 0..FREE_FAILURES {
                            // 503: the check queue is full; come back shortly.
                            let status = loop {
                                let s = connect_from(from, to).expect("connect");
                                let r =
                                    exchange(s, &login_request("wrong password")).expect("login");
                                if r.status != 503 {
                                    break r.status;
                                }
                                std::thread::sleep(Duration::from_millis(200));
                            };
                            statuses.push(status);
                        }
                    }
                    statuses
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let took = t0.elapsed();
    // Connections close and blocking threads go idle.
    std::thread::sleep(Duration::from_secs(3));
    let after = rss(pid);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    let checked = statuses.iter().filter(|s| **s == 401).count();
    eprintln!(
        "{checked} wrong passwords checked in {took:?}: VmRSS {:.1} MiB before, {:.1} MiB peak, \
         {:.1} MiB after",
        before as f64 / MIB,
        peak as f64 / MIB,
        after as f64 / MIB
    );
    assert_eq!(checked, 200, "every attempt checked: {statuses:?}");
    assert!(
        after <= before + 2 * 1024 * 1024,
        "VmRSS after 200 checks {:.1} MiB, before {:.1} MiB",
        after as f64 / MIB,
        before as f64 / MIB
    );
    assert!(
        peak <= before + 16 * 1024 * 1024,
        "VmRSS peaked at {:.1} MiB during the checks, {:.1} MiB before: more than one \
         verification's memory at once",
        peak as f64 / MIB,
        before as f64 / MIB
    );
    drop(nm);
}

#[test]
fn dripping_connections_from_one_address_leave_room_for_others() {
    let lab = Lab::up_with("drip", 2);
    let _nm = start_netmon_on_lan(&lab);
    let quick = Duration::from_secs(2);
    assert_eq!(get_from(&lab, "lan2", "/healthz", quick), Ok(200));

    // 600 connections from the first client (more than netmon's 512 slots), each with
    // a request line and a first header, then a header line every 4 s.
    let t0 = Instant::now();
    let mut drippers: Vec<TcpStream> = in_ns(&lab, "lan", || {
        (0..600)
            .filter_map(|i| {
                let mut s =
                    TcpStream::connect_timeout(&LAN_WEB.parse().expect("addr"), quick).ok()?;
                // Refused connections may be closed before this is written.
                let _ = write!(s, "GET /healthz?n={i} HTTP/1.1\r\nHost: {LAN_WEB}\r\n");
                Some(s)
            })
            .collect()
    });
    assert!(drippers.len() >= 500, "{} connected", drippers.len());
    let drip = |drippers: &mut Vec<TcpStream>, n: u32| {
        for s in drippers.iter_mut() {
            let _ = write!(s, "X-Drip-{n}: a\r\n");
        }
    };
    std::thread::sleep(Duration::from_millis(500));

    // Another address is served at once, while the drippers hold every place they got.
    for path in ["/healthz", "/login", "/healthz"] {
        assert_eq!(
            get_from(&lab, "lan2", path, quick),
            Ok(200),
            "GET {path} from {CLIENT2_4} while {CLIENT4} drips"
        );
    }

    // Drip until past the header deadline.
    let mut n = 0;
    while t0.elapsed() < HEADER_TIMEOUT + Duration::from_secs(4) {
        std::thread::sleep(Duration::from_secs(4));
        n += 1;
        drip(&mut drippers, n);
    }
    let mut open = 0;
    for s in &mut drippers {
        s.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 512];
        // EOF or a reset: the server let go; WouldBlock: still held.
        if let Err(e) = s.read(&mut buf)
            && e.kind() == std::io::ErrorKind::WouldBlock
        {
            open += 1;
        }
    }
    assert_eq!(
        open,
        0,
        "{open} of {} dripping connections still open {:?} after they connected",
        drippers.len(),
        t0.elapsed()
    );
    drop(drippers);
    // The dripping address is served again.
    assert_eq!(get_from(&lab, "lan", "/healthz", quick), Ok(200));
    assert_eq!(get_from(&lab, "lan2", "/healthz", quick), Ok(200));
    let refused = metric(&lab.metrics(), "netmon_web_connections_refused_total").unwrap_or(0.0);
    let timed_out = metric(&lab.metrics(), "netmon_web_connections_timed_out_total").unwrap_or(0.0);
    eprintln!("refused {refused}, timed out {timed_out}");
    assert!(refused >= 100.0, "refused connections counted: {refused}");
    assert!(
        timed_out >= 200.0,
        "header deadline closes counted: {timed_out}"
    );
}
