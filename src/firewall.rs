//! netmon's own nftables table, `table inet netmon` (DESIGN §2).
//!
//! netmon never edits the router's firewall: everything it needs from netfilter lives
//! in one table of its own. Today that is the DNS answer queue and the drop log.
//!
//! **Where the DNS queue sits, and why that is safe.** DNS answers to LAN clients — from
//! the router's own resolver (output path) or from an outside resolver a client asked
//! directly (forward path) — are queued to NFQUEUE `dns.queue_num` from one chain in the
//! **postrouting** hook at priority [`DNS_PRIORITY`], after every filter decision the
//! router makes (input/forward/output filter chains, fw4's and any other table's, run
//! in earlier hooks; mangle and source NAT in postrouting run at lower priorities). A
//! packet reaching it has already been allowed; the queue's verdict can only let it go
//! on, never let anything in. It matches only `ct state established ct direction reply`
//! UDP/TCP from port 53 leaving on a LAN interface: the answer half of a conversation a
//! LAN client started, as conntrack knows it. An unsolicited answer from the WAN (a
//! forged one, a port-53 scan) is `new` in the original direction and never queued, so
//! netmon neither believes it nor touches its fate. `bypass`: while nothing listens
//! (netmon stopped, crashed, killed), the kernel passes the packet on as if the rule were
//! absent (`nft(8)`, QUEUE STATEMENT) — and here "on" is past the filters already.
//! Untracked traffic (`notrack` for DNS) has no conntrack state and is not queued; the
//! dnsmasq log then remains the DNS source.
//!
//! **TLS server names** (`dns.tls_names`) come through the same queue: one chain in the
//! postrouting hook at priority [`TLS_PRIORITY`] queues the first data packet a LAN
//! client sends on a TCP connection to port 443 or 853 — `ct state established ct
//! direction original`, the connection's second to sixth packet in that direction,
//! and at least [`TLS_MIN_LENGTH`] bytes long, so the handshake's bare ACK is not
//! queued and a ClientHello split over two segments is. About one packet per
//! connection; the same `bypass`, and the same verdict (accept, at once). The chain
//! runs after the filter hooks and just before source NAT (100), so the packet still
//! carries the client's own address: with the conntrack id NFQUEUE attaches, that
//! names the flow exactly ([`crate::flow::ident`]). Packets that a flowtable offloads
//! skip the hook: on a router with flow offloading, connections whose ClientHello is
//! offloaded get no server name.
//!
//! Firewall drops: new connection attempts from the WAN are logged (rate-limited) to an
//! NFLOG group before and after the router's filter chains ([`drop_log_chains`]).
//!
//! With `firewall.manage = true` netmon loads the table at start in one atomic nft
//! transaction (replacing any older copy, so a crash never leaves two) and deletes it
//! at exit. On OpenWrt the same text (`netmon firewall-rules`) ships as a fw4 include,
//! so `fw4 reload` — which flushes the ruleset — brings it back.
//!
//! Kernels built without nftables' queue expression (`CONFIG_NFT_QUEUE`; OpenWrt has it
//! as kmod-nft-queue, some distribution and VM kernels lack it) reject the queue rule.
//! netmon then loads its table without it and installs the same match through the
//! x_tables NFQUEUE target: a chain `NETMON_DNS` of its own in the **mangle** table of
//! `iptables`/`ip6tables`, jumped to from the end of mangle `POSTROUTING`. In x_tables a
//! queue verdict of ACCEPT ends the whole chain of *that table* in that hook
//! (`ipt_do_table` returns the verdict for the table), which is why the chain must not
//! sit in the filter table: there an accepted port-53 packet would skip every filter
//! rule after it. In mangle `POSTROUTING` it skips only the mangle rules after netmon's
//! jump (hence appended, last), and the filter decisions were made in earlier hooks.
//! Chains an older netmon left in the filter table are removed at start.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::config::Config;

pub const TABLE: &str = "netmon";

/// Priority of the DNS queue chain in the postrouting hook: after mangle (-150) and
/// source NAT (100), the last standard stage a packet passes (`nft(8)`, table of
/// standard priority names).
pub const DNS_PRIORITY: i32 = 300;

/// Priority of the TLS ClientHello chain in the postrouting hook: after mangle (-150),
/// before source NAT (100) rewrites the client's address.
pub const TLS_PRIORITY: i32 = 99;

/// Shortest packet (IP header included) the TLS chain queues: longer than any TCP
/// segment without data (an IPv6 header, 40 bytes, and the longest TCP header, 60); a
/// ClientHello is 200 bytes or more.
pub const TLS_MIN_LENGTH: u16 = 101;

