//! AS number and organisation of an address, from an offline database the user points
//! `[enrich] asn_db` at.
//!
//! Formats (a MaxMind DB is recognised by its metadata marker, the rest per line, so the
//! IPv4 and IPv6 CSV files can be concatenated into one, as `scripts/asn-update` does):
//! - ip-location-db `asn` CSV: `start_ip,end_ip,asn,org` (org quoted when it has a comma);
//! - iptoasn TSV: `range_start\trange_end\tAS_number\tcountry_code\tAS_description`
//!   (ASN 0, "Not routed", is skipped). Unzip `ip2asn-combined.tsv.gz` first;
//! - MaxMind DB (`.mmdb`, <https://maxmind.github.io/MaxMind-DB/>) with GeoLite2-ASN's
//!   record fields `autonomous_system_number` / `autonomous_system_organization` (also
//!   DB-IP ASN Lite and ip-location-db's `*-asn-mmdb` files) or IPinfo Lite's `asn`
//!   (`"AS13335"`) / `as_name`.
//!
//! Memory: a router has 128 MB, and the full ip-location-db table has ~500 000 ranges.
//! CSV/TSV rows are not kept as rows: per family, sorted parallel vectors of range
//! starts, ends and ASNs (12 bytes per IPv4 range, 20 per IPv6 range of whole /64s, 36
//! for the few others), adjacent ranges of the same AS
//! merged, and each AS's organisation stored once in one string blob. A lookup is a
//! binary search. The file is read line by line, never whole.
//!
//! A `.mmdb` is already a compact search tree (8–10 MB for a full ASN database) and is
//! not converted: it is memory-mapped read-only, so its pages are page cache, not heap —
//! shared with the file when it sits on tmpfs (reading it would make a second copy), and
//! re-readable from flash, so reclaimable under memory pressure, when it sits on the
//! overlay. Loading walks the tree once (it counts the networks and finds a corrupt tree
//! at start, not lookup by lookup); a lookup follows one bit per level, up to 128 for
//! IPv6, and decodes two fields of the record. The file must be replaced (a new file
//! renamed over it, as `scripts/asn-update` does), never rewritten in place: truncating
//! a mapped file kills the reader with SIGBUS.
//!
//! (Long: three database formats behind one lookup, ≈ 650 lines of code; the rest are
//! tests.)

use std::collections::HashMap;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

/// What the table says about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsnMatch {
    pub asn: u32,
    /// Empty when the table names no organisation.
    pub org: String,
}

/// Ranges of one address family; `T` is `u32` (IPv4) or `u128` (IPv6).
#[derive(Debug, Default)]
struct Ranges<T> {
    starts: Vec<T>,
    ends: Vec<T>,
    asns: Vec<u32>,
}

impl<T: Copy + Ord + std::ops::Sub<Output = T> + From<u8>> Ranges<T> {
    /// Sorts by start (input files are sorted, but nothing guarantees it) and merges
    /// adjacent ranges of the same AS, in place: a sorted file (the usual case) needs no
    /// second copy of the table while loading, which is what sets the peak RSS.
    fn finish(mut self) -> Ranges<T> {
        if !self.starts.is_sorted() {
            let mut order: Vec<u32> = (0..self.starts.len() as u32).collect();
            order.sort_by_key(|&i| self.starts[i as usize]);
            let pick = |v: &[T]| order.iter().map(|&i| v[i as usize]).collect::<Vec<T>>();
            let (starts, ends) = (pick(&self.starts), pick(&self.ends));
            let asns = order.iter().map(|&i| self.asns[i as usize]).collect();
            self = Ranges { starts, ends, asns };
        }
        let mut kept = 0usize;
        for i in 0..self.starts.len() {
            let (start, end, asn) = (self.starts[i], self.ends[i], self.asns[i]);
            if kept > 0 {
                let last_end = self.ends[kept - 1];
                if self.asns[kept - 1] == asn
                    && (start <= last_end || start - last_end == T::from(1u8))
                {
                    self.ends[kept - 1] = last_end.max(end);
                    continue;
                }
            }
            self.starts[kept] = start;
            self.ends[kept] = end;
            self.asns[kept] = asn;
            kept += 1;
        }
        for v in [&mut self.starts, &mut self.ends] {
            v.truncate(kept);
            v.shrink_to_fit();
        }
        self.asns.truncate(kept);
        self.asns.shrink_to_fit();
        self
    }

