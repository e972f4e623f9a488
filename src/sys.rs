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

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
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
