//! Vendor of a LAN device from its MAC address: the IEEE MA-L registry ("OUI", the first
//! three octets), embedded in the binary.
//!
//! The table is `data/oui.bin`, made from the registry's `oui.csv` by `scripts/oui-update`
//! (the file format is documented there) and committed, so no build — the OpenWrt SDK's
//! included — needs the registry. It is read in place from the binary's read-only data:
//! nothing is copied to the heap and a lookup allocates nothing. About 380 KB for
//! 32 000 OUIs:
//! - entries are 4 bytes, octets 2–3 of the OUI and a name number, sorted and bucketed by
//!   the first octet (a 257-entry table of bucket starts); a lookup is a binary search
//!   in one bucket;
//! - names are normalised ("Apple, Inc." → "Apple") and stored once each; the 31
//!   substrings that save the most (" Technolog", " Communication", ...) are stored once
//!   and written in names as the bytes 0x01..=0x1f (control characters, which the
//!   script removes from the text). So a name is a [`VendorName`] that writes itself
//!   out ([`fmt::Display`]), not a `&str`.
//!   No decompressor crate (none is in the tree): deflate would take the names from 244
//!   to 130 KB, and inflating them would put that back on the heap at the first lookup.
//!
//! Only MA-L: the MA-M and MA-S registries (28- and 36-bit blocks sold inside OUIs the
//! IEEE lists as "IEEE Registration Authority") would add ~9 300 entries and ~7 500
//! names, mostly small industrial vendors, for ~160 KB (+40 %). MACs in those blocks,
//! "Private" OUIs and OUIs assigned after the table was made are [`Vendor::Unknown`].

use std::fmt;
use std::sync::LazyLock;

/// Bit 0 of the first octet: a group (multicast, or broadcast) address (IEEE 802-2014
/// §8.2.2, the I/G bit). Never a device's own address.
const GROUP_BIT: u8 = 0x01;
/// Bit 1 of the first octet: a locally administered address (the U/L bit), not from the
/// registry. Phones (iOS, Android) and Windows use random ones per network for privacy;
/// VMs, containers and virtual APs also use them.
const LOCAL_BIT: u8 = 0x02;

/// First bytes of `data/oui.bin`; the last one is the format version.
const MAGIC: &[u8; 4] = b"OUI1";
/// Token numbers are the bytes 0x01..=0x1f.
const MAX_TOKENS: usize = 31;

static BLOB: &[u8] = include_bytes!("../../data/oui.bin");

/// Parsed on first lookup (a few slice bounds; nothing is copied). A bad blob is a
/// build mistake the unit tests catch; should one ship anyway, every MAC is unknown.
static TABLE: LazyLock<Option<Table>> = LazyLock::new(|| match Table::parse(BLOB) {
    Ok(table) => Some(table),
    Err(e) => {
        log::error!("embedded MAC vendor table (data/oui.bin): {e}; vendors unknown");
        None
    }
});

/// What a MAC address says about the device's maker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// The organisation the IEEE registered the OUI to (normalised: "Apple",
    /// "Raspberry Pi Trading", "Samsung Electronics").
    Name(VendorName),
    /// Locally administered: not from the registry, typically a phone's private
    /// (random, per network) address. Not looked up.
    Randomized,
    /// A group address (multicast or broadcast): not one device.
    Multicast,
    /// Not in the table (see the module doc for why).
    Unknown,
}

impl Vendor {
    /// Text for the UI: the vendor's name, "randomized (locally administered)",
    /// "multicast", or `None` when unknown.
    pub fn label(&self) -> Option<String> {
        match self {
            Vendor::Name(name) => Some(name.to_string()),
            Vendor::Randomized => Some("randomized (locally administered)".to_owned()),
            Vendor::Multicast => Some("multicast".to_owned()),
            Vendor::Unknown => None,
        }
    }
}

/// A vendor name in the embedded table. Written out by [`fmt::Display`] (`to_string()`,
/// or directly into a template), which expands its tokens.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VendorName {
    /// Text with token bytes (0x01..=0x1f), as stored.
    encoded: &'static [u8],
    /// The table's tokens; unused slots are "".
    tokens: &'static [&'static str; MAX_TOKENS],
}