    /// The AS of the last range starting at or before `ip`, if it reaches `ip`.
    fn find(&self, ip: T) -> Option<u32> {
        let i = self.starts.partition_point(|&s| s <= ip).checked_sub(1)?;
        (self.ends[i] >= ip).then(|| self.asns[i])
    }

    fn push(&mut self, start: T, end: T, asn: u32) {
        self.starts.push(start);
        self.ends.push(end);
        self.asns.push(asn);
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    fn bytes(&self) -> usize {
        self.starts.capacity() * 2 * std::mem::size_of::<T>() + self.asns.capacity() * 4
    }
}

/// The loaded database: an IP-range table read from CSV/TSV, or a mapped MaxMind DB.
#[derive(Debug, Default)]
pub struct AsnDb {
    table: Table,
    /// Lines that could not be read (counted, reported once, never fatal). Always 0 for
    /// a `.mmdb`.
    pub malformed_lines: u64,
}

#[derive(Debug)]
enum Table {
    Ranges(RangeTable),
    Mmdb(MmdbTable),
}

impl Default for Table {
    fn default() -> Self {
        Table::Ranges(RangeTable::default())
    }
}

impl AsnDb {
    /// Reads a database file (see the module doc for the formats): a MaxMind DB when the
    /// name ends in `.mmdb` or the file holds the MaxMind DB metadata marker, else a
    /// CSV/TSV range table.
    pub fn load(path: &Path) -> anyhow::Result<AsnDb> {
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("opening the ASN database {}", path.display()))?;
        let mmdb_name = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("mmdb"));
        let mmdb_content = has_mmdb_marker(&mut file)
            .with_context(|| format!("reading the ASN database {}", path.display()))?;
        if mmdb_name || mmdb_content {
            let table = MmdbTable::open(file, path)?;
            return Ok(AsnDb {
                table: Table::Mmdb(table),
                malformed_lines: 0,
            });
        }
        let db = AsnDb::from_reader(std::io::BufReader::new(file))
            .with_context(|| format!("reading the ASN database {}", path.display()))?;
        if db.is_empty() {
            anyhow::bail!(
                "{}: no IP range → ASN line found ({} unreadable lines); expected \
                 `start_ip,end_ip,asn,org` (ip-location-db), iptoasn's TSV or a MaxMind \
                 DB (.mmdb)",
                path.display(),
                db.malformed_lines
            );
        }
        Ok(db)
    }

    /// Reads CSV/TSV lines from `reader`.
    pub fn from_reader(reader: impl BufRead) -> std::io::Result<AsnDb> {
        let (table, malformed_lines) = RangeTable::from_reader(reader)?;
        Ok(AsnDb {
            table: Table::Ranges(table),
            malformed_lines,
        })
    }

    /// The AS of `ip`. An IPv4-mapped IPv6 address is looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Option<AsnMatch> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match &self.table {
            Table::Ranges(t) => t.lookup(ip),
            Table::Mmdb(t) => t.lookup(ip),
        }
    }

    /// Ranges held (after merging), or for a `.mmdb` the networks that have a record.
    pub fn len(&self) -> usize {
        match &self.table {
            Table::Ranges(t) => t.len(),
            Table::Mmdb(t) => t.networks,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes the table holds (what it adds to RSS, give or take the allocator); 0
    /// for a memory-mapped `.mmdb` (see [`AsnDb::mapped_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        match &self.table {
            Table::Ranges(t) => t.bytes(),
            Table::Mmdb(t) if t.mapped => 0,
            Table::Mmdb(t) => t.file_bytes,
        }
    }

    /// Bytes of the memory-mapped `.mmdb` file (page cache, shared and reclaimable: the
    /// RSS it adds is the part lookups have touched); 0 for a CSV/TSV table.
    pub fn mapped_bytes(&self) -> usize {
        match &self.table {
            Table::Mmdb(t) if t.mapped => t.file_bytes,
            _ => 0,
        }
    }
}

