//! Where clients connect: the TCP listener (`listen`), the optional Unix socket
//! (`unix_socket`) and TLS listener (`tls.listen`), a client connection's read and write halves,
//! and its address as CLIENT LIST shows it.
//!
//! A TLS client's session does not see TLS: a task of its own ([`tls_relay`]) runs the
//! handshake and then relays the plain bytes between the TLS stream and one end of a Unix
//! socket pair, whose other end the session serves like any client connection. The session's
//! read path polls the socket's readiness directly (to hold no buffer while idle), which a TLS
//! stream cannot offer; the relay costs TLS clients two more socket calls per read and per
//! write, and leaves the plain path untouched.
//!
//! A session does not care which kind of socket it serves: [`ClientRead`] and [`ClientWrite`]
//! hide it. A Unix socket is for clients on the same host (a sidecar sharing a volume with its
//! application): a local socket costs the kernel about half of what loopback TCP does per
//! request, and the proxy's CPU per request is mostly the kernel's (benches/README.md).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpListener, TcpStream, UnixListener, UnixStream};

use crate::tls::Acceptor;

/// The relay's buffer each way, in bytes.
const RELAY_BUFFER: usize = 4096;
/// How long a TLS client gets to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A listening socket clients connect to.
#[derive(Debug)]
pub enum Listener {
    /// `listen`.
    Tcp(TcpListener),
    /// The socket, and its path as CLIENT LIST shows it.
    Unix(UnixListener, Arc<str>),
    /// `tls.listen`, and the TLS configuration in force (a reload replaces it).
    Tls(TcpListener, Arc<Acceptor>),
}

/// An accepted client connection.
#[derive(Debug)]
pub struct Accepted {
    /// What the client sends.
    pub rd: ClientRead,
    /// Where its replies go.
    pub wr: ClientWrite,
    /// The client's address.
    pub peer: ClientAddr,
    /// The proxy's address on this connection.
    pub local: ClientAddr,
}

/// A client's address: `ip:port`, or the Unix socket's path (shown as `path:0`, as Redis does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAddr {
    /// A TCP peer or local address.
    Tcp(SocketAddr),
    /// The Unix socket's path (both ends of a Unix connection show it).
    Unix(Arc<str>),
}

/// The read half of a client connection.
#[derive(Debug)]
pub enum ClientRead {
    /// From `listen`.
    Tcp(tcp::OwnedReadHalf),
    /// From `unix_socket`.
    Unix(unix::OwnedReadHalf),
}

/// The write half of a client connection.
#[derive(Debug)]
pub enum ClientWrite {
    /// From `listen`.
    Tcp(tcp::OwnedWriteHalf),
    /// From `unix_socket`.
    Unix(unix::OwnedWriteHalf),
}

// === impl Listener ===

impl Listener {
    /// Binds the Unix socket at `path`, replacing a socket file left by an earlier run (as
    /// redis-server does), and gives it `perm` (octal digits as in Redis's `unixsocketperm`,
    /// such as 770) if set.
    ///
    /// # Errors
    /// If `path` exists and is not a socket, or binding or `chmod` fails.
    pub fn bind_unix(path: &Path, perm: Option<u32>) -> io::Result<Listener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the path exists and is not a socket",
                ))
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(path)?;
        if let Some(perm) = perm {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(octal(perm)))?;
        }
        Ok(Listener::Unix(
            listener,
            Arc::from(path.to_string_lossy().as_ref()),
        ))
    }

    /// The next client.
    ///
    /// # Errors
    /// What `accept(2)` returns (EMFILE and friends).
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(peer);
                let (rd, wr) = stream.into_split();
                Ok(Accepted {
                    rd: ClientRead::Tcp(rd),
                    wr: ClientWrite::Tcp(wr),
                    peer: ClientAddr::Tcp(peer),
                    local: ClientAddr::Tcp(local),
                })
            }
            Listener::Tls(l, acceptor) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(peer);
                let (session_end, relay_end) = UnixStream::pair()?;
                tokio::spawn(tls_relay(acceptor.current(), stream, relay_end, peer));
                let (rd, wr) = session_end.into_split();
                Ok(Accepted {
                    rd: ClientRead::Unix(rd),
                    wr: ClientWrite::Unix(wr),
                    peer: ClientAddr::Tcp(peer),
                    local: ClientAddr::Tcp(local),
                })
            }
            Listener::Unix(l, path) => {
                let (stream, _) = l.accept().await?;
                let (rd, wr) = stream.into_split();
                Ok(Accepted {
                    rd: ClientRead::Unix(rd),
                    wr: ClientWrite::Unix(wr),
                    peer: ClientAddr::Unix(path.clone()),
                    local: ClientAddr::Unix(path.clone()),
                })
            }
        }
    }

    /// Binds the TLS listener.
    ///
    /// # Errors
    /// If binding fails.
    pub async fn bind_tls(at: SocketAddr, acceptor: Arc<Acceptor>) -> io::Result<Listener> {
        Ok(Listener::Tls(TcpListener::bind(at).await?, acceptor))
    }

    /// Removes the Unix socket's file; nothing for TCP.
    pub fn remove_file(&self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path.as_ref());
        }
    }
}

