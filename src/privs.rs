//! Privileges: netmon starts as root and, before it starts a single thread, becomes the
//! unprivileged `user` (default `netmon`) keeping only the capabilities its running
//! parts still use (README "Privileges").
//!
//! What still needs a capability after start, and why (kernel sources named):
//! - **`CAP_NET_ADMIN`**, always. nfnetlink checks it on *every* message a process sends
//!   (`nfnetlink_rcv`: `netlink_net_capable(skb, CAP_NET_ADMIN)`, which tests both the
//!   socket opener and the sending task, `__netlink_ns_capable`): the periodic and the
//!   overrun-resync conntrack dumps, every NFQUEUE verdict (a DNS answer without one
//!   stays queued), the NFLOG and NFQUEUE bind/config messages. Joining the ctnetlink
//!   event groups (`netlink_bind`: `NL_CFG_F_NONROOT_RECV` is not set for nfnetlink),
//!   `SO_RCVBUFFORCE`, and the `net.netfilter` sysctls (`net_ctl_permissions` gives a
//!   `CAP_NET_ADMIN` holder root's access) need it too. The `nft` commands netmon runs —
//!   loading its table, the flow-offload check every few minutes, deleting the table
//!   at exit — inherit it as an *ambient* capability (`capabilities(7)`: a non-root
//!   `execve` keeps only ambient capabilities), as does the process a SIGHUP reload
//!   re-executes.
//! - **`CAP_NET_BIND_SERVICE`**, only when a `listen` port is below 1024: the listeners
//!   are bound again after every SIGHUP reload (a fresh process).
//!
//! Nothing else: the database directory, the history path and the offset file are
//! given to the account while still root ([`prepare_paths`]); the TLS key and the ASN
//! database are read before the switch. `PR_SET_NO_NEW_PRIVS` is set and the bounding
//! set is cut to the same capabilities, so nothing netmon executes can gain more.
//!
//! Why before the first thread, and not after the collectors opened their sockets:
//! Linux credentials are per thread. glibc's `setresuid` changes every thread, but
//! `PR_SET_KEEPCAPS`, `capset` and the ambient set only the calling one, so threads
//! already running would lose `CAP_NET_ADMIN` (which they need for dumps and verdicts)
//! or keep everything. Switching first and then opening the sockets and installing the
//! table with `CAP_NET_ADMIN` alone is the same state, reached with less time as root —
//! and it runs the very path a SIGHUP reload takes, so every start proves the reload
//! works.
//!
//! Accounts are read from `/etc/passwd` and `/etc/group` directly: netmon is a static
//! binary and never calls glibc's NSS (`getpwnam`).
//!
//! (Long: every step of the privilege drop in its required order, ≈ 810 lines of code; the
//! rest are tests.)

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::Config;

/// `linux/capability.h`.
pub const CAP_NET_BIND_SERVICE: u32 = 10;
pub const CAP_NET_ADMIN: u32 = 12;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// An account from `/etc/passwd`, with its groups from `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary one and every group listing the account.
    pub groups: Vec<u32>,
}

/// How [`drop_privileges`] left the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Switched from root to the account, with exactly these capabilities.
    Dropped { user: String, caps: u64 },
    /// Already not root (a reload's re-executed process, or a service manager that
    /// started netmon as the account): capabilities trimmed to these.
    AlreadyUnprivileged { uid: u32, caps: u64 },
    /// Still root: `user = ""`, or the account does not exist.
    Root,
}