/// The CSV/TSV database, held as sorted ranges.
#[derive(Debug, Default)]
struct RangeTable {
    v4: Ranges<u32>,
    /// IPv6 ranges made of whole /64s (all but a few hundred of a real table), in /64
    /// units: 20 bytes per range instead of 36.
    v6_64: Ranges<u64>,
    /// The other IPv6 ranges, looked up first (they are the more specific ones).
    v6: Ranges<u128>,
    /// ASN → (offset, length) of its organisation in `orgs`, sorted by ASN.
    org_index: Vec<(u32, u32, u32)>,
    orgs: String,
}

impl RangeTable {
    /// The table, and the number of lines that could not be read.
    fn from_reader(reader: impl BufRead) -> std::io::Result<(RangeTable, u64)> {
        let mut v4 = Ranges::<u32>::default();
        let mut v6 = Ranges::<u128>::default();
        let mut v6_64 = Ranges::<u64>::default();
        // Each AS's organisation once, appended to one blob as first seen: no string
        // allocation per AS.
        let mut org_of: HashMap<u32, (u32, u32)> = HashMap::new();
        let mut orgs = String::new();
        let mut malformed = 0u64;
        for line in reader.lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    malformed += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(row) = parse_line(line) else {
                malformed += 1;
                continue;
            };
            if row.asn == 0 {
                continue; // iptoasn's "Not routed"
            }
            match (row.start, row.end) {
                (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => v4.push(s.into(), e.into(), row.asn),
                (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
                    let (s, e) = (u128::from(s), u128::from(e));
                    if s & LOW_64 == 0 && e & LOW_64 == LOW_64 {
                        v6_64.push((s >> 64) as u64, (e >> 64) as u64, row.asn);
                    } else {
                        v6.push(s, e, row.asn);
                    }
                }
                _ => {
                    malformed += 1;
                    continue;
                }
            }
            if !row.org.is_empty() && !org_of.contains_key(&row.asn) {
                org_of.insert(row.asn, (orgs.len() as u32, row.org.len() as u32));
                orgs.push_str(&row.org);
            }
        }
        let mut org_index: Vec<(u32, u32, u32)> = org_of
            .into_iter()
            .map(|(asn, (off, len))| (asn, off, len))
            .collect();
        org_index.sort_unstable_by_key(|(asn, _, _)| *asn);
        orgs.shrink_to_fit();
        let table = RangeTable {
            v4: v4.finish(),
            v6: v6.finish(),
            v6_64: v6_64.finish(),
            org_index,
            orgs,
        };
        Ok((table, malformed))
    }

    /// `ip` is not IPv4-mapped (the caller unmapped it).
    fn lookup(&self, ip: IpAddr) -> Option<AsnMatch> {
        let asn = match ip {
            IpAddr::V4(v4) => self.v4.find(v4.into())?,
            IpAddr::V6(v6) => {
                let x = u128::from(v6);
                self.v6
                    .find(x)
                    .or_else(|| self.v6_64.find((x >> 64) as u64))?
            }
        };
        Some(AsnMatch {
            asn,
            org: self.org(asn).to_owned(),
        })
    }

    fn org(&self, asn: u32) -> &str {
        match self.org_index.binary_search_by_key(&asn, |(a, _, _)| *a) {
            Ok(i) => {
                let (_, off, len) = self.org_index[i];
                self.orgs
                    .get(off as usize..(off + len) as usize)
                    .unwrap_or("")
            }
            Err(_) => "",
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6_64.len() + self.v6.len()
    }

    fn bytes(&self) -> usize {
        self.v4.bytes()
            + self.v6_64.bytes()
            + self.v6.bytes()
            + self.org_index.capacity() * 12
            + self.orgs.capacity()
    }
}

/// What starts a MaxMind DB's metadata, near the end of the file (spec: "MaxMind DB
/// Metadata").
const MMDB_METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

/// The metadata is at most this far from the end of the file (spec: 128 KiB).
const MMDB_METADATA_MAX: u64 = 128 * 1024;

/// Whether the file's last 128 KiB hold the MaxMind DB metadata marker. Leaves the file
/// positioned at its start.
fn has_mmdb_marker(file: &mut std::fs::File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(MMDB_METADATA_MAX)))?;
    let mut tail = Vec::with_capacity(len.min(MMDB_METADATA_MAX) as usize);
    file.take(MMDB_METADATA_MAX).read_to_end(&mut tail)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(tail
        .windows(MMDB_METADATA_MARKER.len())
        .any(|w| w == MMDB_METADATA_MARKER))
}

