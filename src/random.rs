//! Random bytes for secrets (session ids, CSRF tokens, password salts, notification
//! nonces), straight from the kernel.

/// Fills `buf` from the kernel's CSPRNG with the `getrandom(2)` system call itself.
/// Not through a library that probes for it: in a static binary that probe (`dlsym`)
/// finds nothing and falls back to polling `/dev/random`, which a chroot or a minimal
/// `/dev` may not have (a minimal OpenWrt root has none). Blocks only until
/// the pool is first initialised at boot.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, which the kernel writes into.
        let n = unsafe { libc::syscall(libc::SYS_getrandom, rest.as_mut_ptr(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}
