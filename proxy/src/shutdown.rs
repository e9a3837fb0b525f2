//! Graceful shutdown: SIGTERM and SIGINT cancel a [`CancellationToken`]; sessions then answer
//! what they have read, close their write side, and wait for the client to close its side
//! ([`close`]) so that no request a client already sent is met with a TCP reset.
//!
//! | event | proxy |
//! |---|---|
//! | first SIGTERM / SIGINT | stop accepting; `/readyz` answers 503; each session reads what the client already sent ([`read_buffered`]), answers it, closes; the process exits 0 when all sessions are done or after `drain_timeout_ms` |
//! | second SIGTERM / SIGINT | exit at once (status 0) |

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::listener::{ClientRead, ClientWrite};

/// How long a closing connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and thrown away while waiting for the client to close.
const LINGER_BYTES: usize = 1 << 20;
/// Most bytes taken from the socket when shutdown starts.
const BUFFERED_MAX: usize = 4 << 20;

/// A token cancelled at the first SIGTERM or SIGINT; a second one exits the process at once.
/// Must be called inside the runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        t.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without waiting for in-flight requests");
        std::process::exit(0);
    });
    token
}

/// Appends to `rbuf` whatever the client has already sent and the kernel holds, without
/// waiting: called when shutdown starts, so that requests already sent are answered.
pub fn read_buffered(rd: &ClientRead, rbuf: &mut BytesMut) {
    let mut taken = 0;
    while taken < BUFFERED_MAX {
        rbuf.reserve(16 * 1024);
        match rd.try_read_buf(rbuf) {
            Ok(0) | Err(_) => return,
            Ok(n) => taken += n,
        }
    }
}

/// Closes a client connection gracefully: sends FIN, then reads and discards until the client
/// closes its side (at most [`LINGER`] and [`LINGER_BYTES`]). Closing a socket that still has
/// unread input makes the kernel send a reset, which can destroy replies the client has not
/// read yet.
pub async fn close(rd: &mut ClientRead, wr: &mut ClientWrite) {
    if wr.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        // On the heap: a buffer in this future would enlarge every session future that can
        // call `close`.
        let mut buf = vec![0u8; 4096];
        let mut read = 0;
        while read < LINGER_BYTES {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
