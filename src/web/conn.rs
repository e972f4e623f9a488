//! The web server's connections: how each is admitted, bounded and served, so no
//! browser, however stuck or slow, and no LAN host, however hostile, can stall the web
//! server or pin its memory and file descriptors.
//!
//! Bounds, on every connection (HTTP and, under the TLS layer, HTTPS):
//! - at most [`MAX_CONNECTIONS`] open at once; past it a new connection is closed at
//!   once (counted in `netmon_web_connections_refused_total`) rather than queued, so
//!   the accept loop never waits;
//! - no address can take every slot: once half of them are taken, an address that
//!   already holds [`BUSY_SHARE`] connections gets no more (closed at once, counted
//!   the same). Below half, one address may open more (a busy browser, a script);
//!   above, everyone else still finds a free slot. An IPv4-mapped IPv6 peer counts as
//!   its IPv4 address; other IPv6 peers count per address, not per /64 — a LAN's
//!   IPv6 clients all share one /64, and a host that spreads itself over many
//!   addresses of it gets [`BUSY_SHARE`] on each;
//! - a request's headers must be complete within [`HEADER_TIMEOUT`] of the moment the
//!   server starts reading them (hyper's `header_read_timeout`, a total deadline: a
//!   client dripping one header line every few seconds is cut off all the same); an
//!   idle keep-alive connection waits for its next request under the same deadline;
//! - a connection on which nothing moves — no byte read, no byte written — for
//!   [`IDLE_TIMEOUT`] is closed: a response the client stopped reading (its socket
//!   buffer full), a request body that stalls. A live-update stream is never idle that
//!   long: it writes a keep-alive comment more often ([`super::sse`]);
//! - hyper buffers at most [`MAX_BUF_BYTES`] of a connection's unread input or unsent
//!   output: 512 connections can pin at most 16 MiB (hyper's own default is ~400 KiB
//!   each).
//!
//! Both deadlines count in `netmon_web_connections_timed_out_total`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// Most connections open at once (HTTP and HTTPS together, per listener set). Each is
/// a socket and a task of a few KiB; a household needs a few dozen. Well under the
/// 4096 file descriptors the packages allow.
pub const MAX_CONNECTIONS: usize = 512;

/// Connections one address may hold once half of [`MAX_CONNECTIONS`] are taken: a
/// browser opens at most 6 per server, plus one live-update stream per tab.
pub const BUSY_SHARE: usize = 32;

/// A connection with no byte moving either way for this long is closed. Longer than
/// the live-update keep-alive ([`super::sse::KEEP_ALIVE`]), shorter than anything a
/// person would notice as a stall.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A request's headers must have arrived this long after the server began reading
/// them. A browser sends them in one packet; a phone on a bad link needs a second or
/// two.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// hyper's read and write buffer limit per connection. Request headers past it are
/// refused (431); a browser's are 1–4 KiB, forms at most [`super::auth::MAX_BODY_BYTES`].
pub const MAX_BUF_BYTES: usize = 32 * 1024;

/// Permits for [`MAX_CONNECTIONS`] and who holds them, shared by every listener of
/// one server.
#[derive(Clone)]
pub struct Limits {
    permits: Arc<Semaphore>,
    /// Open connections per peer address; an address with none has no entry, so the
    /// map holds at most `max` entries.
    by_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
    busy_share: usize,
    idle: Duration,
}

/// A connection's place in [`Limits`]: given back when the connection is dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    address: IpAddr,
    by_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.address);
            }
        }
    }
}