/// The bytes of a `.mmdb`: mapped, or read when the file system cannot map files.
#[derive(Debug)]
enum MmdbBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl AsRef<[u8]> for MmdbBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            MmdbBytes::Mapped(m) => m,
            MmdbBytes::Read(v) => v,
        }
    }
}

/// A MaxMind DB ASN database.
#[derive(Debug)]
struct MmdbTable {
    reader: maxminddb::Reader<MmdbBytes>,
    /// Networks with a record, counted at load (the walk also proves the tree sound).
    networks: usize,
    /// The file's size, and whether it is mapped (else read into the heap).
    file_bytes: usize,
    mapped: bool,
    /// A record that cannot be decoded (a corrupt data section) is logged once, then
    /// only makes its lookups come back empty.
    warned: AtomicBool,
}

/// The fields netmon reads from a record; other fields are skipped undecoded.
#[derive(serde::Deserialize)]
struct AsRecord<'a> {
    /// GeoLite2-ASN, DB-IP ASN Lite, ip-location-db (`uint32`).
    autonomous_system_number: Option<AsNumber>,
    autonomous_system_organization: Option<&'a str>,
    /// IPinfo Lite (`"AS13335"`).
    asn: Option<AsNumber>,
    as_name: Option<&'a str>,
}

impl AsRecord<'_> {
    fn to_match(&self) -> Option<AsnMatch> {
        let AsNumber(asn) = self.autonomous_system_number.or(self.asn)?;
        let org = self.autonomous_system_organization.or(self.as_name);
        (asn != 0).then(|| AsnMatch {
            asn,
            org: org.unwrap_or("").to_owned(),
        })
    }
}

/// An AS number stored as an integer (any width) or as text (`"AS13335"`, `"13335"`).
#[derive(Debug, Clone, Copy)]
struct AsNumber(u32);