/// The table's text for `nft -f`.
pub fn ruleset(config: &Config) -> String {
    let lan = config
        .lan_interfaces
        .iter()
        .map(|i| format!("\"{}\"", i.replace(['"', '\\'], "")))
        .collect::<Vec<_>>()
        .join(", ");
    let mut chains = String::new();
    if config.dns.packet_capture {
        let q = config.dns.queue_num;
        chains.push_str(&format!(
            "\tchain dns_answers {{\n\
             \t\ttype filter hook postrouting priority {DNS_PRIORITY}; policy accept;\n\
             \t\toifname {{ {lan} }} ct state established ct direction reply \
             meta l4proto {{ udp, tcp }} th sport 53 queue num {q} bypass\n\
             \t}}\n"
        ));
        if config.dns.tls_names {
            chains.push_str(&format!(
                "\tchain tls_hello {{\n\
                 \t\ttype filter hook postrouting priority {TLS_PRIORITY}; policy accept;\n\
                 \t\tiifname {{ {lan} }} ct state established ct direction original \
                 meta l4proto tcp th dport {{ 443, 853 }} ct original packets 2-6 \
                 meta length >= {TLS_MIN_LENGTH} queue num {q} bypass\n\
                 \t}}\n"
            ));
        }
    }
    chains.push_str(&drop_log_chains(config));
    // Declaring the table first makes `delete` valid when it does not exist yet; nft
    // applies the whole text as one transaction, so loading it twice (netmon restarted,
    // fw4 reloaded) replaces the table instead of doubling its rules.
    format!(
        "# netmon's nftables table (generated by `netmon firewall-rules`).\n\
         table inet {TABLE}\ndelete table inet {TABLE}\n\
         table inet {TABLE} {{\n{chains}}}\n"
    )
}

/// NFLOG prefixes of the two WAN connection-attempt rules (`collect::nflog`).
pub const PREFIX_SEEN: &str = "netmon-seen";
pub const PREFIX_PASSED: &str = "netmon-passed";

/// The firewall-drops rules (`collect::nflog` explains the design): every new TCP/UDP
/// connection attempt arriving on a WAN interface is logged to NFLOG group
/// `drop_log_group` once before the router's filter chains (priority filter − 10, as
/// `netmon-seen`) and once after them (filter + 10, as `netmon-passed`), in the input
/// and the forward hook. `accept` only ends one base chain, `drop` ends the packet, so
/// the second rule sees exactly the attempts the router let through. The second rule's
/// limit is ten times the first's, so an accepted attempt that was logged as seen is
/// almost never missed as passed (which would count it as refused).
fn drop_log_chains(config: &Config) -> String {
    let f = &config.firewall;
    if f.drop_log_rate == 0 || config.wan_interfaces.is_empty() {
        return String::new();
    }
    let wan = config
        .wan_interfaces
        .iter()
        .map(|i| format!("\"{}\"", i.replace(['"', '\\'], "")))
        .collect::<Vec<_>>()
        .join(", ");
    let (g, rate) = (f.drop_log_group, u64::from(f.drop_log_rate));
    let mut out = String::new();
    for (hook, short) in [("input", "in"), ("forward", "fwd")] {
        for (name, prio, limit, prefix) in [
            ("seen", "filter - 10", rate, PREFIX_SEEN),
            ("passed", "filter + 10", rate * 10, PREFIX_PASSED),
        ] {
            out.push_str(&format!(
                "\tchain wan_{name}_{short} {{\n\
                 \t\ttype filter hook {hook} priority {prio}; policy accept;\n\
                 \t\tiifname {{ {wan} }} ct state new meta l4proto {{ tcp, udp }} \
                 limit rate {limit}/second burst {burst} packets \
                 log prefix \"{prefix}\" group {g}\n\
                 \t}}\n",
                burst = limit * 10,
            ));
        }
    }
    out
}

/// The x_tables chain of the fallback (see the module docs).
pub const XT_CHAIN: &str = "NETMON_DNS";

/// The loaded table (and fallback chains); removed on drop.
pub struct NftTable {
    xt_fallback: bool,
    /// Why no rule queues DNS answers although `dns.packet_capture` wants them: the kernel
    /// has no nftables queue expression and the x_tables fallback failed. The table's
    /// other rules (the drop log) are loaded all the same.
    pub dns_queue_failure: Option<anyhow::Error>,
}

