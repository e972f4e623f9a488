//! Netlink framing and socket handling shared by the kernel collectors (conntrack in [`super::ctnetlink`],
//! NFLOG in [`super::nflog`], the neighbour table in [`super::identity`]): the messages
//! of a datagram, the attributes of one level, and fixed-size reads of their values.
//!
//! Layouts come from `include/uapi/linux/netlink.h` (`struct nlmsghdr`, `struct nlattr`,
//! `NLMSG_ALIGN`, `NLA_ALIGN`). Everything walks the received bytes in place: no
//! allocation per message or attribute, and every function returns [`FrameError`] on
//! truncated or inconsistent input instead of panicking on kernel bytes.
//!
//! Byte order: the netlink and attribute headers are in the host's order (`ne_*`); the
//! values netfilter puts in attributes are big-endian (`be*`, the kernel's
//! `nla_put_be16/32/64`), whether or not the sender set `NLA_F_NET_BYTEORDER`. Routers
//! are often big-endian (mips) or 32-bit, so the tests below say which order they check.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use neli::socket::NlSocket;

/// Netlink control message types (`linux/netlink.h`).
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
/// Types below this are control messages (`NLMSG_MIN_TYPE`), not a subsystem's.
pub const NLMSG_MIN_TYPE: u16 = 16;
/// `NLM_F_REQUEST` and `NLM_F_ACK` (`linux/netlink.h`): flags of a request we send.
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
/// `sizeof(struct nlmsghdr)`, already 4-aligned.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nlattr)`.
pub const NLA_HDRLEN: usize = 4;
/// `sizeof(struct nfgenmsg)` (`linux/netfilter/nfnetlink.h`): the header every
/// netfilter message (conntrack, NFLOG) has before its attributes.
pub const NFGENMSG_LEN: usize = 4;
/// Flag bits in `nla_type` (`linux/netlink.h`). Nested attributes carry `NLA_F_NESTED`
/// since Linux 5.2; both are masked off the type before matching.
pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// Why bytes could not be framed or read as a fixed-size value. Each collector wraps it
/// in its own error (the attribute or header it was reading is named in `what`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{what} is {len} bytes, expected {expected}")]
    Length {
        what: &'static str,
        len: usize,
        expected: usize,
    },
}

// ---------------------------------------------------------------------------------------
// Walking messages and attributes in place
// ---------------------------------------------------------------------------------------

/// One netlink message inside a received datagram, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

impl NlMsg<'_> {
    /// The error code of an `NLMSG_ERROR` (`struct nlmsgerr { int error; … }`): 0 is an
    /// ack, a negative errno a refusal. `None` when the payload is too short.
    pub fn error_code(&self) -> Option<i32> {
        self.payload.get(..4).map(ne_i32)
    }
}

/// The messages of one datagram (`NLMSG_NEXT`). A dump reply packs many; an event
/// datagram holds one. Stops after the first malformed header: the rest cannot be framed.
pub struct NlMessages<'a> {
    rest: &'a [u8],
}

impl<'a> NlMessages<'a> {
    pub fn new(datagram: &'a [u8]) -> NlMessages<'a> {
        NlMessages { rest: datagram }
    }
}

impl<'a> Iterator for NlMessages<'a> {
    type Item = Result<NlMsg<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Some(hdr) = rest.get(..NLMSG_HDRLEN) else {
            return Some(Err(FrameError::Truncated("netlink message header")));
        };
        let len = ne_u32(&hdr[0..4]) as usize;
        if len < NLMSG_HDRLEN {
            return Some(Err(FrameError::Length {
                what: "nlmsg_len",
                len,
                expected: NLMSG_HDRLEN,
            }));
        }
        let Some(payload) = rest.get(NLMSG_HDRLEN..len) else {
            return Some(Err(FrameError::Truncated("netlink message")));
        };
        self.rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(NlMsg {
            ty: ne_u16(&hdr[4..6]),
            flags: ne_u16(&hdr[6..8]),
            seq: ne_u32(&hdr[8..12]),
            payload,
        }))
    }
}