impl fmt::Display for VendorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_token = |b: &u8| (1..=MAX_TOKENS as u8).contains(b);
        let mut rest = self.encoded;
        while let Some(&first) = rest.first() {
            if is_token(&first) {
                f.write_str(self.tokens[usize::from(first - 1)])?;
                rest = &rest[1..];
                continue;
            }
            let end = rest.iter().position(is_token).unwrap_or(rest.len());
            // Token bytes never occur inside UTF-8, so each run of text is whole.
            for chunk in rest[..end].utf8_chunks() {
                f.write_str(chunk.valid())?;
                if !chunk.invalid().is_empty() {
                    f.write_str("\u{fffd}")?;
                }
            }
            rest = &rest[end..];
        }
        Ok(())
    }
}

impl fmt::Debug for VendorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VendorName")
            .field(&self.to_string())
            .finish()
    }
}

/// The vendor of `mac`: from the group and local bits, else from the registry.
pub fn vendor(mac: [u8; 6]) -> Vendor {
    if mac[0] & GROUP_BIT != 0 {
        return Vendor::Multicast;
    }
    if mac[0] & LOCAL_BIT != 0 {
        return Vendor::Randomized;
    }
    match TABLE
        .as_ref()
        .and_then(|t| t.lookup([mac[0], mac[1], mac[2]]))
    {
        Some(name) => Vendor::Name(name),
        None => Vendor::Unknown,
    }
}

/// `aa:bb:cc:dd:ee:ff` or `AA-BB-CC-DD-EE-FF` (either case, one separator throughout,
/// two hex digits per octet, nothing around it). The reverse, the canonical form, is
/// [`crate::event::format_mac`].
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let b = text.as_bytes();
    if b.len() != 17 || !matches!(b[2], b':' | b'-') {
        return None;
    }
    let hex = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut mac = [0u8; 6];
    for (i, octet) in mac.iter_mut().enumerate() {
        let at = i * 3;
        if i > 0 && b[at - 1] != b[2] {
            return None;
        }
        *octet = hex(b[at])? << 4 | hex(b[at + 1])?;
    }
    Some(mac)
}

/// `data/oui.bin`, sliced into its sections (layout in `scripts/oui-update`).
struct Table {
    /// Entries with first octet `o` are `entries[starts[o]..starts[o + 1]]` (u32 BE).
    starts: &'static [[u8; 4]],
    /// Octets 2–3 of the OUI (u16 BE), name number (u16 BE); sorted within a bucket.
    entries: &'static [[u8; 4]],
    tokens: [&'static str; MAX_TOKENS],
    /// Offset into `names` of every `step`-th name (u32 BE): a name is found by a jump
    /// and at most `step - 1` skips, for 4 bytes per `step` names instead of per name.
    name_index: &'static [[u8; 4]],
    step: usize,
    name_count: usize,
    /// Each name: u8 length, encoded bytes.
    names: &'static [u8],
}

/// Why `data/oui.bin` could not be read.
#[derive(Debug, thiserror::Error)]
enum FormatError {
    #[error("does not start with {MAGIC:?} (not this format, or another version)")]
    Magic,
    #[error("ends inside the {0}")]
    Truncated(&'static str),
    #[error("header: {tokens} tokens (at most {MAX_TOKENS}), name index step {step}")]
    Header { tokens: usize, step: usize },
    #[error("token {0} is not UTF-8")]
    Token(usize),
}

impl Table {
    fn parse(blob: &'static [u8]) -> Result<Table, FormatError> {
        let mut rest = blob;
        let mut take = |n: usize, what: &'static str| -> Result<&'static [u8], FormatError> {
            let (head, tail) = rest
                .split_at_checked(n)
                .ok_or(FormatError::Truncated(what))?;
            rest = tail;
            Ok(head)
        };
        if take(4, "magic")? != MAGIC {
            return Err(FormatError::Magic);
        }
        let header = take(8, "header")?;
        let entry_count = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let name_count = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let (token_count, step) = (usize::from(header[6]), usize::from(header[7]));
        if token_count > MAX_TOKENS || step == 0 {
            return Err(FormatError::Header {
                tokens: token_count,
                step,
            });
        }
        let starts = take(4 * 257, "bucket starts")?.as_chunks().0;
        let entries = take(4 * entry_count as usize, "entries")?.as_chunks().0;
        let mut tokens = [""; MAX_TOKENS];
        for (i, token) in tokens.iter_mut().take(token_count).enumerate() {
            let len = take(1, "tokens")?[0];
            *token = std::str::from_utf8(take(usize::from(len), "tokens")?)
                .map_err(|_| FormatError::Token(i))?;
        }
        let name_index = take(4 * name_count.div_ceil(step), "name index")?
            .as_chunks()
            .0;
        Ok(Table {
            starts,
            entries,
            tokens,
            name_index,
            step,
            name_count,
            names: rest,
        })
    }

