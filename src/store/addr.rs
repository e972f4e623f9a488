//! Addresses as the flows table stores them: the 4 or 16 bytes of the address in
//! network order, a BLOB. Four bytes instead of up to fifteen characters for IPv4, and
//! blobs compare bytewise, so a CIDR network is a range an index can walk and sorting
//! by address is numeric (`10.0.0.9` before `10.0.0.10`).
//!
//! Pages and the API still speak text: [`ip_text`] reads a stored address back, and the
//! SQL functions [`register`] adds convert inside queries that need text (a prefix
//! filter, the schema migration that converted the stored text).

use std::net::IpAddr;

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ToSql};

use super::filter::{AddrMatch, Where, escape_like};

/// `netmon_ip_blob(text)`: the stored form of an address's text; text that is not an
/// address comes back unchanged.
pub const IP_BLOB: &str = "netmon_ip_blob";
/// `netmon_ip(blob)`: the canonical text of a stored address.
pub const IP_TEXT: &str = "netmon_ip";

/// An address in its stored form, bound without an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlob {
    bytes: [u8; 16],
    len: u8,
}

impl IpBlob {
    pub fn new(ip: IpAddr) -> IpBlob {
        let mut bytes = [0u8; 16];
        let len = match ip {
            IpAddr::V4(v4) => {
                bytes[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                bytes = v6.octets();
                16
            }
        };
        IpBlob { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl ToSql for IpBlob {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self.as_bytes())))
    }
}

/// The address a stored blob holds (`None` for any other length).
pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The address a stored value holds: a blob of 4 or 16 bytes, or text the migration
/// kept because it did not parse (which then is no address either). `None` for
/// anything else, never an error: one odd row must not stop a load.
pub fn stored_ip(value: ValueRef) -> Option<IpAddr> {
    match value {
        ValueRef::Blob(b) => ip_from_bytes(b),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.parse().ok(),
        _ => None,
    }
}

/// A stored address as text: the canonical form of a blob, text as it is (a value the
/// migration could not parse), `None` for NULL.
pub fn ip_text(value: ValueRef) -> Option<String> {
    match value {
        ValueRef::Blob(b) => Some(match ip_from_bytes(b) {
            Some(ip) => ip.to_string(),
            None => b.iter().map(|x| format!("{x:02x}")).collect(),
        }),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    }
}

/// The stored form of an address given as text: its blob when it parses, else the text.
pub(crate) fn blob_or_text(text: &str) -> Value {
    match text.parse::<IpAddr>() {
        Ok(ip) => Value::Blob(IpBlob::new(ip).as_bytes().to_vec()),
        Err(_) => Value::Text(text.to_owned()),
    }
}

/// `column` (stored addresses) matches `m`. A network is a byte range of addresses of
/// its own length, so an index on the column can serve it.
pub(crate) fn addr_clause(w: &mut Where, column: &str, m: &AddrMatch) {
    match m {
        AddrMatch::Exact(ip) => w.add(format!("{column} = ?"), [blob_or_text(ip)]),
        AddrMatch::Net(net) => match net.parse::<ipnet::IpNet>() {
            Ok(net) => {
                let lo = IpBlob::new(net.network()).as_bytes().to_vec();
                let hi = IpBlob::new(net.broadcast()).as_bytes().to_vec();
                let len = lo.len() as i64;
                w.add(
                    format!("({column} BETWEEN ? AND ? AND length({column}) = ?)"),
                    [Value::Blob(lo), Value::Blob(hi), Value::Integer(len)],
                )
            }
            Err(_) => w.add("0", []),
        },
        AddrMatch::Prefix(p) => w.add(
            format!("{IP_TEXT}({column}) LIKE ? ESCAPE '\\'"),
            [Value::Text(format!("{}%", escape_like(p)))],
        ),
    }
}

/// Registers [`IP_BLOB`] and [`IP_TEXT`] on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function(IP_BLOB, 1, flags, |ctx| {
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(t) => blob_or_text(&String::from_utf8_lossy(t)),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Null => Value::Null,
        })
    })?;
    conn.create_scalar_function(IP_TEXT, 1, flags, |ctx| {
        Ok(ip_text(ctx.get_raw(0)).map_or(Value::Null, Value::Text))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_sort_numerically() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        for text in ["10.0.0.9", "2001:db8::1", "::ffff:192.0.2.1", "0.0.0.0"] {
            let ip: IpAddr = text.parse().unwrap();
            let blob = IpBlob::new(ip);
            assert_eq!(ip_from_bytes(blob.as_bytes()), Some(ip));
            let back: String = conn
                .query_row(&format!("SELECT {IP_TEXT}({IP_BLOB}(?1))"), [text], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(back, text);
        }
        assert_eq!(IpBlob::new("10.0.0.9".parse().unwrap()).as_bytes().len(), 4);
        let numeric: bool = conn
            .query_row(
                &format!("SELECT {IP_BLOB}('10.0.0.9') < {IP_BLOB}('10.0.0.10')"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(numeric);
        // Text that is no address is kept, not lost.
        let kept: String = conn
            .query_row(
                &format!("SELECT {IP_TEXT}({IP_BLOB}('not an ip'))"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, "not an ip");
        // Loads read any stored value without failing.
        assert_eq!(
            stored_ip(ValueRef::Blob(&[10, 0, 0, 9])),
            Some("10.0.0.9".parse().unwrap())
        );
        assert_eq!(
            stored_ip(ValueRef::Text(b"fd77::10")),
            Some("fd77::10".parse().unwrap())
        );
        assert_eq!(stored_ip(ValueRef::Text(b"not an ip")), None);
        assert_eq!(stored_ip(ValueRef::Blob(&[1, 2, 3])), None);
        assert_eq!(stored_ip(ValueRef::Null), None);
    }

    #[test]
    fn a_network_matches_its_own_family_only() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t (ip BLOB)").unwrap();
        for ip in [
            "10.1.2.3",
            "10.2.0.1",
            "9.255.255.255",
            "a01:203::1",
            "2001:db8::5",
        ] {
            conn.execute(
                "INSERT INTO t VALUES (?1)",
                [IpBlob::new(ip.parse().unwrap())],
            )
            .unwrap();
        }
        let matching = |m: AddrMatch| -> Vec<String> {
            let mut w = Where::default();
            addr_clause(&mut w, "ip", &m);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {IP_TEXT}(ip) FROM t{} ORDER BY ip",
                    w.sql()
                ))
                .unwrap();
            stmt.query_map(rusqlite::params_from_iter(w.params.iter()), |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(
            matching(AddrMatch::Net("10.0.0.0/8".into())),
            ["10.1.2.3", "10.2.0.1"]
        );
        assert_eq!(
            matching(AddrMatch::Net("2001:db8::/32".into())),
            ["2001:db8::5"]
        );
        assert_eq!(matching(AddrMatch::Exact("10.2.0.1".into())), ["10.2.0.1"]);
        assert_eq!(matching(AddrMatch::Prefix("10.1.".into())), ["10.1.2.3"]);
    }
}
