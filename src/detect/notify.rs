//! Telling the owner about new incidents (`[notify]`): one line to the log (syslog on
//! OpenWrt, where procd relays netmon's stderr) and, when `webhook_url` is set, an HTTP
//! POST to a receiver — plain JSON, or the body and headers ntfy and Gotify expect.
//!
//! The writer calls [`Notifier::offer`] after a commit opened incidents. That must never
//! slow the writer down, so the notifier is its own thread behind a bounded queue:
//! `offer` is a `try_send`, and a full queue drops the incident (counted as
//! `netmon_notify_messages_total{result="dropped"}`) — the incident itself is in the
//! database and on the incidents page either way; only the message is lost.
//!
//! Delivery is in order, one message at a time. A failed attempt (no connection, a
//! timeout, a status other than 2xx) is retried with doubling waits ([`RETRY_FIRST`],
//! [`ATTEMPTS`] attempts, ≈ 5 minutes in all), then given up and counted as `failed`.
//! Messages waiting behind a failing one stay queued, at most [`MAX_PENDING`] of them.
//!
//! With `digest_minutes` set, the webhook gets one message per period summing up the
//! incidents opened in it (none when there were none); the log still gets one line per
//! incident as it opens.
//!
//! The webhook is HTTP/1.1, written by hand over a `TcpStream` with timeouts, or over
//! TLS (rustls, already in the binary for the web UI) for `https://` receivers such as
//! ntfy.sh or a Gotify server behind a certificate. Certificates are checked against the
//! system's CA bundle (OpenWrt's `ca-bundle` package, Debian's `ca-certificates`) or
//! `notify.ca_file`. A host name is resolved by netmon's own DNS client against the
//! router's resolver (`enrich.resolver`, else the first `nameserver` of
//! `/etc/resolv.conf`), never through libc (DESIGN §8): one A and one AAAA query per
//! attempt, so a receiver that moved is found on the next retry.
//!
//! The thread ends when every [`Notifier`] handle is dropped (the writer stopped);
//! messages still waiting for a retry or a digest are then given up.
//!
//! (Long: the queue, the three message formats and the HTTP(S) client with its own name
//! lookup, ≈ 970 lines of code; the rest are tests.)

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use simple_dns::rdata::RData;
use simple_dns::{RCODE, TYPE};
use tokio_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::NewIncident;
use crate::config::{self, NotifyFormat};
use crate::enrich::rdns;

/// Incidents waiting for the notifier thread. A burst of new incidents larger than this
/// within one delivery is already more than anyone reads one message at a time.
const QUEUE: usize = 64;
/// Messages waiting for delivery behind a failing one (a receiver that is down).
const MAX_PENDING: usize = 256;
/// Incidents listed by name in one digest message; the rest are counted.
const DIGEST_LISTED: usize = 20;
/// Attempts per message, waiting [`RETRY_FIRST`], then twice as long each time:
/// 10 + 20 + 40 + 80 + 160 s ≈ 5 minutes before a message is given up.
const ATTEMPTS: u32 = 6;
const RETRY_FIRST: Duration = Duration::from_secs(10);
/// Connecting, and then writing the request and reading the status line, each.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Hands new incidents to the notifier thread. Cheap to clone (a channel sender).
#[derive(Clone)]
pub struct Notifier {
    tx: SyncSender<NewIncident>,
    /// Incidents scoring below this are not announced.
    min_score: u32,
    dropped: metrics::Counter,
}

/// Starts the notifier thread for `[notify]`.
pub fn start(config: &config::Config) -> Notifier {
    let n = &config.notify;
    let webhook = match webhook(config) {
        Ok(w) => w,
        Err(e) => {
            log::error!("notify: webhook off: {e}");
            None
        }
    };
    Notifier::spawn(Settings {
        syslog: n.syslog,
        min_score: n.min_score,
        webhook,
        digest: (n.digest_minutes > 0)
            .then(|| Duration::from_secs(u64::from(n.digest_minutes) * 60)),
        retry_first: RETRY_FIRST,
        attempts: ATTEMPTS,
    })
}

/// The webhook of `[notify]`, if any. Config validation refuses a bad URL; a missing
/// CA bundle is found here, at start.
fn webhook(config: &config::Config) -> Result<Option<Webhook>, SetupError> {
    let n = &config.notify;
    let Some(url) = parse_webhook_url(&n.webhook_url)? else {
        return Ok(None);
    };
    let resolver =
        crate::enrich::resolver_addr(&config.enrich.resolver).map_err(SetupError::Resolver)?;
    let transport = Transport::new(&url, resolver, &n.ca_file)?;
    Ok(Some(Webhook {
        url,
        format: n.format,
        transport,
    }))
}

