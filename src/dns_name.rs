//! The one way DNS names are written down, whichever source saw them (packets, the
//! dnsmasq log, reverse lookups). What an answer holds is
//! [`crate::event::DnsObservation`].
//!
//! Names come from the network and are attacker-controlled: any byte may appear in a
//! label, a label may hold a dot, a name may be 255 bytes. [`name_from_labels`] and
//! [`normalize_name`] turn them into one canonical text: lowercase ASCII, labels joined
//! by `.`, no trailing dot, every byte outside printable ASCII written `\DDD`
//! (RFC 1035 master-file escaping), `.` and `\` inside a label written `\.` and `\\`.
//! Two spellings of the same name are the same string, and no stored name contains a
//! control character.

/// Longest canonical name kept (an all-escaped 255-byte name is 1 020 characters);
/// longer input is cut and marked with a trailing `\~`.
pub const MAX_NAME_CHARS: usize = 1024;

/// The canonical text of a name given as its labels' raw bytes (from a packet).
pub fn name_from_labels<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut out = NameBuf::default();
    for (i, label) in labels.into_iter().enumerate() {
        if i > 0 && !out.push_dot() {
            break;
        }
        if !label.iter().all(|&b| out.push_byte(b)) {
            break;
        }
    }
    out.0
}

/// The canonical text of a name given in presentation form (from a log line): `\DDD`
/// and `\X` escapes are decoded and re-encoded canonically, trailing dots are dropped,
/// and any byte outside printable ASCII is escaped. Normalising a normalised name changes
/// nothing.
pub fn normalize_name(text: &str) -> String {
    let text = strip_root_dots(text);
    let bytes = text.as_bytes();
    let mut out = NameBuf::default();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let fits = if b == b'.' {
            i += 1;
            out.push_dot()
        } else if b == b'\\' && i + 1 < bytes.len() {
            let digits = &bytes[i + 1..bytes.len().min(i + 4)];
            if digits.len() == 3 && digits.iter().all(u8::is_ascii_digit) {
                let value = digits
                    .iter()
                    .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
                i += 4;
                out.push_byte(u8::try_from(value).unwrap_or(b'?'))
            } else {
                i += 2;
                out.push_byte(bytes[i - 1])
            }
        } else {
            i += 1;
            out.push_byte(b)
        };
        if !fits {
            break;
        }
    }
    out.0
}

/// Drops the root dot a name may end with ("example.com." → "example.com") — every one,
/// so that normalising is idempotent ("a.." would otherwise lose one dot per pass, which
/// fuzzing found as a filter that rejected its own canonical form) — but not an escaped
/// final dot ("a\.").
fn strip_root_dots(mut text: &str) -> &str {
    while let Some(rest) = text.strip_suffix('.') {
        let escapes = rest.bytes().rev().take_while(|&b| b == b'\\').count();
        if escapes % 2 == 1 {
            break;
        }
        text = rest;
    }
    text
}

/// A canonical name being built, cut (and marked `\~`) rather than grown past
/// [`MAX_NAME_CHARS`]; escapes are never split.
#[derive(Default)]
struct NameBuf(String);

impl NameBuf {
    /// Appends one label byte; false (and the name marked cut) when it does not fit.
    fn push_byte(&mut self, b: u8) -> bool {
        let before = self.0.len();
        match b {
            b'.' => self.0.push_str("\\."),
            b'\\' => self.0.push_str("\\\\"),
            b'A'..=b'Z' => self.0.push(char::from(b.to_ascii_lowercase())),
            0x21..=0x7e => self.0.push(char::from(b)),
            _ => {
                use std::fmt::Write;
                let _ = write!(self.0, "\\{b:03}");
            }
        }
        self.fits(before)
    }

    fn push_dot(&mut self) -> bool {
        let before = self.0.len();
        self.0.push('.');
        self.fits(before)
    }

    fn fits(&mut self, before: usize) -> bool {
        if self.0.len() + 2 <= MAX_NAME_CHARS {
            return true;
        }
        self.0.truncate(before);
        self.0.push_str("\\~");
        false
    }
}

/// The name of a query type, for display (`TYPE65534` for ones without a mnemonic).
pub fn qtype_name(qtype: u16) -> String {
    let known = match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        _ => return format!("TYPE{qtype}"),
    };
    known.to_owned()
}

/// The query type for a mnemonic or `TYPEnnn` (case-insensitive), as dnsmasq's log and
/// users write them.
pub fn qtype_from_name(name: &str) -> Option<u16> {
    let upper = name.to_ascii_uppercase();
    if let Some(n) = upper.strip_prefix("TYPE") {
        return n.parse().ok();
    }
    (0..=255u16).find(|&t| qtype_name(t) == upper)
}

