//! How the proxy reaches a node: plain TCP, or TLS (rustls) when `backend_tls.enabled`.
//!
//! Every connection to a node, pooled or a client's own, and the topology's short-lived ones,
//! is opened by [`Connector::connect`] and is a [`NodeStream`]. The backend task splits a plain
//! stream into its owned halves (no lock) and a TLS stream with `tokio::io::split`; everything
//! else uses the stream whole.
//!
//! A TLS connection verifies the node's certificate against `ca_file` (or the system's roots)
//! for the node's host as the slot map names it (an IP address is checked against the
//! certificate's IP addresses), or for `server_name` when set: clusters that announce IP
//! addresses while their certificate names a host (`*.example.cache.amazonaws.com`). With
//! `cert_file` and `key_file` the proxy presents a client certificate, as redis-server's
//! `tls-auth-clients yes` (its default) requires.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::BackendTlsConfig;
use crate::tls::TlsSetupError;

/// Opens connections to nodes, plain or TLS. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    tls: Option<Arc<Tls>>,
}

struct Tls {
    connector: TlsConnector,
    /// The name every node's certificate is checked against, instead of its host.
    server_name: Option<ServerName<'static>>,
    /// SHA-1 of the settings and of every file's contents: two connectors with the same
    /// digest make the same connections (a reload with rotated certificate files does not).
    digest: String,
}

/// A connection to a node.
pub enum NodeStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

// === impl Connector ===

impl Connector {
    /// Plain TCP connections.
    pub fn plain() -> Connector {
        Connector { tls: None }
    }

    /// A connector for `config`: plain unless `enabled` (see [`crate::tls::client_config`]).
    ///
    /// # Errors
    /// The TLS files or settings cannot be used; the error names the field.
    pub fn from_config(config: &BackendTlsConfig) -> Result<Connector, TlsSetupError> {
        if !config.enabled {
            return Ok(Connector::plain());
        }
        let side = crate::tls::client_config(config)?;
        Ok(Connector {
            tls: Some(Arc::new(Tls {
                connector: TlsConnector::from(side.config),
                server_name: side.server_name,
                digest: side.digest,
            })),
        })
    }

    /// True if connections are TLS (the slot map then uses the nodes' `tls-port`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to `addr` (`host:port`) with `TCP_NODELAY` set, then runs the TLS handshake
    /// if TLS is on. No timeout: the caller bounds it.
    pub async fn connect(&self, addr: &str) -> io::Result<NodeStream> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(NodeStream::Plain(tcp));
        };
        let name = match &tls.server_name {
            Some(name) => name.clone(),
            None => {
                let host = host_of(addr);
                ServerName::try_from(host.to_string()).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{host:?} is not a name a certificate can be checked for: {e}"),
                    )
                })?
            }
        };
        let stream = tls
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
        Ok(NodeStream::Tls(Box::new(stream)))
    }
}

impl PartialEq for Connector {
    fn eq(&self, other: &Connector) -> bool {
        match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => a.digest == b.digest,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tls {
            None => f.write_str("Connector(plain)"),
            Some(tls) => write!(f, "Connector(tls {})", &tls.digest[..8]),
        }
    }
}

/// The host part of `host:port` (IPv6 without brackets: the port is after the last colon).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

// === impl NodeStream ===

impl AsyncRead for NodeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("10.0.0.1:6379"), "10.0.0.1");
        assert_eq!(host_of("node-1.example.com:6379"), "node-1.example.com");
        assert_eq!(host_of("::1:6379"), "::1");
        assert_eq!(host_of("[::1]:6379"), "::1");
    }

    #[test]
    fn disabled_is_plain() {
        let config = BackendTlsConfig::default();
        assert!(!Connector::from_config(&config).unwrap().is_tls());
        assert_eq!(Connector::from_config(&config).unwrap(), Connector::plain());
    }
}