impl Notifier {
    /// Queues `incident` for the log and the webhook; never waits. Dropped (and counted)
    /// when the queue is full.
    pub fn offer(&self, incident: NewIncident) {
        if incident.score < self.min_score {
            return;
        }
        match self.tx.try_send(incident) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.increment(1)
            }
        }
    }

    fn spawn(settings: Settings) -> Notifier {
        let (tx, rx) = sync_channel(QUEUE);
        let min_score = settings.min_score;
        let spawned = std::thread::Builder::new()
            .name("netmon-notify".into())
            .spawn(move || Worker::new(settings).run(rx));
        if let Err(e) = spawned {
            // The receiver went with the closure: every offer counts as dropped.
            log::error!("notify: cannot start the notifier thread: {e}");
        }
        Notifier {
            tx,
            min_score,
            dropped: result_counter("dropped"),
        }
    }
}

fn result_counter(result: &'static str) -> metrics::Counter {
    metrics::counter!("netmon_notify_messages_total", "result" => result)
}

/// `[notify]` as the thread uses it; tests shorten the waits.
struct Settings {
    syslog: bool,
    min_score: u32,
    webhook: Option<Webhook>,
    /// One webhook message per period instead of one per incident.
    digest: Option<Duration>,
    retry_first: Duration,
    attempts: u32,
}

struct Webhook {
    url: WebhookUrl,
    format: NotifyFormat,
    transport: Transport,
}

/// A parsed webhook address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub tls: bool,
    pub host: WebhookHost,
    pub port: u16,
    /// The `Host` header: the URL's authority as written.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// A webhook's host: an address, or a name netmon resolves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookHost {
    Ip(IpAddr),
    /// Lower case, without a trailing dot.
    Name(String),
}

impl std::fmt::Display for WebhookUrl {
    /// The scheme and host only (for logs): the path (an ntfy topic) and the query
    /// (Gotify's `?token=`) may be secrets, see [`crate::config::redacted_url`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        let hidden = if self.path == "/" { "" } else { "/(not shown)" };
        write!(f, "{scheme}://{}{hidden}", self.authority)
    }
}

/// Why a `webhook_url` is refused; each says what is accepted (the config error puts
/// it after the key and the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error(
        "a URL starting with https:// or http://, like \"https://ntfy.sh/my-router\" or \
         \"http://192.168.1.10:8080/netmon\""
    )]
    Scheme,
    #[error("a URL without spaces, control or non-ASCII characters")]
    Characters,
    #[error("a URL without user:password@ (put a token in the path or query)")]
    UserInfo,
    #[error("a closing ']' after an IPv6 host")]
    UnclosedBracket,
    #[error("an IPv6 address inside [ ] ({0:?})")]
    Ipv6(String),
    #[error("an IPv6 host in brackets, like \"http://[fd00::10]:8080/…\"")]
    UnbracketedIpv6,
    #[error("a port from 1 to 65535")]
    Port,
    #[error(
        "a host name or an IP address, like \"https://ntfy.sh/…\" or \
         \"http://192.168.1.10:8080/…\" ({0:?})"
    )]
    HostName(String),
}

/// Why the webhook cannot be set up at start (the notifier then runs without it).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Url(#[from] WebhookUrlError),
    #[error("{0:#}")]
    Resolver(anyhow::Error),
    #[error(
        "an https:// webhook needs CA certificates: none of {tried} exists (install \
         ca-bundle on OpenWrt, ca-certificates on Debian, or set notify.ca_file)"
    )]
    NoCaBundle { tried: String },
    #[error("reading CA certificates from {path}: {source}")]
    CaFile {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("no usable CA certificate in {path}")]
    NoUsableCa { path: String },
    #[error("{0}")]
    Tls(rustls::Error),
}

/// Why one delivery attempt failed; logged, and the message retried.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Socket(std::io::Error),
    #[error("{name}: {source}")]
    ServerName {
        name: String,
        source: rustls_pki_types::InvalidDnsNameError,
    },
    #[error("TLS with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: rustls::Error,
    },
    #[error("sending to {addr}: {source}")]
    Send {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} sent no answer within {secs} s")]
    NoAnswer { addr: SocketAddr, secs: u64 },
    #[error("reading the answer of {addr}: {source}")]
    Read {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} answered something other than HTTP")]
    NotHttp { addr: SocketAddr },
    #[error("{addr} answered HTTP status {status}")]
    Status { addr: SocketAddr, status: u16 },
    /// The resolver could not be asked, or answered with an error (`reason`).
    #[error("resolving {name} with {resolver}: {reason}")]
    Dns {
        name: String,
        resolver: SocketAddr,
        reason: String,
    },
    #[error("{name} has no address (asked {resolver})")]
    NoAddress { name: String, resolver: SocketAddr },
}

