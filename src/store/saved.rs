//! Saved searches: a name for a URL of one of netmon's list pages.
//!
//! The URL is the search — every filter of every page is already a shareable query
//! string — so a saved search needs no filter model of its own and keeps working as
//! pages gain parameters. What is stored is checked here (a local path of a known page,
//! printable ASCII, bounded) by the web handlers before they send the command and by
//! the writer again when it applies it, so a crafted command cannot store an open
//! redirect or markup either.

use rusqlite::{Connection, Transaction, params};
use serde::Serialize;

use crate::event::{Command, CommandError, CommandReply, CommandResult};

/// Most saved searches kept: a list a person scrolls, not a database.
pub const MAX_SEARCHES: i64 = 200;
/// Longest name (characters).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest URL (bytes): every filter of the flows page fits several times over.
pub const MAX_URL_BYTES: usize = 1000;

/// The pages whose URLs can be saved: the ones with filters worth keeping.
pub const PAGES: &[&str] = &[
    "/",
    "/flows",
    "/devices",
    "/hosts",
    "/dns",
    "/drops",
    "/anomalies",
    "/incidents",
    "/rules",
    "/router",
];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SavedSearch {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub pinned: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What is wrong with a saved search's name or URL, worded for the person typing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("a saved search needs a name")]
    NoName,
    #[error("a name has at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("a name cannot hold control characters")]
    ControlInName,
    #[error("a saved search is a page of this netmon (http or https)")]
    NotHttp,
    #[error("a saved search's URL has at most {MAX_URL_BYTES} bytes")]
    UrlTooLong,
    #[error("a saved search's URL is printable ASCII without spaces (percent-encode the rest)")]
    UrlNotPrintable,
    /// The path is not one of [`PAGES`] nor a device, host or incident page.
    #[error("`{0}` is not a page of netmon with filters (one of {pages})", pages = PAGES.join(", "))]
    UnknownPage(String),
}

/// A name as stored: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control characters.
pub fn check_name(name: &str) -> Result<String, SearchError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(SearchError::NoName);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(SearchError::NameTooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(SearchError::ControlInName);
    }
    Ok(name.to_owned())
}

/// A URL as stored: the path of one of [`PAGES`] (or a device, host or incident page),
/// optionally a query, printable ASCII only (a browser percent-encodes the rest), at
/// most [`MAX_URL_BYTES`]. Accepts a full `http(s)://host/path?query` as pasted from
/// the address bar and keeps only its path and query: the search must stay on this
/// router whatever host it was copied from.
pub fn check_url(url: &str) -> Result<String, SearchError> {
    let url = url.trim();
    let local = match url.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            match rest.find('/') {
                Some(i) => &rest[i..],
                None => "/",
            }
        }
        Some(_) => return Err(SearchError::NotHttp),
        None => url,
    };
    if local.len() > MAX_URL_BYTES {
        return Err(SearchError::UrlTooLong);
    }
    if !local.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SearchError::UrlNotPrintable);
    }
    let local = local.split('#').next().unwrap_or_default();
    let (path, query) = local.split_once('?').unwrap_or((local, ""));
    let known = PAGES.contains(&path) || detail_page(path);
    if !known || path.starts_with("//") || path.contains('\\') {
        return Err(SearchError::UnknownPage(path.to_owned()));
    }
    Ok(if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    })
}

/// `/devices/12`, `/hosts/3`, `/incidents/7`: one thing's page.
fn detail_page(path: &str) -> bool {
    ["/devices/", "/hosts/", "/incidents/"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix).is_some_and(|id| {
                !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit())
            })
        })
}

/// Every saved search, pinned first, then by name.
pub fn searches(c: &Connection) -> rusqlite::Result<Vec<SavedSearch>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, name, url, pinned, created_at, updated_at FROM saved_searches
         ORDER BY pinned DESC, name COLLATE NOCASE, id",
    )?;
    let rows = stmt.query_map([], row)?;
    rows.collect()
}

/// The pinned ones, for the overview.
pub fn pinned(c: &Connection) -> rusqlite::Result<Vec<SavedSearch>> {
    Ok(searches(c)?.into_iter().filter(|s| s.pinned).collect())
}

