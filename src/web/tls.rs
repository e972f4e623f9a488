//! HTTPS (`[web] tls_cert`/`tls_key`) with rustls and the `ring` provider, reusing the
//! certificate the router already has — on OpenWrt uhttpd's `/etc/uhttpd.crt` and
//! `/etc/uhttpd.key`, which px5g writes as DER; PEM files work too.
//!
//! [`TlsListener`] plugs into [`super::conn::serve`]: a task accepts TCP connections and
//! runs each handshake on its own task (at most [`MAX_HANDSHAKES`] at once, each bounded
//! by [`HANDSHAKE_TIMEOUT`]), so a client that connects and says nothing cannot stall
//! the others; finished handshakes are handed to the server through a channel. The TCP stream
//! under the TLS layer is a [`Guarded`] one: it counts against the server's connection
//! limit from the accept on, and a connection that goes idle closes (see [`super::conn`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

use super::conn::{Guarded, Limits};

/// Handshakes in progress at once; connections past it are closed at once.
pub const MAX_HANDSHAKES: usize = 64;
/// A handshake not finished by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server config from the certificate chain and key files (PEM or DER each).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let cert_bytes =
        std::fs::read(cert).with_context(|| format!("reading web.tls_cert {}", cert.display()))?;
    let key_bytes =
        std::fs::read(key).with_context(|| format!("reading web.tls_key {}", key.display()))?;
    let chain: Vec<CertificateDer<'static>> = if is_pem(&cert_bytes) {
        CertificateDer::pem_slice_iter(&cert_bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("web.tls_cert {}: {e}", cert.display()))?
    } else {
        vec![CertificateDer::from(cert_bytes)]
    };
    if chain.is_empty() {
        bail!(
            "web.tls_cert {}: no certificate in the file (expected PEM or DER)",
            cert.display()
        );
    }
    let key_der: PrivateKeyDer<'static> = if is_pem(&key_bytes) {
        PrivateKeyDer::from_pem_slice(&key_bytes)
            .map_err(|e| anyhow::anyhow!("web.tls_key {}: {e}", key.display()))?
    } else {
        PrivateKeyDer::try_from(key_bytes).map_err(|e| {
            anyhow::anyhow!(
                "web.tls_key {}: {e} (expected a PKCS#8, PKCS#1 or SEC1 key, PEM or DER)",
                key.display()
            )
        })?
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!(
                "web.tls_cert {} and web.tls_key {} do not make a usable pair",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .is_some_and(|start| bytes[start..].starts_with(b"-----BEGIN"))
}

/// A TCP listener that hands out TLS streams (see the module doc).
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<Guarded<TcpStream>>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        limits: Limits,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(16);
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), limits, tx));
        Ok(TlsListener {
            accepted,
            local,
            task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stops accepting (graceful shutdown drops the listener).
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Guarded<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accept task ended (it never does on its own): nothing more to serve.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    tx: mpsc::Sender<(TlsStream<Guarded<TcpStream>>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, addr) = super::conn::accept_tcp(&listener).await;
        let Some(tcp) = limits.admit(tcp, addr) else {
            continue;
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            log::debug!("web: {MAX_HANDSHAKES} TLS handshakes running; closing {addr}");
            continue;
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, addr)).await;
                }
                Ok(Err(e)) => log::debug!("web: TLS handshake with {addr}: {e}"),
                Err(_) => log::debug!("web: TLS handshake with {addr} timed out"),
            }
        });
    }
}
