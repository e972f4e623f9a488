//! The server name in a TLS ClientHello (SNI): what site a LAN client asks for in the
//! first data it sends on a new connection to port 443 or 853, read from that TCP
//! payload.
//!
//! Layout (RFC 8446 §5.1 records, §4 handshake, §4.1.2 ClientHello — the same bytes as
//! TLS 1.0–1.2's; RFC 6066 §3 `server_name`):
//!
//! ```text
//! record     type(1)=22 version(2) length(2) fragment           fragments joined:
//! handshake  type(1)=1 length(3) body
//! body       legacy_version(2) random(32) session_id<0..32> cipher_suites<2..2^16-2>
//!            compression_methods<1..2^8-1> [extensions<0..2^16-1>]
//! extension  type(2) length(2) data         server_name (0): list<1..2^16-1> of
//!                                           name_type(1)=0 host_name<1..2^16-1>
//! ```
//!
//! The handshake message may span records, and the records TCP segments: Chrome's
//! ClientHello with its post-quantum key share is ≈ 1.8 KB, and Chrome shuffles its
//! extensions, so the name may sit in the second segment. [`parse`] reads the message
//! across the records it is given without copying them and says [`Hello::Incomplete`],
//! with the byte count to wait for, when the payload ends before the answer.
//!
//! Every byte is attacker-controlled: nothing here indexes unchecked, allocates by a
//! claimed length, or loops other than forward through the given bytes. The only
//! allocation is the returned name (≤ 253 bytes).
//!
//! When a name or an `encrypted_client_hello` extension is found and the payload ends
//! (or turns malformed) before the extensions do, what was found is the answer: waiting
//! for the rest only to learn that an ECH extension follows the name would hold every
//! split hello back for a rare case, and a client that sent a name did ask for it.

use crate::dns_name::normalize_name;

/// What one client's first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello with a usable `server_name` (`host_name`): the name, canonical as
    /// [`normalize_name`] writes DNS names (lowercase, no trailing dot), so it compares
    /// equal to the DNS answers' names.
    Name(String),
    /// A ClientHello with an `encrypted_client_hello` extension (type 0xfe0d,
    /// draft-ietf-tls-esni); `outer` is its cleartext `server_name`, if usable. With real
    /// ECH the site's name is encrypted and `outer` is the provider's public name, not the
    /// site. But a client may also send a *GREASE* ECH extension to a server without ECH
    /// (Chrome does), and then `outer` is the site: the two look the same on the wire, by
    /// design.
    Encrypted { outer: Option<String> },
    /// A complete ClientHello without a usable `server_name`: a connection by address,
    /// or a name that is not a hostname (empty, over 253 bytes, an address, a byte other
    /// than letters, digits, `-`, `_` and `.`).
    NoName,
    /// The bytes are the start of a ClientHello but end before its name (or ECH
    /// extension) and before the end of its extensions: the rest is in the next
    /// segment(s). `needed` is the payload length at which the ClientHello ends, record
    /// headers included — exact once its last record header is in; before that it counts
    /// one 5-byte header for the rest, so it may grow on a retry. It is always more than
    /// the bytes given; a caller buffers at most [`MAX_HELLO`] and gives up when
    /// `needed` is larger.
    Incomplete { needed: usize },
    /// Not the start of a ClientHello: another protocol on port 443, garbage, a
    /// ServerHello, SSL 2 or 3, a malformed ClientHello, or an empty payload.
    NotHello,
}

/// The most bytes a caller buffers for one ClientHello, and the most [`parse`] reads:
/// one full record (its header and 2^14 bytes). Real ClientHellos, post-quantum key
/// shares included, are far smaller.
pub const MAX_HELLO: usize = RECORD_HEADER + MAX_RECORD;