/// The name of a response code, for display.
pub fn rcode_name(rcode: u16) -> String {
    let known = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => return format!("RCODE{rcode}"),
    };
    known.to_owned()
}

/// The registrable part of a canonical name — the label below its public suffix —
/// which is what a per-domain cap groups by (`store::budget`) and NEW_DOMAIN compares: "a.b.example.com" →
/// "example.com", "x.example.co.uk" → "example.co.uk". netmon carries no public suffix
/// list (≈ 200 KB); a suffix is one label, or two when the top level is a two-letter
/// country code and the second a common registry label ("co", "com", "org", …). A
/// wrong guess only makes a cap group a little wider or narrower.
pub fn registrable_domain(name: &str) -> &str {
    let name = name.trim_end_matches('.');
    let mut dots = name.rmatch_indices('.').map(|(i, _)| i);
    let (Some(last), Some(second)) = (dots.next(), dots.next()) else {
        return name;
    };
    let tld = &name[last + 1..];
    let sld = &name[second + 1..last];
    let two_label_suffix = tld.len() == 2
        && matches!(
            sld,
            "co" | "com" | "net" | "org" | "gov" | "edu" | "ac" | "or" | "ne" | "go" | "gv"
        );
    if !two_label_suffix {
        return &name[second + 1..];
    }
    match dots.next() {
        Some(third) => &name[third + 1..],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_lowercased_and_escaped() {
        let labels: [&[u8]; 3] = [b"WwW", b"a.b\\c", b"x\x00<\xff"];
        assert_eq!(name_from_labels(labels), "www.a\\.b\\\\c.x\\000<\\255");
    }

    #[test]
    fn presentation_form_is_canonicalised() {
        assert_eq!(normalize_name("Shop.Example.TEST."), "shop.example.test");
        assert_eq!(normalize_name("a\\046b.c"), "a\\.b.c");
        assert_eq!(normalize_name("x\\065y"), "xay");
        assert_eq!(normalize_name("caf\u{e9}.test"), "caf\\195\\169.test");
        assert_eq!(normalize_name("<script>.test"), "<script>.test");
        assert_eq!(normalize_name("tab\there"), "tab\\009here");
        assert_eq!(normalize_name("a.b..."), "a.b");
        assert_eq!(normalize_name("a\\."), "a\\.");
        assert_eq!(normalize_name("a\\\\."), "a\\\\");
        for text in ["x.q=.....", "a\\..", "\\\\..", "...", "a..b."] {
            let once = normalize_name(text);
            assert_eq!(normalize_name(&once), once, "{text:?}");
        }
    }

    #[test]
    fn both_forms_agree() {
        let labels: [&[u8]; 2] = [b"a.b", b"\x07"];
        let packet = name_from_labels(labels);
        assert_eq!(normalize_name(&packet), packet);
    }

    #[test]
    fn overlong_names_are_cut_on_an_escape_boundary() {
        let label = [0xffu8; 63];
        let labels = [&label[..], &label[..], &label[..], &label[..], &label[..]];
        let name = name_from_labels(labels);
        assert!(name.len() <= MAX_NAME_CHARS, "{}", name.len());
        assert!(name.ends_with("\\~"));
        let body = name.strip_suffix("\\~").unwrap();
        assert!(body.ends_with("\\255") || body.ends_with('.'), "{body}");
        assert!(normalize_name(&"a".repeat(5000)).len() <= MAX_NAME_CHARS);
    }

    #[test]
    fn qtype_names_round_trip() {
        for t in [1, 28, 5, 65, 12, 255, 4242] {
            assert_eq!(qtype_from_name(&qtype_name(t)), Some(t));
        }
        assert_eq!(qtype_from_name("aaaa"), Some(28));
    }

    #[test]
    fn registrable_domains_group_subdomains() {
        for (name, want) in [
            ("a.b.example.com", "example.com"),
            ("example.com", "example.com"),
            ("com", "com"),
            ("x7k2q.flood.lab", "flood.lab"),
            ("www.bbc.co.uk", "bbc.co.uk"),
            ("bbc.co.uk", "bbc.co.uk"),
            ("co.uk", "co.uk"),
            ("a.b.example.com.au", "example.com.au"),
            ("deep.host.example.de", "example.de"),
            ("example.com.", "example.com"),
        ] {
            assert_eq!(registrable_domain(name), want, "{name}");
        }
    }
}
