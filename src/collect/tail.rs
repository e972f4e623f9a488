//! Following a log or lease file by path, as `tail -F` does: what is appended, line by
//! line, across rename and copytruncate rotation, with the read offset kept across
//! restarts.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

/// Longest line accepted (dnsmasq's `MAX_MESSAGE` is 1024; lease lines are far shorter);
/// longer ones are skipped.
pub const MAX_LINE_BYTES: usize = 4096;
/// The read offset is written to disk at most this often (and at shutdown).
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// After a rename rotation, the old file is read until it has not grown for this long:
/// a daemon writes to it until it reopens its log (dnsmasq: on SIGUSR2, sent by
/// logrotate's postrotate).
const ROTATED_GRACE: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 64 << 10;
/// Bytes read in one pass before the caller gets to act on what they gave (and look at
/// its shutdown flag) (a large backlog after a restart is read in slices).
const MAX_PASS_BYTES: u64 = 4 << 20;

/// Where reading stopped, kept in a small JSON file next to the database (the dnsmasq
/// log: `<db_path>.dnsmasq-offset`) so a restart neither re-reads nor skips lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedOffset {
    /// The log file it belongs to (a changed `log_file` starts afresh).
    pub(crate) path: PathBuf,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// Start of the first line not yet read completely.
    pub(crate) offset: u64,
}

/// Where the first open of the file starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resume {
    /// The saved offset if it is the same file; the start of a different one (the old
    /// one was rotated away while netmon was down).
    Saved(SavedOffset),
    /// The first start ever: history is not read, only what is written from now on.
    AtEnd,
    /// A file that appeared while netmon runs is new: all of it.
    FromStart,
}

/// One open log file being read.
struct Tail {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes read so far (complete lines plus `partial`).
    offset: u64,
    /// The incomplete last line, kept until its newline arrives.
    partial: Vec<u8>,
    /// Inside a line too long to keep: bytes are dropped up to the next newline.
    skipping: bool,
    /// Lines ending at or before this offset were written before this run started
    /// reading (they must not calibrate the clock).
    backlog_end: u64,
    last_growth: Instant,
}

impl Tail {
    /// The offset to persist: the start of the incomplete line.
    fn consumed(&self) -> u64 {
        self.offset - self.partial.len() as u64
    }
}

/// What the follower counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FollowStats {
    pub rotations_rename: u64,
    pub rotations_truncate: u64,
    /// Lines over [`MAX_LINE_BYTES`] and incomplete lines a rotated file ended with.
    pub broken_lines: u64,
    /// Times the file disappeared from its path (deleted, or its directory removed).
    pub vanished: u64,
}

/// Follows one log file by path: reads what is appended, keeps a partial last line until
/// it is complete, and follows the file when it is replaced (rename rotation: the old
/// file is read to its end, and a while longer, then the new one from its start),
/// truncated (copytruncate: it shrank, so read it from the start), or gone (keep reading
/// the open file until a new one appears). Line order is the file's.
pub struct Follower {
    /// Names the file in log messages ("dnsmasq log").
    label: &'static str,
    /// Said after "cannot open": how to make the program that writes the file produce it.
    missing_hint: String,
    path: PathBuf,
    state_path: Option<PathBuf>,
    current: Option<Tail>,
    /// The previous file after a rename rotation, read until [`ROTATED_GRACE`] passes
    /// without growth.
    rotated: Option<Tail>,
    resume: Resume,
    saved: Option<SavedOffset>,
    last_save: Option<Instant>,
    warned_missing: bool,
    warned_state: bool,
    /// The path named no file at the last check (counted once per disappearance).
    gone: bool,
    /// Why the last attempt to open the path failed; `None` once a file is open.
    open_error: Option<String>,
    buf: Vec<u8>,
    pub stats: FollowStats,
}

impl Follower {
    /// The path followed (whatever file it names now).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What to say after "cannot open" the first time the file is missing (starts with
    /// a space).
    pub fn with_missing_hint(mut self, hint: String) -> Follower {
        self.missing_hint = hint;
        self
    }