/// `ContentType.handshake` (RFC 8446 §5.1).
const CONTENT_HANDSHAKE: u8 = 22;
/// Record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// Largest record fragment; a larger one is a `record_overflow` (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;
/// Record-layer versions accepted: SSL 3.0 (some clients' record layer for their first
/// flight) to TLS 1.3. The ClientHello's own version is checked against
/// [`CLIENT_VERSIONS`].
const RECORD_MAJOR: u8 = 3;
const MAX_RECORD_MINOR: u8 = 4;
/// `HandshakeType.client_hello`.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// `legacy_version` of a ClientHello: TLS 1.0 to 1.2 (a TLS 1.3 client sends 0x0303);
/// 0x0304 is tolerated. SSL 3.0 (0x0300) is not TLS.
const CLIENT_VERSIONS: std::ops::RangeInclusive<u16> = 0x0301..=0x0304;
/// `Random`, and the longest `legacy_session_id`.
const RANDOM_LEN: usize = 32;
const MAX_SESSION_ID: usize = 32;
/// `ExtensionType.server_name` (RFC 6066 §3) and `NameType.host_name`.
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;
/// `ExtensionType.encrypted_client_hello` (draft-ietf-tls-esni, "IANA Considerations").
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
/// Longest hostname in text form, without its trailing dot (RFC 1035 §3.1: 255 bytes
/// on the wire).
const MAX_HOST_NAME: usize = 253;

/// What the first bytes of one connection say; see [`Hello`]. Reads at most
/// [`MAX_HELLO`] bytes of `payload` and ignores anything after the ClientHello (a
/// TLS 1.3 client may send `change_cipher_spec` and 0-RTT data behind it).
pub fn parse(payload: &[u8]) -> Hello {
    let payload = payload.get(..MAX_HELLO).unwrap_or(payload);
    if payload.is_empty() {
        return Hello::NotHello;
    }
    let mut bytes = HelloBytes::new(payload);
    let mut seen = Seen::default();
    let end = read_client_hello(&mut bytes, &mut seen);
    if seen.encrypted {
        return Hello::Encrypted { outer: seen.name };
    }
    if let Some(name) = seen.name {
        return Hello::Name(name);
    }
    match end {
        Ok(()) => Hello::NoName,
        Err(Stop::Short) => Hello::Incomplete {
            needed: bytes.needed(),
        },
        Err(Stop::Malformed) => Hello::NotHello,
    }
}

/// What the extensions read so far hold.
#[derive(Default)]
struct Seen {
    /// The first `host_name` of the first `server_name` extension, if usable.
    name: Option<String>,
    /// An `encrypted_client_hello` extension was there.
    encrypted: bool,
}

/// Why reading stopped before the end of the ClientHello.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// The payload ends first: the rest is in later segments.
    Short,
    /// A record or field breaks the format: not a ClientHello (whatever the rest holds).
    Malformed,
}

/// Reads the ClientHello down to its last extension, noting the name and ECH in `seen`
/// as they come, so a caller still has them when reading stops early.
fn read_client_hello(bytes: &mut HelloBytes<'_>, seen: &mut Seen) -> Result<(), Stop> {
    if bytes.u8()? != HANDSHAKE_CLIENT_HELLO {
        return Err(Stop::Malformed);
    }
    let length = bytes.u24()?;
    bytes.start_body(length);
    if !CLIENT_VERSIONS.contains(&bytes.u16()?) {
        return Err(Stop::Malformed);
    }
    bytes.skip(RANDOM_LEN)?;
    let session_id = usize::from(bytes.u8()?);
    if session_id > MAX_SESSION_ID {
        return Err(Stop::Malformed);
    }
    bytes.skip(session_id)?;
    let cipher_suites = usize::from(bytes.u16()?);
    if cipher_suites == 0 || cipher_suites % 2 != 0 {
        return Err(Stop::Malformed);
    }
    bytes.skip(cipher_suites)?;
    let compression_methods = usize::from(bytes.u8()?);
    if compression_methods == 0 {
        return Err(Stop::Malformed);
    }
    bytes.skip(compression_methods)?;
    // A TLS 1.0–1.2 ClientHello may end here, without extensions.
    if bytes.message_left() > 0 {
        let extensions = usize::from(bytes.u16()?);
        if extensions != bytes.message_left() {
            return Err(Stop::Malformed);
        }
        let mut server_name_seen = false;
        while bytes.message_left() > 0 {
            let kind = bytes.u16()?;
            let len = usize::from(bytes.u16()?);
            if len > bytes.message_left() {
                return Err(Stop::Malformed);
            }
            match kind {
                EXT_SERVER_NAME if !server_name_seen => {
                    server_name_seen = true;
                    read_server_name(bytes, len, &mut seen.name)?;
                }
                EXT_ENCRYPTED_CLIENT_HELLO => {
                    seen.encrypted = true;
                    bytes.skip(len)?;
                }
                _ => bytes.skip(len)?,
            }
        }
    }
    bytes.finish()
}

