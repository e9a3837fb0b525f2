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
use std::sync::Arc;

use routing::Transport;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

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

/// A connection to a node: `Left` plain TCP, `Right` TLS over TCP (`tokio_util`'s `Either`
/// reads and writes through whichever it holds).
pub type NodeStream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

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

    /// Plain or TLS: the slot map uses the nodes' `port` or `tls-port` accordingly.
    pub fn transport(&self) -> Transport {
        match self.tls {
            None => Transport::Plain,
            Some(_) => Transport::Tls,
        }
    }

    /// Connects to `addr` (`host:port`) with `TCP_NODELAY` set, then runs the TLS handshake
    /// if TLS is on. No timeout: the caller bounds it.
    pub async fn connect(&self, addr: &str) -> io::Result<NodeStream> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Either::Left(tcp));
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
        Ok(Either::Right(Box::new(stream)))
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

/// The host of `host:port`, brackets of an IPv6 seed (`[::1]:7000`) removed.
fn host_of(addr: &str) -> &str {
    routing::host_of(addr)
        .trim_start_matches('[')
        .trim_end_matches(']')
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
        assert_eq!(
            Connector::from_config(&config).unwrap().transport(),
            Transport::Plain
        );
        assert_eq!(Connector::from_config(&config).unwrap(), Connector::plain());
    }
}
