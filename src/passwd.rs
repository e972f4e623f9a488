//! The web UI password: its argon2id hash (made by `netmon passwd`, checked at login by
//! `web::auth`) and the in-place edit of the config file that stores it.
//!
//! Parameters: m = 12 MiB, t = 3, p = 1 — one of OWASP's equivalent argon2id settings
//! (Password Storage Cheat Sheet: m=19 MiB/t=2, m=12 MiB/t=3, m=9 MiB/t=4, …), the
//! lower-memory one because a login on a 128 MB router must not push the box into
//! swap-less memory pressure. A verification takes about 30 ms on a desktop core and
//! well under a second on a 880 MHz MIPS router; `web::auth` runs one at a time.
//!
//! Verification uses the parameters stored in the hash, so a hash made elsewhere works
//! too — within [`check_hash`]'s bounds, which keep a pasted hash with m = 4 GiB from
//! making every login an out-of-memory kill.
//!
//! A verification's working memory is mapped from the kernel for it and unmapped
//! after ([`BlockMemory`]), not taken from the heap: glibc keeps a freed block of
//! that size in the arena of the thread that freed it, and verifications run on
//! whichever blocking thread is free, so every thread's arena would keep one for the
//! life of the process. With `web::auth` running one at a time, the memory password
//! checks can hold is one hash's m, and only while a check runs.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Memory cost in KiB (12 MiB).
pub const M_COST_KIB: u32 = 12 * 1024;
/// Passes over the memory.
pub const T_COST: u32 = 3;
/// Lanes: routers have one or two slow cores.
pub const P_COST: u32 = 1;

/// Largest memory cost a configured hash may ask for at every login (KiB, 64 MiB).
pub const MAX_M_COST_KIB: u32 = 64 * 1024;
/// Largest time cost and parallelism a configured hash may ask for.
pub const MAX_T_COST: u32 = 10;
pub const MAX_P_COST: u32 = 4;

/// Shortest password `netmon passwd` accepts (characters).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted anywhere (bytes): bounds the hashing input.
pub const MAX_PASSWORD_BYTES: usize = 1024;

fn hasher() -> Argon2<'static> {
    // The constants are within argon2's limits, so `new` cannot fail; fall back to the
    // crate's defaults (also argon2id) rather than panic.
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string (`$argon2id$v=19$m=12288,t=3,p=1$<salt>$<hash>`) of `password`, with
/// a fresh 128-bit salt from the OS.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    crate::random::random_bytes(&mut salt)
        .map_err(|e| anyhow::anyhow!("no random salt from the OS: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = hasher()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `password` matches `hash` (a string [`check_hash`] accepted). Constant-time
/// in the comparison; seconds of CPU on purpose: call it off the async threads. Holds
/// the hash's memory cost (m KiB) while it runs and gives it back to the kernel before
/// it returns.
pub fn verify(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES || check_hash(hash).is_err() {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    // The output length comes from the stored hash (`Params::try_from` sets it).
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let Some(mut memory) = BlockMemory::map(params.block_count()) else {
        log::warn!("no memory for a password check ({} KiB)", params.m_cost());
        return false;
    };
    let mut out = [0u8; argon2::password_hash::Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let argon2 = Argon2::new(Algorithm::Argon2id, version, params);
    if argon2
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory)
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    argon2::password_hash::Output::new(out).is_ok_and(|out| out == expected)
}

/// argon2's working memory for one verification: an anonymous mapping (mmap(2)),
/// zero-filled by the kernel and unmapped on drop, so it is back with the kernel the
/// moment a check ends, whatever the allocator (see the module doc).
struct BlockMemory {
    blocks: std::ptr::NonNull<Block>,
    len: usize,
}

impl BlockMemory {
    /// `len` blocks (1 KiB each); `None` if the kernel refuses the mapping.
    fn map(len: usize) -> Option<BlockMemory> {
        let bytes = len.checked_mul(Block::SIZE).filter(|b| *b > 0)?;
        // SAFETY: a new private anonymous mapping (no file, no fixed address); the
        // result is checked for MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(BlockMemory {
            blocks: std::ptr::NonNull::new(ptr.cast())?,
            len,
        })
    }
}

impl AsMut<[Block]> for BlockMemory {
    fn as_mut(&mut self) -> &mut [Block] {
        // SAFETY: the mapping holds `len` blocks, is page-aligned (a Block needs 64
        // bytes), readable and writable, owned by `self` alone, and zero-filled: all
        // zero bytes are a valid Block (128 u64s).
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_ptr(), self.len) }
    }
}

impl Drop for BlockMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; no slice of it outlives
        // `self` (`as_mut` borrows `self` mutably).
        unsafe {
            libc::munmap(self.blocks.as_ptr().cast(), self.len * Block::SIZE);
        }
    }
}