/// Reads a `server_name` extension of `len` bytes; its first `host_name` entry goes to
/// `name` when it is a usable hostname.
fn read_server_name(
    bytes: &mut HelloBytes<'_>,
    len: usize,
    name: &mut Option<String>,
) -> Result<(), Stop> {
    if len < 2 {
        return Err(Stop::Malformed);
    }
    let list = usize::from(bytes.u16()?);
    if list == 0 || list != len - 2 {
        return Err(Stop::Malformed);
    }
    let mut left = list;
    let mut host_name_seen = false;
    while left > 0 {
        if left < 3 {
            return Err(Stop::Malformed);
        }
        let name_type = bytes.u8()?;
        let n = usize::from(bytes.u16()?);
        left -= 3;
        if n > left {
            return Err(Stop::Malformed);
        }
        left -= n;
        // Room for the longest name plus a trailing dot; a longer one is skipped unread.
        let mut raw = [0u8; MAX_HOST_NAME + 1];
        match raw.get_mut(..n) {
            Some(raw) if name_type == NAME_TYPE_HOST_NAME && !host_name_seen => {
                host_name_seen = true;
                bytes.fill(raw)?;
                *name = host_name(raw);
            }
            _ => {
                host_name_seen |= name_type == NAME_TYPE_HOST_NAME;
                bytes.skip(n)?;
            }
        }
    }
    Ok(())
}

/// The canonical text of a `host_name`, or `None` when it is not a hostname: empty,
/// longer than [`MAX_HOST_NAME`] without its trailing dot, an empty label, a byte other
/// than letters, digits, `-`, `_` and `.`, or an address — RFC 6066 §3 forbids literal
/// addresses, and a name whose last label is a number is one (WHATWG URL host parsing;
/// no top-level domain is numeric). A name that is none of these needs no escaping, so
/// [`normalize_name`] only lowercases it.
fn host_name(raw: &[u8]) -> Option<String> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_empty() || raw.len() > MAX_HOST_NAME {
        return None;
    }
    let hostname_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !raw.iter().all(hostname_byte) || raw.split(|&b| b == b'.').any(<[u8]>::is_empty) {
        return None;
    }
    let last_label = raw.rsplit(|&b| b == b'.').next().unwrap_or(raw);
    if last_label.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    Some(normalize_name(text))
}

/// The bytes of one handshake message, read across the handshake records that carry it
/// (in place: no copy, no buffer), with the message's own length as the limit.
struct HelloBytes<'a> {
    payload: &'a [u8],
    /// The next payload byte to read.
    pos: usize,
    /// Where the current record ends, as its header claims (possibly past the payload);
    /// equal to `pos` when a record header comes next.
    record_end: usize,
    /// Bytes of the message not read yet: of its 4-byte header until [`Self::start_body`],
    /// then of its body.
    message_left: usize,
    /// The handshake header has been read.
    in_body: bool,
}

impl<'a> HelloBytes<'a> {
    fn new(payload: &'a [u8]) -> Self {
        HelloBytes {
            payload,
            pos: 0,
            record_end: 0,
            message_left: 4,
            in_body: false,
        }
    }

    /// Starts counting the body, `length` bytes as the handshake header claims.
    fn start_body(&mut self, length: usize) {
        self.message_left = length;
        self.in_body = true;
    }

    fn message_left(&self) -> usize {
        self.message_left
    }