    /// `label` names the file in log messages; `state_path`: where the offset is kept
    /// (`None`: never persisted, always starts at the end of an existing file).
    pub fn new(label: &'static str, path: PathBuf, state_path: Option<PathBuf>) -> Follower {
        let mut warned_state = false;
        let resume = match state_path.as_deref().map(std::fs::read_to_string) {
            Some(Ok(text)) => match serde_json::from_str::<SavedOffset>(&text) {
                Ok(saved) if saved.path == path => Resume::Saved(saved),
                Ok(_) => Resume::AtEnd,
                Err(e) => {
                    warn!(
                        "{label}: ignoring the unreadable offset file {}: {e}; \
                         starting at the end of {}",
                        state_path.as_deref().unwrap_or(Path::new("")).display(),
                        path.display()
                    );
                    warned_state = true;
                    Resume::AtEnd
                }
            },
            _ => Resume::AtEnd,
        };
        Follower {
            label,
            missing_hint: String::new(),
            path,
            state_path,
            current: None,
            rotated: None,
            resume,
            saved: None,
            last_save: None,
            warned_missing: false,
            warned_state,
            gone: false,
            open_error: None,
            buf: vec![0; READ_CHUNK],
            stats: FollowStats::default(),
        }
    }

    /// Reads what is new; `sink` gets each complete line (without its newline) and
    /// whether it was written after this run started reading. Returns true when more is
    /// left to read (a pass reads at most [`MAX_PASS_BYTES`]).
    ///
    /// (Long: the follower's rotation and truncation cases, in the order they must be
    /// checked.)
    pub fn poll(&mut self, now: Instant, sink: &mut dyn FnMut(&[u8], bool)) -> bool {
        let mut budget = MAX_PASS_BYTES;
        if let Some(old) = self.rotated.as_mut() {
            read_tail(old, &mut self.buf, &mut budget, now, sink, &mut self.stats);
            if now.duration_since(old.last_growth) >= ROTATED_GRACE {
                self.drop_rotated();
            }
        }
        if self.current.is_none() {
            self.open_current(now);
        }
        let Some(cur) = self.current.as_mut() else {
            return false;
        };
        let found = std::fs::metadata(&self.path);
        if found.is_ok() {
            self.gone = false;
        }
        match found {
            Ok(m) if (m.dev(), m.ino()) != (cur.dev, cur.ino) => {
                // Replaced (rename rotation): finish the old file first.
                info!(
                    "{}: {} was replaced (rotation); reading the new file from its start",
                    self.label,
                    self.path.display()
                );
                self.stats.rotations_rename += 1;
                let mut unlimited = u64::MAX;
                if let Some(mut older) = self.rotated.take() {
                    read_tail(
                        &mut older,
                        &mut self.buf,
                        &mut unlimited,
                        now,
                        sink,
                        &mut self.stats,
                    );
                    self.rotated = Some(older);
                    self.drop_rotated();
                }
                // Its lines come before the new file's; the daemon may add a few more
                // until it reopens (SIGUSR2), read on the next passes.
                if let Some(mut old) = self.current.take() {
                    // Its grace period starts now, whenever it last grew.
                    old.last_growth = now;
                    read_tail(
                        &mut old,
                        &mut self.buf,
                        &mut unlimited,
                        now,
                        sink,
                        &mut self.stats,
                    );
                    self.rotated = Some(old);
                }
                self.resume = Resume::FromStart;
                self.open_current(now);
            }
            Ok(_) => match cur.file.metadata() {
                Ok(m) if m.len() < cur.offset => {
                    info!(
                        "{}: {} shrank (copytruncate rotation); reading it from its start",
                        self.label,
                        self.path.display()
                    );
                    self.stats.rotations_truncate += 1;
                    cur.offset = 0;
                    cur.backlog_end = 0;
                    cur.skipping = false;
                    if !cur.partial.is_empty() {
                        cur.partial.clear();
                        self.stats.broken_lines += 1;
                    }
                }
                _ => {}
            },
            // Renamed away or deleted: the daemon may still write to the open file, which is
            // read on; a new file at the path is followed from its start (the branch
            // above) as soon as it appears.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.gone {
                    self.gone = true;
                    self.stats.vanished += 1;
                    info!(
                        "{}: {} is gone; reading the open file on until a new one appears",
                        self.label,
                        self.path.display()
                    );
                }
            }
            Err(e) => debug!("{}: stat {}: {e}", self.label, self.path.display()),
        }
        let Some(cur) = self.current.as_mut() else {
            return false;
        };
        read_tail(cur, &mut self.buf, &mut budget, now, sink, &mut self.stats)
    }

    /// Why nothing new can be read from the path now: it cannot be opened (missing, no
    /// permission), or the file being read was deleted or moved away and no new one
    /// appeared there. `None` while the file at the path is followed.
    pub fn problem(&self) -> Option<String> {
        if let Some(e) = &self.open_error {
            return Some(format!("cannot open {}: {e}", self.path.display()));
        }
        self.gone.then(|| {
            format!(
                "{} was deleted or moved away, and no new file appeared there",
                self.path.display()
            )
        })
    }

    fn drop_rotated(&mut self) {
        if let Some(old) = self.rotated.take()
            && !old.partial.is_empty()
        {
            self.stats.broken_lines += 1;
        }
    }

    fn open_current(&mut self, now: Instant) {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                if !self.warned_missing {
                    warn!(
                        "{}: cannot open {} ({e}); waiting for it.{}",
                        self.label,
                        self.path.display(),
                        self.missing_hint
                    );
                    self.warned_missing = true;
                }
                self.open_error = Some(e.to_string());
                // Whatever appears later was written after now.
                self.resume = Resume::FromStart;
                return;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                warn!("{}: stat {}: {e}", self.label, self.path.display());
                return;
            }
        };
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());
        let mut skipping = false;
        let (offset, backlog_end) = match &self.resume {
            Resume::Saved(s) if s.dev == dev && s.ino == ino && s.offset <= size => {
                info!(
                    "{}: following {} from offset {} (where the last run stopped)",
                    self.label,
                    self.path.display(),
                    s.offset
                );
                (s.offset, size)
            }
            Resume::Saved(_) => {
                info!(
                    "{}: following {} from its start (a new file since the last run)",
                    self.label,
                    self.path.display()
                );
                (0, size)
            }
            Resume::AtEnd => {
                info!(
                    "{}: following {} from its end (first start: history is not read)",
                    self.label,
                    self.path.display()
                );
                // Mid-line? Then the rest of that line is not a line.
                let mut last = [0u8; 1];
                if size > 0 && file.read_at(&mut last, size - 1).is_ok_and(|n| n == 1) {
                    skipping = last[0] != b'\n';
                }
                (size, size)
            }
            Resume::FromStart => (0, 0),
        };
        self.warned_missing = false;
        self.open_error = None;
        self.resume = Resume::FromStart;
        self.current = Some(Tail {
            file,
            dev,
            ino,
            offset,
            partial: Vec::new(),
            skipping,
            backlog_end,
            last_growth: now,
        });
    }

    /// Writes the offset (atomically: temp file + rename) when it changed, at most every
    /// [`STATE_SAVE_INTERVAL`] unless `force`.
    pub fn save_state(&mut self, now: Instant, force: bool) {
        let (Some(state_path), Some(cur)) = (self.state_path.as_ref(), self.current.as_ref())
        else {
            return;
        };
        let state = SavedOffset {
            path: self.path.clone(),
            dev: cur.dev,
            ino: cur.ino,
            offset: cur.consumed(),
        };
        if self.saved.as_ref() == Some(&state)
            || (!force
                && self
                    .last_save
                    .is_some_and(|t| now.duration_since(t) < STATE_SAVE_INTERVAL))
        {
            return;
        }
        self.last_save = Some(now);
        let mut tmp = state_path.as_os_str().to_owned();
        tmp.push(".tmp");
        let result = serde_json::to_vec(&state)
            .map_err(io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, state_path));
        match result {
            Ok(()) => {
                self.saved = Some(state);
                self.warned_state = false;
            }
            Err(e) if !self.warned_state => {
                warn!(
                    "{}: cannot save the read offset to {}: {e}; after a restart \
                     netmon starts at the end of the log",
                    self.label,
                    state_path.display()
                );
                self.warned_state = true;
            }
            Err(_) => {}
        }
    }
}