/// Parses `webhook_url`; `Ok(None)` for "" (no webhook). The error says what is
/// accepted.
pub fn parse_webhook_url(text: &str) -> Result<Option<WebhookUrl>, WebhookUrlError> {
    if text.is_empty() {
        return Ok(None);
    }
    let (tls, rest) = if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(WebhookUrlError::Scheme);
    };
    if !text.is_ascii() || text.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(WebhookUrlError::Characters);
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err(WebhookUrlError::UserInfo);
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, after) = bracketed
                .split_once(']')
                .ok_or(WebhookUrlError::UnclosedBracket)?;
            let ip: std::net::Ipv6Addr = ip
                .parse()
                .map_err(|_| WebhookUrlError::Ipv6(ip.to_owned()))?;
            (
                WebhookHost::Ip(IpAddr::V6(ip)),
                port_after(after, default_port)?,
            )
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((_, rest)) if rest.contains(':') => {
                    return Err(WebhookUrlError::UnbracketedIpv6);
                }
                Some((host, port)) => (host, port_after(&format!(":{port}"), default_port)?),
                None => (authority, default_port),
            };
            let host = match host.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => WebhookHost::Ip(IpAddr::V4(ip)),
                Err(_) => WebhookHost::Name(host_name(host)?),
            };
            (host, port)
        }
    };
    Ok(Some(WebhookUrl {
        tls,
        host,
        port,
        authority: authority.to_owned(),
        path: path.split('#').next().unwrap_or("/").to_owned(),
    }))
}

/// The port of `:port` (or `default` for ""), 1–65535.
fn port_after(after: &str, default: u16) -> Result<u16, WebhookUrlError> {
    if after.is_empty() {
        return Ok(default);
    }
    after
        .strip_prefix(':')
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p != 0)
        .ok_or(WebhookUrlError::Port)
}

/// A DNS host name (RFC 1123 letters, digits and hyphens, labels of 1–63 characters),
/// lower-cased, without a trailing dot.
fn host_name(host: &str) -> Result<String, WebhookUrlError> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(WebhookUrlError::HostName(host.to_owned()));
    }
    Ok(name)
}

/// Where a webhook's name is resolved and how its certificate is checked.
pub struct Transport {
    /// The DNS server for host names.
    resolver: SocketAddr,
    /// For `https://` receivers.
    tls: Option<Arc<ClientConfig>>,
}

/// Files tried, in order, when `notify.ca_file` is empty: OpenWrt's `ca-bundle` and
/// Debian's `ca-certificates` use the first; Alpine-style systems the second.
const CA_BUNDLES: [&str; 2] = ["/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"];

impl Transport {
    /// What `url` needs: the resolver (used for names only) and, for `https://`, the
    /// trusted certificates from `ca_file` or the system's bundle.
    pub fn new(
        url: &WebhookUrl,
        resolver: SocketAddr,
        ca_file: &str,
    ) -> Result<Transport, SetupError> {
        let tls = if url.tls {
            Some(Arc::new(client_config(ca_file)?))
        } else {
            None
        };
        Ok(Transport { resolver, tls })
    }
}