/// Why a configured `password_hash` is unusable: not a PHC string, not argon2id, or
/// costs past the bounds above.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("not a PHC hash string ({0})")]
    NotPhc(argon2::password_hash::Error),
    #[error("an argon2id hash is expected, this one is {0}")]
    NotArgon2id(String),
    #[error("bad argon2 parameters ({0})")]
    BadParams(argon2::password_hash::Error),
    #[error(
        "costs m={m} t={t} p={p} are past the limits m<={max_m} t<={max_t} p<={max_p}",
        max_m = MAX_M_COST_KIB,
        max_t = MAX_T_COST,
        max_p = MAX_P_COST
    )]
    CostsTooHigh { m: u32, t: u32, p: u32 },
    #[error("the hash or salt part is missing")]
    Incomplete,
}

/// Why a configured `password_hash` is unusable, if it is.
pub fn check_hash(hash: &str) -> Result<(), HashError> {
    let parsed = PasswordHash::new(hash).map_err(HashError::NotPhc)?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(HashError::NotArgon2id(parsed.algorithm.to_string()));
    }
    let params = Params::try_from(&parsed).map_err(HashError::BadParams)?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(HashError::CostsTooHigh {
            m: params.m_cost(),
            t: params.t_cost(),
            p: params.p_cost(),
        });
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err(HashError::Incomplete);
    }
    Ok(())
}

/// Why a new UI password is refused.
#[derive(Debug, thiserror::Error)]
pub enum NewPasswordError {
    #[error("the password is too short: at least {min} characters", min = MIN_PASSWORD_CHARS)]
    TooShort,
    #[error("the password is too long: at most {max} bytes", max = MAX_PASSWORD_BYTES)]
    TooLong,
    #[error("the password contains control characters")]
    ControlCharacters,
}

/// Whether `password` is acceptable as a new UI password; the reason if not.
pub fn check_new_password(password: &str) -> Result<(), NewPasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(NewPasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(NewPasswordError::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(NewPasswordError::ControlCharacters);
    }
    Ok(())
}

/// The new password: typed twice on the terminal without echo when stdin is one, else
/// the first line of stdin (`echo "$pw" | netmon passwd`).
pub fn read_new_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        return Ok(password.to_owned());
    }
    let first = read_hidden("New web UI password: ")?;
    let second = read_hidden("Again: ")?;
    if first != second {
        bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}

/// Reads a line from the terminal on stdin with echo off; echo is restored after, also
/// when reading fails.
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 is open (we checked it is a terminal); `saved` is valid to write.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading terminal settings");
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    // SAFETY: as above; `quiet` is a copy of valid settings.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error()).context("turning terminal echo off");
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Sets `[web] password_hash` in the config file at `path`, keeping every comment, key
/// order and blank line; creates the file (mode 0600) when it does not exist.
///
/// The file is replaced atomically (a temporary file in the same directory, created
/// 0600, fsync, rename), with the old file's owner and mode less group write and every
/// bit for others ([`CONFIG_MODE_MASK`]), so a crash or a full disk leaves
/// either the old or the new file, never half of one. The result must be a valid
/// config, or nothing is written.
pub fn set_hash_in_file(path: &Path, hash: &str) -> anyhow::Result<()> {
    // Edit the file a symlink points to, not the link.
    let path = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("resolving {}", path.display())),
    };
    let (old_text, meta) = match std::fs::read_to_string(&path) {
        Ok(text) => (
            text,
            Some(std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new_text = with_hash(&old_text, hash).with_context(|| format!("{}", path.display()))?;
    crate::config::Config::parse(&new_text, &path).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(nothing written: fix the config file, then run `netmon passwd` again)"
        )
    })?;
    write_atomically(&path, new_text.as_bytes(), meta.as_ref())
}

/// `text` (a TOML document) with `[web] password_hash = "hash"`: replaced in place when
/// present (keeping the comment at the end of its line), else added to `[web]`, else a
/// `[web]` table is appended.
pub fn with_hash(text: &str, hash: &str) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("not valid TOML")?;
    let web = doc
        .entry("web")
        .or_insert_with(toml_edit::table)
        .as_table_like_mut()
        .context("`web` is not a table")?;
    let mut value = toml_edit::Value::from(hash);
    match web.get_mut("password_hash") {
        Some(item) => {
            if let Some(old) = item.as_value() {
                *value.decor_mut() = old.decor().clone();
            }
            *item = toml_edit::Item::Value(value);
        }
        None => {
            web.insert("password_hash", toml_edit::Item::Value(value));
        }
    }
    Ok(doc.to_string())
}

/// The permission bits a config file holding a password hash may keep: `rw-r-----`.
pub const CONFIG_MODE_MASK: u32 = 0o640;