impl NftTable {
    /// Loads the table, replacing an older copy atomically; falls back to x_tables for
    /// the queue rule when the kernel has no nftables queue expression. An error: nothing
    /// is loaded.
    pub fn install(config: &Config) -> anyhow::Result<NftTable> {
        remove_xt_chains();
        match load_table(config, config.dns.packet_capture) {
            Ok(()) => {
                log::info!("nftables table inet {TABLE} loaded");
                Ok(NftTable {
                    xt_fallback: false,
                    dns_queue_failure: None,
                })
            }
            Err(e) if config.dns.packet_capture && lacks_nft_queue(&e) => {
                log::warn!(
                    "this kernel has no nftables queue expression (CONFIG_NFT_QUEUE / \
                     kmod-nft-queue); queueing DNS answers through iptables' NFQUEUE target \
                     in chain {XT_CHAIN} instead"
                );
                load_table(config, false)?;
                match install_xt_chains(config) {
                    Ok(()) => Ok(NftTable {
                        xt_fallback: true,
                        dns_queue_failure: None,
                    }),
                    // `xt_fallback` still: a chain one family got is removed with the table.
                    Err(e) => Ok(NftTable {
                        xt_fallback: true,
                        dns_queue_failure: Some(e),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        if self.xt_fallback {
            remove_xt_chains();
        }
        match run("nft", &["delete", "table", "inet", TABLE], None) {
            Ok(()) => log::info!("nftables table inet {TABLE} removed"),
            Err(e) => log::warn!("removing nftables table inet {TABLE}: {e:#}"),
        }
    }
}

fn load_table(config: &Config, with_queue: bool) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.dns.packet_capture = with_queue;
    run("nft", &["-f", "-"], Some(&ruleset(&config))).context("loading netmon's nftables table")
}

/// nft's answer when the kernel cannot make a `queue` expression.
fn lacks_nft_queue(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("No such file or directory") && text.contains("queue")
}

/// The fallback's rules in `iptables-restore --noflush` form: declaring the chain
/// creates or empties it, then its rules and the jump, appended to mangle `POSTROUTING`
/// so no other mangle rule is skipped — one atomic commit per address family.
fn xt_install_script(config: &Config) -> String {
    let q = config.dns.queue_num;
    let mut script = format!("*mangle\n:{XT_CHAIN} - [0:0]\n");
    for iface in &config.lan_interfaces {
        for proto in ["udp", "tcp"] {
            script.push_str(&format!(
                "-A {XT_CHAIN} -o {iface} -p {proto} --sport 53 -m conntrack --ctstate ESTABLISHED \
                 --ctdir REPLY -j NFQUEUE --queue-num {q} --queue-bypass\n"
            ));
        }
    }
    if config.dns.tls_names {
        // x_tables has no input interface in POSTROUTING: every client's hellos are
        // queued, and only flows a LAN device started are named.
        script.push_str(&format!(
            "-A {XT_CHAIN} -p tcp -m multiport --dports 443,853 -m conntrack --ctstate ESTABLISHED \
             --ctdir ORIGINAL -m connbytes --connbytes 2:6 --connbytes-dir original \
             --connbytes-mode packets -m length --length {TLS_MIN_LENGTH}:65535 \
             -j NFQUEUE --queue-num {q} --queue-bypass\n"
        ));
    }
    script.push_str(&format!("-A POSTROUTING -j {XT_CHAIN}\nCOMMIT\n"));
    script
}

/// Where a netmon chain may have been jumped to from: mangle `POSTROUTING` (this
/// version) and, from older versions, filter `OUTPUT` and `FORWARD`.
const XT_JUMPS: [(&str, &str); 3] = [
    ("mangle", "POSTROUTING"),
    ("filter", "OUTPUT"),
    ("filter", "FORWARD"),
];

const XT_FAMILIES: [(&str, &str); 2] = [
    ("iptables", "iptables-restore"),
    ("ip6tables", "ip6tables-restore"),
];

fn install_xt_chains(config: &Config) -> anyhow::Result<()> {
    let script = xt_install_script(config);
    for (_, restore) in XT_FAMILIES {
        run(restore, &["-w", "--noflush"], Some(&script))
            .with_context(|| format!("{restore}: installing chain {XT_CHAIN}"))?;
    }
    Ok(())
}

/// Removes every netmon chain and jump from both tables where one may be: what this run
/// installed, or what a crashed or older run left behind (possibly with extra jumps).
fn remove_xt_chains() {
    for (cmd, _) in XT_FAMILIES {
        for (table, hook) in XT_JUMPS {
            for _ in 0..8 {
                if run(cmd, &["-w", "-t", table, "-D", hook, "-j", XT_CHAIN], None).is_err() {
                    break; // no such jump left (or no such chain, or no iptables at all)
                }
            }
        }
        for table in ["mangle", "filter"] {
            if run(cmd, &["-w", "-t", table, "-F", XT_CHAIN], None).is_ok() {
                let _ = run(cmd, &["-w", "-t", table, "-X", XT_CHAIN], None);
            }
        }
    }
}

/// Runs a firewall command with `args` (never through a shell), feeding `stdin`.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("writing to {program}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_queues_only_answers_to_lan_clients_after_filtering() {
        let mut c = Config {
            lan_interfaces: vec!["br-lan".into(), "wl\"an".into()],
            ..Config::default()
        };
        let r = ruleset(&c);
        assert!(
            r.contains("delete table inet netmon\ntable inet netmon {"),
            "{r}"
        );
        assert!(
            r.contains(
                "type filter hook postrouting priority 300; policy accept;\n\t\t\
                 oifname { \"br-lan\", \"wlan\" } ct state established ct direction reply \
                 meta l4proto { udp, tcp } th sport 53 queue num 5353 bypass"
            ),
            "{r}"
        );
        // The TLS chain: after the filter hooks, before source NAT, only what a LAN
        // client sends on established TCP 443/853 connections, one or two packets each.
        assert!(
            r.contains(
                "type filter hook postrouting priority 99; policy accept;\n\t\t\
                 iifname { \"br-lan\", \"wlan\" } ct state established ct direction original \
                 meta l4proto tcp th dport { 443, 853 } ct original packets 2-6 \
                 meta length >= 101 queue num 5353 bypass"
            ),
            "{r}"
        );
        // Two queue rules, in no hook where a filter decision is still to come.
        assert_eq!(r.matches("queue num").count(), 2, "{r}");
        for hook in ["prerouting", "input", "forward", "output"] {
            let chain = r
                .split("chain ")
                .find(|c| c.contains(&format!("hook {hook} ")));
            assert!(chain.is_none_or(|c| !c.contains("queue")), "{hook}: {r}");
        }
        c.dns.tls_names = false;
        assert_eq!(ruleset(&c).matches("queue num").count(), 1);
        c.dns.tls_names = true;
        c.dns.packet_capture = false;
        assert!(!ruleset(&c).contains("queue"));
    }

    #[test]
    fn xt_fallback_queues_in_mangle_postrouting_only_replies() {
        let c = Config {
            lan_interfaces: vec!["br-lan".into()],
            ..Config::default()
        };
        let s = xt_install_script(&c);
        assert!(s.starts_with("*mangle\n:NETMON_DNS - [0:0]\n"), "{s}");
        for proto in ["udp", "tcp"] {
            let rule = format!(
                "-A NETMON_DNS -o br-lan -p {proto} --sport 53 -m conntrack --ctstate ESTABLISHED \
                 --ctdir REPLY -j NFQUEUE --queue-num 5353 --queue-bypass\n"
            );
            assert!(s.contains(&rule), "{s}");
        }
        assert!(
            s.contains(
                "-A NETMON_DNS -p tcp -m multiport --dports 443,853 -m conntrack --ctstate \
                 ESTABLISHED --ctdir ORIGINAL -m connbytes --connbytes 2:6 --connbytes-dir \
                 original --connbytes-mode packets -m length --length 101:65535 -j NFQUEUE \
                 --queue-num 5353 --queue-bypass\n"
            ),
            "{s}"
        );
        // Appended, so no mangle rule of the router's is skipped; no filter-table jump.
        assert!(s.ends_with("-A POSTROUTING -j NETMON_DNS\nCOMMIT\n"), "{s}");
        assert!(!s.contains("*filter") && !s.contains("-I "), "{s}");
    }

    #[test]
    fn ruleset_logs_wan_attempts_before_and_after_filtering() {
        let mut c = Config {
            wan_interfaces: vec!["wan".into(), "pppoe-wan".into()],
            ..Config::default()
        };
        let r = ruleset(&c);
        for (hook, prio, prefix, rate) in [
            ("input", "filter - 10", "netmon-seen", 100),
            ("input", "filter + 10", "netmon-passed", 1000),
            ("forward", "filter - 10", "netmon-seen", 100),
            ("forward", "filter + 10", "netmon-passed", 1000),
        ] {
            let rule = format!(
                "type filter hook {hook} priority {prio}; policy accept;\n\t\tiifname \
                 {{ \"wan\", \"pppoe-wan\" }} ct state new meta l4proto {{ tcp, udp }} limit rate \
                 {rate}/second burst {} packets log prefix \"{prefix}\" group 5354",
                rate * 10
            );
            assert!(r.contains(&rule), "{rule}\n{r}");
        }
        c.firewall.drop_log_rate = 0;
        assert!(!ruleset(&c).contains("log"));
    }

    #[test]
    fn shipped_fw4_include_matches_the_default_rules() {
        let shipped = include_str!("../openwrt/netmon/files/netmon.nft");
        assert_eq!(shipped, ruleset(&Config::default()));
    }
}