/// The attributes of one level (`nla_for_each_attr`): yields the type with the
/// `NLA_F_*` flag bits masked off, and the payload without padding. Stops after the first
/// malformed header.
#[derive(Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(buf: &'a [u8]) -> Attrs<'a> {
        Attrs { rest: buf }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Some(hdr) = rest.get(..NLA_HDRLEN) else {
            return Some(Err(FrameError::Truncated("attribute header")));
        };
        let len = usize::from(ne_u16(&hdr[0..2]));
        if len < NLA_HDRLEN {
            return Some(Err(FrameError::Length {
                what: "nla_len",
                len,
                expected: NLA_HDRLEN,
            }));
        }
        let Some(payload) = rest.get(NLA_HDRLEN..len) else {
            return Some(Err(FrameError::Truncated("attribute")));
        };
        // The last attribute's padding may be cut off by the enclosing length.
        self.rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok((ne_u16(&hdr[2..4]) & NLA_TYPE_MASK, payload)))
    }
}

// ---------------------------------------------------------------------------------------
// Building requests
// ---------------------------------------------------------------------------------------

/// A request to send: `struct nlmsghdr` (host order; pid 0, the kernel fills in the
/// sender) followed by `body`, which the caller lays out (and pads) itself.
pub fn request(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// Appends one attribute (`struct nlattr`, host order) and its padding to `buf`.
pub fn put_attr(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = NLA_HDRLEN + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

// ---------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------

/// `SO_RCVTIMEO` on a netlink socket, so its thread notices shutdown within `t` when
/// nothing arrives. `who` names the collector in the warning.
pub fn set_receive_timeout(sock: &NlSocket, t: Duration, who: &str) {
    // Both fields' widths follow the target's C ABI (32 or 64 bits); a timeout past
    // what 32 bits hold is capped.
    #[allow(clippy::unnecessary_fallible_conversions)]
    let tv = libc::timeval {
        tv_sec: t.as_secs().try_into().unwrap_or(i32::MAX.into()),
        tv_usec: t.subsec_micros().try_into().unwrap_or(0),
    };
    // SAFETY: the fd is our socket; the value is a timeval of the given size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::warn!(
            "{who}: cannot set a receive timeout: {}",
            io::Error::last_os_error()
        );
    }
}

/// What a failed netlink `recv` means to a collector's loop.
pub enum RecvFailure {
    /// The receive timeout, or a signal: nothing arrived; go on.
    Quiet,
    /// `ENOBUFS`: the kernel dropped messages for this socket (count it; a dump or
    /// the next events bring the state back).
    Overrun,
    /// Anything else: log it and back off briefly.
    Other,
}

pub fn recv_failure(e: &io::Error) -> RecvFailure {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ) {
        RecvFailure::Quiet
    } else if e.raw_os_error() == Some(libc::ENOBUFS) {
        RecvFailure::Overrun
    } else {
        RecvFailure::Other
    }
}

