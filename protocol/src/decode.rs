//! Incremental decoding of RESP2/RESP3 frames.

use bytes::BytesMut;

use crate::{Frame, Limits, ProtocolError};

/// Decodes one complete frame from the front of `buf`, advancing `buf` past it.
///
/// Returns `Ok(None)` if `buf` does not yet hold a complete frame (nothing is consumed).
/// Payloads of the returned frame share `buf`'s allocation.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtocolError> {
    let _ = (buf, limits);
    unimplemented!()
}

/// The length in bytes of the first complete frame in `buf`, without building it.
///
/// `Ok(None)` means more bytes are needed. Stateless: rescans from the start on every call;
/// use [`Scanner`] on a stream.
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    let _ = (buf, limits);
    unimplemented!()
}

/// A resumable [`frame_len`]: remembers how far it got in a partial frame so that a large
/// reply arriving in many reads is scanned once, not once per read.
#[derive(Debug, Default)]
pub struct Scanner {}

impl Scanner {
    /// Scans `buf`, which must start with the frame this scanner has been scanning (the caller
    /// only appends to it between calls). Returns the frame's total length once complete, and
    /// resets itself for the next frame.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        let _ = (buf, limits);
        unimplemented!()
    }
}
