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
//! The webhook is plain HTTP/1.1, written by hand over a `TcpStream` with timeouts:
//! netmon carries no TLS root certificates, and the host must be an IP address because
//! netmon never resolves names through libc (DESIGN §8). `https://` receivers are
//! reached through a relay on the LAN (e.g. a local ntfy or Gotify server).
//!
//! The thread ends when every [`Notifier`] handle is dropped (the writer stopped);
//! messages still waiting for a retry or a digest are then given up.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::NewIncident;
use crate::config::{self, NotifyFormat};

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
    let webhook = match parse_webhook_url(&n.webhook_url) {
        Ok(url) => url.map(|url| Webhook {
            url,
            format: n.format,
        }),
        // Config validation refuses such a URL; a config built in code may still have one.
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
}

/// A parsed `http://` webhook address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub addr: SocketAddr,
    /// The `Host` header: the URL's authority as written.
    pub host: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// Parses `webhook_url`; `Ok(None)` for "" (no webhook). The error says what is
/// accepted.
pub fn parse_webhook_url(text: &str) -> Result<Option<WebhookUrl>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(if text.starts_with("https://") {
            "https is not supported (netmon carries no TLS root certificates): use an \
             http:// receiver on the LAN, such as a local ntfy or Gotify server"
                .into()
        } else {
            "a URL starting with http://, like \"http://192.168.1.10:8080/netmon\"".into()
        });
    };
    if !text.is_ascii() || text.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err("a URL without spaces, control or non-ASCII characters".into());
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err("a URL without user:password@ (put a token in the path or query)".into());
    }
    let addr = match authority.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let host = authority.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = host.parse().map_err(|_| {
                format!(
                    "an IP address as the host, like \"http://192.168.1.10:8080/…\" or \
                     \"http://[fd00::10]/…\": netmon does not resolve host names ({authority:?})"
                )
            })?;
            if ip.is_ipv6() && !authority.starts_with('[') {
                return Err("an IPv6 host in brackets, like \"http://[fd00::10]:8080/…\"".into());
            }
            SocketAddr::new(ip, 80)
        }
    };
    if addr.port() == 0 {
        return Err("a port from 1 to 65535".into());
    }
    Ok(Some(WebhookUrl {
        addr,
        host: authority.to_owned(),
        path: path.split('#').next().unwrap_or("/").to_owned(),
    }))
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
            match post(&webhook.url, message) {
                Ok(()) => {
                    self.sent.increment(1);
                    self.pending.pop_front();
                }
                Err(e) if message.attempts >= self.settings.attempts => {
                    log::warn!(
                        "notify: webhook {}{} failed {} times, giving up on a message: {e}",
                        webhook.url.host,
                        webhook.url.path,
                        message.attempts
                    );
                    self.failed.increment(1);
                    self.pending.pop_front();
                }
                Err(e) => {
                    let wait = self.settings.retry_first * 2u32.pow(message.attempts - 1);
                    if message.attempts == 1 {
                        log::warn!(
                            "notify: webhook {}{}: {e}; retrying",
                            webhook.url.host,
                            webhook.url.path
                        );
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
fn post(url: &WebhookUrl, message: &Message) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&url.addr, TIMEOUT)
        .map_err(|e| format!("connecting to {}: {e}", url.addr))?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: netmon/{}\r\nContent-Type: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        url.path,
        url.host,
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
    stream
        .write_all(&bytes)
        .map_err(|e| format!("sending to {}: {e}", url.addr))?;
    // The status line is all that matters ("HTTP/1.1 200 OK\r\n").
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        let n = stream.read(&mut buf).map_err(|e| match e.kind() {
            // A read timeout is `WouldBlock` on Linux (SO_RCVTIMEO gives EAGAIN).
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("{} sent no answer within {} s", url.addr, TIMEOUT.as_secs())
            }
            _ => format!("reading the answer of {}: {e}", url.addr),
        })?;
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
        .ok_or_else(|| format!("{} answered something other than HTTP", url.addr))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{} answered HTTP status {status}", url.addr))
    }
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
        assert_eq!(u.addr, "192.168.1.10:8080".parse().unwrap());
        assert_eq!(u.host, "192.168.1.10:8080");
        assert_eq!(u.path, "/netmon?token=abc");
        let u = ok("http://[fd00::10]/message");
        assert_eq!(u.addr, "[fd00::10]:80".parse().unwrap());
        assert_eq!(ok("http://10.0.0.2").path, "/");
        assert_eq!(ok("http://10.0.0.2?t=1").path, "/?t=1");
        assert_eq!(parse_webhook_url("").unwrap(), None);
        for bad in [
            "https://ntfy.sh/topic",
            "ftp://10.0.0.2/",
            "http://ntfy.lan/topic",
            "http://fd00::10/x",
            "http://u:p@10.0.0.2/",
            "http://10.0.0.2:0/",
            "http://10.0.0.2/a b",
            "http://10.0.0.2/\r\nX: y",
        ] {
            assert!(parse_webhook_url(bad).is_err(), "{bad}");
        }
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
                "webhook_url = \"https://ntfy.sh/x\"",
                "notify.webhook_url",
                "https is not supported",
            ),
            (
                "webhook_url = \"http://ntfy.lan/x\"",
                "notify.webhook_url",
                "IP address",
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
