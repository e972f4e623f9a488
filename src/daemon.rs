//! `netmon run`: starts the writer, the collectors and the web server, and stops them
//! in the order that commits everything (DESIGN §1).
//!
//! Start: as root, only what needs root's file access (the config, the TLS key, the
//! ASN database, giving the database directory to `user`); then the switch to `user`
//! with `CAP_NET_ADMIN` alone ([`crate::privs`]) before any thread starts. Then the
//! database (a bad path or a newer schema fails before anything touches the kernel),
//! the conntrack collector (a missing capability fails here with one clear message),
//! then the web listeners. Stop (SIGTERM/SIGINT): collectors flush
//! their last batch, the IPFIX exporter (if on) sends what it still holds, the writer
//! commits and checkpoints, the web server gets a short grace period — well within the
//! 2 s a service manager allows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::collect::capture::{CaptureStatus, Source, State};
use crate::collect::conntrack::ConntrackCollector;
use crate::collect::dns_packets::DnsCapture;
use crate::collect::dns_tap::{self, TapPart};
use crate::collect::dnsmasq::DnsmasqLogCollector;
use crate::collect::identity::DeviceCollector;
use crate::collect::nflog::NflogCollector;
use crate::collect::offload::OffloadChecker;
use crate::collect::system::SystemSampler;
use crate::config::Config;
use crate::enrich::Enricher;
use crate::event::MacTable;
use crate::export::ipfix::IpfixExporter;
use crate::firewall::NftTable;
use crate::flow::Network;
use crate::netif;
use crate::privs;
use crate::store::pool::ReadPool;
use crate::store::writer::WriterThread;
use crate::web;

/// How often interface addresses are re-read (DHCP on the WAN changes the router's
/// own address; a new LAN prefix changes the LAN).
const NETWORK_REFRESH: Duration = Duration::from_secs(30);

/// How [`run`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT: stop.
    Stopped,
    /// SIGHUP with a valid config file: everything is committed and released; the
    /// caller starts netmon again (`main` re-executes itself, so every setting applies).
    Reload,
}

