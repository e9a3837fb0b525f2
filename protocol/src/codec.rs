//! [`RespCodec`]: `tokio_util::codec` adapter over [`crate::decode`] and [`crate::encode`].
//!
//! The codec is stateless apart from its two settings, so each `decode` call rescans a
//! partial frame from its start (see [`crate::decode`]). The proxy's hot paths use
//! [`crate::decode_request`] and [`crate::Scanner`] directly; this codec serves tools, tests
//! and replies the proxy builds itself.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::{Frame, Limits, ProtocolError, Version};

/// Decodes frames and encodes them for the negotiated [`Version`].
///
/// `decode` returns `Ok(None)` until a whole frame is buffered and never consumes part of a
/// frame, so it is cancel safe under `FramedRead`. After an error the stream cannot be
/// resynchronised and the connection must be closed.
#[derive(Debug, Default, Clone)]
pub struct RespCodec {
    /// Bounds enforced while decoding.
    pub limits: Limits,
    /// How frames are encoded; set by the session after `HELLO`.
    pub version: Version,
}

/// I/O or protocol failure while decoding through [`RespCodec`].
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Underlying I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Invalid bytes.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

// === impl RespCodec ===

impl Decoder for RespCodec {
    type Item = Frame;
    type Error = CodecError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(crate::decode(src, &self.limits)?)
    }
}

impl Encoder<Frame> for RespCodec {
    type Error = CodecError;
    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        crate::encode(&item, self.version, dst);
        Ok(())
    }
}

impl Encoder<&Frame> for RespCodec {
    type Error = CodecError;
    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        crate::encode(item, self.version, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    use super::{CodecError, RespCodec};
    use crate::{Frame, Limits, ProtocolError, Version};

    #[test]
    fn decodes_frames_as_they_complete() {
        let mut codec = RespCodec::default();
        let mut buf = BytesMut::from(&b"+OK\r\n*2\r\n$3\r\nfoo"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::Simple(Bytes::from_static(b"OK")))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b"*2\r\n$3\r\nfoo");
        buf.extend_from_slice(b"\r\n:7\r\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::Array(vec![
                Frame::Bulk(Bytes::from_static(b"foo")),
                Frame::Integer(7)
            ]))
        );
        assert!(buf.is_empty());
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn decode_applies_limits() {
        let mut codec = RespCodec {
            limits: Limits {
                max_bulk_len: 2,
                ..Limits::default()
            },
            version: Version::Resp2,
        };
        let mut buf = BytesMut::from(&b"$3\r\n"[..]);
        match codec.decode(&mut buf) {
            Err(CodecError::Protocol(ProtocolError::BulkTooLarge { limit: 2 })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encodes_for_the_negotiated_version() {
        let mut codec = RespCodec::default();
        let mut dst = BytesMut::new();
        codec.encode(Frame::Boolean(true), &mut dst).unwrap();
        codec.version = Version::Resp3;
        codec.encode(&Frame::Boolean(true), &mut dst).unwrap();
        codec.encode(Frame::Null, &mut dst).unwrap();
        assert_eq!(&dst[..], b":1\r\n#t\r\n_\r\n");
    }
}
