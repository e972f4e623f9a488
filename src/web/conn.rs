//! Connection limits: no browser, however stuck or slow, can stall the web server or
//! pin its memory and file descriptors (issue 7, "Faults").
//!
//! `axum::serve` gives hyper no timer, so hyper's own header-read timeout never runs:
//! a client that sends half a request, or never reads a large response, would hold its
//! socket and task forever. Two bounds, on every connection (HTTP and, under the TLS
//! layer, HTTPS):
//! - at most [`MAX_CONNECTIONS`] open at once; past it a new connection is closed at
//!   once (counted in `netmon_web_connections_refused_total`) rather than queued, so
//!   the accept loop never waits;
//! - a connection on which nothing moves — no byte read, no byte written — for
//!   [`IDLE_TIMEOUT`] is closed: a half-sent request, an idle keep-alive, a response
//!   the client stopped reading (its socket buffer full). A live-update stream is never
//!   idle that long: it writes a keep-alive comment more often ([`super::sse`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Most connections open at once (HTTP and HTTPS together, per listener set). Each is
/// a socket and a task of a few KiB; a household needs a few dozen. Well under the
/// 4096 file descriptors the packages allow.
pub const MAX_CONNECTIONS: usize = 512;

/// A connection with no byte moving either way for this long is closed. Longer than
/// the live-update keep-alive ([`super::sse::KEEP_ALIVE`]), shorter than anything a
/// person would notice as a stall.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Permits for [`MAX_CONNECTIONS`], shared by every listener of one server.
#[derive(Clone)]
pub struct Limits {
    permits: Arc<Semaphore>,
    max: usize,
    idle: Duration,
}

impl Limits {
    pub fn new(max: usize, idle: Duration) -> Limits {
        Limits {
            permits: Arc::new(Semaphore::new(max)),
            max,
            idle,
        }
    }

    /// Wraps an accepted stream, or `None` (drop it: the peer sees it closed) when the
    /// limit ([`MAX_CONNECTIONS`] in the server) is reached.
    pub fn admit<S>(&self, stream: S, peer: SocketAddr) -> Option<Guarded<S>> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(Guarded::new(stream, permit, self.idle)),
            Err(_) => {
                metrics::counter!("netmon_web_connections_refused_total").increment(1);
                log::debug!("web: connection limit reached; closing {peer}");
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
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    fn new(inner: S, permit: OwnedSemaphorePermit, idle: Duration) -> Guarded<S> {
        Guarded {
            inner,
            _permit: permit,
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
    metrics::counter!("netmon_web_connections_timed_out_total").increment(1);
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