/// The address a peer's connections are counted by (see the module doc).
fn address_key(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Limits {
    /// `max` connections at once; [`BUSY_SHARE`] per address once half are taken.
    pub fn new(max: usize, idle: Duration) -> Limits {
        Limits::with_share(max, BUSY_SHARE, idle)
    }

    fn with_share(max: usize, busy_share: usize, idle: Duration) -> Limits {
        Limits {
            permits: Arc::new(Semaphore::new(max)),
            by_address: Arc::default(),
            max,
            busy_share,
            idle,
        }
    }

    /// Wraps an accepted stream, or `None` (drop it: the peer sees it closed) when the
    /// server is full or `peer`'s address has its share (see the module doc).
    pub fn admit<S>(&self, stream: S, peer: SocketAddr) -> Option<Guarded<S>> {
        let address = address_key(peer);
        // Checked and taken under one lock, so two accepts cannot both take the last
        // place of an address.
        let mut held = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mine = held.get(&address).copied().unwrap_or(0);
        let refused = if self.open() >= self.max / 2 && mine >= self.busy_share {
            Some("this address holds its share of connections")
        } else {
            None
        };
        let permit = match refused {
            None => self
                .permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| "connection limit reached"),
            Some(why) => Err(why),
        };
        match permit {
            Ok(permit) => {
                *held.entry(address).or_insert(0) += 1;
                let slot = Slot {
                    _permit: permit,
                    address,
                    by_address: self.by_address.clone(),
                };
                Some(Guarded::new(stream, slot, self.idle))
            }
            Err(why) => {
                metrics::counter!("netmon_web_connections_refused_total").increment(1);
                log::debug!("web: {why}; closing {peer}");
                None
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }
}

/// A stream that holds a connection permit and fails with `TimedOut` once nothing has
/// moved for the idle timeout (see the module doc). The error closes the connection;
/// dropping the stream frees the permit.
pub struct Guarded<S> {
    inner: S,
    _slot: Slot,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    fn new(inner: S, slot: Slot, idle: Duration) -> Guarded<S> {
        Guarded {
            inner,
            _slot: slot,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn progressed(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// On `Pending`: has the idle timeout passed? (Polling the timer also arranges a
    /// wake-up when it does.)
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> io::Error {
    count_timeout();
    io::Error::new(
        io::ErrorKind::TimedOut,
        "web connection idle: nothing sent or received",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.timed_out(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progressed();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.timed_out(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progressed();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.timed_out(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.timed_out(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending if this.timed_out(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }
}

fn count_timeout() {
    metrics::counter!("netmon_web_connections_timed_out_total").increment(1);
}

/// Serves `app` over HTTP/1.1 on every connection `listener` hands out, until `stop`
/// turns true (or its sender is gone); then stops accepting, lets each connection
/// finish the request it is in, and returns once all are closed. Handlers see the
/// peer as `ConnectInfo<SocketAddr>`.
pub async fn serve<L>(mut listener: L, app: axum::Router, mut stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    // Every connection task holds a sender; `recv` sees `None` once all have ended.
    let (alive, mut all_closed) = mpsc::channel::<Infallible>(1);
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            _ = stop.wait_for(|s| *s) => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let alive = alive.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_BUF_BYTES);
            let conn = http.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    count_timeout();
                }
                log::debug!("web: connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    drop(alive);
    let _ = all_closed.recv().await;
}

/// A plain-HTTP listener under [`Limits`].
pub struct LimitedListener {
    listener: TcpListener,
    limits: Limits,
}

impl LimitedListener {
    pub fn new(listener: TcpListener, limits: Limits) -> LimitedListener {
        LimitedListener { listener, limits }
    }
}

/// Accepts one TCP connection; on an error (out of file descriptors and the like) waits
/// a moment instead of spinning.
pub async fn accept_tcp(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                log::warn!("web: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// axum's `Listener` trait is only the accept interface here; [`serve`] drives hyper.
impl axum::serve::Listener for LimitedListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, peer) = accept_tcp(&self.listener).await;
            if let Some(io) = self.limits.admit(tcp, peer) {
                return (io, peer);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    const IDLE: Duration = Duration::from_millis(300);

    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (server, client, peer)
    }

    async fn read(s: &mut Guarded<TcpStream>) -> io::Result<usize> {
        let mut bytes = [0u8; 64];
        let mut buf = ReadBuf::new(&mut bytes);
        poll_fn(|cx| Pin::new(&mut *s).poll_read(cx, &mut buf)).await?;
        Ok(buf.filled().len())
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_frees_its_permit() {
        let limits = Limits::new(2, IDLE);
        let (server, client, peer) = pair().await;
        let mut guarded = limits.admit(server, peer).unwrap();
        let (s2, _c2, p2) = pair().await;
        let _second = limits.admit(s2, p2).unwrap();
        let (s3, _c3, p3) = pair().await;
        assert!(limits.admit(s3, p3).is_none(), "past the limit");
        assert_eq!(limits.open(), 2);

        // Bytes arriving keep it open past the idle time.
        for _ in 0..3 {
            tokio::time::sleep(IDLE / 2).await;
            client.try_write(b"GET").unwrap();
            assert_eq!(read(&mut guarded).await.unwrap(), 3);
        }
        // Then silence: the read fails once the idle timeout passes.
        let t0 = Instant::now();
        let err = read(&mut guarded).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t0.elapsed() >= IDLE / 2);
        drop(guarded);
        assert_eq!(limits.open(), 1, "the permit is back");
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_slot() {
        let limits = Limits::with_share(8, 2, IDLE);
        let mut open = Vec::new();
        // The stream is never used here: `()` stands in for the socket.
        let mut admit = |ip: &str| {
            let peer = SocketAddr::new(ip.parse().unwrap(), 1);
            limits
                .admit((), peer)
                .map(|g| open.push((ip.to_owned(), g)))
                .is_some()
        };
        // Below half the slots, one address may take more than its share...
        for _ in 0..4 {
            assert!(admit("10.0.0.1"));
        }
        // ...but no more once half are taken, IPv4-mapped or not.
        assert!(!admit("10.0.0.1"));
        assert!(!admit("::ffff:10.0.0.1"));
        // Others still get their share, until the server is full.
        assert!(admit("10.0.0.2"));
        assert!(admit("fd00::2"));
        assert!(admit("10.0.0.2"));
        assert!(!admit("10.0.0.2"), "its share is taken");
        assert!(admit("10.0.0.3"));
        assert!(!admit("10.0.0.4"), "full");
        // Closing connections gives the address its places back.
        open.retain(|(ip, _)| ip != "10.0.0.1");
        assert_eq!(limits.open(), 4);
        let first: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!limits.by_address.lock().unwrap().contains_key(&first));
        assert!(limits.admit((), SocketAddr::new(first, 1)).is_some());
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_times_out_on_write() {
        let limits = Limits::new(1, IDLE);
        let (server, _client, peer) = pair().await;
        let mut guarded = limits.admit(server, peer).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let err = loop {
            match poll_fn(|cx| Pin::new(&mut guarded).poll_write(cx, &chunk)).await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