/// Account names as `useradd` and busybox `adduser` accept them (and `""`: none).
pub fn is_account_name(name: &str) -> bool {
    name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The capabilities netmon keeps, as a bit mask: see the module doc.
pub fn needed_caps(listen: &[SocketAddr]) -> u64 {
    let mut caps = 1u64 << CAP_NET_ADMIN;
    if listen.iter().any(|a| a.port() < 1024) {
        caps |= 1 << CAP_NET_BIND_SERVICE;
    }
    caps
}

/// Capability names for messages (`"CAP_NET_ADMIN, CAP_NET_BIND_SERVICE"`).
pub fn cap_names(caps: u64) -> String {
    let mut names = Vec::new();
    for (bit, name) in [
        (CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ] {
        if caps & (1 << bit) != 0 {
            names.push(name.to_owned());
        }
    }
    let rest = caps & !((1 << CAP_NET_BIND_SERVICE) | (1 << CAP_NET_ADMIN));
    for bit in 0..64 {
        if rest & (1 << bit) != 0 {
            names.push(format!("capability {bit}"));
        }
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The account `name` from `/etc/passwd` and `/etc/group`; `None` when it is not there.
pub fn lookup(name: &str) -> io::Result<Option<Account>> {
    // A root file system without /etc/passwd (a bare chroot) has no accounts at all.
    let passwd = match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A router without /etc/group still has the primary group.
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    Ok(parse_account(&passwd, &group, name))
}

/// `name:password:uid:gid:gecos:home:shell` lines, then `name:password:gid:members`.
pub fn parse_account(passwd: &str, group: &str, name: &str) -> Option<Account> {
    let (uid, gid) = passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        let uid = f.next()?.parse::<u32>().ok()?;
        let gid = f.next()?.parse::<u32>().ok()?;
        Some((uid, gid))
    })?;
    let mut groups = vec![gid];
    for line in group.lines() {
        let mut f = line.split(':');
        let (Some(_), Some(_), Some(g), Some(members)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Ok(g) = g.parse::<u32>() else { continue };
        if members.split(',').any(|m| m.trim() == name) && !groups.contains(&g) {
            groups.push(g);
        }
    }
    Some(Account {
        name: name.to_owned(),
        uid,
        gid,
        groups,
    })
}

/// Becomes `config.user` keeping only [`needed_caps`]`(listen)` — see the module doc.
/// Must run before any thread starts (checked). Publishes `netmon_privileges_dropped`.
pub fn drop_privileges(config: &Config, listen: &[SocketAddr]) -> anyhow::Result<Outcome> {
    let outcome = switch(config, listen)?;
    let dropped = !matches!(outcome, Outcome::Root);
    metrics::gauge!("netmon_privileges_dropped").set(f64::from(u8::from(dropped)));
    Ok(outcome)
}

fn switch(config: &Config, listen: &[SocketAddr]) -> anyhow::Result<Outcome> {
    let need = needed_caps(listen);
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return trim(config, need, euid);
    }
    if config.user.is_empty() {
        log::info!("running as root: `user` is \"\" in the config");
        return Ok(Outcome::Root);
    }
    let account = match lookup(&config.user).context("reading /etc/passwd")? {
        Some(a) => a,
        None => {
            log::warn!(
                "RUNNING AS ROOT: the account user = {:?} does not exist, so netmon keeps every \
                 privilege. Create it (OpenWrt: the netmon package does; by hand: `adduser -S -D \
                 -H -s /bin/false {0}` or `useradd --system --no-create-home --shell \
                 /usr/sbin/nologin {0}`), or set user = \"\" to run as root on purpose",
                config.user
            );
            return Ok(Outcome::Root);
        }
    };
    if account.uid == 0 {
        log::warn!(
            "user = {:?} is root (uid 0): netmon keeps every privilege",
            account.name
        );
        return Ok(Outcome::Root);
    }
    let threads = own_threads();
    if threads != 1 {
        bail!("internal: privileges must be dropped before any thread starts ({threads} running)");
    }
    prepare_paths(config, &account)?;
    become_account(&account, need).with_context(|| {
        format!(
            "switching to user {:?} (uid {}, gid {}) keeping {}",
            account.name,
            account.uid,
            account.gid,
            cap_names(need)
        )
    })?;
    let have = own_caps();
    if have.effective != need || have.permitted != need || have.ambient != need {
        bail!(
            "after switching to user {:?}: capabilities are effective {:#x}, permitted {:#x}, \
             ambient {:#x}; expected {need:#x} ({})",
            account.name,
            have.effective,
            have.permitted,
            have.ambient,
            cap_names(need)
        );
    }
    log::info!(
        "running as user {} (uid {}, gid {}) with {} only",
        account.name,
        account.uid,
        account.gid,
        cap_names(need)
    );
    Ok(Outcome::Dropped {
        user: account.name,
        caps: need,
    })
}

/// Not root: keep what is needed of what the process has (a reload's re-executed
/// process has exactly the set its predecessor kept; a service manager may give more).
fn trim(config: &Config, need: u64, euid: u32) -> anyhow::Result<Outcome> {
    let have = own_caps();
    let keep = need & have.permitted;
    if keep != need {
        log::warn!(
            "running as uid {euid} without {}: {}",
            cap_names(need & !have.permitted),
            if need & !have.permitted & (1 << CAP_NET_BIND_SERVICE) != 0 {
                "a listen port below 1024 cannot be bound (after a reload that added one, \
                 restart netmon instead)"
            } else {
                "conntrack, DNS capture and the firewall table will fail (start netmon as \
                 root, or give it CAP_NET_ADMIN)"
            }
        );
    }
    if let Ok(Some(account)) = lookup(&config.user)
        && account.uid != euid
    {
        log::warn!(
            "running as uid {euid}, not as user {:?} (uid {}): a changed `user` applies at the \
             next restart, not at a reload",
            account.name,
            account.uid
        );
    }
    set_caps(keep).context("trimming capabilities")?;
    set_ambient(keep).context("setting ambient capabilities")?;
    no_new_privs()?;
    log::info!("running as uid {euid} with {}", cap_names(keep));
    Ok(Outcome::AlreadyUnprivileged {
        uid: euid,
        caps: keep,
    })
}

/// The switch itself (`capabilities(7)`, "Effect of user ID changes on capabilities").
fn become_account(a: &Account, need: u64) -> anyhow::Result<()> {
    // Bounding set first, while CAP_SETPCAP is still effective. Without it (a service
    // manager already cut the bounding set, CAP_SETPCAP included) `EPERM`: nothing
    // netmon can do, and NO_NEW_PRIVS below still stops any gain through `execve`.
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in 0..=last.min(63) {
        if need & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Unknown to this kernel.
                    Some(libc::EINVAL) => {}
                    Some(libc::EPERM) => {
                        log::debug!("no CAP_SETPCAP: the bounding set stays as it is");
                        break;
                    }
                    _ => {
                        return Err(e).with_context(|| {
                            format!("dropping capability {cap} from the bounding set")
                        });
                    }
                }
            }
        }
    }
    // Keep the permitted set across the uid change (effective is cleared regardless).
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) }).context("PR_SET_KEEPCAPS")?;
    let groups: Vec<libc::gid_t> = a.groups.clone();
    // SAFETY: the pointer and length describe `groups`.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }).context("setgroups")?;
    // SAFETY: plain integer arguments.
    check(unsafe { libc::setresgid(a.gid, a.gid, a.gid) }).context("setresgid")?;
    // SAFETY: plain integer arguments.
    check(unsafe { libc::setresuid(a.uid, a.uid, a.uid) }).context("setresuid")?;
    set_caps(need).context("capset")?;
    set_ambient(need).context("ambient capabilities")?;
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) }).context("PR_SET_KEEPCAPS")?;
    no_new_privs()?;
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    check(unsafe { libc::getresuid(&mut r, &mut e, &mut s) }).context("getresuid")?;
    if (r, e, s) != (a.uid, a.uid, a.uid) {
        bail!("uids are {r}/{e}/{s} after setresuid");
    }
    Ok(())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `capset(2)` for this thread: effective = permitted = inheritable = `caps` (the
/// inheritable bit is what lets a capability be ambient).
fn set_caps(caps: u64) -> io::Result<()> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    for (i, word) in data.iter_mut().enumerate() {
        let bits = (caps >> (32 * i)) as u32;
        *word = CapData {
            effective: bits,
            permitted: bits,
            inheritable: bits,
        };
    }
    // SAFETY: a v3 header and the two data words it requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The ambient set becomes exactly `caps` (each must be permitted and inheritable).
fn set_ambient(caps: u64) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    for cap in 0..64u32 {
        if caps & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments.
            check(unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            })?;
        }
    }
    Ok(())
}