fn client_config(ca_file: &str) -> Result<ClientConfig, SetupError> {
    let path = if ca_file.is_empty() {
        CA_BUNDLES
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| SetupError::NoCaBundle {
                tried: CA_BUNDLES.join(", "),
            })?
    } else {
        ca_file
    };
    let mut roots = RootCertStore::empty();
    let ca_file_error = |source| SetupError::CaFile {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path).map_err(ca_file_error)?;
    for cert in certs {
        let cert = cert.map_err(ca_file_error)?;
        // A bundle may hold a certificate rustls cannot use; the others still count.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(SetupError::NoUsableCa {
            path: path.to_owned(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One HTTP request ready to send, possibly several times.
#[derive(Debug, Clone)]
struct Message {
    content_type: &'static str,
    /// Extra headers (already free of CR/LF).
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Attempts made so far.
    attempts: u32,
    next_at: Instant,
}

struct Worker {
    settings: Settings,
    pending: VecDeque<Message>,
    /// Incidents of the current digest period, oldest first, and how many more were not
    /// kept.
    digest: Vec<NewIncident>,
    digest_more: usize,
    next_digest: Option<Instant>,
    sent: metrics::Counter,
    retried: metrics::Counter,
    failed: metrics::Counter,
    dropped: metrics::Counter,
}

impl Worker {
    fn new(settings: Settings) -> Worker {
        let next_digest = settings
            .webhook
            .as_ref()
            .and(settings.digest)
            .map(|d| Instant::now() + d);
        Worker {
            settings,
            pending: VecDeque::new(),
            digest: Vec::new(),
            digest_more: 0,
            next_digest,
            sent: result_counter("sent"),
            retried: result_counter("retried"),
            failed: result_counter("failed"),
            dropped: result_counter("dropped"),
        }
    }

    fn run(mut self, rx: Receiver<NewIncident>) {
        loop {
            let now = Instant::now();
            let wake = [self.pending.front().map(|m| m.next_at), self.next_digest]
                .into_iter()
                .flatten()
                .min();
            let received = match wake {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(now)),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(incident) => self.take(incident),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.next_digest.is_some_and(|at| at <= Instant::now()) {
                self.close_digest();
            }
            self.deliver_due();
        }
        if !self.pending.is_empty() || !self.digest.is_empty() {
            log::info!(
                "notify: stopping with {} undelivered webhook message(s)",
                self.pending.len() + usize::from(!self.digest.is_empty())
            );
        }
    }

    fn take(&mut self, incident: NewIncident) {
        if self.settings.syslog {
            log::warn!("{}", log_line(&incident));
        }
        let Some(webhook) = &self.settings.webhook else {
            return;
        };
        if self.settings.digest.is_some() {
            if self.digest.len() < DIGEST_LISTED {
                self.digest.push(incident);
            } else {
                self.digest_more += 1;
            }
            return;
        }
        let message = single_message(webhook.format, &incident);
        self.queue(message);
    }

    fn close_digest(&mut self) {
        if let (Some(period), Some(webhook)) = (self.settings.digest, &self.settings.webhook) {
            self.next_digest = Some(Instant::now() + period);
            if !self.digest.is_empty() {
                let incidents = std::mem::take(&mut self.digest);
                let more = std::mem::replace(&mut self.digest_more, 0);
                let message = digest_message(webhook.format, &incidents, more, period);
                self.queue(message);
            }
        }
    }

    fn queue(&mut self, message: Message) {
        if self.pending.len() >= MAX_PENDING {
            self.dropped.increment(1);
        } else {
            self.pending.push_back(message);
        }
    }

    /// Sends messages in order while they are due and succeed; a failure reschedules the
    /// head (or gives it up) and stops until it is due again.
    fn deliver_due(&mut self) {
        let Some(webhook) = &self.settings.webhook else {
            return;
        };
        while let Some(message) = self.pending.front_mut() {
            if message.next_at > Instant::now() {
                return;
            }
            message.attempts += 1;
            match post(webhook, message) {
                Ok(()) => {
                    self.sent.increment(1);
                    self.pending.pop_front();
                }
                Err(e) if message.attempts >= self.settings.attempts => {
                    log::warn!(
                        "notify: webhook {} failed {} times, giving up on a message: {e}",
                        webhook.url,
                        message.attempts
                    );
                    self.failed.increment(1);
                    self.pending.pop_front();
                }
                Err(e) => {
                    let wait = self.settings.retry_first * 2u32.pow(message.attempts - 1);
                    if message.attempts == 1 {
                        log::warn!("notify: webhook {}: {e}; retrying", webhook.url);
                    }
                    message.next_at = Instant::now() + wait;
                    self.retried.increment(1);
                    return;
                }
            }
        }
    }
}

/// One POST; `Ok` on a 2xx status.
fn post(webhook: &Webhook, message: &Message) -> Result<(), DeliveryError> {
    let url = &webhook.url;
    let addrs = match &url.host {
        WebhookHost::Ip(ip) => vec![*ip],
        WebhookHost::Name(name) => resolve(name, webhook.transport.resolver)?,
    };
    // Each address in turn (as the resolver ordered them) until one connects.
    let mut failure = None;
    let mut connected = None;
    for ip in addrs {
        let addr = SocketAddr::new(ip, url.port);
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(stream) => {
                connected = Some((stream, addr));
                break;
            }
            Err(source) => failure = Some(DeliveryError::Connect { addr, source }),
        }
    }
    let (stream, addr) = connected.ok_or_else(|| {
        // Never empty in practice: a name resolves to at least one address or fails.
        failure.unwrap_or_else(|| DeliveryError::NoAddress {
            name: url.authority.clone(),
            resolver: webhook.transport.resolver,
        })
    })?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(TIMEOUT)))
        .map_err(DeliveryError::Socket)?;
    match &webhook.transport.tls {
        None => exchange(stream, addr, url, message),
        Some(config) => {
            let name = match &url.host {
                WebhookHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
                WebhookHost::Name(name) => {
                    ServerName::try_from(name.clone()).map_err(|source| {
                        DeliveryError::ServerName {
                            name: name.clone(),
                            source,
                        }
                    })?
                }
            };
            let tls = ClientConnection::new(config.clone(), name)
                .map_err(|source| DeliveryError::Tls { addr, source })?;
            exchange(StreamOwned::new(tls, stream), addr, url, message)
        }
    }
}

