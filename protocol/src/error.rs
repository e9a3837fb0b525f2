//! [`ProtocolError`]: why a byte stream is not valid RESP.

use thiserror::Error;

/// A request or reply that is not valid RESP or breaks a [`crate::Limits`] bound.
///
/// `Display` gives Redis's own wording, the part after `-ERR Protocol error: `. After any of
/// these the stream cannot be resynchronised: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// A frame started with a byte that is no RESP type.
    #[error("invalid type prefix '{}'", char::from(*.0))]
    BadPrefix(u8),
    /// An element of a multibulk request was not a bulk string.
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// A multibulk count that is not a number or is out of range.
    #[error("invalid multibulk length")]
    BadMultibulkLength,
    /// A bulk length that is not a number or is out of range.
    #[error("invalid bulk length")]
    BadBulkLength,
    /// A number, double, boolean or other scalar that does not parse.
    #[error("invalid {0} value")]
    BadValue(&'static str),
    /// A line or payload that is not followed by CRLF.
    #[error("missing CRLF")]
    MissingCrlf,
    /// An inline request longer than `max_inline_len` without a newline.
    #[error("too big inline request")]
    InlineTooBig,
    /// An inline request with an unbalanced quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk string longer than `max_bulk_len`.
    #[error("invalid bulk length")]
    BulkTooLarge {
        /// The configured bound.
        limit: usize,
    },
    /// An aggregate with more elements than `max_array_len`.
    #[error("invalid multibulk length")]
    ArrayTooLarge {
        /// The configured bound.
        limit: usize,
    },
    /// Aggregates nested deeper than `max_depth`.
    #[error("nesting too deep")]
    TooDeep {
        /// The configured bound.
        limit: usize,
    },
    /// A request whose encoded size would not fit the 32-bit argument offsets of
    /// [`crate::Request`] (4 GiB). Only reachable with limits far above Redis's defaults.
    #[error("too big request")]
    RequestTooLarge {
        /// The largest encoded request size, in bytes.
        limit: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::ProtocolError::*;

    #[test]
    fn display_is_redis_wording() {
        let cases = [
            (BadPrefix(b'x'), "invalid type prefix 'x'"),
            (ExpectedBulk(b'x'), "expected '$', got 'x'"),
            (BadMultibulkLength, "invalid multibulk length"),
            (BadBulkLength, "invalid bulk length"),
            (BadValue("integer"), "invalid integer value"),
            (MissingCrlf, "missing CRLF"),
            (InlineTooBig, "too big inline request"),
            (UnbalancedQuotes, "unbalanced quotes in request"),
            (BulkTooLarge { limit: 1 }, "invalid bulk length"),
            (ArrayTooLarge { limit: 1 }, "invalid multibulk length"),
            (TooDeep { limit: 1 }, "nesting too deep"),
            (RequestTooLarge { limit: 1 }, "too big request"),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text, "{err:?}");
        }
    }
}
