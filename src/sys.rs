//! Small facts about the host the router runs: interface addresses, sysctls, time.

use std::net::IpAddr;

use ipnet::IpNet;

/// One address on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub interface: String,
    pub net: IpNet,
}

/// Every address of every interface (`getifaddrs(3)`).
pub fn interface_addrs() -> std::io::Result<Vec<InterfaceAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned and is not freed yet.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr/ifa_netmask point to sockaddrs of the family in sa_family.
        let (addr, mask) = unsafe { (sockaddr_ip(ifa.ifa_addr), sockaddr_ip(ifa.ifa_netmask)) };
        let (Some(addr), Some(mask)) = (addr, mask) else {
            continue;
        };
        let prefix = match mask {
            IpAddr::V4(m) => u32::from(m).count_ones() as u8,
            IpAddr::V6(m) => u128::from(m).count_ones() as u8,
        };
        if let Ok(net) = IpNet::new(addr, prefix) {
            out.push(InterfaceAddr {
                interface: name,
                net,
            });
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// # Safety
/// `sa` must be null or point to a valid sockaddr of the family it declares.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: caller guarantees `sa` is valid; we read it as the family it declares.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

/// Reads a sysctl under `/proc/sys` (`net.netfilter.nf_conntrack_acct` style name).
pub fn read_sysctl(name: &str) -> std::io::Result<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// Writes a sysctl; fails without CAP_NET_ADMIN in the owning namespace (or on a
/// read-only /proc/sys).
pub fn write_sysctl(name: &str, value: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::write(path, value)
}

/// Marks every open file descriptor from `first` on close-on-exec, so an `exec` of
/// this process starts with none of them. Some libraries open sockets without
/// `SOCK_CLOEXEC` (the NFQUEUE one): carried into a SIGHUP reload's new process, the
/// old socket would keep the queue bound, and the new one's bind is refused (`EPERM`,
/// `nfqnl_recv_config`: the queue belongs to another netlink port).
pub fn set_cloexec_from(first: i32) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on a descriptor number; a closed one just fails.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Now as unix milliseconds (UTC). All stored times use this unit.
/// Fills `buf` from the kernel's CSPRNG with the `getrandom(2)` system call itself.
/// Not through a library that probes for it: in a static binary that probe (`dlsym`)
/// finds nothing and falls back to polling `/dev/random`, which a chroot or a minimal
/// `/dev` may not have (the packaging test's OpenWrt root did not). Blocks only until
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

/// One `kB` field of `/proc/self/status` (`"VmRSS:"`, `"RssAnon:"`, …) in bytes; 0 when
/// absent or unreadable.
pub fn self_status_bytes(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident set size and its peak, in bytes, from `/proc/self/status`.
pub fn rss_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (
        self_status_bytes(&status, "VmRSS:"),
        self_status_bytes(&status, "VmHWM:"),
    )
}

/// Maps and sets with room for fewer entries than this are not worth shrinking.
const SHRINK_ABOVE: usize = 16_384;

/// Gives back a map's buckets once it is under a quarter full. A `HashMap` never shrinks
/// on its own, so a flood's peak stayed for the life of the process: after a 30 000
/// flows/s lab flood, heaptrack found the conntrack tracker's table (63 MiB), the DNS
/// attribution's pending flows (25 MiB), the writer's live flows (15 MiB) and the
/// detector's (14 MiB) still holding their peak size with few entries left. Shrinking
/// copies the remaining entries once; call it between ticks, not per event.
pub fn shrink_map<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) -> bool {
    let sparse = map.capacity() > SHRINK_ABOVE && map.capacity() > 4 * map.len();
    if sparse {
        map.shrink_to(2 * map.len());
    }
    sparse
}

/// [`shrink_map`] for a set.
pub fn shrink_set<K: Eq + std::hash::Hash, S: std::hash::BuildHasher>(
    set: &mut std::collections::HashSet<K, S>,
) -> bool {
    let sparse = set.capacity() > SHRINK_ABOVE && set.capacity() > 4 * set.len();
    if sparse {
        set.shrink_to(2 * set.len());
    }
    sparse
}

/// Hands the heap's free memory back to the kernel (glibc keeps freed small blocks in
/// its arenas; musl's allocator returns them on its own). Called after a flood's maps
/// were shrunk.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own heap; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_maps_give_back_their_buckets_full_ones_keep_them() {
        let mut map: std::collections::HashMap<u32, [u8; 64]> =
            (0..100_000).map(|i| (i, [0; 64])).collect();
        let peak = map.capacity();
        shrink_map(&mut map);
        assert_eq!(map.capacity(), peak, "full: kept");
        map.retain(|k, _| *k < 1_000);
        shrink_map(&mut map);
        assert!(map.capacity() < peak / 16, "{} of {peak}", map.capacity());
        assert_eq!(map.len(), 1_000);
        let mut small: std::collections::HashSet<u32> = (0..10_000).collect();
        small.retain(|k| *k < 10);
        let cap = small.capacity();
        shrink_set(&mut small);
        assert_eq!(small.capacity(), cap, "small tables are left alone");
    }
    #[test]
    fn loopback_is_listed() {
        let addrs = super::interface_addrs().unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.interface == "lo" && a.net.addr().is_loopback())
        );
    }
}