/// Writes the request and reads the status line over `stream` (plain or TLS).
fn exchange(
    mut stream: impl Read + Write,
    addr: SocketAddr,
    url: &WebhookUrl,
    message: &Message,
) -> Result<(), DeliveryError> {
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: netmon/{}\r\nContent-Type: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        url.path,
        url.authority,
        env!("CARGO_PKG_VERSION"),
        message.content_type,
        message.body.len()
    );
    for (name, value) in &message.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(&message.body);
    // Over TLS the handshake happens here, so its failures (an untrusted certificate)
    // are reported as sending errors, with rustls's reason.
    stream
        .write_all(&bytes)
        .and_then(|()| stream.flush())
        .map_err(|source| DeliveryError::Send { addr, source })?;
    // The status line is all that matters ("HTTP/1.1 200 OK\r\n").
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            // A read timeout is `WouldBlock` on Linux (SO_RCVTIMEO gives EAGAIN).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(DeliveryError::NoAnswer {
                    addr,
                    secs: TIMEOUT.as_secs(),
                });
            }
            // A TLS peer that closes without close_notify after its answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !head.is_empty() => 0,
            Err(source) => return Err(DeliveryError::Read { addr, source }),
        };
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(DeliveryError::NotHttp { addr })?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(DeliveryError::Status { addr, status })
    }
}

/// How long one DNS query waits for its answer; each is tried twice.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// The addresses of `name` from `resolver`: its A records, then its AAAA records (the
/// records of a CNAME chain's end, as a recursive resolver includes them). An error
/// when neither query brought an address.
fn resolve(name: &str, resolver: SocketAddr) -> Result<Vec<IpAddr>, DeliveryError> {
    let mut addrs = Vec::new();
    let mut failure = None;
    for qtype in [TYPE::A, TYPE::AAAA] {
        match query(name, qtype, resolver) {
            Ok(found) => addrs.extend(found),
            Err(e) => failure = Some(e),
        }
    }
    if addrs.is_empty() {
        return Err(failure.unwrap_or_else(|| DeliveryError::NoAddress {
            name: name.to_owned(),
            resolver,
        }));
    }
    Ok(addrs)
}

/// One question to `resolver` over UDP from a fresh socket (a random port) with a random
/// id; the answer must echo both and the question (RFC 5452).
fn query(name: &str, qtype: TYPE, resolver: SocketAddr) -> Result<Vec<IpAddr>, DeliveryError> {
    let unspecified: SocketAddr = if resolver.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let fail = |e: &dyn std::fmt::Display| DeliveryError::Dns {
        name: name.to_owned(),
        resolver,
        reason: e.to_string(),
    };
    let mut id = [0u8; 2];
    crate::random::random_bytes(&mut id).map_err(|e| fail(&e))?;
    let id = u16::from_ne_bytes(id);
    let bytes = rdns::encode_question(id, name, qtype).map_err(|e| fail(&e))?;
    let socket = UdpSocket::bind(unspecified).map_err(|e| fail(&e))?;
    socket.connect(resolver).map_err(|e| fail(&e))?;
    socket
        .set_read_timeout(Some(DNS_TIMEOUT))
        .map_err(|e| fail(&e))?;
    let mut buf = [0u8; 4096];
    for _ in 0..2 {
        socket.send(&bytes).map_err(|e| fail(&e))?;
        let deadline = Instant::now() + DNS_TIMEOUT;
        while Instant::now() < deadline {
            let Ok(n) = socket.recv(&mut buf) else { break };
            let Ok(reply) = rdns::reply_to(&buf[..n], id, name, qtype) else {
                continue;
            };
            return match reply.rcode() {
                RCODE::NoError | RCODE::NameError => Ok(reply
                    .answers
                    .iter()
                    .filter_map(|r| match &r.rdata {
                        RData::A(a) => Some(IpAddr::V4(a.address.into())),
                        RData::AAAA(a) => Some(IpAddr::V6(a.address.into())),
                        _ => None,
                    })
                    .collect()),
                rcode => Err(fail(&format!("{rcode:?}"))),
            };
        }
    }
    Err(fail(&"no answer"))
}

/// The log line of a new incident: one line whatever the device name holds.
fn log_line(i: &NewIncident) -> String {
    one_line(&format!(
        "incident {} on {}: {} (score {}, {})",
        i.id,
        i.device,
        i.title,
        i.score,
        codes_text(i)
    ))
}

fn codes_text(i: &NewIncident) -> String {
    i.codes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Control characters (a DHCP hostname may hold anything) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A header value: printable ASCII only (no CR/LF to inject headers with).
fn header_value(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(250)
        .collect();
    clean.trim().to_owned()
}

/// The human text of one incident: what, where, and why.
fn incident_text(i: &NewIncident) -> String {
    let mut text = format!("{} (device {}, score {})", i.title, i.device, i.score);
    for r in &i.reasons {
        text.push_str(&format!("\n- {} (+{}): {}", r.code, r.weight, r.evidence));
    }
    text
}

/// ntfy priority (1 min … 5 urgent) and Gotify priority (0 … 10) of a score.
fn ntfy_priority(score: u32) -> u8 {
    match score {
        90.. => 5,
        70..=89 => 4,
        _ => 3,
    }
}

fn gotify_priority(score: u32) -> u32 {
    score.min(100) / 10
}

#[derive(Serialize)]
struct JsonIncident<'a> {
    #[serde(flatten)]
    incident: &'a NewIncident,
    message: String,
}

