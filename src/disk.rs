//! How big a file system is and how much of it is free.

/// `statvfs(3)`: (size, space available to unprivileged users), in bytes.
// The fields are 64-bit here but 32-bit on many routers' targets (mips, arm); `from`
// is what compiles on both.
#[allow(clippy::useless_conversion)]
pub fn statvfs(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `s` is a valid out-pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = u64::from(s.f_frsize);
    Ok((
        u64::from(s.f_blocks).saturating_mul(frsize),
        u64::from(s.f_bavail).saturating_mul(frsize),
    ))
}

/// `statfs(2)`'s file-system type (`linux/magic.h`) of `path`, or of its nearest
/// existing ancestor when it does not exist yet.
pub fn fs_type(path: &std::path::Path) -> std::io::Result<i64> {
    let existing = path
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(std::path::Path::new("/"));
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: `st` is a plain C struct statfs fills; `c` is a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    Ok(st.f_type as i64)
}
