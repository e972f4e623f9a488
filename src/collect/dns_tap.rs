//! Whether DNS answers reach netmon from packets: the tap is two parts, and either alone
//! sees nothing. The NFQUEUE binding ([`super::dns_packets::DnsCapture`]) takes what the kernel
//! queues; the firewall rule ([`crate::firewall::NftTable`], or its x_tables fallback)
//! queues the answers. A kernel without the queue module, a router without `iptables`
//! for the fallback, or another program holding the queue number leaves netmon running
//! without names — which is allowed (every flow is still seen), but must be visible:
//! `/healthz`, the health page, the overview and `netmon_dns_capture_active` say it is
//! missing, why, and what fixes it.
//!
//! Decided once at start, before the web server starts: nothing changes it while netmon
//! runs. The state itself lives in [`super::capture::CaptureStatus`] with the other
//! sources; this file knows the tap's parts and what fixes each.

use super::capture::Failure;

/// Which part of the tap failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapPart {
    /// Binding the NFQUEUE (`DnsCapture::start`).
    Queue,
    /// Loading the rule that queues answers (`NftTable::install`).
    Rule,
}

/// What is wrong when `part` failed with `error`, and the owner's next step.
pub fn failure(part: TapPart, error: &anyhow::Error) -> Failure {
    let error = format!("{error:#}");
    Failure {
        fix: fix_for(part, &error),
        error,
    }
}

/// The owner's next step for a failure of `part` whose text is `error`.
fn fix_for(part: TapPart, error: &str) -> String {
    let step = match part {
        TapPart::Queue => {
            "load the kernel's NFQUEUE support (modprobe nfnetlink_queue; OpenWrt: \
             kmod-nfnetlink-queue), run netmon with CAP_NET_ADMIN, and make sure no other \
             program binds dns.queue_num (or choose another number)"
        }
        // The kernel has no nftables queue expression and nothing can run the x_tables
        // NFQUEUE target instead.
        TapPart::Rule if error.contains("iptables") => {
            "install iptables (iptables-nft or iptables-legacy, with the NFQUEUE target; \
             OpenWrt: iptables-nft and kmod-ipt-nfqueue), or load kmod-nft-queue \
             (CONFIG_NFT_QUEUE) so nftables can queue the answers itself"
        }
        TapPart::Rule if error.contains("running nft") => {
            "install nft (OpenWrt: nftables) and load kmod-nft-queue (CONFIG_NFT_QUEUE), or \
             add the rules of `netmon firewall-rules` to the firewall yourself and set \
             firewall.manage = false"
        }
        TapPart::Rule => {
            "load kmod-nft-queue (CONFIG_NFT_QUEUE), or install iptables with the NFQUEUE \
             target for the fallback; the error names what failed"
        }
    };
    format!("{step} (or set dns.packet_capture = false to run without DNS names from packets)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_fallback_tool_says_install_iptables() {
        let e = anyhow::anyhow!("running iptables-restore (is it installed?)")
            .context("iptables-restore: installing chain NETMON_DNS");
        let f = failure(TapPart::Rule, &e);
        assert!(f.error.contains("is it installed?"), "{f:?}");
        assert!(f.fix.starts_with("install iptables"), "{f:?}");
    }

    #[test]
    fn a_queue_bound_elsewhere_names_the_queue_number() {
        let e = anyhow::anyhow!("Operation not permitted").context("binding NFQUEUE 5353");
        let f = failure(TapPart::Queue, &e);
        assert!(f.fix.contains("dns.queue_num"), "{f:?}");
        assert!(f.error.contains("NFQUEUE 5353"), "{f:?}");
    }
}