impl<'de> serde::Deserialize<'de> for AsNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AsNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an AS number (integer, or text like \"AS13335\")")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom(format!("AS number {v} is over 32 bits")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AsNumber, E> {
                let digits = v.strip_prefix("AS").unwrap_or(v);
                digits
                    .parse()
                    .map(AsNumber)
                    .map_err(|_| E::custom(format!("AS number {v:?} is not AS<digits>")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl MmdbTable {
    /// Maps (or, failing that, reads) the file; then [`MmdbTable::from_bytes`].
    fn open(file: std::fs::File, path: &Path) -> anyhow::Result<MmdbTable> {
        // SAFETY: netmon never writes the file, and the mapping is read-only. Replacing
        // the file by rename (scripts/asn-update) leaves this mapping on the old inode;
        // only another process truncating it in place could fault a read (SIGBUS), which
        // the module doc and the config comment warn against.
        let bytes = match unsafe { memmap2::Mmap::map(&file) } {
            Ok(map) => {
                // Lookups jump around the tree: readahead would only fill the page cache.
                let _ = map.advise(memmap2::Advice::Random);
                MmdbBytes::Mapped(map)
            }
            Err(e) => {
                log::debug!("{}: cannot map ({e}); reading it instead", path.display());
                let mut buf = Vec::new();
                let mut file = file;
                file.read_to_end(&mut buf)
                    .with_context(|| format!("reading the ASN database {}", path.display()))?;
                MmdbBytes::Read(buf)
            }
        };
        MmdbTable::from_bytes(bytes, path)
    }

    /// Checks that `bytes` are a MaxMind DB whose records carry an AS number, walking
    /// the whole search tree once (it counts the networks and finds a corrupt tree now
    /// rather than lookup by lookup). `path` only names the file in errors.
    ///
    /// (Long: the MaxMind DB metadata checks, in the order the format defines.)
    fn from_bytes(bytes: MmdbBytes, path: &Path) -> anyhow::Result<MmdbTable> {
        let started = std::time::Instant::now();
        let (file_bytes, mapped) = (bytes.as_ref().len(), matches!(bytes, MmdbBytes::Mapped(_)));
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a readable MaxMind DB (.mmdb): {e}; the file may be truncated \
                 (an interrupted download?): fetch it again",
                path.display()
            )
        })?;
        let meta = reader.metadata();
        let corrupt = |e: maxminddb::MaxMindDbError| {
            anyhow::anyhow!(
                "{}: corrupt MaxMind DB (type {:?}): {e}; fetch it again",
                path.display(),
                meta.database_type
            )
        };
        let (mut networks, mut v4, mut with_asn) = (0usize, 0usize, false);
        for found in reader
            .networks(maxminddb::WithinOptions::default())
            .map_err(corrupt)?
        {
            let found = found.map_err(corrupt)?;
            networks += 1;
            if found.network().is_ok_and(|n| n.is_ipv4()) {
                v4 += 1;
            }
            if !with_asn {
                // The first records tell whether this is an ASN database at all (a
                // GeoLite2-City file would give every address "no AS").
                let record: Option<AsRecord> = found.decode().map_err(corrupt)?;
                with_asn = record.is_some_and(|r| r.autonomous_system_number.or(r.asn).is_some());
                if !with_asn && networks == 16 {
                    break;
                }
            }
        }
        if networks > 0 && !with_asn {
            anyhow::bail!(
                "{}: MaxMind DB of type {:?} has no AS number in its records (fields \
                 autonomous_system_number or asn): use an ASN database such as \
                 GeoLite2-ASN, DB-IP ASN Lite or ip-location-db's asn mmdb",
                path.display(),
                meta.database_type
            );
        }
        if networks == 0 {
            anyhow::bail!(
                "{}: MaxMind DB of type {:?} holds no network",
                path.display(),
                meta.database_type
            );
        }
        let age_days =
            (crate::time::now_ms() / 1000).saturating_sub_unsigned(meta.build_epoch) / 86_400;
        log::info!(
            "ASN database {}: MaxMind DB {:?} built {age_days} days ago, {v4} IPv4 + {} IPv6 \
             networks, {} KiB {}, checked in {} ms",
            path.display(),
            meta.database_type,
            networks - v4,
            file_bytes / 1024,
            if mapped { "mapped" } else { "read" },
            started.elapsed().as_millis()
        );
        if meta.ip_version == 4 {
            log::warn!(
                "{}: an IPv4-only MaxMind DB: IPv6 addresses get no AS number",
                path.display()
            );
        } else if v4 == 0 {
            log::warn!(
                "{}: no IPv4 network in this MaxMind DB (an IPv6-only file?): IPv4 addresses \
                 get no AS number",
                path.display()
            );
        }
        Ok(MmdbTable {
            reader,
            networks,
            file_bytes,
            mapped,
            warned: AtomicBool::new(false),
        })
    }

    /// `ip` is not IPv4-mapped (the caller unmapped it).
    fn lookup(&self, ip: IpAddr) -> Option<AsnMatch> {
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return None;
        }
        let found = self.reader.lookup(ip).and_then(|r| r.decode::<AsRecord>());
        match found {
            Ok(record) => record?.to_match(),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "ASN database: lookup of {ip} failed ({e}); further failures are not logged"
                    );
                }
                None
            }
        }
    }
}

/// The interface-identifier half of an IPv6 address.
const LOW_64: u128 = u64::MAX as u128;

struct Row {
    start: IpAddr,
    end: IpAddr,
    asn: u32,
    org: String,
}

/// One CSV or TSV line; `None` when it is not a range line.
fn parse_line(line: &str) -> Option<Row> {
    let fields = if line.contains('\t') {
        // iptoasn: start, end, AS number, country, description.
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 3 {
            return None;
        }
        vec![
            f[0].to_owned(),
            f[1].to_owned(),
            f[2].to_owned(),
            f.get(4).map_or(String::new(), |s| (*s).to_owned()),
        ]
    } else {
        csv_fields(line)?
    };
    if fields.len() < 3 {
        return None;
    }
    let asn = fields[2].trim().trim_start_matches("AS").parse().ok()?;
    Some(Row {
        start: fields[0].trim().parse().ok()?,
        end: fields[1].trim().parse().ok()?,
        asn,
        org: fields.get(3).map_or("", |s| s.trim()).to_owned(),
    })
}