fn write_atomically(
    path: &Path,
    bytes: &[u8],
    old: Option<&std::fs::Metadata>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "netmon.toml".into());
    let tmp = dir.join(format!(".{name}.netmon-passwd.{}", std::process::id()));
    let old_mode = old.map(|m| m.permissions().mode() & 0o7777);
    // The file holds the hash: readable by its owner (root) and its group (the
    // packages make it `root:netmon`, so a reload, running as netmon, can read it),
    // never by every local user — a hash is enough for an offline guessing attack.
    let mode = old_mode.map_or(0o600, |m| m & CONFIG_MODE_MASK);
    let result = (|| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        if let Some(m) = old {
            // Keep the owner (root normally; a mismatch is only worth a note).
            if let Err(e) = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid())) {
                log::warn!("cannot keep the owner of {}: {e}", path.display());
            }
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    match (&result, old_mode) {
        (Err(_), _) => {
            let _ = std::fs::remove_file(&tmp);
        }
        (Ok(()), Some(m)) if m != mode => log::warn!(
            "{} was mode {m:04o}; it holds the password hash, so it is now {mode:04o} \
             (owner read-write, group read, nothing for others)",
            path.display()
        ),
        (Ok(()), _) => {}
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_uses_the_stated_parameters() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"), "{h}");
        check_hash(&h).unwrap();
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct horsE"));
        assert!(!verify(&h, ""));
        // Salted: the same password hashes differently.
        assert_ne!(h, hash("correct horse").unwrap());
    }

    #[test]
    fn hashes_made_elsewhere_with_other_costs_verify() {
        // Made by argon2's own `PasswordHasher` (heap memory): other costs, lanes,
        // output lengths and the older version 0x10 all check out.
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        for (m, t, p, len, version) in [
            (19 * 1024, 2, 1, 32, Version::V0x13),
            (4096, 3, 2, 64, Version::V0x13),
            (64, 1, 1, 16, Version::V0x13),
            (M_COST_KIB, T_COST, P_COST, 32, Version::V0x10),
        ] {
            let params = Params::new(m, t, p, Some(len)).unwrap();
            let h = Argon2::new(Algorithm::Argon2id, version, params)
                .hash_password(b"pw one", &salt)
                .unwrap()
                .to_string();
            assert!(verify(&h, "pw one"), "{h}");
            assert!(!verify(&h, "pw two"), "{h}");
        }
        // A well-known hash (RFC 9106's parameters do not fit a PHC string; this one is
        // from the argon2 reference implementation's `argon2 somesalt -id -t 2 -m 16`).
        let reference = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assert!(verify(reference, "password"));
        assert!(!verify(reference, "passwore"));
    }

    #[test]
    fn check_hash_refuses_other_algorithms_and_huge_costs() {
        assert!(check_hash("secret").is_err());
        // argon2i, not argon2id.
        let e = check_hash(
            "$argon2i$v=19$m=4096,t=3,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("argon2id"), "{e}");
        let e = check_hash("$argon2id$v=19$m=4194304,t=3,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A").unwrap_err().to_string();
        assert!(e.contains("m=4194304"), "{e}");
        assert!(!verify(
            "$argon2id$v=19$m=4194304,t=3,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A",
            "x"
        ));
    }

    #[test]
    fn new_password_rules() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("long enough").is_ok());
        assert!(check_new_password("tab\there ok?").is_err());
        assert!(check_new_password(&"x".repeat(2000)).is_err());
    }

    #[test]
    fn with_hash_keeps_comments_and_layout() {
        let text = "# top comment\nport = 8080 # trailing\n\n[web]\n# the hash\npassword_hash = \"\" # set by netmon passwd\nsession_hours = 24\n\n[dns]\nqueue_num = 5353\n";
        let out = with_hash(text, "$argon2id$X").unwrap();
        assert_eq!(
            out,
            text.replace("password_hash = \"\"", "password_hash = \"$argon2id$X\"")
        );
        // No [web] yet: appended, everything else untouched.
        let out = with_hash("# c\nport = 1\n", "H").unwrap();
        assert_eq!(out, "# c\nport = 1\n\n[web]\npassword_hash = \"H\"\n");
        // [web] without the key: added to it.
        let out = with_hash("[web]\nauth = \"password\"\n[dns]\n", "H").unwrap();
        assert_eq!(
            out,
            "[web]\nauth = \"password\"\npassword_hash = \"H\"\n[dns]\n"
        );
        assert!(with_hash("web = 3\n", "H").is_err());
        assert!(with_hash("not toml [", "H").is_err());
    }

    #[test]
    fn set_hash_in_file_is_atomic_and_keeps_the_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("netmon.toml");
        std::fs::write(&path, "# mine\n[web]\npassword_hash = \"\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let h = hash("a good password").unwrap();
        set_hash_in_file(&path, &h).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine\n"), "{text}");
        assert!(text.contains(&h), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // A file every local user could read is not left so.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        set_hash_in_file(&path, &h).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // A new file is created 0600.
        let fresh = dir.join("new.toml");
        set_hash_in_file(&fresh, &h).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // An invalid config is left alone.
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "tick_ms = 1\n").unwrap();
        let e = set_hash_in_file(&bad, &h).unwrap_err().to_string();
        assert!(e.contains("tick_ms"), "{e}");
        assert_eq!(std::fs::read_to_string(&bad).unwrap(), "tick_ms = 1\n");
        // No temporary files left behind.
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        tmp.close().unwrap();
    }
}
