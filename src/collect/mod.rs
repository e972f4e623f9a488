//! Collectors: each reads one kernel or file source and sends [`crate::event::Event`]s
//! to the writer without ever waiting on it.

pub mod conntrack;
pub mod ctnetlink;
pub mod devices;
pub mod dns;
pub mod dnsmasq;
pub mod nflog;
pub mod offload;
pub mod system;

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use neli::socket::NlSocket;

/// `SO_RCVTIMEO` on a netlink socket, so its thread notices shutdown within `t` when
/// nothing arrives. `who` names the collector in the warning.
pub fn set_receive_timeout(sock: &NlSocket, t: Duration, who: &str) {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
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
