//! AS number and organisation of an address, from an offline IP-range → ASN table the
//! user points `[enrich] asn_db` at.
//!
//! Formats (auto-detected per line, so the IPv4 and IPv6 files can be concatenated into
//! one, as `scripts/asn-update` does):
//! - ip-location-db `asn` CSV: `start_ip,end_ip,asn,org` (org quoted when it has a comma);
//! - iptoasn TSV: `range_start\trange_end\tAS_number\tcountry_code\tAS_description`
//!   (ASN 0, "Not routed", is skipped). Unzip `ip2asn-combined.tsv.gz` first.
//!
//! MaxMind/DB-IP `.mmdb` is not read yet (it needs a crate this tree does not have).
//!
//! Memory: a router has 128 MB, and the full ip-location-db table has ~500 000 ranges.
//! Rows are not kept as rows: per family, sorted parallel vectors of range starts, ends
//! and ASNs (12 bytes per IPv4 range, 20 per IPv6 range of whole /64s, 36 for the few
//! others), adjacent ranges of the same AS
//! merged, and each AS's organisation stored once in one string blob. A lookup is a
//! binary search. The file is read line by line, never whole.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::IpAddr;
use std::path::Path;

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

/// The loaded table.
#[derive(Debug, Default)]
pub struct AsnDb {
    v4: Ranges<u32>,
    /// IPv6 ranges made of whole /64s (all but a few hundred of a real table), in /64
    /// units: 20 bytes per range instead of 36.
    v6_64: Ranges<u64>,
    /// The other IPv6 ranges, looked up first (they are the more specific ones).
    v6: Ranges<u128>,
    /// ASN → (offset, length) of its organisation in `orgs`, sorted by ASN.
    org_index: Vec<(u32, u32, u32)>,
    orgs: String,
    /// Lines that could not be read (counted, reported once, never fatal).
    pub malformed_lines: u64,
}

impl AsnDb {
    /// Reads a table file (see the module doc for the formats).
    pub fn load(path: &Path) -> anyhow::Result<AsnDb> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening the ASN database {}", path.display()))?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("mmdb"))
        {
            anyhow::bail!(
                "{}: .mmdb databases are not supported yet; use the ip-location-db CSV \
                 (scripts/asn-update) or the iptoasn TSV",
                path.display()
            );
        }
        let db = AsnDb::from_reader(std::io::BufReader::new(file))
            .with_context(|| format!("reading the ASN database {}", path.display()))?;
        if db.is_empty() {
            anyhow::bail!(
                "{}: no IP range → ASN line found ({} unreadable lines); expected \
                 `start_ip,end_ip,asn,org` (ip-location-db) or iptoasn's TSV",
                path.display(),
                db.malformed_lines
            );
        }
        Ok(db)
    }

    /// Reads CSV/TSV lines from `reader`.
    pub fn from_reader(reader: impl BufRead) -> std::io::Result<AsnDb> {
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
        Ok(AsnDb {
            v4: v4.finish(),
            v6: v6.finish(),
            v6_64: v6_64.finish(),
            org_index,
            orgs,
            malformed_lines: malformed,
        })
    }

    /// The AS of `ip`. An IPv4-mapped IPv6 address is looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Option<AsnMatch> {
        let asn = match ip {
            IpAddr::V4(v4) => self.v4.find(v4.into())?,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.v4.find(v4.into())?,
                None => {
                    let x = u128::from(v6);
                    self.v6
                        .find(x)
                        .or_else(|| self.v6_64.find((x >> 64) as u64))?
                }
            },
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

    /// Ranges held (after merging).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6_64.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes the table holds (what it adds to RSS, give or take the allocator).
    pub fn heap_bytes(&self) -> usize {
        self.v4.bytes()
            + self.v6_64.bytes()
            + self.v6.bytes()
            + self.org_index.capacity() * 12
            + self.orgs.capacity()
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
        let dir = std::env::temp_dir().join(format!("netmon-asn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("junk.csv");
        std::fs::write(&path, "hello\nworld\n").unwrap();
        let e = format!("{:#}", AsnDb::load(&path).unwrap_err());
        assert!(
            e.contains("junk.csv") && e.contains("start_ip,end_ip,asn,org"),
            "{e}"
        );
        std::fs::write(&path, CSV).unwrap();
        assert_eq!(AsnDb::load(&path).unwrap().len(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