/// Reads `t` from its offset to the end (or until `budget` is spent), handing complete
/// lines to `sink`. True when the budget ran out first.
fn read_tail(
    t: &mut Tail,
    buf: &mut [u8],
    budget: &mut u64,
    now: Instant,
    sink: &mut dyn FnMut(&[u8], bool),
    stats: &mut FollowStats,
) -> bool {
    loop {
        if *budget == 0 {
            return true;
        }
        let want = buf
            .len()
            .min(usize::try_from(*budget).unwrap_or(usize::MAX));
        let n = match t.file.read_at(&mut buf[..want], t.offset) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!("log follower: read: {e}");
                return false;
            }
        };
        let start = t.offset;
        t.offset += n as u64;
        *budget = budget.saturating_sub(n as u64);
        t.last_growth = now;
        let mut data = &buf[..n];
        let mut pos = start;
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            pos += i as u64 + 1;
            let live = pos > t.backlog_end;
            if t.skipping {
                t.skipping = false;
            } else if t.partial.is_empty() {
                sink(&data[..i], live);
            } else {
                t.partial.extend_from_slice(&data[..i]);
                sink(&t.partial, live);
                t.partial.clear();
            }
            data = &data[i + 1..];
        }
        if !t.skipping {
            t.partial.extend_from_slice(data);
            if t.partial.len() > MAX_LINE_BYTES {
                t.partial.clear();
                t.skipping = true;
                stats.broken_lines += 1;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    // ---- the follower, on temporary files ------------------------------------------------

    /// A per-test directory; `tempfile` removes it on drop.
    pub(crate) struct TempDir(tempfile::TempDir);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let dir = tempfile::Builder::new()
                .prefix(&format!("netmon-tail-{tag}-"))
                .tempdir()
                .expect("temp dir");
            TempDir(dir)
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }
    }

    pub(crate) fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(text.as_bytes()).expect("append");
    }

    /// Everything the follower reads now.
    fn read(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        let mut sink = |b: &[u8], _live: bool| out.push(String::from_utf8_lossy(b).into_owned());
        while f.poll(Instant::now(), &mut sink) {}
        out
    }

    #[test]
    fn a_missing_or_deleted_file_is_a_problem_until_one_is_read() {
        let dir = TempDir::new("problem");
        let log = dir.path("dnsmasq.log");
        let mut f = Follower::new("test log", log.clone(), None);
        assert!(read(&mut f).is_empty());
        let missing = f.problem().expect("missing file");
        assert!(
            missing.contains("cannot open") && missing.contains("dnsmasq.log"),
            "{missing}"
        );
        append(&log, "one\n");
        assert_eq!(read(&mut f), ["one"]);
        assert_eq!(f.problem(), None);
        std::fs::remove_file(&log).expect("rm");
        read(&mut f);
        let gone = f.problem().expect("deleted file");
        assert!(gone.contains("deleted or moved away"), "{gone}");
        append(&log, "two\n");
        assert_eq!(read(&mut f), ["two"]);
        assert_eq!(f.problem(), None);
    }

    #[test]
    fn first_start_reads_only_what_comes_next() {
        let dir = TempDir::new("first");
        let log = dir.path("dnsmasq.log");
        append(&log, "old 1\nold 2\nhalf a li");
        let mut f = Follower::new(
            "dnsmasq log",
            log.clone(),
            Some(dir.path("netmon.dnsmasq-offset")),
        );
        assert_eq!(read(&mut f), Vec::<String>::new());
        append(&log, "ne\nnew 1\nnew");
        assert_eq!(
            read(&mut f),
            ["new 1"],
            "the line begun before start is not a line"
        );
        append(&log, " 2\n");
        assert_eq!(
            read(&mut f),
            ["new 2"],
            "a partial line waits for its newline"
        );
    }

    #[test]
    fn rename_rotation_finishes_the_old_file_first() {
        let dir = TempDir::new("rename");
        let log = dir.path("dnsmasq.log");
        let old = dir.path("dnsmasq.log.1");
        append(&log, "");
        let mut f = Follower::new("dnsmasq log", log.clone(), None);
        assert!(read(&mut f).is_empty());
        append(&log, "a\n");
        assert_eq!(read(&mut f), ["a"]);
        std::fs::rename(&log, &old).expect("rename");
        append(&old, "b\n"); // dnsmasq has not reopened yet
        assert_eq!(read(&mut f), ["b"], "the renamed file is still read");
        append(&log, "c\n"); // logrotate's create, dnsmasq's SIGUSR2
        append(&old, "late\n");
        assert_eq!(read(&mut f), ["late", "c"]);
        append(&log, "d\n");
        assert_eq!(read(&mut f), ["d"]);
        assert_eq!(f.stats.rotations_rename, 1);
    }

    #[test]
    fn copytruncate_restarts_at_zero() {
        let dir = TempDir::new("truncate");
        let log = dir.path("dnsmasq.log");
        append(&log, "");
        let mut f = Follower::new("dnsmasq log", log.clone(), None);
        read(&mut f);
        append(&log, "line one\nline two\n");
        assert_eq!(read(&mut f), ["line one", "line two"]);
        std::fs::copy(&log, dir.path("dnsmasq.log.1")).expect("copy");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&log, "three\n");
        assert_eq!(read(&mut f), ["three"]);
        assert_eq!(f.stats.rotations_truncate, 1);
    }

    #[test]
    fn restart_resumes_without_duplicates() {
        let dir = TempDir::new("restart");
        let log = dir.path("dnsmasq.log");
        let state = dir.path("netmon.dnsmasq-offset");
        append(&log, "history\n");
        let mut f = Follower::new("dnsmasq log", log.clone(), Some(state.clone()));
        read(&mut f);
        append(&log, "x\ny\npart");
        assert_eq!(read(&mut f), ["x", "y"]);
        f.save_state(Instant::now(), true);
        drop(f);
        append(&log, "ial\nz\n");
        let mut f = Follower::new("dnsmasq log", log.clone(), Some(state.clone()));
        assert_eq!(
            read(&mut f),
            ["partial", "z"],
            "resumes at the incomplete line"
        );
        f.save_state(Instant::now(), true);
        drop(f);
        // Rotated while netmon was down: the new file is read from its start.
        std::fs::rename(&log, dir.path("dnsmasq.log.1")).expect("rename");
        append(&log, "n1\n");
        let mut f = Follower::new("dnsmasq log", log.clone(), Some(state.clone()));
        assert_eq!(read(&mut f), ["n1"]);
        f.save_state(Instant::now(), true);
        drop(f);
        // Another log file configured: its history is not read.
        let other = dir.path("other.log");
        append(&other, "other history\n");
        let mut f = Follower::new("dnsmasq log", other.clone(), Some(state));
        assert!(read(&mut f).is_empty());
    }

    #[test]
    fn a_vanished_file_is_picked_up_when_it_reappears() {
        let dir = TempDir::new("vanish");
        let log = dir.path("dnsmasq.log");
        let mut f = Follower::new("dnsmasq log", log.clone(), None);
        assert!(read(&mut f).is_empty(), "missing at start");
        append(&log, "first\n");
        assert_eq!(
            read(&mut f),
            ["first"],
            "created later: read from its start"
        );
        std::fs::remove_file(&log).expect("remove");
        assert!(read(&mut f).is_empty());
        append(&log, "again\n");
        assert_eq!(read(&mut f), ["again"]);
    }

    #[test]
    fn overlong_lines_are_skipped() {
        let dir = TempDir::new("long");
        let log = dir.path("dnsmasq.log");
        append(&log, "");
        let mut f = Follower::new("dnsmasq log", log.clone(), None);
        read(&mut f);
        append(&log, &"x".repeat(MAX_LINE_BYTES + 10));
        assert!(read(&mut f).is_empty());
        append(&log, &format!("{}\nok\n", "x".repeat(100_000)));
        assert_eq!(read(&mut f), ["ok"]);
        assert_eq!(f.stats.broken_lines, 1);
    }
}