/// Redis's `unixsocketperm` reading: the decimal digits of `perm` are octal digits (770 is
/// `0o770`). The configuration checks the digits ([`valid_perm`]).
fn octal(perm: u32) -> u32 {
    u32::from_str_radix(&perm.to_string(), 8).unwrap_or(0)
}

/// True if every decimal digit of `perm` is an octal digit and it is at most 777.
pub fn valid_perm(perm: u32) -> bool {
    perm <= 777 && u32::from_str_radix(&perm.to_string(), 8).is_ok()
}

/// Runs a TLS client's handshake, then relays bytes both ways between it and its session's
/// end of the socket pair until both directions have ended. A failed handshake closes the
/// pair, which the session sees as the client leaving.
async fn tls_relay(
    acceptor: Arc<tokio_rustls::TlsAcceptor>,
    stream: TcpStream,
    mut session: UnixStream,
    peer: SocketAddr,
) {
    let mut tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(client = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(client = %peer, "TLS handshake timed out");
            return;
        }
    };
    // Small buffers: most requests and replies are small, and an idle client keeps them.
    let relayed = tokio::io::copy_bidirectional_with_sizes(
        &mut tls,
        &mut session,
        RELAY_BUFFER,
        RELAY_BUFFER,
    );
    if let Err(e) = relayed.await {
        tracing::debug!(client = %peer, error = %e, "TLS client connection ended");
    }
}

// === impl ClientAddr ===

impl ClientAddr {
    /// The placeholder of a client whose registry entry is gone.
    pub const UNKNOWN: ClientAddr = ClientAddr::Tcp(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        0,
    ));
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Tcp(addr) => addr.fmt(f),
            ClientAddr::Unix(path) => write!(f, "{path}:0"),
        }
    }
}

// === impl ClientRead ===

impl ClientRead {
    /// Waits until the socket may have data (or has closed).
    ///
    /// Polls the socket's readiness directly rather than through the halves' `readable()`,
    /// whose future carries a waiter entry: this one is a reference, and it sits in every idle
    /// session.
    pub fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        std::future::poll_fn(move |cx| match self {
            ClientRead::Tcp(s) => s.as_ref().poll_read_ready(cx),
            ClientRead::Unix(s) => s.as_ref().poll_read_ready(cx),
        })
    }

    /// Reads what is there without waiting; `WouldBlock` if nothing is.
    pub fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        match self {
            ClientRead::Tcp(s) => s.try_read_buf(buf),
            ClientRead::Unix(s) => s.try_read_buf(buf),
        }
    }
}

impl AsyncRead for ClientRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientRead::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ClientRead::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

// === impl ClientWrite ===

impl AsyncWrite for ClientWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientWrite::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ClientWrite::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientWrite::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientWrite::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientWrite::Tcp(s) => s.is_write_vectored(),
            ClientWrite::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWrite::Tcp(s) => Pin::new(s).poll_flush(cx),
            ClientWrite::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWrite::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ClientWrite::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perm_digits_are_octal_as_in_redis() {
        assert_eq!(octal(770), 0o770);
        assert_eq!(octal(700), 0o700);
        assert_eq!(octal(7), 0o7);
        assert!(valid_perm(777) && valid_perm(0) && valid_perm(660));
        assert!(!valid_perm(778) && !valid_perm(800) && !valid_perm(1777));
    }

    #[test]
    fn unix_addresses_show_as_path_colon_zero() {
        assert_eq!(
            ClientAddr::Unix(Arc::from("/run/slotway.sock")).to_string(),
            "/run/slotway.sock:0"
        );
        assert_eq!(
            ClientAddr::Tcp("127.0.0.1:5000".parse().unwrap()).to_string(),
            "127.0.0.1:5000"
        );
    }
}