fn no_new_privs() -> anyhow::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .context("PR_SET_NO_NEW_PRIVS")
}

/// The capability sets of this process, from `/proc/self/status`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub bounding: u64,
}

pub fn own_caps() -> CapSets {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_cap_sets(&status)
}

/// `CapEff:\t0000000000001000` style lines of a `/proc/PID/status`.
pub fn parse_cap_sets(status: &str) -> CapSets {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    CapSets {
        effective: field("CapEff:"),
        permitted: field("CapPrm:"),
        inheritable: field("CapInh:"),
        ambient: field("CapAmb:"),
        bounding: field("CapBnd:"),
    }
}

fn own_threads() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::memory::proc_field(&s, "Threads:"))
        .unwrap_or(0)
}

/// The directories netmon writes and the names of its files in each: the database's
/// (database, `-wal`/`-shm`/`-journal`, `.corrupt-*` quarantine copies, the restore
/// temp file, the dnsmasq log offset, the history being built) and, with the history
/// store on, the history's (its journal, the temp file it is installed from).
fn owned_files(config: &Config) -> Vec<(PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    let mut add = |path: &Path, extensions: &[&str]| {
        let (Some(dir), Some(name), Some(stem)) =
            (path.parent(), path.file_name(), path.file_stem())
        else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let (name, stem) = (
            name.to_string_lossy().into_owned(),
            stem.to_string_lossy().into_owned(),
        );
        let mut names = vec![name];
        names.extend(extensions.iter().map(|e| format!("{stem}.{e}")));
        out.push((dir.to_owned(), names));
    };
    add(
        &config.db_path,
        &[
            "restore-tmp",
            "dnsmasq-offset",
            "dnsmasq-offset.tmp",
            "history-build",
        ],
    );
    if crate::store::history::enabled(config) {
        add(&config.persist_path, &["history-tmp"]);
    }
    out
}