#[derive(Serialize)]
struct JsonDigest<'a> {
    digest: bool,
    /// Incidents opened in the period, including those not listed.
    count: usize,
    incidents: &'a [NewIncident],
    message: String,
}

#[derive(Serialize)]
struct GotifyMessage<'a> {
    title: &'a str,
    message: &'a str,
    priority: u32,
}

fn single_message(format: NotifyFormat, i: &NewIncident) -> Message {
    let title = format!("netmon: {}", i.title);
    let text = incident_text(i);
    match format {
        NotifyFormat::Json => json_message(&JsonIncident {
            incident: i,
            message: text,
        }),
        NotifyFormat::Ntfy => ntfy_message(&title, text, i.score, &codes_text(i)),
        NotifyFormat::Gotify => json_message(&GotifyMessage {
            title: &title,
            message: &text,
            priority: gotify_priority(i.score),
        }),
    }
}

fn digest_message(
    format: NotifyFormat,
    incidents: &[NewIncident],
    more: usize,
    period: Duration,
) -> Message {
    let count = incidents.len() + more;
    let minutes = period.as_secs() / 60;
    let title = format!("netmon: {count} new incident(s) in the last {minutes} min");
    let mut text = String::new();
    for i in incidents {
        text.push_str(&format!(
            "- {} (device {}, score {}, {})\n",
            i.title,
            i.device,
            i.score,
            codes_text(i)
        ));
    }
    if more > 0 {
        text.push_str(&format!("… and {more} more\n"));
    }
    let top = incidents.iter().map(|i| i.score).max().unwrap_or(0);
    match format {
        NotifyFormat::Json => json_message(&JsonDigest {
            digest: true,
            count,
            incidents,
            message: format!("{title}\n{text}"),
        }),
        NotifyFormat::Ntfy => {
            let mut codes: Vec<_> = incidents.iter().flat_map(|i| i.codes.clone()).collect();
            codes.sort();
            codes.dedup();
            let codes: Vec<_> = codes.iter().map(|c| c.as_str()).collect();
            ntfy_message(&title, text, top, &codes.join(","))
        }
        NotifyFormat::Gotify => json_message(&GotifyMessage {
            title: &title,
            message: &text,
            priority: gotify_priority(top),
        }),
    }
}

fn json_message(value: &impl Serialize) -> Message {
    Message {
        content_type: "application/json",
        headers: Vec::new(),
        // Serializing plain structs of strings and numbers cannot fail.
        body: serde_json::to_vec(value).unwrap_or_default(),
        attempts: 0,
        next_at: Instant::now(),
    }
}