    /// Up to `want` (≥ 1) next bytes of the message, fewer at a record or payload end.
    /// Reading past the message is malformed; running out of payload is short.
    fn chunk(&mut self, want: usize) -> Result<&'a [u8], Stop> {
        if want > self.message_left {
            return Err(Stop::Malformed);
        }
        if self.pos == self.record_end {
            self.open_record()?;
        }
        let available = self
            .payload
            .len()
            .min(self.record_end)
            .saturating_sub(self.pos);
        let n = want.min(available);
        let chunk = self
            .payload
            .get(self.pos..self.pos + n)
            .filter(|c| !c.is_empty())
            .ok_or(Stop::Short)?;
        self.pos += n;
        self.message_left -= n;
        Ok(chunk)
    }

    /// Reads the record header at `pos`. Each header byte present is checked even when
    /// the header is cut, so a cut header of another protocol is not taken for a hello.
    fn open_record(&mut self) -> Result<(), Stop> {
        let rest = self.payload.get(self.pos..).unwrap_or_default();
        let header = rest.get(..RECORD_HEADER).unwrap_or(rest);
        let valid = |i: usize, ok: fn(u8) -> bool| header.get(i).is_none_or(|&b| ok(b));
        if !(valid(0, |b| b == CONTENT_HANDSHAKE)
            && valid(1, |b| b == RECORD_MAJOR)
            && valid(2, |b| b <= MAX_RECORD_MINOR)
            && valid(3, |b| usize::from(b) << 8 <= MAX_RECORD))
        {
            return Err(Stop::Malformed);
        }
        let [_, _, _, high, low] = *header else {
            return Err(Stop::Short);
        };
        // RFC 8446 §5.1: no zero-length handshake fragments.
        let length = usize::from(u16::from_be_bytes([high, low]));
        if length == 0 || length > MAX_RECORD {
            return Err(Stop::Malformed);
        }
        self.pos += RECORD_HEADER;
        self.record_end = self.pos + length;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        self.chunk(1)?.first().copied().ok_or(Stop::Short)
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn u24(&mut self) -> Result<usize, Stop> {
        let [a, b, c] = [self.u8()?, self.u8()?, self.u8()?];
        Ok((usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c))
    }

    fn skip(&mut self, mut n: usize) -> Result<(), Stop> {
        while n > 0 {
            n -= self.chunk(n)?.len();
        }
        Ok(())
    }

    fn fill(&mut self, out: &mut [u8]) -> Result<(), Stop> {
        let mut done = 0;
        while let Some(rest) = out.get_mut(done..).filter(|r| !r.is_empty()) {
            let chunk = self.chunk(rest.len())?;
            rest.get_mut(..chunk.len())
                .ok_or(Stop::Malformed)?
                .copy_from_slice(chunk);
            done += chunk.len();
        }
        Ok(())
    }

    /// At the end of the message: the record must end with it, as a client sends
    /// nothing else in a handshake record before the server answers.
    fn finish(&self) -> Result<(), Stop> {
        if self.message_left == 0 && self.pos == self.record_end {
            Ok(())
        } else {
            Err(Stop::Malformed)
        }
    }

    /// The payload length at which the message ends: `needed` of [`Hello::Incomplete`].
    /// The rest of the message after the current record is counted as one more record.
    fn needed(&self) -> usize {
        let in_record = self.record_end.saturating_sub(self.pos);
        let end = if self.message_left <= in_record {
            self.pos + self.message_left
        } else {
            self.record_end + RECORD_HEADER + (self.message_left - in_record)
        };
        // Before the handshake header is in, the message fills at least its first record.
        if self.in_body {
            end
        } else {
            end.max(self.record_end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real ClientHellos; fixtures/tls/README.md says how each was captured.
    const VIDEO: &[u8] = include_bytes!("fixtures/tls/hello-video.example.test.bin");
    const SHOP_TLS12: &[u8] = include_bytes!("fixtures/tls/hello-tls12-Shop.Example.TEST.bin");
    const BY_ADDRESS: &[u8] = include_bytes!("fixtures/tls/hello-by-address.bin");
    const BIG: &[u8] = include_bytes!("fixtures/tls/hello-big-cdn.example.test.bin");
    const RECORDS512: &[u8] = include_bytes!("fixtures/tls/hello-records512-cdn.example.test.bin");

    /// A typical TCP segment's payload (Ethernet MTU, IPv4 and TCP headers, no options).
    const SEGMENT: usize = 1460;

    fn name(n: &str) -> Hello {
        Hello::Name(n.to_owned())
    }

    /// The handshake message of a capture: its records' fragments joined.
    fn message(capture: &[u8]) -> Vec<u8> {
        let mut rest = capture;
        let mut message = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            message.extend_from_slice(&rest[5..5 + len]);
            rest = &rest[5 + len..];
        }
        message
    }

    /// A handshake message in TLS 1.0-versioned handshake records of `size` bytes (the
    /// last one shorter), as clients frame their first flight.
    fn framed(message: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for fragment in message.chunks(size) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
            out.extend_from_slice(fragment);
        }
        out
    }

    /// The body of a capture's ClientHello up to its extensions, and its extensions.
    fn parts(capture: &[u8]) -> (Vec<u8>, Vec<(u16, Vec<u8>)>) {
        let body = &message(capture)[4..];
        let mut p = 2 + 32;
        p += 1 + usize::from(body[p]);
        p += 2 + usize::from(u16::from_be_bytes([body[p], body[p + 1]]));
        p += 1 + usize::from(body[p]);
        let head = body[..p].to_vec();
        let mut rest = &body[p + 2..];
        let mut extensions = Vec::new();
        while !rest.is_empty() {
            let kind = u16::from_be_bytes([rest[0], rest[1]]);
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            extensions.push((kind, rest[4..4 + len].to_vec()));
            rest = &rest[4 + len..];
        }
        (head, extensions)
    }

    /// A capture with its extensions edited, lengths fixed, in one record.
    fn edited(capture: &[u8], edit: impl FnOnce(&mut Vec<(u16, Vec<u8>)>)) -> Vec<u8> {
        let (head, mut extensions) = parts(capture);
        edit(&mut extensions);
        let mut all = Vec::new();
        for (kind, data) in &extensions {
            all.extend_from_slice(&kind.to_be_bytes());
            all.extend_from_slice(&(data.len() as u16).to_be_bytes());
            all.extend_from_slice(data);
        }
        let mut body = head;
        body.extend_from_slice(&(all.len() as u16).to_be_bytes());
        body.extend_from_slice(&all);
        let mut message = vec![1];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        framed(&message, MAX_RECORD)
    }

    /// A `server_name` extension with one `host_name`.
    fn server_name(host: &[u8]) -> (u16, Vec<u8>) {
        let mut data = ((host.len() + 3) as u16).to_be_bytes().to_vec();
        data.push(0);
        data.extend_from_slice(&(host.len() as u16).to_be_bytes());
        data.extend_from_slice(host);
        (EXT_SERVER_NAME, data)
    }

    /// A capture with its `server_name` replaced by one for `host`.
    fn with_host(capture: &[u8], host: &[u8]) -> Vec<u8> {
        edited(capture, |e| {
            e.retain(|(k, _)| *k != EXT_SERVER_NAME);
            e.insert(0, server_name(host));
        })
    }

    /// An `encrypted_client_hello` extension as a client sends it (outer, cipher suite
    /// HKDF-SHA256/AES-128-GCM, config id, a 32-byte key share and a 144-byte payload).
    fn ech() -> (u16, Vec<u8>) {
        let mut data = vec![0, 0, 1, 0, 1, 0x2a, 0, 32];
        data.extend_from_slice(&[0x5a; 32]);
        data.extend_from_slice(&144u16.to_be_bytes());
        data.extend_from_slice(&[0xa5; 144]);
        (EXT_ENCRYPTED_CLIENT_HELLO, data)
    }

    /// Checks every cut of `capture` (1 byte to all but one) against `whole`, the answer
    /// for the whole capture: a cut gives that answer or asks for more, and what it asks
    /// for is right — exactly the capture's length once the last record header is in,
    /// never more before. Returns how many cuts gave the answer.
    fn check_every_cut(capture: &[u8], whole: &Hello) -> usize {
        assert_eq!(&parse(capture), whole);
        let last_record = last_record_start(capture);
        let mut answered = 0;
        for cut in 1..capture.len() {
            match parse(&capture[..cut]) {
                Hello::Incomplete { needed } => {
                    assert!(
                        needed > cut && needed <= capture.len(),
                        "cut {cut}: {needed}"
                    );
                    if cut >= last_record + RECORD_HEADER {
                        assert_eq!(needed, capture.len(), "cut {cut}");
                    }
                }
                part => {
                    assert_eq!(&part, whole, "cut {cut}");
                    answered += 1;
                }
            }
        }
        answered
    }

    fn last_record_start(capture: &[u8]) -> usize {
        let mut start = 0;
        loop {
            let len = usize::from(u16::from_be_bytes([capture[start + 3], capture[start + 4]]));
            if start + 5 + len >= capture.len() {
                return start;
            }
            start += 5 + len;
        }
    }

    #[test]
    fn names_from_real_hellos() {
        assert_eq!(parse(VIDEO), name("video.example.test"));
        assert_eq!(parse(BIG), name("cdn.example.test"));
        assert_eq!(parse(RECORDS512), name("cdn.example.test"));
    }

    #[test]
    fn names_are_case_folded() {
        assert_eq!(parse(SHOP_TLS12), name("shop.example.test"));
        assert_eq!(
            parse(&with_host(VIDEO, b"WWW.Example.TEST.")),
            name("www.example.test")
        );
    }

    #[test]
    fn a_connection_by_address_has_no_name() {
        assert_eq!(parse(BY_ADDRESS), Hello::NoName);
    }

    #[test]
    fn every_cut_of_a_real_hello_asks_for_the_rest_or_answers() {
        for capture in [VIDEO, BIG, RECORDS512] {
            let whole = parse(capture);
            assert!(matches!(whole, Hello::Name(_)), "{whole:?}");
            assert!(check_every_cut(capture, &whole) > 0);
        }
        assert!(check_every_cut(SHOP_TLS12, &name("shop.example.test")) > 0);
        // Without a name the answer needs every byte.
        assert_eq!(check_every_cut(BY_ADDRESS, &Hello::NoName), 0);
        // In 100-byte records (542 bytes), a cut in the second record counts one record
        // for the rest, where four follow: 15 bytes short, until their headers are in.
        let six = framed(&message(BY_ADDRESS), 100);
        assert_eq!(six.len(), 542);
        assert_eq!(parse(&six[..150]), Hello::Incomplete { needed: 527 });
        assert_eq!(check_every_cut(&six, &Hello::NoName), 0);
    }

    #[test]
    fn a_caller_following_needed_gets_the_answer() {
        for capture in [VIDEO, BY_ADDRESS, BIG, RECORDS512] {
            let whole = parse(capture);
            for first in [1, 3, 5, 9, 100, SEGMENT.min(capture.len())] {
                let mut have = first;
                let mut rounds = 0;
                let answer = loop {
                    match parse(&capture[..have]) {
                        Hello::Incomplete { needed } => {
                            assert!(needed <= MAX_HELLO && needed > have);
                            have = needed;
                            rounds += 1;
                        }
                        answer => break answer,
                    }
                };
                assert_eq!(answer, whole);
                assert!(rounds <= 5, "{rounds} rounds from {first} bytes");
            }
        }
    }

    #[test]
    fn a_name_after_the_key_share_is_in_the_second_segment() {
        // Chrome's order can put the server_name last, behind a 1 KB key share.
        let hello = edited(BIG, |e| {
            let sni = e.remove(0);
            assert_eq!(sni.0, EXT_SERVER_NAME);
            e.push(sni);
        });
        assert_eq!(hello.len(), BIG.len());
        assert_eq!(
            parse(&hello[..SEGMENT]),
            Hello::Incomplete { needed: BIG.len() }
        );
        assert_eq!(parse(&hello), name("cdn.example.test"));
        check_every_cut(&hello, &name("cdn.example.test"));
    }

    #[test]
    fn a_hello_over_two_records_is_joined() {
        let message = message(VIDEO);
        let at = message
            .windows(b"video.example.test".len())
            .position(|w| w == b"video.example.test")
            .unwrap();
        // Cut inside the name, inside the server_name header, before it.
        for cut in [at + 5, at - 2, 60] {
            let mut two = framed(&message[..cut], MAX_RECORD);
            two.extend_from_slice(&framed(&message[cut..], MAX_RECORD));
            assert_eq!(two.len(), VIDEO.len() + 5);
            check_every_cut(&two, &name("video.example.test"));
        }
        // One byte per record: 512 records.
        let tiny = framed(&message, 1);
        assert_eq!(parse(&tiny), name("video.example.test"));
    }

    #[test]
    fn ech_hides_the_name() {
        let after = edited(VIDEO, |e| e.insert(1, ech()));
        assert_eq!(
            parse(&after),
            Hello::Encrypted {
                outer: Some("video.example.test".into())
            }
        );
        let before = edited(VIDEO, |e| e.insert(0, ech()));
        assert_eq!(parse(&before), parse(&after));
        let no_outer = edited(BY_ADDRESS, |e| e.push(ech()));
        assert_eq!(parse(&no_outer), Hello::Encrypted { outer: None });
        // Cut after the ECH extension but before the name: encrypted, name unknown.
        let ech_end = 5 + 4 + parts(VIDEO).0.len() + 2 + 4 + ech().1.len();
        assert_eq!(
            parse(&before[..ech_end + 2]),
            Hello::Encrypted { outer: None }
        );
        // Cut after the name but before the ECH extension: the name, by choice.
        let sni_end =
            5 + 4 + parts(VIDEO).0.len() + 2 + 4 + server_name(b"video.example.test").1.len();
        assert_eq!(parse(&after[..sni_end + 1]), name("video.example.test"));
    }

    #[test]
    fn names_that_are_not_hostnames_are_no_name() {
        let hosts: &[&[u8]] = &[
            b"",
            b".",
            &[b'a'; 300],
            &[b'a'; 254],
            b"video\0.example.test",
            b"video.example.test/",
            b"evil.test/../x",
            b"a..b.test",
            b".a.test",
            b"192.0.2.7",
            b"192.0.2.7.",
            b"[2001:db8::1]",
            b"2001:db8::1",
            b"caf\xc3\xa9.test",
            b"sp ace.test",
            b"back\\slash.test",
        ];
        for host in hosts {
            assert_eq!(parse(&with_host(VIDEO, host)), Hello::NoName, "{host:?}");
        }
        let longest = [
            &[b'a'; 63][..],
            &[b'b'; 63][..],
            &[b'c'; 63][..],
            &[b'd'; 61][..],
        ]
        .join(&b'.');
        assert_eq!(longest.len(), 253);
        let expected = std::str::from_utf8(&longest).unwrap();
        assert_eq!(parse(&with_host(VIDEO, &longest)), name(expected));
        let mut dotted = longest.clone();
        dotted.push(b'.');
        assert_eq!(parse(&with_host(VIDEO, &dotted)), name(expected));
        assert_eq!(
            parse(&with_host(VIDEO, b"_dmarc.x-1.test")),
            name("_dmarc.x-1.test")
        );
        assert_eq!(
            parse(&with_host(VIDEO, b"1.2.3.4.nip.io")),
            name("1.2.3.4.nip.io")
        );
    }

    #[test]
    fn lengths_past_their_end_are_not_hellos() {
        let body = 5 + 4;
        let head = parts(BY_ADDRESS).0.len();
        let patch = |at: usize, bytes: &[u8]| {
            let mut h = BY_ADDRESS.to_vec();
            h[at..at + bytes.len()].copy_from_slice(bytes);
            parse(&h)
        };
        // The handshake length past the record (and past MAX_HELLO).
        assert_eq!(patch(6, &[0xff, 0xff, 0xff]), Hello::NotHello);
        // The extensions' length, the first extension's length, past the message.
        assert_eq!(patch(body + head, &[0xff, 0xff]), Hello::NotHello);
        assert_eq!(patch(body + head + 4, &[0xff, 0xff]), Hello::NotHello);
        // A session id over 32 bytes; cipher suites of an odd length.
        assert_eq!(patch(body + 34, &[33]), Hello::NotHello);
        assert_eq!(patch(body + 35 + 32, &[0, 3]), Hello::NotHello);
        // A server_name list or entry longer than its extension.
        let mut sni = server_name(b"video.example.test");
        sni.1[4] = 0xff;
        assert_eq!(
            parse(&edited(BY_ADDRESS, |e| e.insert(0, sni))),
            Hello::NotHello
        );
        let mut sni = server_name(b"video.example.test");
        sni.1[1] += 1;
        assert_eq!(
            parse(&edited(BY_ADDRESS, |e| e.insert(0, sni))),
            Hello::NotHello
        );
        // A record that goes on after the hello.
        let mut longer = BY_ADDRESS.to_vec();
        longer[4] += 1;
        longer.push(0);
        assert_eq!(parse(&longer), Hello::NotHello);
    }

    #[test]
    fn a_claimed_length_beyond_max_hello_is_reported_not_buffered() {
        // A record of 2^14 bytes holding the start of a 64 KB message: the caller sees
        // that it cannot buffer the rest.
        let mut hello = vec![22, 3, 1, 0x40, 0, 1, 0x01, 0, 0, 3, 3];
        hello.extend_from_slice(&[0; 20]);
        let Hello::Incomplete { needed } = parse(&hello) else {
            panic!("{:?}", parse(&hello));
        };
        assert_eq!(needed, MAX_HELLO + 5 + (0x10000 - (MAX_RECORD - 4)));
        assert!(needed > MAX_HELLO);
        // Bytes past MAX_HELLO are not read.
        let mut padded = VIDEO.to_vec();
        padded.resize(100_000, 0x16);
        assert_eq!(parse(&padded), name("video.example.test"));
    }

    #[test]
    fn records_that_are_not_handshake_records_are_not_hellos() {
        let with_header = |header: [u8; 5]| {
            let mut h = VIDEO.to_vec();
            h[..5].copy_from_slice(&header);
            parse(&h)
        };
        let len = ((VIDEO.len() - 5) as u16).to_be_bytes();
        assert_eq!(with_header([22, 3, 1, 0xff, 0xff]), Hello::NotHello);
        assert_eq!(with_header([22, 3, 1, 0x40, 0x01]), Hello::NotHello);
        assert_eq!(with_header([22, 3, 1, 0, 0]), Hello::NotHello);
        assert_eq!(parse(&[22, 3, 1, 0xff]), Hello::NotHello);
        assert_eq!(with_header([23, 3, 3, len[0], len[1]]), Hello::NotHello);
        assert_eq!(with_header([21, 3, 3, len[0], len[1]]), Hello::NotHello);
        assert_eq!(with_header([22, 2, 0, len[0], len[1]]), Hello::NotHello);
        assert_eq!(with_header([22, 3, 5, len[0], len[1]]), Hello::NotHello);
        // SSL 3.0 and TLS 1.3 record versions are fine; the hello's own must be TLS.
        assert_eq!(with_header([22, 3, 0, len[0], len[1]]), parse(VIDEO));
        assert_eq!(with_header([22, 3, 4, len[0], len[1]]), parse(VIDEO));
        let mut ssl3 = VIDEO.to_vec();
        ssl3[9..11].copy_from_slice(&[3, 0]);
        assert_eq!(parse(&ssl3), Hello::NotHello);
        // A ServerHello; an SSL 2 ClientHello (RFC 6101 appendix E).
        let mut server_hello = VIDEO.to_vec();
        server_hello[5] = 2;
        assert_eq!(parse(&server_hello), Hello::NotHello);
        assert_eq!(
            parse(&[0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15]),
            Hello::NotHello
        );
        // The rest of a split hello without its start.
        assert_eq!(parse(&VIDEO[VIDEO.len() / 3..]), Hello::NotHello);
    }

    #[test]
    fn other_protocols_and_empty_payloads_are_not_hellos() {
        assert_eq!(parse(b""), Hello::NotHello);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: video.example.test\r\n\r\n"),
            Hello::NotHello
        );
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), Hello::NotHello);
        assert_eq!(parse(&[0; 40]), Hello::NotHello);
        // A first byte that could start a hello is all there is to go on.
        assert_eq!(parse(&[22]), Hello::Incomplete { needed: 9 });
    }

    #[test]
    fn bytes_after_the_hello_are_ignored() {
        // TLS 1.3 middlebox compatibility: change_cipher_spec, then 0-RTT data.
        let mut flight = VIDEO.to_vec();
        flight.extend_from_slice(&[20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 4, 1, 2, 3, 4]);
        assert_eq!(parse(&flight), name("video.example.test"));
        let mut flight = BY_ADDRESS.to_vec();
        flight.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
        assert_eq!(parse(&flight), Hello::NoName);
    }
}