/// Whether `file` is one of netmon's files named in `names` (exactly, or with a `-` or
/// `.` suffix: `-wal`, `.corrupt-…`).
fn is_owned_name(file: &str, names: &[String]) -> bool {
    names.iter().any(|n| {
        file == n
            || file
                .strip_prefix(n.as_str())
                .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'))
    })
}

/// Why [`prepare_paths`] will not give a path to the account. Each message names the
/// path, who owns it and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(
        "the directory {dir} belongs to {owner}, not to root or {account}: its owner decides \
         what is in it (a hard link to /etc/shadow named like a database file, say), so root \
         will not give anything in it to {account}. If it is not yours, remove it (`rm -r \
         {dir}`); if it is, check what it holds and `chown -R {account}: {dir}`; or choose \
         another db_path / persist_path"
    )]
    ForeignDirectory {
        dir: PathBuf,
        owner: String,
        account: String,
    },
    #[error(
        "{link} is a symbolic link owned by {owner}, not root: whoever owns it chooses which \
         directory root gives files away in. Remove it (`rm {link}`), or make it root's"
    )]
    ForeignDirectoryLink { link: PathBuf, owner: String },
    #[error(
        "{path} has {links} hard links: another name of the same file may be anywhere on this \
         file system (/etc/shadow, say), so root will not give it to {account}. List the \
         other names with `find / -xdev -samefile {path}`, then remove {path} if it is not \
         netmon's, or leave it with one name"
    )]
    HardLinked {
        path: PathBuf,
        links: u64,
        account: String,
    },
    #[error(
        "{path} belongs to {owner}, not to root or {account}: netmon will not take over \
         another account's file. Remove it if it is not netmon's, else `chown {account}: \
         {path}`"
    )]
    ForeignFile {
        path: PathBuf,
        owner: String,
        account: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// `"user alice (uid 1000)"`, or `"uid 54321"` for a uid `/etc/passwd` does not name.
fn describe_owner(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    });
    match name {
        Some(name) => format!("user {name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// The permission bits netmon's files may keep: those its umask (027) leaves — no write
/// for the group, nothing for others, no set-id bits. The database holds every
/// device's traffic and names.
pub const FILE_MODE_MASK: u32 = 0o750;

/// `openat(2)` relative to `dir` (or the working directory), close-on-exec.
fn open_at(dir: Option<&OwnedFd>, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let dirfd = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: a NUL-terminated path and a directory descriptor we own (or AT_FDCWD).
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstat(2)` of a descriptor (also an `O_PATH` one).
fn fd_metadata(fd: &OwnedFd) -> io::Result<std::fs::Metadata> {
    let file = std::fs::File::from(fd.try_clone()?);
    file.metadata()
}

/// `fchownat(fd, "", …, AT_EMPTY_PATH)`: changes the inode `fd` was opened on, whatever
/// its name now is. Works on `O_PATH` descriptors, where `fchown(2)` does not
/// (`open(2)`: "O_PATH"; `fchownat(2)`: "AT_EMPTY_PATH").
fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: an empty NUL-terminated path and a descriptor we own.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `chmod` of the inode behind `fd`: `fchmod(2)` refuses `O_PATH` descriptors, so through
/// `/proc/self/fd/N`, which names exactly that inode (`proc(5)`).
fn chmod_fd(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        std::fs::Permissions::from_mode(mode),
    )
}

/// As root, before the switch: creates the database (and history) directories and
/// gives netmon's own files in them to `account`, with group write and every "other"
/// bit cleared. A directory is given too when it is netmon's alone — it holds nothing
/// but those files, is not world-writable and is owned by root — never a shared one
/// like `/tmp` or `/etc/netmon` (the config stays root's).
///
/// Root must not be tricked into giving away a file that is not netmon's:
/// - A directory owned by anyone but root or `account` is refused: its owner could have
///   put anything there. Refused rather than moved aside and re-created: the directory
///   is named by the config, and an admin who made it for another account should
///   decide, not find it renamed.
/// - Every file is opened with `O_PATH | O_NOFOLLOW` relative to the opened directory,
///   checked and changed through that descriptor, so a symbolic link is never followed
///   and a name swapped after the check changes nothing.
/// - A regular file with more than one hard link is refused, not skipped: its other
///   name may be `/etc/shadow` (a hard link needs no access to the target when
///   `fs.protected_hardlinks` is 0). Skipping it would leave a root-owned file netmon
///   cannot write, and the start would fail later with a less clear error.
/// - A file owned by another account is refused, not taken over.
///
/// (Long: each path's ownership checks in the order they must run as root.)
pub fn prepare_paths(config: &Config, account: &Account) -> Result<(), PrepareError> {
    let io_err = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| PrepareError::Io { what, path, source }
    };
    for (dir, names) in owned_files(config) {
        if !dir.exists() {
            // Mode 0750 under netmon's umask (027).
            std::fs::create_dir_all(&dir).map_err(io_err("creating directory", &dir))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750));
        }
        // The directory itself: a symbolic link (an admin moving the database to a USB
        // disk) is followed only when root made it.
        let link = std::fs::symlink_metadata(&dir).map_err(io_err("reading", &dir))?;
        if link.file_type().is_symlink() && link.uid() != 0 {
            return Err(PrepareError::ForeignDirectoryLink {
                link: dir,
                owner: describe_owner(link.uid()),
            });
        }
        let dir_fd = open_at(None, &dir, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(io_err("opening directory", &dir))?;
        let meta = fd_metadata(&dir_fd).map_err(io_err("reading directory", &dir))?;
        if meta.uid() != 0 && meta.uid() != account.uid {
            return Err(PrepareError::ForeignDirectory {
                dir,
                owner: describe_owner(meta.uid()),
                account: account.name.clone(),
            });
        }
        // Listed through the descriptor: the directory checked above, even if its name
        // was moved meanwhile.
        let listing = PathBuf::from(format!("/proc/self/fd/{}", dir_fd.as_raw_fd()));
        let mut only_ours = true;
        for entry in std::fs::read_dir(&listing).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let name = entry.file_name();
            if !is_owned_name(&name.to_string_lossy(), &names) {
                only_ours = false;
                continue;
            }
            let path = dir.join(&name);
            let fd = match open_at(
                Some(&dir_fd),
                Path::new(&name),
                libc::O_PATH | libc::O_NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // Removed since the listing: nothing to give.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("opening", &path)(e)),
            };
            let m = fd_metadata(&fd).map_err(io_err("reading", &path))?;
            // Symbolic links (O_NOFOLLOW gave the link itself), directories, FIFOs:
            // not netmon's to give. SQLite, running as the account, follows a link with
            // the account's rights only.
            if !m.file_type().is_file() {
                continue;
            }
            if m.uid() != 0 && m.uid() != account.uid {
                return Err(PrepareError::ForeignFile {
                    path,
                    owner: describe_owner(m.uid()),
                    account: account.name.clone(),
                });
            }
            let give = (m.uid(), m.gid()) != (account.uid, account.gid);
            let mode = m.mode() & 0o7777;
            let tighten = mode & !FILE_MODE_MASK != 0;
            // Only a change of owner needs the check: without one the file already is
            // the account's, and clearing its mode bits gives nobody anything.
            if give && m.nlink() > 1 {
                return Err(PrepareError::HardLinked {
                    path,
                    links: m.nlink(),
                    account: account.name.clone(),
                });
            }
            if give {
                chown_fd(&fd, account.uid, account.gid).map_err(io_err("giving away", &path))?;
            }
            if tighten {
                chmod_fd(&fd, mode & FILE_MODE_MASK)
                    .map_err(io_err("clearing group write and other bits of", &path))?;
            }
        }
        let shared = meta.mode() & 0o002 != 0 || dir.parent().is_none();
        if only_ours && !shared && meta.uid() == 0 {
            chown_fd(&dir_fd, account.uid, account.gid).map_err(io_err("giving away", &dir))?;
        }
    }
    Ok(())
}

/// After the switch: the database directory must be writable (else nothing works; a
/// clear error now), and what a later read needs — the config (SIGHUP reload), the
/// history directory, the TLS files, lease files and the dnsmasq log — should be
/// readable: each that is not gets one warning saying what to change.
pub fn check_access(config: &Config, config_path: &Path) -> anyhow::Result<()> {
    let user = if config.user.is_empty() {
        "root"
    } else {
        config.user.as_str()
    };
    let dirs = owned_files(config);
    if let Some((db_dir, _)) = dirs.first()
        && let Err(e) = access(db_dir, libc::W_OK | libc::X_OK)
    {
        bail!(
            "user {user} cannot write the database directory {} ({e}): give it to {user} \
             (`chown {user} {0}`), choose another db_path, or set user = \"\"",
            db_dir.display()
        );
    }
    if let Some((persist_dir, _)) = dirs.get(1)
        && let Err(e) = access(persist_dir, libc::W_OK | libc::X_OK)
    {
        log::error!(
            "user {user} cannot write the history directory {} ({e}): history syncs will fail. \
             Let {user} write it (OpenWrt/Debian packages: /etc/netmon is root:{user} mode \
             1770), or set persist_path elsewhere",
            persist_dir.display()
        );
    }
    let mut readable: Vec<(&Path, &str)> = vec![(config_path, "the config (SIGHUP reload)")];
    for (path, what) in [
        (&config.web.tls_cert, "web.tls_cert (SIGHUP reload)"),
        (&config.web.tls_key, "web.tls_key (SIGHUP reload)"),
        (&config.enrich.asn_db, "enrich.asn_db (SIGHUP reload)"),
        (&config.dns.log_file, "dns.log_file"),
    ] {
        if !path.as_os_str().is_empty() {
            readable.push((path, what));
        }
    }
    for path in &config.devices.lease_files {
        readable.push((path, "a devices.lease_files entry"));
    }
    for (path, what) in readable {
        match access(path, libc::R_OK) {
            Ok(()) => {}
            // Lease files and logs appear later; only a refusal is worth a warning.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!(
                "user {user} cannot read {} ({what}): {e}. Make it readable by {user} (e.g. \
                 `chgrp {user} {0} && chmod g+r {0}`)",
                path.display()
            ),
        }
    }
    Ok(())
}

/// `access(2)`: checks with the real uid — after the switch, the account's.
fn access(path: &Path, mode: libc::c_int) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a NUL-terminated path.
    check(unsafe { libc::access(c.as_ptr(), mode) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/ash\n\
        daemon:*:1:1:daemon:/var:/bin/false\n\
        netmon:x:420:420:netmon:/var/run/netmon:/bin/false\n\
        broken:x:notanumber:1::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
        netmon:x:420:\n\
        dnsmasq:x:453:netmon,other\n\
        logread:x:7: other , netmon \n\
        bad:x:zz:netmon\n";

    #[test]
    fn account_from_passwd_and_group() {
        let a = parse_account(PASSWD, GROUP, "netmon").unwrap();
        assert_eq!(
            a,
            Account {
                name: "netmon".into(),
                uid: 420,
                gid: 420,
                groups: vec![420, 453, 7],
            }
        );
        assert_eq!(parse_account(PASSWD, GROUP, "nobody"), None);
        assert_eq!(parse_account(PASSWD, GROUP, "broken"), None);
        assert_eq!(parse_account(PASSWD, "", "daemon").unwrap().groups, vec![1]);
        // A prefix of a name is not the name.
        assert_eq!(parse_account(PASSWD, GROUP, "netm"), None);
    }

    #[test]
    fn needed_caps_add_bind_only_for_low_ports() {
        let high: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let low: SocketAddr = "[::1]:443".parse().unwrap();
        assert_eq!(needed_caps(&[high]), 1 << CAP_NET_ADMIN);
        assert_eq!(
            needed_caps(&[high, low]),
            (1 << CAP_NET_ADMIN) | (1 << CAP_NET_BIND_SERVICE)
        );
        assert_eq!(cap_names(needed_caps(&[high])), "CAP_NET_ADMIN");
        assert_eq!(cap_names(0), "none");
    }

    #[test]
    fn owned_names_never_include_the_config() {
        let config = Config {
            db_path: "/etc/netmon/netmon.db".into(),
            persist: crate::config::Persist::Off,
            ..Config::default()
        };
        let (dir, names) = owned_files(&config).remove(0);
        assert_eq!(dir, Path::new("/etc/netmon"));
        for ours in [
            "netmon.db",
            "netmon.db-wal",
            "netmon.db-shm",
            "netmon.db.corrupt-1700000000",
            "netmon.dnsmasq-offset",
            "netmon.restore-tmp",
        ] {
            assert!(is_owned_name(ours, &names), "{ours}");
        }
        for theirs in ["netmon.toml", "netmon.dbx", "asn.mmdb", "netmon"] {
            assert!(!is_owned_name(theirs, &names), "{theirs}");
        }
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    }

    fn stat(path: &Path) -> (u32, u32, u32) {
        let m = std::fs::symlink_metadata(path).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    }

    const ACCOUNT: u32 = 4242;
    const STRANGER: u32 = 5353;

    fn prepare(db_dir: &Path) -> Result<(), PrepareError> {
        let config = Config {
            db_path: db_dir.join("netmon.db"),
            persist: crate::config::Persist::Off,
            ..Config::default()
        };
        let account = Account {
            name: "nmtest".into(),
            uid: ACCOUNT,
            gid: ACCOUNT,
            groups: vec![ACCOUNT],
        };
        prepare_paths(&config, &account)
    }

    #[test]
    fn prepare_paths_gives_netmons_files_and_clears_other_bits() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("netmon.db"), b"db").unwrap();
        std::fs::set_permissions(dir.join("netmon.db"), PermissionsExt::from_mode(0o4666)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(stat(&dir.join("netmon.db")), (ACCOUNT, ACCOUNT, 0o640));
        assert_eq!(
            stat(&dir).0,
            ACCOUNT,
            "a root directory holding only netmon's files"
        );
        // A directory that does not exist yet is created and given.
        let fresh = top.path().join("fresh/sub");
        prepare(&fresh).unwrap();
        assert_eq!(stat(&fresh).0, ACCOUNT);
        top.close().unwrap();
    }

    #[test]
    fn prepare_paths_never_gives_away_a_file_that_is_not_netmons() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let top = tempfile::tempdir().unwrap();
        // root's file, which a link planted in the database directory names.
        let precious = top.path().join("shadow");
        std::fs::write(&precious, b"root:$6$secret").unwrap();
        let before = stat(&precious);

        // A directory owned by someone else: refused whatever it holds.
        let foreign = top.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::hard_link(&precious, foreign.join("netmon.db-wal")).unwrap();
        chown(&foreign, STRANGER);
        let e = prepare(&foreign).unwrap_err();
        assert!(matches!(e, PrepareError::ForeignDirectory { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&foreign.display().to_string())
                && msg.contains(&format!("uid {STRANGER}"))
                && msg.contains("rm -r"),
            "{msg}"
        );
        assert_eq!(stat(&precious), before);

        // The account's own directory (as after every first start), with a hard link.
        let ours = top.path().join("ours");
        std::fs::create_dir(&ours).unwrap();
        chown(&ours, ACCOUNT);
        std::fs::hard_link(&precious, ours.join("netmon.db")).unwrap();
        let e = prepare(&ours).unwrap_err();
        assert!(
            matches!(e, PrepareError::HardLinked { links: 3, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("netmon.db"), "{e}");
        assert_eq!(stat(&precious), before);
        std::fs::remove_file(ours.join("netmon.db")).unwrap();

        // A symbolic link is never followed, and its target keeps its owner.
        std::os::unix::fs::symlink(&precious, ours.join("netmon.db-shm")).unwrap();
        prepare(&ours).unwrap();
        assert_eq!(stat(&precious), before);
        assert_eq!(
            stat(&ours.join("netmon.db-shm")).0,
            0,
            "the link itself is left"
        );

        // Another account's file is not taken over.
        std::fs::write(ours.join("netmon.db-journal"), b"").unwrap();
        chown(&ours.join("netmon.db-journal"), STRANGER);
        let e = prepare(&ours).unwrap_err();
        assert!(matches!(e, PrepareError::ForeignFile { .. }), "{e}");
        assert_eq!(stat(&ours.join("netmon.db-journal")).0, STRANGER);

        // A symbolic link as the directory itself counts only when root made it.
        let target = top.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let link = top.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        chown(&link, STRANGER);
        let e = prepare(&link).unwrap_err();
        assert!(
            matches!(e, PrepareError::ForeignDirectoryLink { .. }),
            "{e}"
        );
        assert_eq!(stat(&target).0, 0);
        top.close().unwrap();
    }

    #[test]
    fn cap_sets_from_status() {
        let s = "Name:\tnetmon\nCapInh:\t0000000000001000\nCapPrm:\t0000000000001400\n\
                 CapEff:\t0000000000001400\nCapBnd:\t0000000000001400\nCapAmb:\t0000000000001000\n";
        let c = parse_cap_sets(s);
        assert_eq!(c.effective, 0x1400);
        assert_eq!(c.permitted, 0x1400);
        assert_eq!(c.inheritable, 0x1000);
        assert_eq!(c.ambient, 0x1000);
        assert_eq!(c.bounding, 0x1400);
    }

    #[test]
    fn account_names() {
        assert!(is_account_name("netmon"));
        assert!(is_account_name(""));
        assert!(is_account_name("net_mon-2.x"));
        assert!(!is_account_name("-rf"));
        assert!(!is_account_name("a b"));
        assert!(!is_account_name("root:x"));
        assert!(!is_account_name(&"a".repeat(33)));
    }
}
