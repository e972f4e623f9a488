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