/// ntfy's publish form: the text as the body, the rest in headers
/// (<https://docs.ntfy.sh/publish/>).
fn ntfy_message(title: &str, text: String, score: u32, codes: &str) -> Message {
    let tags = format!("warning,{}", codes.to_ascii_lowercase());
    Message {
        content_type: "text/plain; charset=utf-8",
        headers: vec![
            ("Title", header_value(title)),
            ("Priority", ntfy_priority(score).to_string()),
            ("Tags", header_value(&tags)),
        ],
        body: text.into_bytes(),
        attempts: 0,
        next_at: Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead as _;
    use std::net::TcpListener;

    use super::*;
    use crate::detect::{Code, Reason};
    use simple_dns::{CLASS, Packet, QTYPE};

    fn incident(id: i64, score: u32) -> NewIncident {
        NewIncident {
            id,
            first_seen: 1_714_568_645_000,
            device_id: 3,
            device: "kid's\r\nX-Evil: 1 <tablet>".into(),
            title: "port scan from 10.0.0.5".into(),
            score,
            codes: vec![Code::PortScanLike, Code::RarePort],
            reasons: vec![Reason {
                code: Code::PortScanLike,
                weight: 40,
                evidence: "45 ports on 30 hosts in 60 s".into(),
            }],
        }
    }

    fn settings(url: &str, format: NotifyFormat) -> Settings {
        Settings {
            syslog: true,
            min_score: 0,
            webhook: Some(Webhook {
                url: parse_webhook_url(url).unwrap().unwrap(),
                format,
                transport: Transport {
                    resolver: "127.0.0.1:53".parse().unwrap(),
                    tls: None,
                },
            }),
            digest: None,
            retry_first: Duration::from_millis(20),
            attempts: 6,
        }
    }

    /// One request read off `listener`: head lines and body; answers `status`.
    fn receive(listener: &TcpListener, status: u16) -> (Vec<String>, Vec<u8>) {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        let length: usize = head
            .iter()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = reader.into_inner();
        write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").unwrap();
        (head, body)
    }

    fn local() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook?x=1", listener.local_addr().unwrap());
        (listener, url)
    }

    #[test]
    fn json_message_per_incident() {
        let (listener, url) = local();
        let n = Notifier::spawn(settings(&url, NotifyFormat::Json));
        n.offer(incident(7, 80));
        let (head, body) = receive(&listener, 200);
        assert_eq!(head[0], "POST /hook?x=1 HTTP/1.1");
        assert!(head.contains(&"Content-Type: application/json".to_owned()));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["score"], 80);
        assert_eq!(
            v["codes"],
            serde_json::json!(["PORT_SCAN_LIKE", "RARE_PORT"])
        );
        assert_eq!(v["reasons"][0]["evidence"], "45 ports on 30 hosts in 60 s");
        let message = v["message"].as_str().unwrap();
        assert!(message.starts_with("port scan from 10.0.0.5"), "{message}");
        assert!(message.contains("PORT_SCAN_LIKE (+40)"), "{message}");
    }

    #[test]
    fn ntfy_headers_cannot_be_injected() {
        let (listener, url) = local();
        let n = Notifier::spawn(settings(&url, NotifyFormat::Ntfy));
        let mut i = incident(1, 95);
        i.title = "scan\r\nX-Evil: 1".into();
        n.offer(i);
        let (head, body) = receive(&listener, 200);
        assert!(
            head.contains(&"Title: netmon: scan??X-Evil: 1".to_owned()),
            "{head:?}"
        );
        assert!(head.contains(&"Priority: 5".to_owned()), "{head:?}");
        assert!(
            head.contains(&"Tags: warning,port_scan_like,rare_port".to_owned()),
            "{head:?}"
        );
        assert!(!head.iter().any(|l| l.starts_with("X-Evil")), "{head:?}");
        assert!(
            String::from_utf8(body)
                .unwrap()
                .starts_with("scan\r\nX-Evil")
        );
    }

    #[test]
    fn gotify_body() {
        let (listener, url) = local();
        let n = Notifier::spawn(settings(&url, NotifyFormat::Gotify));
        n.offer(incident(1, 72));
        let (_, body) = receive(&listener, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["title"], "netmon: port scan from 10.0.0.5");
        assert_eq!(v["priority"], 7);
        assert!(v["message"].as_str().unwrap().contains("45 ports"));
    }

    #[test]
    fn below_min_score_is_not_sent() {
        let (listener, url) = local();
        let n = Notifier::spawn(Settings {
            min_score: 50,
            ..settings(&url, NotifyFormat::Json)
        });
        n.offer(incident(1, 49));
        n.offer(incident(2, 50));
        let (_, body) = receive(&listener, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], 2);
    }

    #[test]
    fn refused_and_non_2xx_are_retried_in_order() {
        // Nobody listens at first: connection refused.
        let (listener, url) = local();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let n = Notifier::spawn(settings(&url, NotifyFormat::Json));
        n.offer(incident(1, 80));
        n.offer(incident(2, 80));
        std::thread::sleep(Duration::from_millis(50));
        let listener = TcpListener::bind(addr).unwrap();
        // A server error is retried too.
        let (_, first) = receive(&listener, 503);
        let ids: Vec<i64> = [first, receive(&listener, 200).1, receive(&listener, 200).1]
            .iter()
            .map(|b| {
                serde_json::from_slice::<serde_json::Value>(b).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, [1, 1, 2]);
    }

    #[test]
    fn gives_up_after_the_last_attempt() {
        let (listener, url) = local();
        let n = Notifier::spawn(Settings {
            attempts: 2,
            ..settings(&url, NotifyFormat::Json)
        });
        n.offer(incident(1, 80));
        n.offer(incident(2, 80));
        let ids: Vec<i64> = [500, 500, 200]
            .into_iter()
            .map(|status| {
                let (_, b) = receive(&listener, status);
                serde_json::from_slice::<serde_json::Value>(&b).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, [1, 1, 2]);
    }

    #[test]
    fn offer_never_blocks() {
        // A receiver that accepts and never answers: the thread sits in a read timeout.
        let (listener, url) = local();
        let n = Notifier::spawn(settings(&url, NotifyFormat::Json));
        let started = Instant::now();
        for id in 0..10_000 {
            n.offer(incident(id, 80));
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn digest_sums_up_a_period() {
        let (listener, url) = local();
        let n = Notifier::spawn(Settings {
            digest: Some(Duration::from_millis(300)),
            ..settings(&url, NotifyFormat::Json)
        });
        for id in 1..=3 {
            n.offer(incident(id, 80));
        }
        let (_, body) = receive(&listener, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["digest"], true);
        assert_eq!(v["count"], 3);
        assert_eq!(v["incidents"].as_array().unwrap().len(), 3);
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("netmon: 3 new incident(s)")
        );
    }

    #[test]
    fn webhook_urls() {
        let ok = |s: &str| parse_webhook_url(s).unwrap().unwrap();
        let u = ok("http://192.168.1.10:8080/netmon?token=abc");
        assert_eq!(u.host, WebhookHost::Ip("192.168.1.10".parse().unwrap()));
        assert_eq!((u.tls, u.port), (false, 8080));
        assert_eq!(u.authority, "192.168.1.10:8080");
        assert_eq!(u.path, "/netmon?token=abc");
        assert_eq!(
            u.to_string(),
            "http://192.168.1.10:8080/(not shown)",
            "no token or topic in logs"
        );
        let u = ok("http://[fd00::10]/message");
        assert_eq!(u.host, WebhookHost::Ip("fd00::10".parse().unwrap()));
        assert_eq!(u.port, 80);
        let u = ok("https://NTFY.sh/my-router");
        assert_eq!(u.host, WebhookHost::Name("ntfy.sh".into()));
        assert_eq!(
            (u.tls, u.port, u.authority.as_str()),
            (true, 443, "NTFY.sh")
        );
        let u = ok("https://gotify.home.arpa.:8443/message?token=t");
        assert_eq!(u.host, WebhookHost::Name("gotify.home.arpa".into()));
        assert_eq!(u.port, 8443);
        assert_eq!(ok("https://[2001:db8::1]:444/").port, 444);
        assert_eq!(ok("http://10.0.0.2").path, "/");
        assert_eq!(ok("http://10.0.0.2?t=1").path, "/?t=1");
        assert_eq!(parse_webhook_url("").unwrap(), None);
        for bad in [
            "ftp://10.0.0.2/",
            "ntfy.sh/topic",
            "http://fd00::10/x",
            "http://[fd00::10/x",
            "http://[10.0.0.2]/x",
            "http://u:p@10.0.0.2/",
            "http://10.0.0.2:0/",
            "http://10.0.0.2:65536/",
            "https://ntfy.sh:/",
            "http://10.0.0.2/a b",
            "http://10.0.0.2/\r\nX: y",
            "https://under_score.lan/",
            "https://-dash.lan/",
            "https://a..b/",
            "https:///path",
        ] {
            assert!(parse_webhook_url(bad).is_err(), "{bad}");
        }
    }

    /// A DNS server on loopback answering `name` with `ip` (A) and nothing else, for
    /// `answers` questions.
    fn dns_server(name: &'static str, ip: std::net::Ipv4Addr, answers: usize) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            for _ in 0..answers {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    return;
                };
                let q = Packet::parse(&buf[..n]).unwrap();
                let mut reply = q.clone().into_reply();
                let question = &q.questions[0];
                if question.qtype == QTYPE::TYPE(TYPE::A) && question.qname.to_string() == name {
                    reply.answers.push(simple_dns::ResourceRecord::new(
                        question.qname.clone(),
                        CLASS::IN,
                        60,
                        RData::A(ip.into()),
                    ));
                }
                socket
                    .send_to(&reply.build_bytes_vec().unwrap(), from)
                    .unwrap();
            }
        });
        addr
    }

    #[test]
    fn names_resolve_through_the_configured_resolver() {
        let resolver = dns_server("hooks.lab.test", "127.0.0.9".parse().unwrap(), 4);
        assert_eq!(
            resolve("hooks.lab.test", resolver).unwrap(),
            ["127.0.0.9".parse::<IpAddr>().unwrap()]
        );
        let e = resolve("other.lab.test", resolver).unwrap_err().to_string();
        assert!(e.contains("no address"), "{e}");
    }

    #[test]
    fn config_section() {
        let parse = |t: &str| config::Config::parse(t, std::path::Path::new("netmon.toml"));
        let c = parse(
            "[notify]\nwebhook_url = \"http://10.0.0.2:8080/x\"\nformat = \"ntfy\"\n\
             digest_minutes = 15\nmin_score = 70\nsyslog = false\n",
        )
        .unwrap();
        assert_eq!(c.notify.format, NotifyFormat::Ntfy);
        assert_eq!((c.notify.digest_minutes, c.notify.min_score), (15, 70));
        assert!(!c.notify.syslog);
        assert!(parse("").unwrap().notify.syslog);
        for (text, key, says) in [
            (
                "webhook_url = \"ftp://ntfy.sh/x\"",
                "notify.webhook_url",
                "https:// or http://",
            ),
            (
                "webhook_url = \"https://ntfy_lan/x\"",
                "notify.webhook_url",
                "a host name or an IP address",
            ),
            (
                "ca_file = \"/nonexistent/ca.pem\"",
                "notify.ca_file",
                "PEM file of CA certificates",
            ),
            (
                "digest_minutes = 1441",
                "notify.digest_minutes",
                "0 (a message per incident) to 1440",
            ),
            ("min_score = 101", "notify.min_score", "0 to 100"),
        ] {
            let e = parse(&format!("[notify]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(says), "{text}: {e}");
        }
        let e = parse("[notify]\nformat = \"slack\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("slack"), "{e}");
    }

    #[test]
    fn log_line_is_one_line() {
        let line = log_line(&incident(4, 80));
        assert!(!line.contains(['\r', '\n']), "{line}");
        assert!(
            line.starts_with("incident 4 on kid's  X-Evil: 1 <tablet>: port scan"),
            "{line}"
        );
    }
}