    fn lookup(&'static self, oui: [u8; 3]) -> Option<VendorName> {
        let first = usize::from(oui[0]);
        let start = u32::from_be_bytes(*self.starts.get(first)?) as usize;
        let end = u32::from_be_bytes(*self.starts.get(first + 1)?) as usize;
        let bucket = self.entries.get(start..end)?;
        let key = u16::from_be_bytes([oui[1], oui[2]]);
        let at = bucket
            .binary_search_by_key(&key, |e| u16::from_be_bytes([e[0], e[1]]))
            .ok()?;
        let [_, _, hi, lo] = bucket[at];
        self.name(usize::from(u16::from_be_bytes([hi, lo])))
    }

    fn name(&'static self, number: usize) -> Option<VendorName> {
        if number >= self.name_count {
            return None;
        }
        let offset = u32::from_be_bytes(*self.name_index.get(number / self.step)?) as usize;
        let mut rest = self.names.get(offset..)?;
        for _ in 0..number % self.step {
            rest = rest.get(1 + usize::from(*rest.first()?)..)?;
        }
        let len = usize::from(*rest.first()?);
        Some(VendorName {
            encoded: rest.get(1..1 + len)?,
            tokens: &self.tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::format_mac;

    fn mac(text: &str) -> [u8; 6] {
        parse_mac(text).unwrap_or_else(|| panic!("test MAC {text:?}"))
    }

    fn label(text: &str) -> Option<String> {
        vendor(mac(text)).label()
    }

    fn table() -> &'static Table {
        TABLE.as_ref().expect("data/oui.bin parses")
    }

    /// (MAC, label, the row's name in the ieee-data 20220827 `oui.csv`, checked by hand).
    const REGISTERED: &[(&str, &str, &str)] = &[
        ("3c:22:fb:01:02:03", "Apple", "Apple, Inc."),
        (
            "b8:27:eb:12:34:56",
            "Raspberry Pi Foundation",
            "Raspberry Pi Foundation",
        ),
        (
            "dc:a6:32:00:00:01",
            "Raspberry Pi Trading",
            "Raspberry Pi Trading Ltd",
        ),
        (
            "E4-5F-01-AA-BB-CC",
            "Raspberry Pi Trading",
            "Raspberry Pi Trading Ltd",
        ),
        ("00:1b:21:00:00:00", "Intel", "Intel Corporate"),
        ("00:50:f2:00:00:00", "Microsoft", "MICROSOFT CORP."),
        ("00:1e:58:00:00:00", "D-Link", "D-Link Corporation"),
        ("00:26:b9:00:00:00", "Dell", "Dell Inc."),
        (
            "f8:d1:11:00:00:00",
            "TP-LINK TECHNOLOGIES",
            "TP-LINK TECHNOLOGIES CO.,LTD.",
        ),
        // Mostly tokens: " Telecommunication", " Technolog".
        (
            "f8:4d:33:00:00:00",
            "Fiberhome Telecommunication Technologies",
            "Fiberhome Telecommunication Technologies Co.,LTD",
        ),
        ("58:82:1d:00:00:00", "H. Schomäcker", "H. Schomäcker GmbH"),
        // Two spellings of one company stay two names: only case differences merge.
        ("68:a4:0e:00:00:00", "BSH Hausgeräte", "BSH Hausgeräte GmbH"),
        (
            "38:b4:d3:00:00:00",
            "BSH Hausgeraete",
            "BSH Hausgeraete GmbH",
        ),
        // "zte corporation" in all 298 rows.
        ("00:19:c6:00:00:00", "zte", "zte corporation"),
    ];

    #[test]
    fn registered_vendors() {
        for (text, name, _) in REGISTERED {
            assert_eq!(label(text).as_deref(), Some(*name), "{text}");
        }
        let Vendor::Name(apple) = vendor(mac("3c:22:fb:00:00:00")) else {
            panic!("Apple not found");
        };
        assert_eq!(format!("{apple:?}"), r#"VendorName("Apple")"#);
        assert_eq!(vendor(mac("00:17:f2:00:00:00")), Vendor::Name(apple));
    }

    /// The rows above as the registry has them, where ieee-data is installed.
    #[test]
    fn registered_rows_match_the_csv() {
        let Ok(csv) = std::fs::read_to_string("/usr/share/ieee-data/oui.csv") else {
            return;
        };
        for (text, _, row_name) in REGISTERED {
            let m = mac(text);
            let row = format!("MA-L,{:02X}{:02X}{:02X},", m[0], m[1], m[2]);
            let line = csv.lines().find(|l| l.starts_with(&row));
            let line = line.unwrap_or_else(|| panic!("{row} not in oui.csv"));
            assert!(
                line[row.len()..]
                    .trim_start_matches('"')
                    .starts_with(row_name),
                "{line}"
            );
        }
    }

    #[test]
    fn randomized_multicast_unknown() {
        for second_nibble in [0x2, 0x6, 0xa, 0xe] {
            let m = [0xd0 | second_nibble, 0x11, 0x22, 0x33, 0x44, 0x55];
            assert_eq!(vendor(m), Vendor::Randomized, "{}", format_mac(m));
        }
        // Apple's OUI with the local bit set is someone's random address, not Apple.
        assert_eq!(vendor(mac("3e:22:fb:01:02:03")), Vendor::Randomized);
        assert_eq!(
            label("02:00:00:00:00:01").as_deref(),
            Some("randomized (locally administered)")
        );
        for m in [
            "01:00:5e:00:00:fb", // IPv4 mDNS
            "33:33:00:00:00:01", // IPv6 all-nodes: group and local bits
            "ff:ff:ff:ff:ff:ff",
            "01:80:c2:00:00:00", // STP
        ] {
            assert_eq!(vendor(mac(m)), Vendor::Multicast, "{m}");
        }
        assert_eq!(label("01:00:5e:7f:ff:fa").as_deref(), Some("multicast"));
        // Unassigned, split into MA-M/MA-S blocks (IEEE Registration Authority), private.
        for m in [
            "fc:ff:fc:00:00:00",
            "70:b3:d5:f2:f0:00",
            "9c:93:e4:00:00:00",
        ] {
            assert_eq!(vendor(mac(m)), Vendor::Unknown, "{m}");
        }
        assert_eq!(label("00:ff:fc:00:00:00"), None);
    }

    #[test]
    fn mac_text_forms() {
        let m = [0xaa, 0xbb, 0xcc, 0x0d, 0xe0, 0xff];
        assert_eq!(parse_mac("aa:bb:cc:0d:e0:ff"), Some(m));
        assert_eq!(parse_mac("AA-BB-CC-0D-E0-FF"), Some(m));
        assert_eq!(parse_mac("Aa:bB:cc:0D:e0:fF"), Some(m));
        assert_eq!(format_mac(m), "aa:bb:cc:0d:e0:ff");
        assert_eq!(parse_mac(&format_mac(m)), Some(m));
        assert_eq!(format_mac([0; 6]), "00:00:00:00:00:00");
        for bad in [
            "",
            "aa:bb:cc:dd:ee",       // 5 octets
            "aa:bb:cc:dd:ee:ff:00", // 7 octets
            "aa:bb:cc:dd:ee:f",     // short last octet
            "a:b:c:d:e:f",          // one digit per octet
            "aa:bb:cc:dd:ee:fff",
            "aa:bb:cc:dd:ee:gg", // not hex
            "aa:bb:cc:dd:ee:+f", // from_str_radix would take it
            "aa:bb:cc:dd:ee: f",
            "aa:bb-cc:dd:ee:ff", // mixed separators
            "aa.bb.cc.dd.ee.ff",
            "aabb.ccdd.eeff",
            "aabbccddeeff",
            " aa:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:ff ",
            "aa:bb:cc:dd:ee:ÿ", // non-ASCII, 17 bytes
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    /// What `scripts/oui-update` promises and the lookup relies on.
    #[test]
    fn table_is_consistent() {
        let t = table();
        assert!(
            BLOB.len() < 420_000,
            "data/oui.bin is {} bytes: over budget (~400 KB); see scripts/oui-update",
            BLOB.len()
        );
        let start = |o: usize| u32::from_be_bytes(t.starts[o]) as usize;
        assert_eq!(start(0), 0);
        assert_eq!(start(256), t.entries.len());
        let mut used = vec![false; t.name_count];
        for first in 0..=255u8 {
            let bucket = &t.entries[start(usize::from(first))..start(usize::from(first) + 1)];
            if first & (GROUP_BIT | LOCAL_BIT) != 0 {
                assert!(bucket.is_empty(), "unreachable entries for {first:02x}");
            }
            assert!(
                bucket.windows(2).all(|w| w[0][..2] < w[1][..2]),
                "bucket {first:02x} not strictly sorted"
            );
            for e in bucket {
                let number = usize::from(u16::from_be_bytes([e[2], e[3]]));
                assert!(number < t.name_count, "name {number} of {}", t.name_count);
                used[number] = true;
                let m = [first, e[0], e[1], 0, 0, 0];
                assert!(matches!(vendor(m), Vendor::Name(_)), "{}", format_mac(m));
            }
        }
        assert!(used.iter().all(|&u| u), "every name is used");
        let token_count = t.tokens.iter().filter(|s| !s.is_empty()).count();
        assert!(t.tokens[token_count..].iter().all(|s| s.is_empty()));

        // Walk the names in order: the index points at every step-th one, each decodes,
        // they are sorted (so distinct), and they fill the section exactly.
        let mut offset = 0;
        let mut previous = String::new();
        for number in 0..t.name_count {
            if number % t.step == 0 {
                let indexed = u32::from_be_bytes(t.name_index[number / t.step]) as usize;
                assert_eq!(indexed, offset, "index of name {number}");
            }
            let len = usize::from(t.names[offset]);
            let encoded = &t.names[offset + 1..offset + 1 + len];
            for &b in encoded.iter().filter(|&&b| b < 0x20) {
                assert!(b >= 1 && usize::from(b) <= token_count, "name {number}");
            }
            let name = t.name(number).expect("name decodes");
            assert_eq!(name.encoded, encoded);
            let text = name.to_string();
            assert!(
                !text.is_empty() && text.trim() == text,
                "name {number}: {text:?}"
            );
            assert!(!text.contains('\u{fffd}'), "name {number}: {text:?}");
            assert!(
                previous < text,
                "names out of order: {previous:?}, {text:?}"
            );
            previous = text;
            offset += 1 + len;
        }
        assert_eq!(offset, t.names.len(), "bytes after the last name");
        assert!(t.name(t.name_count).is_none());
    }

    #[test]
    fn bad_blobs_are_errors_not_panics() {
        assert!(matches!(Table::parse(b"OUI0"), Err(FormatError::Magic)));
        assert!(matches!(
            Table::parse(b"OUI1\0\0"),
            Err(FormatError::Truncated("header"))
        ));
        let names_at = BLOB.len() - table().names.len();
        for cut in [20, 2000, names_at - 1] {
            assert!(Table::parse(&BLOB[..cut]).is_err(), "cut at {cut}");
        }
        // Cut inside the names: the sections parse and the lost names are not found.
        let cut: &'static Table = Box::leak(Box::new(
            Table::parse(&BLOB[..names_at + 1000]).expect("sections before the names"),
        ));
        let found = (0..cut.name_count)
            .filter(|&n| cut.name(n).is_some())
            .count();
        assert!(found > 0 && found < cut.name_count, "{found} names");
    }
}