/// (Long: start-up steps in their required order (config, sockets, privilege drop before
/// any thread, then the threads); splitting it would hide that order.)
pub fn run(config: Config, config_path: &std::path::Path) -> anyhow::Result<Exit> {
    // Before any file exists: the database, its WAL and -shm (SQLite creates them 0644
    // less the umask, the WAL with the database's mode), the history and the offset file
    // come out 0640 and directories 0750 — the account and its group, not every local
    // user, read who talked to whom. Inherited by what netmon runs and by a reload.
    // SAFETY: umask(2) cannot fail.
    unsafe { libc::umask(0o027) };
    crate::memory::configure_allocator();
    let crate::export::prometheus::Installed {
        handle: metrics,
        devices: device_series,
    } = crate::export::prometheus::install(&config)?;
    let addrs = netif::interface_addrs().context("reading interface addresses")?;
    let network = network_from(&config, &addrs);
    if network.lan_subnets.is_empty() {
        log::warn!(
            "no LAN subnet: lan_interfaces {:?} have no addresses and lan_subnets is empty; \
             every flow will be classified as router-local or other",
            config.lan_interfaces
        );
    }
    let network = Arc::new(RwLock::new(network));
    let listen = config.effective_listen(&addrs);
    if listen.is_empty() {
        bail!(
            "no address to serve the web UI on: lan_interfaces {:?} have no addresses; \
             set `listen` (e.g. listen = [\"192.168.1.1:8080\"]) in the config",
            config.lan_interfaces
        );
    }

    // The ASN table loads before anything starts, so a bad `enrich.asn_db` fails fast.
    let enricher = Enricher::from_config(&config).context("starting enrichment")?;
    // HTTPS when a certificate is configured; a bad file fails the start, clearly. Read
    // before the switch below: a router's key is often root's alone.
    let tls = if config.web.tls_cert.as_os_str().is_empty() {
        None
    } else {
        Some(web::tls::server_config(
            &config.web.tls_cert,
            &config.web.tls_key,
        )?)
    };
    // Root only until here: become `user` with CAP_NET_ADMIN (see `privs`), before the
    // first thread. Everything below runs exactly as after a SIGHUP reload.
    privs::drop_privileges(&config, &listen).context("dropping privileges")?;
    privs::check_access(&config, config_path)?;
    // Whether each capture source delivers (`collect::capture`): set by the code below
    // and by the collectors while they run, read by `/healthz`, the pages and `/metrics`,
    // and by detection (no DNS answers, no DIRECT_IP).
    let capture = CaptureStatus::default();
    let writer = WriterThread::start(
        &config,
        network.clone(),
        Some(device_series),
        Some(capture.clone()),
    )?;
    // Router health: reads /proc and /sys on its own thread, sends samples to the writer.
    let system = SystemSampler::start(&config, writer.handle.clone())?;
    // Flow offloading: lists the router's flowtables every few minutes (`nft`).
    let offload = OffloadChecker::start().context("starting the flow offloading check")?;
    let shutdown = Arc::new(AtomicBool::new(false));
    // The exporter starts first: the collector offers it every batch from the start-up
    // dump on, and stops before it (dropping the tap is what ends the exporter).
    // The MAC behind each LAN address, learnt by the device collector, read by the
    // exporter for its records.
    let macs = Arc::new(MacTable::default());
    let (exporter, export_tap) = IpfixExporter::start(&config, macs.clone())
        .context("starting the IPFIX exporter")?
        .unzip();
    let collector = ConntrackCollector::start(
        &config,
        writer.handle.clone(),
        export_tap,
        shutdown.clone(),
        capture.clone(),
    )
    .context("starting the conntrack collector")?;
    // DNS answers from dnsmasq's query log, for routers without packet capture. Both
    // at once would store every query twice: packets win (they carry TTLs and ms times).
    let dnsmasq_log = if config.dns.log_file.as_os_str().is_empty() {
        None
    } else if config.dns.packet_capture {
        log::warn!(
            "dns.log_file {} is not followed while dns.packet_capture is on (packets carry the \
             same answers, with TTLs); set dns.packet_capture = false to use the log",
            config.dns.log_file.display()
        );
        None
    } else {
        // The follower says ok once it has read the file, broken while it cannot.
        Some(
            DnsmasqLogCollector::start(
                &config,
                writer.handle.clone(),
                shutdown.clone(),
                capture.clone(),
            )
            .context("starting the dnsmasq log follower")?,
        )
    };
    // DNS answers from packets: bind the queue, then load the table whose rule feeds it
    // (the rule has `bypass`, so the order only decides whether the first answers are
    // seen). The table goes before the collectors stop: from then on the kernel no longer
    // queues anything.
    // Names are an enhancement: a router whose kernel lacks NFQUEUE, or a netmon without
    // CAP_NET_ADMIN for it, still monitors every flow — loudly, and visibly in /metrics.
    // The tap works only with both the queue and the rule feeding it (`collect::dns_tap`).
    let _dns_capture = if config.dns.packet_capture {
        match DnsCapture::start(&config, writer.handle.clone(), shutdown.clone()) {
            Ok(capture_queue) => {
                capture.ok(Source::DnsTap);
                Some(capture_queue)
            }
            Err(e) => {
                capture.fail(Source::DnsTap, dns_tap::failure(TapPart::Queue, &e));
                None
            }
        }
    } else {
        None
    };
    // Firewall drops: bind the NFLOG group before the table's log rules exist. Without
    // `manage` the rules come from the fw4 include, so the group is bound all the same.
    // A group another program holds costs the drop counts, not the flows: the collector
    // reports it and binds the group once it is free.
    let nflog = if config.firewall.drop_log_rate > 0 && !config.wan_interfaces.is_empty() {
        Some(
            NflogCollector::start(
                &config,
                writer.handle.clone(),
                shutdown.clone(),
                capture.clone(),
            )
            .context("starting the firewall-drops logger")?,
        )
    } else {
        None
    };
    // Device identity: the MAC behind each LAN address (neighbour table, DHCP leases).
    let devices = DeviceCollector::start(&config, writer.handle.clone(), macs, shutdown.clone())
        .context("starting the device identity collector (set devices.neighbours = false to run without the neighbour table)")?;
    // Without its table netmon sees no DNS answers or drops, but every flow still: go on.
    let mut nft_table = if config.firewall.manage {
        match NftTable::install(&config) {
            Ok(table) => {
                if let Some(e) = &table.dns_queue_failure
                    && capture.get(Source::DnsTap).state == State::Ok
                {
                    capture.fail(Source::DnsTap, dns_tap::failure(TapPart::Rule, e));
                }
                Some(table)
            }
            Err(e) => {
                log::error!(
                    "netmon's nftables table is not loaded, so DNS answers and firewall drops \
                     are not seen: {e:#}"
                );
                let fix = "install nft (OpenWrt: nftables) and check the error in netmon's \
                           log, or add the rules of `netmon firewall-rules` to the firewall \
                           yourself and set firewall.manage = false; then restart netmon";
                if capture.get(Source::DnsTap).state == State::Ok {
                    capture.fail(Source::DnsTap, dns_tap::failure(TapPart::Rule, &e));
                }
                // Over a group that could not be bound too: without the rules, binding it
                // later would not make drops visible.
                if capture.get(Source::Nflog).state != State::Off {
                    capture.broken(
                        Source::Nflog,
                        format!("netmon's nftables table, whose rules log the drops, is not loaded: {e:#}"),
                        fix,
                    );
                }
                None
            }
        }
    } else {
        None
    };
    metrics::gauge!("netmon_firewall_table_loaded").set(f64::from(u8::from(
        nft_table.is_some() || !config.firewall.manage,
    )));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("web")
        .build()
        .context("starting the async runtime")?;
    runtime.spawn(crate::export::prometheus::upkeep(metrics.clone()));
    let reads = ReadPool::open(&config.db_path, 3)?;
    // Reverse DNS and AS of remote hosts: a task on this runtime, aborted at shutdown
    // (an unfinished pass loses nothing: its hosts are still due next start).
    let enrich_task = enricher.map(|e| runtime.spawn(e.run(reads.clone(), writer.handle.clone())));
    let auth = web::Auth::from_config(&config.web, tls.is_some())?;
    let state = web::AppState::new(
        reads,
        writer.handle.clone(),
        writer.ticks.clone(),
        metrics,
        config.db_path.clone(),
        auth,
    )
    .with_config(std::sync::Arc::new(config.clone()))
    .with_capture(capture)
    .with_router_health(system.latest(), offload.latest());
    let result = runtime.block_on(async {
        let mut listeners = Vec::new();
        for addr in &listen {
            listeners.push(bind(*addr).await?);
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        log::info!(
            "netmon {} serving {scheme}://{}",
            env!("CARGO_PKG_VERSION"),
            listen
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(&format!(", {scheme}://"))
        );
        let refresh = tokio::spawn(refresh_network(config.clone(), network.clone()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(web::serve(listeners, tls, state, async {
            let _ = stop_rx.await;
        }));
        let signal = wait_for_signal(config_path).await;
        log::info!("{signal}: stopping");
        refresh.abort();
        let _ = stop_tx.send(());
        // Live SSE streams never end on their own; give requests in flight a moment.
        let _ = tokio::time::timeout(Duration::from_millis(300), server).await;
        anyhow::Ok(if signal == "SIGHUP" {
            Exit::Reload
        } else {
            Exit::Stopped
        })
    });
    if let Some(task) = enrich_task {
        task.abort();
    }
    drop(nft_table.take());
    shutdown.store(true, Ordering::Relaxed);
    collector.join();
    if let Some(dnsmasq_log) = dnsmasq_log {
        dnsmasq_log.join();
    }
    if let Some(nflog) = nflog {
        nflog.join();
    }
    devices.join();
    if let Some(exporter) = exporter {
        exporter.join();
    }
    system.stop();
    offload.stop();
    writer.stop();
    runtime.shutdown_timeout(Duration::from_millis(100));
    log::info!("stopped");
    result
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))
}

/// Waits for SIGTERM/SIGINT (stop) or a SIGHUP whose config file is valid (reload). A
/// SIGHUP with a bad file is logged and ignored: the running configuration stays.
async fn wait_for_signal(config_path: &std::path::Path) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        log::error!("cannot install signal handlers; stop netmon with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = hup.recv() => match Config::load(config_path) {
                Ok(_) => return "SIGHUP",
                Err(e) => log::error!(
                    "SIGHUP: not reloading, the running configuration stays: {e}"
                ),
            },
        }
    }
}

/// The router's network from its interface addresses: LAN subnets and the router's own
/// addresses.
fn network_from(config: &Config, addrs: &[netif::InterfaceAddr]) -> Network {
    let lan = config.effective_lan_subnets(addrs);
    let router = addrs.iter().map(|a| a.net.addr()).collect();
    Network::new(lan, router)
}

async fn refresh_network(config: Config, network: Arc<RwLock<Network>>) {
    let mut interval = tokio::time::interval(NETWORK_REFRESH);
    interval.tick().await;
    loop {
        interval.tick().await;
        match netif::interface_addrs() {
            Ok(addrs) => {
                let now = network_from(&config, &addrs);
                let mut current = network.write().unwrap_or_else(|p| p.into_inner());
                if current.lan_subnets != now.lan_subnets
                    || current.router_addrs != now.router_addrs
                {
                    log::info!("network changed: LAN {:?}", now.lan_subnets);
                    *current = now;
                }
            }
            Err(e) => log::warn!("re-reading interface addresses: {e:#}"),
        }
    }
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
