//! RESP2 and RESP3 framing for Slotway.
//!
//! This crate turns bytes into frames and frames into bytes. It does no I/O and spawns nothing.
//!
//! - [`Frame`]: every RESP2 and RESP3 type. Payloads are [`bytes::Bytes`] slices of the read
//!   buffer, never copies.
//! - [`decode_request`]: a client request (a multibulk array of bulk strings, or an inline command
//!   such as `PING\r\n` typed in telnet) as a [`Request`] that keeps the raw bytes it came in, so the
//!   proxy can forward them untouched.
//! - [`frame_len`] / [`Scanner`]: find where the next complete frame ends without building it, so
//!   backend replies can be forwarded as raw bytes.
//! - [`decode`]: build a full [`Frame`] (used for replies the proxy must look into).
//! - [`encode`]: write a [`Frame`] for a RESP2 or RESP3 peer.
//! - [`RespCodec`]: a `tokio_util::codec` Decoder/Encoder over the above.
//!
//! Every decoder checks [`Limits`] (bulk length, element count, nesting depth, inline length)
//! before allocating anything, and fails with a [`ProtocolError`] whose text is Redis's own.
//!
//! ```text
//! bytes ─▶ decode_request ─▶ Request { raw, args }      (client side)
//! bytes ─▶ Scanner::scan  ─▶ frame length ─▶ raw Bytes   (backend side, forwarded as is)
//! Frame ─▶ encode(version) ─▶ bytes                      (replies made by the proxy)
//! ```

mod codec;
mod decode;
mod encode;
mod error;
mod frame;
mod request;

pub use codec::RespCodec;
pub use decode::{decode, frame_len, Scanner};
pub use encode::{encode, encode_bulk, encode_error, encode_integer, encode_simple};
pub use error::ProtocolError;
pub use frame::{Frame, Version};
pub use request::{decode_request, Request};

/// Bounds checked by every decoder before it allocates.
///
/// The defaults follow Redis: `proto-max-bulk-len` is 512 MiB, an inline request may be at most
/// 64 KiB, and a multibulk request may have at most 1,048,576 elements... (see field docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string payload, in bytes (Redis `proto-max-bulk-len`, default 512 MiB).
    pub max_bulk_len: usize,
    /// Most elements in one aggregate (array, map, set, push, attribute). Default 1,048,576.
    pub max_array_len: usize,
    /// Deepest nesting of aggregates. Default 32. A client request is never nested.
    pub max_depth: usize,
    /// Longest inline command line, in bytes (Redis `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_depth: 32,
            max_inline_len: 64 * 1024,
        }
    }
}
