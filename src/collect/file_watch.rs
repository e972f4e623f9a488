//! Waking a collector when a file it reads changes: inotify on the file's directory (so
//! creation, rename and truncation are seen too), re-armed when the directory is
//! re-created. Callers still re-check periodically: inotify may be missing.

use std::path::Path;
use std::sync::mpsc::SyncSender;

/// Watches the directory of `path` (so creation, rename and truncation are seen too)
/// and wakes `wake` for events about files whose name starts with `path`'s (the file
/// and its rotated copies). `None` when inotify or the directory is not there: the
/// caller polls.
pub fn watch_file(
    path: &Path,
    wake: SyncSender<()>,
    who: &str,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name()?.to_string_lossy().into_owned();
    let handler = move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            Ok(ev) => {
                ev.paths.is_empty()
                    || ev.paths.iter().any(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&name))
                    })
            }
            Err(_) => true,
        };
        if relevant {
            // A full channel already holds a wake-up.
            let _ = wake.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            log::debug!("{who}: no inotify ({e}); polling");
            return None;
        }
    };
    match watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            log::debug!("{who}: cannot watch {} ({e}); polling", dir.display());
            None
        }
    }
}

/// A [`watch_file`] that survives its directory: when the directory is removed the
/// kernel drops the inotify watch (`IN_IGNORED`), and one made before the directory
/// existed never worked. [`FileWatch::refresh`] (called on each periodic re-check)
/// watches again whenever the directory is back as a different one (device, inode) —
/// so after a lease or log directory vanishes and reappears, changes wake the collector
/// at once again rather than only at its next periodic re-read.
pub struct FileWatch {
    path: std::path::PathBuf,
    wake: SyncSender<()>,
    who: &'static str,
    /// The directory's identity when the watch was made; `None`: no working watch.
    dir: Option<(u64, u64)>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl FileWatch {
    pub fn new(path: &Path, wake: SyncSender<()>, who: &'static str) -> FileWatch {
        let mut w = FileWatch {
            path: path.to_owned(),
            wake,
            who,
            dir: None,
            watcher: None,
        };
        w.refresh();
        w
    }

    /// Whether inotify watches the directory now.
    pub fn is_active(&self) -> bool {
        self.watcher.is_some()
    }

    /// Watches again if the directory appeared, or was replaced, since the last watch.
    pub fn refresh(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let now = std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()));
        if now.is_some() && now == self.dir && self.watcher.is_some() {
            return;
        }
        if now.is_none() {
            // Gone: the old watch is dead; the collector's periodic re-check carries on.
            self.watcher = None;
            self.dir = None;
            return;
        }
        if self.dir.is_some() {
            log::info!(
                "{}: {} was re-created; watching it again",
                self.who,
                dir.display()
            );
        }
        self.watcher = watch_file(&self.path, self.wake.clone(), self.who);
        self.dir = if self.watcher.is_some() { now } else { None };
        // Whatever changed while nobody watched is news.
        let _ = self.wake.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;
    use std::time::Duration;

    /// Drains pending wake-ups; then waits up to 3 s for a new one.
    fn woken_by(rx: &std::sync::mpsc::Receiver<()>, action: impl FnOnce()) -> bool {
        std::thread::sleep(Duration::from_millis(200));
        while rx.try_recv().is_ok() {}
        action();
        rx.recv_timeout(Duration::from_secs(3)).is_ok()
    }

    #[test]
    fn file_watch_survives_its_directory_vanishing_and_returning() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("leases");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("dhcp.leases");
        let (tx, rx) = sync_channel(1);
        let mut watch = FileWatch::new(&file, tx, "test");
        assert!(watch.is_active());
        assert!(woken_by(&rx, || std::fs::write(&file, "a").unwrap()));

        std::fs::remove_dir_all(&dir).unwrap();
        watch.refresh();
        assert!(!watch.is_active(), "no directory, no watch");
        std::fs::create_dir_all(&dir).unwrap();
        watch.refresh();
        assert!(watch.is_active(), "watching the new directory");
        assert!(
            woken_by(&rx, || std::fs::write(&file, "b").unwrap()),
            "a file in the re-created directory wakes the collector"
        );
        // Another file in the directory does not.
        assert!(!woken_by(&rx, || std::fs::write(dir.join("other"), "c").unwrap()));
    }
}