/// RFC 4180 fields: quoted fields may hold commas and doubled quotes. `None` on an
/// unterminated quote.
fn csv_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::with_capacity(4);
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(field);
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(text: &str) -> AsnDb {
        AsnDb::from_reader(text.as_bytes()).unwrap()
    }

    fn asn(db: &AsnDb, ip: &str) -> Option<(u32, String)> {
        db.lookup(ip.parse().unwrap()).map(|m| (m.asn, m.org))
    }

    const CSV: &str = "\
1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"
1.0.4.0,1.0.7.255,38803,Gtelecom Pty Ltd
2001:4:112::,2001:4:112:ffff:ffff:ffff:ffff:ffff,112,DNS-OARC
203.0.113.0,203.0.113.127,64500,\"Lab \"\"Example\"\" Net\"
";

    #[test]
    fn csv_lookup_and_range_boundaries() {
        let db = db(CSV);
        assert_eq!(db.len(), 4);
        let cf = Some((13335, "Cloudflare, Inc.".to_owned()));
        assert_eq!(asn(&db, "1.0.0.0"), cf);
        assert_eq!(asn(&db, "1.0.0.255"), cf);
        assert_eq!(asn(&db, "1.0.1.0"), None);
        assert_eq!(asn(&db, "0.255.255.255"), None);
        assert_eq!(asn(&db, "1.0.7.255").map(|a| a.0), Some(38803));
        assert_eq!(asn(&db, "1.0.8.0"), None);
        assert_eq!(
            asn(&db, "203.0.113.84"),
            Some((64500, "Lab \"Example\" Net".to_owned()))
        );
        assert_eq!(asn(&db, "2001:4:112::1").map(|a| a.0), Some(112));
        assert_eq!(asn(&db, "2001:4:113::"), None);
        assert_eq!(asn(&db, "255.255.255.255"), None);
        assert_eq!(asn(&db, "::"), None);
    }

    #[test]
    fn ipv6_whole_64s_and_odd_ranges() {
        let db = db("\
2001:db8::,2001:db8:0:ffff:ffff:ffff:ffff:ffff,65010,Aligned
2001:db8::100,2001:db8::1ff,65011,Odd
2001:db8:1::,2001:db8:1::ffff:ffff:ffff:ffff,65012,One64
");
        assert_eq!(db.len(), 3);
        assert_eq!(asn(&db, "2001:db8::").map(|a| a.0), Some(65010));
        assert_eq!(asn(&db, "2001:db8::100").map(|a| a.0), Some(65011));
        assert_eq!(asn(&db, "2001:db8::1ff").map(|a| a.0), Some(65011));
        assert_eq!(asn(&db, "2001:db8::200").map(|a| a.0), Some(65010));
        assert_eq!(
            asn(&db, "2001:db8:0:ffff:ffff:ffff:ffff:ffff").map(|a| a.0),
            Some(65010)
        );
        assert_eq!(
            asn(&db, "2001:db8:1::ffff:ffff:ffff:ffff").map(|a| a.0),
            Some(65012)
        );
        assert_eq!(asn(&db, "2001:db8:1:1::"), None);
        assert_eq!(asn(&db, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"), None);
    }

    #[test]
    fn ipv4_mapped_is_looked_up_as_ipv4() {
        let db = db(CSV);
        assert_eq!(asn(&db, "::ffff:1.0.0.1").map(|a| a.0), Some(13335));
    }

    #[test]
    fn unsorted_input_and_adjacent_ranges_merge() {
        let db = db("\
10.0.2.0,10.0.2.255,65001,B
10.0.0.0,10.0.0.255,65001,B
10.0.1.0,10.0.1.255,65001,B
9.0.0.0,9.255.255.255,65000,A
");
        assert_eq!(db.len(), 2, "three adjacent ranges of one AS are one");
        assert_eq!(asn(&db, "10.0.1.7").map(|a| a.0), Some(65001));
        assert_eq!(asn(&db, "10.0.2.255").map(|a| a.0), Some(65001));
        assert_eq!(asn(&db, "10.0.3.0"), None);
        assert_eq!(asn(&db, "9.1.2.3"), Some((65000, "A".into())));
    }

    #[test]
    fn malformed_lines_are_counted_not_fatal() {
        let db = db("\
# comment
1.0.0.0,1.0.0.255,13335,Cloudflare
not,a,line
1.0.1.0,1.0.1.255
1.0.2.0,1.0.2.255,x,Bad ASN
1.0.3.255,1.0.3.0,1,Reversed
1.0.4.0,2001::,1,Mixed families
1.0.5.0,1.0.5.255,7,\"unterminated

2.0.0.0,2.0.0.255,3215,Orange\r
");
        assert_eq!(db.len(), 2);
        assert_eq!(db.malformed_lines, 6);
        assert_eq!(asn(&db, "2.0.0.1"), Some((3215, "Orange".into())));
    }

    #[test]
    fn iptoasn_tsv() {
        let db = db("\
1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET
1.0.1.0\t1.0.3.255\t0\tNone\tNot routed
2c0f:ff90::\t2c0f:ff90:ffff:ffff:ffff:ffff:ffff:ffff\t15022\tUG\tADAPT-IT
");
        assert_eq!(asn(&db, "1.0.0.9"), Some((13335, "CLOUDFLARENET".into())));
        assert_eq!(asn(&db, "1.0.2.0"), None, "ASN 0 is not routed");
        assert_eq!(asn(&db, "2c0f:ff90::1").map(|a| a.0), Some(15022));
    }

    #[test]
    fn load_rejects_a_file_without_ranges() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("junk.csv");
        std::fs::write(&path, "hello\nworld\n").unwrap();
        let e = format!("{:#}", AsnDb::load(&path).unwrap_err());
        assert!(
            e.contains("junk.csv") && e.contains("start_ip,end_ip,asn,org"),
            "{e}"
        );
        std::fs::write(&path, CSV).unwrap();
        assert_eq!(AsnDb::load(&path).unwrap().len(), 4);
        tmp.close().unwrap();
    }

    // --- MaxMind DB ---------------------------------------------------------------

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/enrich/fixtures")
            .join(name)
    }

    /// Addresses at and around every range edge of fixtures/asn.csv, and misses.
    const PROBES: &[&str] = &[
        "1.0.0.0",
        "1.0.0.255",
        "1.0.1.0",
        "0.255.255.255",
        "1.0.4.0",
        "1.0.7.255",
        "1.0.8.0",
        "203.0.113.84",
        "203.0.113.128",
        "198.51.100.6",
        "198.51.100.7",
        "198.51.100.200",
        "198.51.100.201",
        "2001:4:112::1",
        "2001:4:113::",
        "2606:4700::1111",
        "2606:4701::",
        "2001:db8::ff",
        "2001:db8::100",
        "2001:db8::1ff",
        "2001:db8::200",
        "::ffff:1.0.0.1",
        "::",
        "255.255.255.255",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ];

    #[test]
    fn mmdb_lookups_ipv4_ipv6_and_misses() {
        let path = fixture("asn-geolite2.mmdb");
        let db = AsnDb::load(&path).unwrap();
        let cf = Some((13335, "Cloudflare, Inc.".to_owned()));
        assert_eq!(asn(&db, "1.0.0.0"), cf);
        assert_eq!(asn(&db, "1.0.0.255"), cf);
        assert_eq!(asn(&db, "1.0.1.0"), None);
        assert_eq!(
            asn(&db, "::ffff:1.0.0.1"),
            cf,
            "IPv4-mapped is looked up as IPv4"
        );
        assert_eq!(
            asn(&db, "203.0.113.84"),
            Some((64500, "Lab \"Example\" Net".to_owned()))
        );
        // A range that is not one CIDR block, and an AS without organisation.
        assert_eq!(asn(&db, "198.51.100.6"), None);
        assert_eq!(asn(&db, "198.51.100.7"), Some((64501, String::new())));
        assert_eq!(asn(&db, "198.51.100.200"), Some((64501, String::new())));
        assert_eq!(asn(&db, "198.51.100.201"), None);
        assert_eq!(asn(&db, "2001:4:112::1"), Some((112, "DNS-OARC".into())));
        assert_eq!(asn(&db, "2606:4700::1111"), cf);
        assert_eq!(asn(&db, "2001:db8::1ff").map(|a| a.0), Some(65011));
        assert_eq!(asn(&db, "2001:db8::200"), None);
        assert_eq!(asn(&db, "::"), None);
        assert!(!db.is_empty());
        assert_eq!(db.malformed_lines, 0);
        assert_eq!(db.heap_bytes(), 0, "mapped, not read");
        assert_eq!(
            db.mapped_bytes() as u64,
            std::fs::metadata(&path).unwrap().len()
        );
    }

    /// The fixtures (and so make_mmdb.py) pass the maxminddb crate's full check of the
    /// format: tree, separator, data section, metadata.
    #[test]
    fn mmdb_fixtures_pass_the_readers_verification() {
        for name in ["asn-geolite2.mmdb", "asn-ipinfo.mmdb"] {
            let bytes = std::fs::read(fixture(name)).unwrap();
            let reader = maxminddb::Reader::from_source(bytes).unwrap();
            reader.verify().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn mmdb_and_ipinfo_fields_answer_as_the_csv_they_were_made_from() {
        let csv = AsnDb::load(&fixture("asn.csv")).unwrap();
        for name in ["asn-geolite2.mmdb", "asn-ipinfo.mmdb"] {
            let mmdb = AsnDb::load(&fixture(name)).unwrap();
            for ip in PROBES {
                assert_eq!(asn(&mmdb, ip), asn(&csv, ip), "{name}: {ip}");
            }
        }
    }

    #[test]
    fn mmdb_is_recognised_by_content_whatever_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("asn.db");
        std::fs::copy(fixture("asn-geolite2.mmdb"), &path).unwrap();
        let db = AsnDb::load(&path).unwrap();
        assert_eq!(asn(&db, "1.0.0.1").map(|a| a.0), Some(13335));
        tmp.close().unwrap();
    }

    #[test]
    fn mmdb_truncated_or_not_an_asn_database_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let good = std::fs::read(fixture("asn-geolite2.mmdb")).unwrap();
        // An interrupted download: the metadata at the end is missing.
        let path = dir.join("cut.mmdb");
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let e = format!("{:#}", AsnDb::load(&path).unwrap_err());
        assert!(
            e.contains("cut.mmdb")
                && e.contains("not a readable MaxMind DB")
                && e.contains("truncated"),
            "{e}"
        );
        std::fs::write(&path, b"").unwrap();
        assert!(AsnDb::load(&path).is_err());
        // Records without an AS number (say a GeoLite2-City file): the key `asn` of the
        // IPinfo fixture renamed, same length.
        let mut other = std::fs::read(fixture("asn-ipinfo.mmdb")).unwrap();
        let key = other.windows(4).position(|w| w == b"\x43asn").unwrap();
        other[key + 1..key + 4].copy_from_slice(b"xyz");
        let path = dir.join("city.mmdb");
        std::fs::write(&path, &other).unwrap();
        let e = format!("{:#}", AsnDb::load(&path).unwrap_err());
        assert!(
            e.contains("city.mmdb") && e.contains("no AS number") && e.contains("ipinfo-lite-test"),
            "{e}"
        );
        tmp.close().unwrap();
    }

    /// Every single-byte corruption of the fixture loads or fails with an error, and a
    /// loaded one answers lookups without panicking.
    #[test]
    fn mmdb_corrupt_bytes_never_panic() {
        let good = std::fs::read(fixture("asn-geolite2.mmdb")).unwrap();
        let probes: Vec<IpAddr> = PROBES.iter().map(|p| p.parse().unwrap()).collect();
        let (mut loaded, mut refused) = (0, 0);
        for i in 0..good.len() {
            for flip in [0xFFu8, 0x01, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                match MmdbTable::from_bytes(MmdbBytes::Read(bad), Path::new("bad.mmdb")) {
                    Ok(t) => {
                        loaded += 1;
                        for ip in &probes {
                            let ip = match ip {
                                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*ip, IpAddr::V4),
                                v4 => *v4,
                            };
                            let _ = t.lookup(ip);
                        }
                    }
                    Err(e) => {
                        refused += 1;
                        assert!(format!("{e:#}").contains("bad.mmdb"), "{e:#}");
                    }
                }
            }
        }
        assert!(
            loaded > 0 && refused > 0,
            "{loaded} loaded, {refused} refused"
        );
    }
}
