//! [`RespCodec`]: `tokio_util::codec` adapter over [`crate::decode`] and [`crate::encode`].

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::{Frame, Limits, ProtocolError, Version};

/// Decodes frames and encodes them for the negotiated [`Version`].
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
