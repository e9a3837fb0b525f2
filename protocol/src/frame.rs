//! The [`Frame`] enum: one value of any RESP2 or RESP3 type.

use bytes::Bytes;

/// The protocol a peer speaks: RESP2 (the default) or RESP3 (after `HELLO 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// RESP2: no maps, sets, doubles, booleans or push frames on the wire.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

/// One RESP value.
///
/// Payloads are `Bytes` that share the buffer they were read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK\r\n`
    Simple(Bytes),
    /// `-ERR message\r\n`: the text after `-`, including the error code. A RESP3 blob error
    /// (`!21\r\nSYNTAX invalid syntax\r\n`) decodes to this too.
    Error(Bytes),
    /// `:42\r\n`
    Integer(i64),
    /// `$3\r\nfoo\r\n`
    Bulk(Bytes),
    /// RESP2 null bulk `$-1\r\n` or RESP3 `_\r\n`. Encoded as `$-1` for RESP2 and `_` for RESP3.
    Null,
    /// RESP2 null array `*-1\r\n`. Encoded as `*-1` for RESP2 and `_` for RESP3.
    NullArray,
    /// `*N\r\n...`
    Array(Vec<Frame>),
    /// RESP3 `%N\r\n...`: N key/value pairs. Flattened into a 2N array for RESP2.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~N\r\n...`. An array for RESP2.
    Set(Vec<Frame>),
    /// RESP3 `>N\r\n...` (pub/sub messages). An array for RESP2.
    Push(Vec<Frame>),
    /// RESP3 `,1.5\r\n`: the text as the node wrote it (a valid double), so it goes back out
    /// unchanged (Redis prints some with 17 significant digits, GEOPOS's with more). A bulk
    /// string of the same text for RESP2, as Redis writes it. [`Frame::double`] makes one from
    /// an `f64`.
    Double(Bytes),
    /// RESP3 `#t\r\n`. The integer 1 or 0 for RESP2.
    Boolean(bool),
    /// RESP3 `(123...\r\n`: the digits, with an optional leading `-`. A bulk string for RESP2.
    BigNumber(Bytes),
    /// RESP3 `=15\r\ntxt:Some string\r\n`. A bulk string of `text` for RESP2.
    Verbatim {
        /// Three-byte format, such as `txt` or `mkd`.
        format: [u8; 3],
        /// The text after `xxx:`.
        text: Bytes,
    },
    /// RESP3 `|N\r\n...` attributes followed by the frame they describe. RESP2 drops them.
    Attribute {
        /// The attribute pairs.
        attrs: Vec<(Frame, Frame)>,
        /// The frame the attributes belong to.
        frame: Box<Frame>,
    },
}

// === impl Frame ===

impl Frame {
    /// A double, written as Redis writes one ([`crate::format_double`]).
    pub fn double(d: f64) -> Frame {
        Frame::Double(Bytes::copy_from_slice(crate::format_double(d).as_bytes()))
    }

    /// The value of a [`Frame::Double`], or of a bulk string holding a number (a RESP2 score).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Frame::Double(text) | Frame::Bulk(text) => std::str::from_utf8(text).ok()?.parse().ok(),
            _ => None,
        }
    }
}
