//! RESP2 and RESP3 framing for Slotway.
//!
//! This crate turns bytes into frames and frames into bytes. It does no I/O and spawns nothing.
//!
//! - [`Frame`]: every RESP2 and RESP3 type. Payloads are [`bytes::Bytes`] slices of the read
//!   buffer, never copies.
//! - [`decode_request`]: a client request (a multibulk array of bulk strings, or an inline command
//!   such as `PING\r\n` typed in telnet) as a [`Request`] that keeps the raw bytes it came in, so the
//!   proxy can forward them untouched. [`RequestDecoder`] is the same, resumable across reads.
//! - [`frame_len`] / [`Scanner`]: find where the next complete frame ends without building it, so
//!   backend replies can be forwarded as raw bytes. [`Scanner`] resumes where it stopped, so a
//!   reply arriving in many reads is scanned once.
//! - [`decode`]: build a full [`Frame`] (used for replies the proxy must look into).
//! - [`encode`]: write a [`Frame`] for a RESP2 or RESP3 peer; `encode_*` write common replies
//!   directly.
//! - [`RespCodec`]: a `tokio_util::codec` Decoder/Encoder over the above.
//!
//! Types handled: RESP2 simple string `+`, error `-`, integer `:`, bulk string `$` (and the null
//! bulk `$-1`), array `*` (and the null array `*-1`); RESP3 null `_`, double `,` (including
//! `inf`, `-inf`, `nan`), boolean `#`, big number `(`, verbatim string `=`, blob error `!` (read
//! as an error), map `%`, set `~`, push `>` and attribute `|`.
//!
//! Every decoder checks [`Limits`] (bulk length, element count, nesting depth, inline length)
//! as soon as a length is read, before allocating or waiting for the payload, and fails with a
//! [`ProtocolError`] whose text is Redis's own. No input makes a decoder panic.
//!
//! ```text
//! bytes ─▶ decode_request ─▶ Request { raw, args }      (client side)
//! bytes ─▶ Scanner::scan  ─▶ frame length ─▶ raw Bytes   (backend side, forwarded as is)
//! Frame ─▶ encode(version) ─▶ bytes                      (replies made by the proxy)
//! ```
//!
//! ```
//! use bytes::BytesMut;
//! use protocol::{decode_request, encode, Frame, Limits, Scanner, Version};
//!
//! let limits = Limits::default();
//!
//! // Client side: requests come out with their raw bytes; partial input waits.
//! let mut rbuf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\nPING\r\n*1\r\n$4"[..]);
//! let get = decode_request(&mut rbuf, &limits)?.expect("complete");
//! assert_eq!(get.name(), b"GET");
//! assert_eq!(get.arg(1), Some(&b"foo"[..]));
//! let ping = decode_request(&mut rbuf, &limits)?.expect("inline");
//! assert_eq!(&ping.raw()[..], b"*1\r\n$4\r\nPING\r\n");
//! assert_eq!(decode_request(&mut rbuf, &limits)?, None);
//!
//! // Backend side: find where a reply ends, across reads, and forward it as is.
//! let mut scanner = Scanner::new();
//! let mut reply = BytesMut::from(&b"*2\r\n$3\r\nbar"[..]);
//! assert_eq!(scanner.scan(&reply, &limits)?, None);
//! reply.extend_from_slice(b"\r\n:1\r\n");
//! let n = scanner.scan(&reply, &limits)?.expect("complete");
//! let raw = reply.split_to(n).freeze();
//! assert_eq!(&raw[..], b"*2\r\n$3\r\nbar\r\n:1\r\n");
//!
//! // Replies made by the proxy, for the peer's protocol version.
//! let mut out = BytesMut::new();
//! encode(&Frame::Boolean(true), Version::Resp2, &mut out);
//! assert_eq!(&out[..], b":1\r\n");
//! # Ok::<(), protocol::ProtocolError>(())
//! ```

// Decoders run on untrusted bytes: indexing and unwrapping are refused so that no input can
// make them panic (tests may use them freely).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod codec;
mod decode;
mod encode;
mod error;
mod frame;
mod request;

pub use codec::{CodecError, RespCodec};
pub use decode::{decode, frame_len, Scanner};
pub use encode::{
    encode, encode_bulk, encode_error, encode_integer, encode_simple, format_double, DoubleText,
};
pub use error::ProtocolError;
pub use frame::{Frame, Version};
pub use request::{decode_request, Request, RequestDecoder};

/// Bounds checked by every decoder before it allocates.
///
/// The defaults follow Redis: `proto-max-bulk-len` is 512 MiB, an inline request may be at most
/// 64 KiB, and an aggregate may have at most 1,048,576 elements (Redis caps unauthenticated
/// multibulk requests far lower, and `INT_MAX` otherwise). Simple-string and error lines in
/// replies are held to `max_bulk_len` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string payload, in bytes (Redis `proto-max-bulk-len`, default 512 MiB).
    pub max_bulk_len: usize,
    /// Most elements in one aggregate (array, map, set, push, attribute). Default 1,048,576.
    pub max_array_len: usize,
    /// Deepest nesting of aggregates. Default 32. A client request is never nested.
    ///
    /// The decoders themselves are iterative, but dropping, comparing or encoding a [`Frame`]
    /// recurses once per level, so this also bounds stack use of decoded frames.
    pub max_depth: usize,
    /// Longest inline command line, in bytes, not counting its `\n` (Redis
    /// `PROTO_INLINE_MAX_SIZE`, 64 KiB).
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
