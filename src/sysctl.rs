//! Kernel settings under `/proc/sys` (`sysctl(8)` names: dots for slashes).

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