/// What a netlink collector's loop does when `recv` failed: nothing for a timeout, count
/// an overrun as `result="overrun"` in `counter`, log anything else (prefixed by `what`)
/// and back off briefly so a persistent error does not spin.
pub fn on_recv_error(e: &io::Error, counter: &'static str, what: &str) {
    match recv_failure(e) {
        RecvFailure::Quiet => {}
        RecvFailure::Overrun => {
            metrics::counter!(counter, "result" => "overrun").increment(1);
        }
        RecvFailure::Other => {
            log::warn!("{what}: {e}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixed-size reads
// ---------------------------------------------------------------------------------------

/// An attribute value of exactly `N` bytes; `what` names it in the error.
pub fn array<const N: usize>(p: &[u8], what: &'static str) -> Result<[u8; N], FrameError> {
    p.try_into().map_err(|_| FrameError::Length {
        what,
        len: p.len(),
        expected: N,
    })
}

pub fn u8_of(p: &[u8], what: &'static str) -> Result<u8, FrameError> {
    array::<1>(p, what).map(|b| b[0])
}

/// Big-endian (network order) values: what netfilter puts in its attributes.
pub fn be16(p: &[u8], what: &'static str) -> Result<u16, FrameError> {
    array(p, what).map(u16::from_be_bytes)
}

pub fn be32(p: &[u8], what: &'static str) -> Result<u32, FrameError> {
    array(p, what).map(u32::from_be_bytes)
}

pub fn be64(p: &[u8], what: &'static str) -> Result<u64, FrameError> {
    array(p, what).map(u64::from_be_bytes)
}

/// Host-order header fields. Callers pass slices of exactly the right length (a header
/// they already took whole with `get(..LEN)`).
pub fn ne_u16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

pub fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

pub fn ne_i32(b: &[u8]) -> i32 {
    i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// `NLMSG_ALIGN` / `NLA_ALIGN`: lengths round up to 4 bytes.
pub fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// A netlink datagram captured on a little-endian machine (the fixtures under
/// `fixtures/`, taken on x86-64), in this CPU's byte order: message headers, `NLMSG_DONE`
/// and `NLMSG_ERROR` codes and every attribute header (recursing into nested ones, which
/// the kernel flags `NLA_F_NESTED`) are host order on the wire; attribute payloads are
/// network order and stay as they are. The identity on a little-endian CPU. So the
/// parsers' tests run the same real captures on a big-endian router's byte order.
#[cfg(test)]
pub(crate) fn le_capture_in_host_order(datagram: &[u8]) -> Vec<u8> {
    fn u16_at(b: &mut [u8], at: usize) -> u16 {
        let v = u16::from_le_bytes([b[at], b[at + 1]]);
        b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
        v
    }
    fn u32_at(b: &mut [u8], at: usize) -> u32 {
        let v = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        v
    }
    fn attributes(b: &mut [u8], mut at: usize, end: usize) {
        while at + NLA_HDRLEN <= end {
            let len = u16_at(b, at) as usize;
            let ty = u16_at(b, at + 2);
            if len < NLA_HDRLEN || at + len > end {
                return;
            }
            if ty & NLA_F_NESTED != 0 {
                attributes(b, at + NLA_HDRLEN, at + len);
            }
            at += align4(len);
        }
    }
    let mut b = datagram.to_vec();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= b.len() {
        let len = u32_at(&mut b, at) as usize;
        let ty = u16_at(&mut b, at + 4);
        u16_at(&mut b, at + 6);
        u32_at(&mut b, at + 8);
        u32_at(&mut b, at + 12);
        let end = (at + len).min(b.len());
        match ty {
            NLMSG_DONE | NLMSG_ERROR if end >= at + NLMSG_HDRLEN + 4 => {
                u32_at(&mut b, at + NLMSG_HDRLEN);
            }
            // Netfilter messages: the 4-byte `nfgenmsg` (its `res_id` is network order),
            // then attributes.
            t if t >= NLMSG_MIN_TYPE => attributes(&mut b, at + NLMSG_HDRLEN + 4, end),
            _ => {}
        }
        if len < NLMSG_HDRLEN {
            break;
        }
        at += align4(len);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message header as this host writes it (the kernel uses host order too).
    fn header(len: u32, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_ne_bytes());
        h.extend_from_slice(&ty.to_ne_bytes());
        h.extend_from_slice(&flags.to_ne_bytes());
        h.extend_from_slice(&seq.to_ne_bytes());
        h.extend_from_slice(&0u32.to_ne_bytes());
        h
    }

    #[test]
    fn headers_are_host_order_on_either_endianness() {
        // Built from explicit bytes for each byte order, so the test says what a
        // big-endian router (mips) reads as much as a little-endian one.
        let (len, ty) = if cfg!(target_endian = "big") {
            ([0, 0, 0, 20], [0x01, 0x02])
        } else {
            ([20, 0, 0, 0], [0x02, 0x01])
        };
        let mut d = Vec::new();
        d.extend_from_slice(&len);
        d.extend_from_slice(&ty);
        d.extend_from_slice(&[0; 10]);
        d.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        let msgs: Vec<NlMsg<'_>> = NlMessages::new(&d).map(Result::unwrap).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].ty, 0x0102);
        assert_eq!(msgs[0].payload, [0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn values_are_big_endian_whatever_the_host() {
        assert_eq!(be16(&[0x12, 0x34], "x"), Ok(0x1234));
        assert_eq!(be32(&[0x12, 0x34, 0x56, 0x78], "x"), Ok(0x1234_5678));
        assert_eq!(
            be64(&[1, 2, 3, 4, 5, 6, 7, 8], "x"),
            Ok(0x0102_0304_0506_0708)
        );
        assert_eq!(u8_of(&[7], "x"), Ok(7));
        assert_eq!(
            be32(&[1, 2, 3], "CTA_MARK"),
            Err(FrameError::Length {
                what: "CTA_MARK",
                len: 3,
                expected: 4
            })
        );
    }

    #[test]
    fn messages_are_4_aligned_and_errors_end_the_walk() {
        let mut d = header(17, 0x0100, 0, 1);
        d.push(9); // one payload byte, then 3 bytes of padding
        d.extend_from_slice(&[0; 3]);
        d.extend_from_slice(&header(16, NLMSG_DONE, 0, 2));
        let msgs: Vec<NlMsg<'_>> = NlMessages::new(&d).map(Result::unwrap).collect();
        assert_eq!(
            msgs.iter().map(|m| (m.ty, m.seq)).collect::<Vec<_>>(),
            [(0x0100, 1), (NLMSG_DONE, 2)]
        );
        assert_eq!(msgs[0].payload, [9]);
        let mut it = NlMessages::new(&d[..10]);
        assert_eq!(
            it.next().map(|m| m.map(|m| m.ty)),
            Some(Err(FrameError::Truncated("netlink message header")))
        );
        assert!(it.next().is_none());
        let short = header(8, 0, 0, 0);
        assert!(matches!(
            NlMessages::new(&short).next(),
            Some(Err(FrameError::Length {
                what: "nlmsg_len",
                ..
            }))
        ));
    }

    #[test]
    fn attributes_mask_flags_and_tolerate_cut_padding() {
        let mut buf = Vec::new();
        // NLA_F_NESTED | type 3, a 1-byte value, its padding cut off by the end.
        buf.extend_from_slice(&5u16.to_ne_bytes());
        buf.extend_from_slice(&((1u16 << 15) | 3).to_ne_bytes());
        buf.push(42);
        let attrs: Vec<(u16, &[u8])> = Attrs::new(&buf).map(Result::unwrap).collect();
        assert_eq!(attrs, [(3, &[42u8][..])]);
        let mut bad = Vec::new();
        bad.extend_from_slice(&2u16.to_ne_bytes());
        bad.extend_from_slice(&1u16.to_ne_bytes());
        assert!(matches!(
            Attrs::new(&bad).next(),
            Some(Err(FrameError::Length {
                what: "nla_len",
                ..
            }))
        ));
        assert_eq!(
            Attrs::new(&[1, 0]).next(),
            Some(Err(FrameError::Truncated("attribute header")))
        );
    }

    #[test]
    fn a_built_request_reads_back() {
        let mut body = vec![0, 0, 0x14, 0xea];
        put_attr(&mut body, 2, &[0, 0, 0, 64, 2]);
        assert_eq!(body.len(), 4 + 4 + 8, "the 5-byte value is padded to 8");
        let m = request(0x0401, NLM_F_REQUEST | NLM_F_ACK, 7, &body);
        let msgs: Vec<NlMsg<'_>> = NlMessages::new(&m).map(Result::unwrap).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].ty, msgs[0].flags, msgs[0].seq), (0x0401, 5, 7));
        let attrs: Vec<(u16, &[u8])> = Attrs::new(&msgs[0].payload[NFGENMSG_LEN..])
            .map(Result::unwrap)
            .collect();
        assert_eq!(attrs, [(2, &[0u8, 0, 0, 64, 2][..])]);
    }

    #[test]
    fn nlmsgerr_code() {
        let code = (-1i32).to_ne_bytes();
        let m = NlMsg {
            ty: NLMSG_ERROR,
            flags: 0,
            seq: 0,
            payload: &code,
        };
        assert_eq!(m.error_code(), Some(-1));
        assert_eq!(NlMsg { payload: &[], ..m }.error_code(), None);
    }
}