pub fn search(c: &Connection, id: i64) -> rusqlite::Result<Option<SavedSearch>> {
    use rusqlite::OptionalExtension;
    c.prepare_cached(
        "SELECT id, name, url, pinned, created_at, updated_at FROM saved_searches WHERE id = ?1",
    )?
    .query_row([id], row)
    .optional()
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<SavedSearch> {
    Ok(SavedSearch {
        id: r.get(0)?,
        name: r.get(1)?,
        url: r.get(2)?,
        pinned: r.get::<_, i64>(3)? != 0,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

/// The writer's side of the saved-search commands. Errors are for the user.
pub fn apply_command(tx: &Transaction, command: Command, now: i64) -> CommandResult {
    let invalid = |e: SearchError| CommandError::Invalid(e.to_string());
    let changed = |n: usize, id: i64| {
        if n == 0 {
            Err(CommandError::NotFound {
                what: "saved search",
                id,
            })
        } else {
            Ok(CommandReply::Done)
        }
    };
    match command {
        Command::CreateSearch { name, url } => {
            let name = check_name(&name).map_err(invalid)?;
            let url = check_url(&url).map_err(invalid)?;
            let count: i64 =
                tx.query_row("SELECT count(*) FROM saved_searches", [], |r| r.get(0))?;
            if count >= MAX_SEARCHES {
                return Err(CommandError::Invalid(format!(
                    "{MAX_SEARCHES} searches are saved already; delete one first"
                )));
            }
            tx.prepare_cached(
                "INSERT INTO saved_searches (name, url, pinned, created_at, updated_at)
                 VALUES (?1, ?2, 0, ?3, ?3)",
            )
            .and_then(|mut s| s.execute(params![name, url, now]))?;
            Ok(CommandReply::Id(tx.last_insert_rowid()))
        }
        Command::RenameSearch { search_id, name } => {
            let name = check_name(&name).map_err(invalid)?;
            let n = tx
                .prepare_cached(
                    "UPDATE saved_searches SET name = ?2, updated_at = ?3 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![search_id, name, now]))?;
            changed(n, search_id)
        }
        Command::PinSearch { search_id, pinned } => {
            let n = tx
                .prepare_cached(
                    "UPDATE saved_searches SET pinned = ?2, updated_at = ?3 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![search_id, pinned, now]))?;
            changed(n, search_id)
        }
        Command::DeleteSearch { search_id } => {
            let n = tx
                .prepare_cached("DELETE FROM saved_searches WHERE id = ?1")
                .and_then(|mut s| s.execute([search_id]))?;
            changed(n, search_id)
        }
        other => Err(CommandError::Invalid(format!(
            "not a saved-search command: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&c).unwrap();
        c
    }

    fn apply(c: &mut Connection, cmd: Command) -> CommandResult {
        let tx = c.transaction().unwrap();
        let r = apply_command(&tx, cmd, 1_000);
        tx.commit().unwrap();
        r
    }

    #[test]
    fn urls_stay_on_known_pages_of_this_router() {
        assert_eq!(
            check_url("/flows?domain=a.test").unwrap(),
            "/flows?domain=a.test"
        );
        assert_eq!(
            check_url("http://192.168.1.1:8080/dns?rcode=NXDOMAIN#top").unwrap(),
            "/dns?rcode=NXDOMAIN"
        );
        assert_eq!(check_url("https://router").unwrap(), "/");
        assert_eq!(check_url("/devices/12").unwrap(), "/devices/12");
        for bad in [
            "//evil.test/flows",
            "/\\evil.test",
            "javascript:alert(1)",
            "ftp://x/flows",
            "/flows?q=<script>",
            "/flows?a b",
            "/login?next=/",
            "/devices/x",
            "/devices/",
            "",
        ] {
            if bad == "/flows?q=<script>" {
                // Printable, so kept: it is only ever an href, escaped by maud.
                assert!(check_url(bad).is_ok());
                continue;
            }
            assert!(check_url(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_url(&format!("/flows?{}", "a".repeat(MAX_URL_BYTES))).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("  TV at night ").unwrap(), "TV at night");
        assert!(check_name("   ").is_err());
        assert!(check_name("a\u{7}b").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn create_rename_pin_delete() {
        let mut c = db();
        let Ok(CommandReply::Id(a)) = apply(
            &mut c,
            Command::CreateSearch {
                name: "zeta".into(),
                url: "/dns?rcode=NXDOMAIN".into(),
            },
        ) else {
            panic!("not created")
        };
        let Ok(CommandReply::Id(b)) = apply(
            &mut c,
            Command::CreateSearch {
                name: "Alpha".into(),
                url: "/flows?port=22".into(),
            },
        ) else {
            panic!("not created")
        };
        let names: Vec<_> = searches(&c).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["Alpha", "zeta"]);
        apply(
            &mut c,
            Command::PinSearch {
                search_id: a,
                pinned: true,
            },
        )
        .unwrap();
        apply(
            &mut c,
            Command::RenameSearch {
                search_id: b,
                name: "SSH".into(),
            },
        )
        .unwrap();
        let all = searches(&c).unwrap();
        assert_eq!((all[0].id, all[0].pinned), (a, true), "pinned first");
        assert_eq!(all[1].name, "SSH");
        assert_eq!(pinned(&c).unwrap().len(), 1);
        apply(&mut c, Command::DeleteSearch { search_id: a }).unwrap();
        assert!(search(&c, a).unwrap().is_none());
        assert!(matches!(
            apply(&mut c, Command::DeleteSearch { search_id: a }),
            Err(CommandError::NotFound { .. })
        ));
        assert!(
            apply(
                &mut c,
                Command::RenameSearch {
                    search_id: b,
                    name: " ".into()
                }
            )
            .is_err()
        );
        assert!(
            apply(
                &mut c,
                Command::CreateSearch {
                    name: "x".into(),
                    url: "//evil".into()
                }
            )
            .is_err(),
            "the writer checks too"
        );
    }

    #[test]
    fn the_list_is_bounded() {
        let mut c = db();
        for i in 0..MAX_SEARCHES {
            apply(
                &mut c,
                Command::CreateSearch {
                    name: format!("s{i}"),
                    url: "/flows".into(),
                },
            )
            .unwrap();
        }
        let err = apply(
            &mut c,
            Command::CreateSearch {
                name: "one more".into(),
                url: "/".into(),
            },
        );
        let err = err.unwrap_err();
        assert!(matches!(err, CommandError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains("delete one first"));
    }
}
